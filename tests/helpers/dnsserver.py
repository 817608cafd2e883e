"""A loopback DNS responder whose answers a test changes at runtime.

Serves A and AAAA records over UDP (and TCP, for truncated answers) on 127.0.0.1, on one port
picked by the OS. Unknown names answer NXDOMAIN. Every question is counted per name and type.

In an async test (same event loop)::

    async with DnsServer() as dns_server:
        dns_server.set("backend.test", ["127.0.0.2", "127.0.0.3"], ttl=1)
        resolver = Resolver([dns_server.address])
        ...
        assert dns_server.queries("backend.test", "A") == 1

For a subprocess (the proxy started with ``--resolver`` ``dns_server.resolver_arg``), run it
on its own thread and event loop; the setters are the same and thread-safe::

    with ThreadedDnsServer() as dns_server:
        dns_server.set("backend.test", ["127.0.0.2"])
        subprocess.Popen([..., "--resolver", dns_server.resolver_arg])

As a pytest fixture::

    @pytest.fixture
    async def dns_server():
        async with DnsServer() as server:
            yield server
"""
from __future__ import annotations

import asyncio
import collections
import ipaddress
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

Failure = Literal["SERVFAIL", "NXDOMAIN", "timeout"]
_FAILURES = ("SERVFAIL", "NXDOMAIN", "timeout")
_UDP_DEFAULT_SIZE = 512  # without EDNS (RFC 1035 §4.2.1)


def _key(name: str) -> str:
    return name.rstrip(".").lower()


@dataclass
class _Record:
    addresses: tuple[str, ...] = ()
    ttl: int = 1
    failure: Failure | None = None
    delay: float = 0.0


