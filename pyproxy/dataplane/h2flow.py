"""What both HTTP/2 sides share (``h2`` downstream, ``upstream_h2``): body bytes leave in DATA
frames only as far as the peer's windows reach, and a GOAWAY received spares the streams it
lets finish."""
from __future__ import annotations

import h2.connection
import h2.errors
import h2.events
from hyperframe.frame import Frame, GoAwayFrame


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


class SparingConnection(h2.connection.H2Connection):
    """h2's connection, except that a GOAWAY received lets the streams it spares finish.

    h2 takes a received GOAWAY for the end of the whole connection (python-hyper/h2#1181): its
    state turns CLOSED, the frames it queued are dropped, and any later frame (the DATA of a
    stream at or below the GOAWAY's last stream id, which RFC 9113 §6.8 lets complete) is a
    protocol error. Here the GOAWAY is only reported; what follows from it is the owner's rule
    (upstream: no new stream on the connection; downstream: the streams in flight are answered,
    then the connection closes)."""

    def _receive_goaway_frame(self, frame: GoAwayFrame) -> tuple[list[Frame], list[h2.events.Event]]:
        event = h2.events.ConnectionTerminated()
        try:
            event.error_code = h2.errors.ErrorCodes(frame.error_code)
        except ValueError:
            event.error_code = frame.error_code
        event.last_stream_id = frame.last_stream_id
        event.additional_data = frame.additional_data or None
        return [], [event]
