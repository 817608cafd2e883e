"""The ``explain`` command: load → translate → compile as ``serve`` does (no socket bound;
bound; DNS asked only with ``--resolve``), the answer printed, the exit code."""
from __future__ import annotations

import argparse
import asyncio
import sys

from ..dataplane.compile import compile_config
from ..dataplane.dns import DnsError, Resolver
from ..errors import ConfigError
from ..loader import Loaded
from ..loading import load
from ..runtime import Settings
from ..stats import Stats
from .answer import explain
from .options import question_of
from .question import Question, UsageError
from .render import to_json, to_text
from .sources import Sources

EXIT_FORWARD, EXIT_CONFIG, EXIT_USAGE, EXIT_LOCAL_ERROR = 0, 1, 2, 3


def exit_code(answer: dict) -> int:
    if answer["action"] == "forward" or answer["status"] < 400:
        return EXIT_FORWARD
    return EXIT_LOCAL_ERROR


def run(args: argparse.Namespace) -> int:
    settings = Settings(config_paths=tuple(args.config), listen=args.listen, bind_address=args.bind_address,
                        nameservers=tuple(args.resolver) if args.resolver else None)
    try:
        question = question_of(args)
        loaded = load_settings(settings)
        answer = asyncio.run(answer_for(loaded, settings, question))
    except ConfigError as exc:
        print("\n".join(exc.messages), file=sys.stderr)
        return EXIT_CONFIG
    except UsageError as exc:
        print(f"pyproxy explain: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(to_json(answer) if args.json else to_text(answer))
    return exit_code(answer)


def load_settings(settings: Settings) -> Loaded:
    return load(settings.config_paths, settings.listen, settings.bind_address)


async def answer_for(loaded: Loaded, settings: Settings, question: Question) -> dict:
    snapshot = await compile_config(loaded.result.config, Stats(), settings.limits)
    sources = Sources(loaded.resources, loaded.result.statuses)
    answer = explain(snapshot, sources, question, config_ok=loaded.result.ok)
    if question.resolve:
        await resolve_endpoints(answer, settings)
    return answer


async def explain_config(settings: Settings, question: Question) -> dict:
    """Load, translate, compile and explain, as the command does (raises ConfigError,
    UsageError)."""
    return await answer_for(load_settings(settings), settings, question)


async def resolve_endpoints(answer: dict, settings: Settings) -> None:
    """Add each FQDN endpoint's ``addresses`` (or its lookup ``error``), from the resolver
    ``serve`` uses (/etc/hosts first, then DNS)."""
    resolver = Resolver(settings.nameservers, settings.dns_refresh)
    try:
        for backend in answer["backends"]:
            for ep in backend.get("endpoints", ()):
                if ep["kind"] == "fqdn":
                    try:
                        ep["addresses"] = list(await resolver.resolve(ep["host"]))
                    except DnsError as exc:
                        ep["error"] = str(exc)
    finally:
        await resolver.close()
