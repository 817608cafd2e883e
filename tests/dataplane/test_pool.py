"""The upstream connection pool (``dataplane/pool.py``): its keys, its bookkeeping asserted
through ``repr`` as httpcore's tests do, and its per-key limit over real sockets."""
from __future__ import annotations

import ssl

from pyproxy.dataplane.compile import CompiledDestination
from pyproxy.dataplane.pool import Pool, PoolKey
from tests.conftest import destination


def test_key_holds_the_ssl_context_itself():
    """Contexts compare by identity: two contexts with the same settings are two keys, and the
    key keeps its context alive (an ``id()`` could be reused by a later context)."""
    first, second = ssl.create_default_context(), ssl.create_default_context()
    a = CompiledDestination(destination(443), first)
    b = CompiledDestination(destination(443), second)
    key = Pool.key(a, "127.0.0.1", 443, False)
    assert key == PoolKey("127.0.0.1", 443, False, first, None)
    assert key.ssl_context is first
    assert key != Pool.key(b, "127.0.0.1", 443, False)
    assert key == Pool.key(CompiledDestination(destination(443), first), "127.0.0.1", 443, False)
