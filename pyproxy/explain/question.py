"""What ``pyproxy explain`` is asked: a URL, a method, headers, and how the client reaches the
proxy (port or listener, TLS server name, address). Turned into the bytes a client such as
curl would send, so that the real HTTP/1.1 reader parses, validates and normalises them."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}


class UsageError(Exception):
    """The question cannot be asked as written (exit 2)."""


@dataclass(frozen=True, slots=True)
class Question:
    """``sni`` None: the URL's host on https (none for an IP literal, as clients send none);
    ``""``: no server name. ``port`` and ``listener`` choose the listener instead of the URL."""

    url: str
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    port: int | None = None
    listener: str | None = None
    sni: str | None = None
    client_ip: str = "127.0.0.1"
    resolve: bool = False


@dataclass(frozen=True, slots=True)
class Target:
    """The URL taken apart: ``authority`` is the Host a client sends (the port left out when it
    is the scheme's default), ``target`` the request-target as written (raw, not normalised)."""

    scheme: str
    hostname: str
    port: int
    authority: str
    target: str

    @property
    def ip_literal(self) -> bool:
        try:
            ipaddress.ip_address(self.hostname)
        except ValueError:
            return False
        return True


def parse_url(url: str) -> Target:
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise UsageError("the URL contains a control character")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UsageError(f"invalid URL {url!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise UsageError(f"the URL must start with http:// or https://, got {url!r}")
    if not parts.hostname:
        raise UsageError(f"the URL has no host: {url!r}")
    authority = parts.netloc.rpartition("@")[2]
    if port is None or port == DEFAULT_PORTS[scheme]:
        authority = authority.removesuffix(f":{port}") if port is not None else authority
        port = DEFAULT_PORTS[scheme]
    # the request-target exactly as written after the authority (urlsplit would not keep "/a?")
    rest = url.split("://", 1)[1][len(parts.netloc):].split("#", 1)[0]
    target = rest if rest.startswith("/") else "/" + rest
    return Target(scheme, parts.hostname, port, authority, target)


def parse_header(text: str) -> tuple[str, str]:
    """``Name: value`` as curl's ``-H`` takes it."""
    name, colon, value = text.partition(":")
    if not colon or not name.strip():
        raise UsageError(f"-H wants 'Name: value', got {text!r}")
    if any(ord(c) < 0x20 and c != "\t" or ord(c) == 0x7F for c in text):
        raise UsageError(f"-H {text!r} contains a control character")
    return name.strip(), value.strip()


def check_client_ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise UsageError(f"--client-ip wants an IP address, got {text!r}") from None


def request_bytes(question: Question, target: Target) -> bytes:
    """The request head a client would send: the request line, Host (the URL's authority
    unless a ``-H Host`` replaces it), then the ``-H`` headers in order. Written in UTF-8, as
    curl sends what it is given."""
    method = question.method
    if not method or any(ord(c) <= 0x20 or ord(c) == 0x7F for c in method):
        raise UsageError(f"-X wants a method name, got {method!r}")
    lines = [f"{method} {target.target} HTTP/1.1"]
    if not any(name.lower() == "host" for name, _ in question.headers):
        lines.append(f"Host: {target.authority}")
    lines.extend(f"{name}: {value}" for name, value in question.headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")


def server_name(question: Question, target: Target) -> str | None:
    """The TLS server name the client sends (lower-cased, as the listener records it)."""
    if question.sni is not None:
        return question.sni.lower() or None
    return None if target.ip_literal else target.hostname.lower()
