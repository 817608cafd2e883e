"""The ``explain`` command's options (kept apart from ``command.py`` so that building the
command line imports no data plane)."""
from __future__ import annotations

import argparse
from collections.abc import Callable

from .question import Question, check_client_ip, parse_header

HostPort = Callable[[str], tuple[str, int]]


def add_parser(sub: argparse._SubParsersAction, hostport: HostPort, resolver: HostPort) -> None:
    """The ``explain`` subcommand; ``hostport`` and ``resolver`` parse addresses as serve's
    options do (cli.py's)."""
    p = sub.add_parser(
        "explain", help="which listener, route and backend a request would take, and why",
        description="Explain how serve would handle one request, offline: the listener, route and backend it "
        "takes, the request as it would leave for the upstream, and why the other routes did not match. "
        "Exit 0 when it would be forwarded (or answered locally with 2xx/3xx), 3 when answered locally "
        "with 4xx/5xx, 1 on a config error, 2 on a usage error.")
    p.add_argument("url", metavar="URL", help="what a client would request: http://host[:port]/path?query or https://…")
    p.add_argument("--config", action="append", required=True, metavar="PATH",
                   help="YAML file or directory (repeatable)")
    p.add_argument("-X", "--request", dest="method", default="GET", metavar="METHOD", help="method (default GET)")
    p.add_argument("-H", "--header", dest="headers", action="append", default=[], metavar="'Name: value'",
                   help="a request header (repeatable); 'Host: …' replaces the URL's host")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--port", type=int, metavar="PORT", help="the port the client connects to (default: the URL's)")
    where.add_argument("--listener", metavar="NS/GATEWAY/LISTENER",
                       help="the Gateway listener whose port the client connects to (implicit: the implicit one)")
    p.add_argument("--sni", metavar="NAME", help="TLS server name on https (default: the URL's host; '' for none)")
    p.add_argument("--client-ip", default="127.0.0.1", metavar="IP",
                   help="the client's address, as x-forwarded-for gets it (default 127.0.0.1)")
    p.add_argument("--json", action="store_true", help="answer in JSON")
    p.add_argument("--resolve", action="store_true", help="look up FQDN endpoints (DNS) instead of listing them")
    p.add_argument("--resolver", type=resolver, action="append", metavar="HOST[:PORT]",
                   help="DNS nameserver for --resolve instead of /etc/resolv.conf (repeatable)")
    p.add_argument("--listen", type=hostport, default=("127.0.0.1", 8080), metavar="[HOST:]PORT",
                   help="the implicit listener, as serve's --listen (default 127.0.0.1:8080)")
    p.add_argument("--bind-address", default="0.0.0.0", metavar="HOST",
                   help="address Gateway listeners bind, as serve's (default 0.0.0.0)")
    p.set_defaults(log_level="warning")


def question_of(args: argparse.Namespace) -> Question:
    return Question(url=args.url, method=args.method, headers=tuple(parse_header(h) for h in args.headers),
                    port=args.port, listener=args.listener, sni=args.sni, client_ip=check_client_ip(args.client_ip),
                    resolve=args.resolve)
