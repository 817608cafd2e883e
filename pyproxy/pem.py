"""PEM material as OpenSSL loads it: a certificate chain with its private key, a CA bundle.

translate/ validates every listener certificate and CA bundle with ``key_pair_problem`` and
``ca_bundle_problem``; dataplane/tls.py builds its SSLContexts with ``load_key_pair`` and
``load_ca_bundle``. The problem functions are those loaders run on a throwaway context, so
``check`` (which only translates) and ``serve`` (which also compiles) cannot disagree about
which material loads. Like regex.py, this module imports nothing from pyproxy, so both rooms
may depend on it.

Why a shared module rather than a loader handed to the translator as a parameter: the answer
depends only on the PEM text (it is cached by content), so the translator stays a function of
its input; a parameter would let a caller pass a different loader (or none) and make ``check``
and ``serve`` disagree again, which is the bug this module exists to prevent. The temporary
files ``load_key_pair`` writes are an implementation detail of OpenSSL's file-only API.
"""
from __future__ import annotations

import functools
import os
import re
import ssl
import tempfile

_SSL_LOCATION = re.compile(r"\s*\(_ssl\.c:\d+\)$")  # CPython's source line, not part of the reason


class PemError(ValueError):
    """PEM material OpenSSL cannot load; the message says which key and why."""


def load_ca_bundle(ctx: ssl.SSLContext, pem: str) -> None:
    """Trust every certificate of the PEM bundle ``pem`` (held in ``ca.crt``) in ``ctx``."""
    try:
        ctx.load_verify_locations(cadata=pem)
    except (ssl.SSLError, ValueError) as exc:
        raise PemError(f"ca.crt: no certificate could be loaded: {_reason(exc)}") from exc


def load_key_pair(ctx: ssl.SSLContext, cert_pem: str, key_pem: str) -> dict:
    """Load ``cert_pem`` (tls.crt: the certificate, then its chain) and ``key_pem`` (tls.key)
    into ``ctx``; returns the certificate decoded as ``getpeercert()`` shows one.

    The PEMs go to a private temporary directory (mode 0700), removed as soon as they are
    loaded: ``load_cert_chain`` and ``ssl._ssl._test_decode_cert`` (the only stdlib way to
    read a certificate's names; ``cryptography`` is not a dependency) both read from files.
    An encrypted key is refused rather than letting OpenSSL prompt for a pass phrase."""
    with tempfile.TemporaryDirectory(prefix="pyproxy-cert-") as tmp:
        cert_file, key_file = os.path.join(tmp, "tls.crt"), os.path.join(tmp, "tls.key")
        _write_private(cert_file, cert_pem)
        _write_private(key_file, key_pem)
        try:
            decoded: dict = ssl._ssl._test_decode_cert(cert_file)  # type: ignore[attr-defined]  # private stdlib helper, see above
        except (ssl.SSLError, ValueError) as exc:
            raise PemError(f"tls.crt: no certificate could be loaded: {_reason(exc)}") from exc
        try:
            ctx.load_cert_chain(cert_file, key_file, password=_refuse_pass_phrase)
        except PemError:
            raise
        except (ssl.SSLError, ValueError) as exc:
            if isinstance(exc, ssl.SSLError) and exc.reason == "KEY_VALUES_MISMATCH":
                raise PemError("tls.key does not match tls.crt") from exc
            raise PemError(f"tls.crt and tls.key could not be loaded: {_reason(exc)}") from exc
    return decoded


@functools.lru_cache(maxsize=256)
def ca_bundle_problem(pem: str) -> str | None:
    """Why ``load_ca_bundle`` would fail for ``pem``, or None when it loads (cached)."""
    try:
        load_ca_bundle(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), pem)
    except PemError as exc:
        return str(exc)
    return None


@functools.lru_cache(maxsize=256)
def key_pair_problem(cert_pem: str, key_pem: str) -> str | None:
    """Why ``load_key_pair`` would fail for these PEMs, or None when they load (cached)."""
    try:
        load_key_pair(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), cert_pem, key_pem)
    except PemError as exc:
        return str(exc)
    return None


def _refuse_pass_phrase() -> str:
    raise PemError("tls.key: encrypted private keys are not supported")


def _reason(exc: Exception) -> str:
    """OpenSSL's words: SSLError's last argument (str() would add the errno or a tuple)."""
    return _SSL_LOCATION.sub("", str(exc.args[-1] if exc.args else exc))


def _write_private(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8", errors="replace") as f:  # non-ASCII is garbage OpenSSL rejects
        f.write(text)
