"""Where Envoy Gateway's policies attach and which one applies (``internal/gatewayapi``
``backendtrafficpolicy.go``, ``clienttrafficpolicy.go``).

A policy's targetRefs (or its deprecated targetRef) name objects in its own namespace: a
Gateway, or one of its listeners (``sectionName``); for a BackendTrafficPolicy also an HTTPRoute
or GRPCRoute, or one of its rules (``sectionName`` = the rule's ``name``). Each target is a
*scope*. Policies are taken oldest first (creationTimestamp, then namespace/name): the first
to claim a scope owns it and the others are Conflicted. For a route rule reached through a
listener, the most specific claimed scope applies, whole: rule, then route, then listener,
then Gateway; the less specific policies it displaces report Overridden.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from ..config import envoygateway as eg
from ..config import resources as res
from .gateways import ListenerContext
from .index import Index
from .precedence import age_key
from .problems import Problem, kind_label
from .status import Condition


class Translated(Protocol):
    """What a policy asks for, named after its policy."""

    @property
    def policy(self) -> str: ...  # "<namespace>/<name>"


T = TypeVar("T", bound=Translated)
P = TypeVar("P", eg.BackendTrafficPolicy, eg.ClientTrafficPolicy)
Scope = tuple[str, ...]  # ("gateway", ns, name) ("listener", ns, name, listener) ("route", kind, ns, name)
# ("rule", kind, ns, name, rule)

ROUTE_KINDS = ("HTTPRoute", "GRPCRoute")


@dataclass(frozen=True, slots=True)
class Target:
    where: str  # spec.targetRefs[i], or spec.targetRef
    ref: res.LocalPolicyTargetReferenceWithSectionName
    label: str  # gateway/<ns>/<name>[/<section>], httproute/<ns>/<name>[/<section>]


def _targets(spec: eg.BackendTrafficPolicySpec | eg.ClientTrafficPolicySpec, namespace: str) -> list[Target]:
    refs = [(f"spec.targetRefs[{i}]", ref) for i, ref in enumerate(spec.target_refs)]
    if spec.target_ref is not None:
        refs.append(("spec.targetRef", spec.target_ref))
    return [Target(where, ref, _label(ref, namespace)) for where, ref in refs]


def _label(ref: res.LocalPolicyTargetReferenceWithSectionName, namespace: str) -> str:
    return f"{ref.kind.lower()}/{namespace}/{ref.name}" + (f"/{ref.section_name}" if ref.section_name else "")


def attach(
    policies: Iterable[P], kind: str, kinds: tuple[str, ...], index: Index, translate: Callable[[P], T]
) -> tuple[Attachments[T], dict[str, T]]:
    """Translate every policy of ``kind`` and let each claim its targets (``kinds`` of
    objects), oldest first; what each asks for, by "<namespace>/<name>"."""
    attachments: Attachments[T] = Attachments(kind)
    translated: dict[str, T] = {}
    for policy in sorted(policies, key=lambda p: age_key(p.metadata)):
        value = translate(policy)
        translated[value.policy] = value
        namespace = policy.metadata.namespace
        for target in _targets(policy.spec, namespace):
            attachments.claim(value.policy, target, _resolve(index, namespace, target, kinds), value)
    return attachments, translated


def _resolve(index: Index, namespace: str, target: Target, kinds: tuple[str, ...]) -> Scope | Problem:
    """The scope ``target`` names, or why it names none (Invalid: a kind the policy cannot
    target; TargetNotFound: no such object, listener or rule)."""
    ref, where = target.ref, target.where
    if ref.group != res.GATEWAY_GROUP or ref.kind not in kinds:
        names = " or ".join([", ".join(kinds[:-1]), kinds[-1]] if len(kinds) > 1 else kinds)
        return Problem("Invalid", f"{where}: kind {kind_label(ref.kind, ref.group)} is not supported; target a "
                                  f"{names} (group {res.GATEWAY_GROUP})")
    section = ref.section_name
    if ref.kind == "Gateway":
        gateway = index.gateways.get((namespace, ref.name))
        if gateway is None:
            return Problem("TargetNotFound", f"{where}: Gateway {namespace}/{ref.name} not found")
        if section is None:
            return ("gateway", namespace, ref.name)
        if section not in {listener.name for listener in gateway.spec.listeners}:
            return Problem("TargetNotFound",
                           f"{where}.sectionName: Gateway {namespace}/{ref.name} has no listener named {section}")
        return ("listener", namespace, ref.name, section)
    table: dict[tuple[str, str], res.RouteResource] = dict(index.routes if ref.kind == "HTTPRoute"
                                                           else index.grpc_routes)
    route = table.get((namespace, ref.name))
    if route is None:
        return Problem("TargetNotFound", f"{where}: {ref.kind} {namespace}/{ref.name} not found")
    if section is None:
        return ("route", ref.kind, namespace, ref.name)
    if section not in {rule.name for rule in route.spec.rules}:
        return Problem("TargetNotFound",
                       f"{where}.sectionName: {ref.kind} {namespace}/{ref.name} has no rule named {section}")
    return ("rule", ref.kind, namespace, ref.name, section)


def listener_scopes(listener: ListenerContext) -> list[Scope]:
    """The scopes a listener falls in, most specific first (none for the implicit listener of
    a config without Gateways)."""
    if listener.gateway == ("", ""):
        return []
    return [("listener", *listener.gateway, listener.name), ("gateway", *listener.gateway)]


def describe(scope: Scope) -> str:
    """``Gateway default/eg``, ``listener http of Gateway default/eg``, ``HTTPRoute default/web``,
    ``rule a of HTTPRoute default/web``."""
    if scope[0] == "gateway":
        return f"Gateway {scope[1]}/{scope[2]}"
    if scope[0] == "listener":
        return f"listener {scope[3]} of Gateway {scope[1]}/{scope[2]}"
    if scope[0] == "route":
        return f"{scope[1]} {scope[2]}/{scope[3]}"
    return f"rule {scope[4]} of {scope[1]} {scope[2]}/{scope[3]}"


@dataclass(frozen=True, slots=True)
class Claim(Generic[T]):
    policy: str  # "<namespace>/<name>"
    scope: Scope
    value: T


@dataclass(frozen=True, slots=True)
class _Outcome:
    label: str
    scope: Scope | None
    problem: Problem | None


@dataclass(slots=True)
class Attachments(Generic[T]):
    """Claims of one policy kind, and how they played out (for the policies' status)."""

    kind: str  # BackendTrafficPolicy, ClientTrafficPolicy
    claims: dict[Scope, Claim[T]] = field(default_factory=dict)
    overridden: defaultdict[Scope, set[Scope]] = field(default_factory=lambda: defaultdict(set))
    outcomes: dict[str, list[_Outcome]] = field(default_factory=lambda: defaultdict(list))

    def claim(self, policy: str, target: Target, scope: Scope | Problem, value: T) -> None:
        """Record ``policy``'s claim of ``scope``; call in precedence order (oldest first)."""
        if isinstance(scope, Problem):
            self.outcomes[policy].append(_Outcome(target.label, None, scope))
            return
        owner = self.claims.get(scope)
        if owner is not None and owner.policy != policy:
            problem = Problem(
                "Conflicted",
                f"{target.where}: {self.kind} {owner.policy} already targets {describe(scope)} and takes "
                "precedence (older, or first by namespace/name)",
            )
            self.outcomes[policy].append(_Outcome(target.label, None, problem))
            return
        self.claims[scope] = Claim(policy, scope, value)
        self.outcomes[policy].append(_Outcome(target.label, scope, None))

    def effective(self, candidates: Iterable[Scope]) -> Claim[T] | None:
        """The claim of the first (most specific) claimed scope of ``candidates``; the claimed
        ones after it are recorded as overridden by it."""
        winner: Claim[T] | None = None
        for scope in candidates:
            claim = self.claims.get(scope)
            if claim is None:
                continue
            if winner is None:
                winner = claim
            else:
                self.overridden[scope].add(winner.scope)
        return winner

    def conditions(self, policy: str, invalid: str | None) -> list[Condition]:
        """Per target: Accepted (False with the reason it did not attach, or Invalid with
        ``invalid``, the reason the policy cannot be honoured) and Overridden when a more
        specific policy applies in its place somewhere."""
        conditions: list[Condition] = []
        for outcome in self.outcomes[policy]:
            if outcome.problem is not None:
                conditions.append(Condition("Accepted", False, outcome.problem.reason, outcome.problem.message,
                                            parent=outcome.label))
                continue
            if invalid is not None:
                conditions.append(Condition("Accepted", False, "Invalid", invalid, parent=outcome.label))
            else:
                conditions.append(Condition("Accepted", True, "Accepted", parent=outcome.label))
            by = self.overridden.get(outcome.scope or ())
            if by:
                owners = sorted(f"{describe(scope)} ({self.kind} {self.claims[scope].policy})" for scope in by)
                plural = self.kind.removesuffix("Policy") + "Policies"
                message = f"This policy is being overridden by other {plural} for: {', '.join(owners)}"
                conditions.append(Condition("Overridden", True, "Overridden", message, parent=outcome.label))
        return conditions