@dataclass
class _Records:
    """The zone, shared by the serving loop and the test thread (hence the lock)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    records: dict[str, _Record] = field(default_factory=dict)
    counts: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)

    def update(self, name: str, **changes: object) -> None:
        with self.lock:
            record = self.records.setdefault(_key(name), _Record())
            for attr, value in changes.items():
                setattr(record, attr, value)

    def ask(self, name: str, rdtype: str) -> _Record | None:
        """Count the question and return a snapshot of the record (None: unknown name)."""
        with self.lock:
            self.counts[(_key(name), rdtype)] += 1
            record = self.records.get(_key(name))
            return None if record is None else _Record(record.addresses, record.ttl, record.failure, record.delay)


class _Controls:
    """The test-facing setters, shared by DnsServer and ThreadedDnsServer."""

    _records: _Records

    def set(self, name: str, addresses: Iterable[str], ttl: int = 1) -> None:
        """Answer ``name`` with these addresses (IPv4 → A, IPv6 → AAAA); clears a failure.

        An empty list makes the name exist with no records (NOERROR, empty answer)."""
        addresses = tuple(addresses)
        for address in addresses:
            ipaddress.ip_address(address)
        self._records.update(name, addresses=addresses, ttl=ttl, failure=None)

    def set_failure(self, name: str, failure: Failure) -> None:
        """Answer every question for ``name`` with SERVFAIL or NXDOMAIN, or not at all (timeout)."""
        if failure not in _FAILURES:
            raise ValueError(f"failure must be one of {_FAILURES}, not {failure!r}")
        self._records.update(name, failure=failure)

    def set_delay(self, name: str, seconds: float) -> None:
        """Answer questions for ``name`` only after ``seconds`` (a slow resolver)."""
        self._records.update(name, delay=seconds)

    def queries(self, name: str, rdtype: str | None = None) -> int:
        """How many questions for ``name`` arrived (of type ``rdtype``, or of any type)."""
        with self._records.lock:
            return sum(n for (qname, qtype), n in self._records.counts.items()
                       if qname == _key(name) and rdtype in (None, qtype))


class DnsServer(_Controls):
    """The responder on the running event loop. ``start``/``stop`` or ``async with``."""

    def __init__(self, host: str = "127.0.0.1", *, tcp: bool = True) -> None:
        self.host = host
        self.port = 0
        self._tcp = tcp
        self._records = _Records()
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp_server: asyncio.Server | None = None
        self._replies: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)``, the form ``pyproxy.dataplane.dns.Resolver`` takes."""
        return (self.host, self.port)

    @property
    def resolver_arg(self) -> str:
        """``HOST:PORT``, the form the CLI's ``--resolver`` takes."""
        return f"{self.host}:{self.port}"

    async def start(self) -> None:
        """Bind UDP (and TCP on the same port; retried if that port is taken for TCP)."""
        loop = asyncio.get_running_loop()
        for _ in range(20):
            self._udp, _ = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=(self.host, 0)
            )
            self.port = self._udp.get_extra_info("sockname")[1]
            if not self._tcp:
                return
            try:
                self._tcp_server = await asyncio.start_server(self._serve_tcp, self.host, self.port)
                return
            except OSError:
                self._udp.close()
        raise OSError("no port free for both UDP and TCP")

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp_server is not None:
            self._tcp_server.close()
            await self._tcp_server.wait_closed()
        replies = list(self._replies)
        for task in replies:
            task.cancel()
        await asyncio.gather(*replies, return_exceptions=True)

    async def __aenter__(self) -> DnsServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ answering

    async def _reply(self, wire: bytes, max_size: int | None) -> bytes | None:
        """The response to one query message (None: stay silent). ``max_size`` None is TCP."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        if not query.question:
            return None
        question = query.question[0]
        rdtype = dns.rdatatype.to_text(question.rdtype)
        record = self._records.ask(question.name.to_text(), rdtype)
        if record is not None and record.delay:
            await asyncio.sleep(record.delay)
        if record is not None and record.failure == "timeout":
            return None
        response = _response(query, record)
        if max_size is None:
            return response.to_wire()
        if query.edns >= 0:
            max_size = max(query.payload, _UDP_DEFAULT_SIZE)
        try:
            return response.to_wire(max_size=max_size)
        except dns.exception.TooBig:
            truncated = dns.message.make_response(query)
            truncated.flags |= dns.flags.TC
            return truncated.to_wire()

    def _spawn_reply(self, wire: bytes, send: Callable[[bytes], None]) -> None:
        """Answer in a task (a delayed answer must not hold up other questions)."""
        task = asyncio.get_running_loop().create_task(self._reply_and_send(wire, send), name="dnsserver.reply")
        self._replies.add(task)
        task.add_done_callback(self._replies.discard)

    async def _reply_and_send(self, wire: bytes, send: Callable[[bytes], None]) -> None:
        answer = await self._reply(wire, _UDP_DEFAULT_SIZE)
        if answer is not None:
            send(answer)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                length = int.from_bytes(await reader.readexactly(2), "big")
                answer = await self._reply(await reader.readexactly(length), None)
                if answer is None:
                    continue
                writer.write(len(answer).to_bytes(2, "big") + answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()


def _response(query: dns.message.Message, record: _Record | None) -> dns.message.Message:
    response = dns.message.make_response(query)
    if record is None or record.failure == "NXDOMAIN":
        response.set_rcode(dns.rcode.NXDOMAIN)
    elif record.failure == "SERVFAIL":
        response.set_rcode(dns.rcode.SERVFAIL)
    else:
        question = query.question[0]
        version = {dns.rdatatype.A: 4, dns.rdatatype.AAAA: 6}.get(question.rdtype)
        addresses = [a for a in record.addresses if ipaddress.ip_address(a).version == version]
        if addresses:
            response.answer.append(
                dns.rrset.from_text_list(question.name, record.ttl, dns.rdataclass.IN, question.rdtype, addresses)
            )
    return response


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self._server = server
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        transport = self._transport
        self._server._spawn_reply(data, lambda answer: transport.sendto(answer, addr))


class ThreadedDnsServer(_Controls):
    """A DnsServer on its own thread and event loop, for tests that run the CLI in a subprocess.

    ``start``/``stop`` or ``with``; ``.port``, ``.address``, ``.resolver_arg`` and the setters
    work from the test's thread."""

    def __init__(self, host: str = "127.0.0.1", *, tcp: bool = True, startup_timeout: float = 10.0) -> None:
        self._server = DnsServer(host, tcp=tcp)
        self._records = self._server._records
        self._timeout = startup_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None

    @property
    def host(self) -> str:
        return self._server.host

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def address(self) -> tuple[str, int]:
        return self._server.address

    @property
    def resolver_arg(self) -> str:
        return self._server.resolver_arg

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="dnsserver", daemon=True)
        self._thread.start()
        if not self._ready.wait(self._timeout):
            raise TimeoutError("DNS server thread did not start")
        if self._startup_error is not None:
            raise self._startup_error

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._server.stop(), self._loop).result(self._timeout)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(self._timeout)
        self._loop = self._thread = None

    def __enter__(self) -> ThreadedDnsServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._server.start())
        except OSError as exc:
            self._startup_error = exc
            loop.close()
            self._ready.set()
            return
        self._loop = loop
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()
