"""HTTP/2 flow control shared by both sides (``h2`` downstream, ``upstream_h2``): body bytes
leave in DATA frames only as far as the peer's windows reach."""
from __future__ import annotations

import h2.connection


def send_within_window(conn: h2.connection.H2Connection, stream_id: int, out: list[bytes]) -> int:
    """Send from ``out`` (pieces, consumed in place) what the peer's stream and connection
    windows take, in frames of at most its frame size; returns how many bytes left."""
    sent = 0
    while out:
        window = min(conn.local_flow_control_window(stream_id), conn.max_outbound_frame_size)
        if window <= 0:
            break
        data = out[0]
        if len(data) > window:
            conn.send_data(stream_id, data[:window])
            out[0] = data[window:]
            sent += window
        else:
            conn.send_data(stream_id, data)
            out.pop(0)
            sent += len(data)
    return sent
