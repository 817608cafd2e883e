"""Command line: ``serve`` (the default), ``check``, ``explain``, ``demo`` and ``version``.

Exit codes: 0 ok, 1 configuration (or bind) error, 2 usage error (``explain`` adds 3: the request
would be answered by the proxy with a 4xx or 5xx). User errors never print a traceback.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from .errors import ConfigError
from .explain.options import add_parser as add_explain_parser
from .startup import WORKER_ENV

log = logging.getLogger("pyproxy")

COMMANDS = ("serve", "check", "explain", "demo", "version")
LOG_LEVELS = ("debug", "info", "warning", "error")


def version() -> str:
    import importlib.metadata  # deferred: 1.5 MiB of RSS (zipfile, email, csv...) serving never needs

    return f"pyproxy {importlib.metadata.version('pyproxy')}"


class _Version(argparse.Action):
    """``--version`` as argparse's own action prints it, the installed version read only when
    asked."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, nargs=0,
                         help="show program's version number and exit")

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        print(version())
        parser.exit()


def parse_hostport(text: str, default_port: int | None = None) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6); the port may be omitted when a default exists.
    ``PORT`` alone and ``:PORT`` mean 127.0.0.1."""
    if text.isdigit() or text.startswith(":") and text.count(":") == 1:
        text = "127.0.0.1:" + text.lstrip(":")
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else rest
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, ""
    if not port and default_port is not None:
        port = str(default_port)
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def _resolver(text: str) -> tuple[str, int]:
    return parse_hostport(text, default_port=53)


def _admin(text: str) -> tuple[str, int] | None:
    return None if text == "off" else parse_hostport(text)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def _workers(text: str) -> int:
    if text == "auto":
        return os.cpu_count() or 1
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of processes or auto, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyproxy", description="Gateway API reverse proxy.",
                                     epilog="Without a command, pyproxy runs serve.")
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")

    def serve_options(p: argparse.ArgumentParser, config_required: bool) -> None:
        p.add_argument("--config", action="append", required=config_required, metavar="PATH",
                       help="YAML file or directory (repeatable)")
        p.add_argument("--listen", type=parse_hostport, metavar="[HOST:]PORT",
                       help="implicit HTTP listener used when the config holds no Gateway; PORT alone or :PORT "
                       "means 127.0.0.1, [v6]:PORT for IPv6 (default 127.0.0.1:8080)")
        p.add_argument("--bind-address", default="0.0.0.0", metavar="HOST",
                       help="address Gateway listeners bind (default 0.0.0.0)")
        p.add_argument("--admin", type=_admin, default=("127.0.0.1", 19000), metavar="[HOST:]PORT|off",
                       help="admin interface, or off (default 127.0.0.1:19000)")
        p.add_argument("--resolver", type=_resolver, action="append", metavar="HOST[:PORT]",
                       help="DNS nameserver instead of /etc/resolv.conf (repeatable)")
        p.add_argument("--dns-refresh", type=_positive, default=30.0, metavar="SECONDS",
                       help="refresh interval of FQDN endpoints (default 30)")
        p.add_argument("--access-log", default="-", metavar="-|PATH|off",
                       help="access log destination (default - = stdout); SIGUSR1 reopens a file")
        p.add_argument("--access-log-format", choices=("json", "text"), default="json",
                       help="json: Envoy Gateway's fields (default); text: Envoy's default text line")
        p.add_argument("--no-watch", dest="watch", action="store_false",
                       help="do not reload when a --config path changes (SIGHUP still reloads)")
        p.add_argument("--drain-timeout", type=_positive, default=30.0, metavar="SECONDS",
                       help="on SIGTERM/SIGINT, how long in-flight requests may take to finish (default 30)")
        p.add_argument("--log-level", type=str.lower, default="info", choices=LOG_LEVELS,
                       help="debug logs every request: route, upstream, why it was rejected (default info)")

    serve = sub.add_parser("serve", help="run the proxy (default command)")
    serve_options(serve, config_required=True)
    serve.add_argument("--workers", type=_workers, default=1, metavar="N|auto",
                       help="serving processes sharing each listener (SO_REUSEPORT) under one supervisor; "
                       "auto = one per CPU (default 1)")
    check = sub.add_parser("check", help="load, validate and translate; print status conditions")
    check.add_argument("--config", action="append", required=True, metavar="PATH",
                       help="YAML file or directory (repeatable)")
    add_explain_parser(sub, parse_hostport, _resolver)
    demo = sub.add_parser("demo", help="offline quick start: pyproxy in front of a local HTTPS upstream")
    serve_options(demo, config_required=False)
    sub.add_parser("version", help="print the version")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS and argv[0] not in ("-h", "--help", "--version"):
        argv.insert(0, "serve")
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    # a worker's lines carry its pid: the workers of --workers N share the supervisor's stderr
    worker = "[%(process)d]" if os.environ.get(WORKER_ENV) else ""
    logging.basicConfig(level=getattr(args, "log_level", "info").upper(), stream=sys.stderr,
                        format=f"%(asctime)s %(levelname)s %(name)s{worker}: %(message)s")
    if args.command == "version":
        print(version())
        return 0
    if args.command == "check":
        try:
            return run_check(args.config)
        except BrokenPipeError:
            # the reader went away (`pyproxy check ... | head`): not an error of ours
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
    if args.command == "explain":
        from .explain.command import run
        try:
            return run(args)
        except BrokenPipeError:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
    if args.command == "demo":
        from . import demo
        return demo.main(args)
    if args.workers > 1:
        from . import supervisor
        return supervisor.run(args, argv)
    from .serve import serve
    return serve(args)


def run_check(paths: Sequence[str]) -> int:
    from .loading import check

    try:
        result = check(paths)
    except ConfigError as exc:
        print("\n".join(exc.messages), file=sys.stderr)
        return 1
    for obj in result.statuses:
        print(f"{obj.kind} {obj.namespace}/{obj.name} ({obj.location})")
        for cond in obj.conditions:
            parent = f" [{cond.parent}]" if cond.parent else ""
            message = f": {cond.message}" if cond.message else ""
            print(f"  {cond.type}={cond.status} ({cond.reason}){parent}{message}")
    print("ok" if result.ok else "errors found")
    return 0 if result.ok else 1
