"""``translate``: config resources → routing table (IR) and status conditions.

A pure function: no clock, no environment, no I/O. Semantic mistakes become conditions and
drop only the broken part (a listener, a rule, a backendRef answering 500)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .. import ir
from ..config import resources as res
from .backends import translate_backends
from .backendtls import translate_policies
from .clienttraffic import ClientPolicies, translate_client_policies
from .destinations import Destinations
from .gateways import CheckedGateways, ListenerContext, translate_gateways
from .index import build_index
from .precedence import in_order
from .routes import RouteTable, translate_routes
from .status import Result
from .trafficpolicies import translate_backend_policies

IMPLICIT_LISTENER = "listener/implicit"


@dataclass(frozen=True, slots=True)
class Options:
    implicit_address: str = "127.0.0.1"  # where the implicit listener binds (config without Gateway)
    implicit_port: int = 8080
    bind_address: str = "0.0.0.0"  # where Gateway listeners bind


def translate(resources: Iterable[object], options: Options = Options()) -> Result:
    """The routing table for ``resources`` (as ``config.load`` returns them) and the status of
    every Gateway, HTTPRoute, GRPCRoute, Backend, BackendTLSPolicy, BackendTrafficPolicy and
    ClientTrafficPolicy, sorted by kind, namespace, name.

    Without any Gateway every route attaches to one implicit HTTP listener."""
    index = build_index(resources)
    backends, backend_statuses = translate_backends(index)
    policies, policy_statuses = translate_policies(index)
    destinations = Destinations(index, backends, policies)
    if index.gateways:
        checked = translate_gateways(index, options.bind_address)
        gateways: CheckedGateways | None = checked
        implicit = None
        listeners = checked.listeners
    else:
        gateways, implicit = None, implicit_listener(options)
        listeners = [implicit]
    traffic = translate_backend_policies(index)
    routes = translate_routes(index, listeners, destinations, implicit, traffic)
    clients = translate_client_policies(index, listeners)
    gateway_statuses = gateways.statuses(routes.attached) if gateways else []
    statuses = backend_statuses + policy_statuses + gateway_statuses + routes.statuses
    statuses += traffic.statuses() + clients.statuses
    config = ir.Config(tuple(_listener(ctx, routes.table, clients) for ctx in listeners if ctx.programmed))
    return Result(config, tuple(sorted(statuses, key=lambda s: (s.kind, s.namespace, s.name, s.location))))


def implicit_listener(options: Options) -> ListenerContext:
    """The one HTTP listener of a config that has no Gateway; every route attaches to it."""
    return ListenerContext(
        gateway=("", ""),
        name="implicit",
        ir_name=IMPLICIT_LISTENER,
        address=options.implicit_address,
        port=options.implicit_port,
        protocol="HTTP",
        hostname=None,
        allowed_routes=res.AllowedRoutes(),
        tls=None,
        accepted=True,
        programmed=True,
    )


def _listener(ctx: ListenerContext, table: RouteTable, clients: ClientPolicies) -> ir.Listener:
    hosts = table.get(ctx.ir_name, {})
    virtual_hosts = tuple(
        ir.VirtualHost(
            name=f"{ctx.ir_name}/{hostname}",
            hostname=hostname,
            routes=in_order(hosts[hostname]),
        )
        for hostname in sorted(hosts, key=_host_order)
    )
    client, tls = clients.listener(ctx)
    return ir.Listener(
        name=ctx.ir_name,
        address=ctx.address,
        port=ctx.port,
        protocol=ctx.protocol,  # type: ignore[arg-type]
        virtual_hosts=virtual_hosts,
        hostname=ctx.hostname,
        tls=tls,
        client=client,
    )


def _host_order(hostname: str) -> tuple[int, str]:
    """Exact names, then wildcards, then ``*`` (the order a reader looks for them)."""
    return (2 if hostname == "*" else 1 if hostname.startswith("*.") else 0, hostname)
