"""BackendTLSPolicy (v1alpha3 and v1): which TLS settings apply to which Backend port.

A policy targets ``{group: gateway.envoyproxy.io, kind: Backend, name, sectionName?}``; the
sectionName is a backendRef port as a string, and a policy without one covers every port no
sectioned policy covers. Among policies for the same target and section the oldest wins, then
``namespace/name``; the others are Conflicted. A winning policy that cannot be honoured (bad
hostname, unsupported or missing CA, an invalid CA ref) still wins: the traffic it covers
answers 500 rather than going out without the verification that was asked for.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import ir
from ..config import resources as res
from .backends import SYSTEM_CA
from .certs import resolve_ca_refs
from .hostnames import hostname_problem
from .index import Index
from .precedence import age_key
from .problems import Problem, kind_label
from .status import Condition, ObjectStatus, object_status

Target = tuple[str, str, str | None]  # (namespace, Backend name, sectionName)


@dataclass(frozen=True, slots=True)
class PolicyTLS:
    """The TLS a policy asks for; ``problem`` set means it cannot be honoured (answer 500)."""

    policy: str  # "<namespace>/<name>"
    sni: str
    ca: str | None
    subject_alt_names: tuple[ir.SubjectAltName, ...]
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class PolicyTable:
    winners: dict[Target, PolicyTLS]

    def lookup(self, namespace: str, name: str, port: int | None) -> tuple[str | None, PolicyTLS | None]:
        """The policy for a backendRef to Backend ``namespace/name`` with ``port``: the one for
        that port's section if any, else the one without section. Returns (section, policy)."""
        if port is not None and (namespace, name, str(port)) in self.winners:
            return str(port), self.winners[(namespace, name, str(port))]
        return None, self.winners.get((namespace, name, None))


@dataclass(frozen=True, slots=True)
class _Checked:
    tls: PolicyTLS
    accepted: Problem | None  # why the policy is not accepted
    refs: tuple[Problem, ...]  # invalid caCertificateRefs


def translate_policies(index: Index) -> tuple[PolicyTable, list[ObjectStatus]]:
    winners: dict[Target, PolicyTLS] = {}
    statuses: list[ObjectStatus] = []
    for policy in sorted(index.policies.values(), key=lambda p: age_key(p.metadata)):
        checked = _check(index, policy)
        conditions: list[Condition] = []
        for i, ref in enumerate(policy.spec.target_refs):
            conditions += _apply_target(index, policy, ref, i, checked, winners)
        statuses.append(object_status("BackendTLSPolicy", policy, conditions))
    return PolicyTable(winners), statuses


def _apply_target(
    index: Index,
    policy: res.BackendTLSPolicy,
    ref: res.LocalPolicyTargetReferenceWithSectionName,
    i: int,
    checked: _Checked,
    winners: dict[Target, PolicyTLS],
) -> list[Condition]:
    """Claim one target for the policy; its Accepted and ResolvedRefs conditions."""
    namespace = policy.metadata.namespace
    label = f"{ref.kind.lower()}/{namespace}/{ref.name}" + (f"/{ref.section_name}" if ref.section_name else "")
    target = (namespace, ref.name, ref.section_name or None)
    problem = _target_problem(index, ref, target, f"spec.targetRefs[{i}]", label, winners)
    if problem is None:
        winners[target] = checked.tls
    accepted = _accepted_condition(problem or checked.accepted, label)
    return [accepted, _resolved_condition(checked.refs, label, claimed=problem is None)]


def _target_problem(
    index: Index,
    ref: res.LocalPolicyTargetReferenceWithSectionName,
    target: Target,
    where: str,
    label: str,
    winners: dict[Target, PolicyTLS],
) -> Problem | None:
    """Why the policy cannot claim ``target``: not a Backend, no such Backend, or an earlier
    (older, or first by namespace/name) policy already claimed it."""
    if ref.group != res.ENVOY_GROUP or ref.kind != "Backend":
        return Problem(
            "TargetNotFound",
            f"{where}: kind {kind_label(ref.kind, ref.group)} is not supported; target a Backend "
            f"(group {res.ENVOY_GROUP}): Services are not supported in file mode",
        )
    if target[:2] not in index.backends:
        return Problem("TargetNotFound", f"{where}: Backend {target[0]}/{target[1]} not found")
    if target in winners:
        return Problem(
            "Conflicted",
            f"{where}: BackendTLSPolicy {winners[target].policy} already applies to {label} "
            "and takes precedence (older, or first by namespace/name)",
        )
    return None


def _accepted_condition(problem: Problem | None, label: str) -> Condition:
    if problem is None:
        return Condition("Accepted", True, "Accepted", parent=label)
    return Condition("Accepted", False, problem.reason, problem.message, parent=label)


def _resolved_condition(problems: tuple[Problem, ...], label: str, claimed: bool) -> Condition:
    if not problems:
        return Condition("ResolvedRefs", True, "ResolvedRefs", parent=label)
    message = "; ".join(p.message for p in problems) + (". Requests to this backend answer 500" if claimed else "")
    return Condition("ResolvedRefs", False, problems[0].reason, message, parent=label)


def _check(index: Index, policy: res.BackendTLSPolicy) -> _Checked:
    """Validate the policy's ``spec.validation`` once, whatever it targets."""
    validation = policy.spec.validation
    problems: list[Problem] = []
    if problem := hostname_problem(validation.hostname, wildcard=False):
        problems.append(Problem("Invalid", f"spec.validation.hostname: {problem}"))
    sans = _subject_alt_names(validation.subject_alt_names, problems)
    ca, ref_problems = _ca(index, policy, problems)
    accepted = problems[0] if problems else None
    if accepted is None and ref_problems and ca is None:
        accepted = Problem("NoValidCACertificate", "spec.validation.caCertificateRefs: no reference is valid")
    name = f"{policy.metadata.namespace}/{policy.metadata.name}"
    failures = ([accepted] if accepted else []) + ref_problems
    why = f"BackendTLSPolicy {name} cannot be honoured: {'; '.join(p.message for p in failures)}" if failures else None
    return _Checked(PolicyTLS(name, validation.hostname, ca, sans, why), accepted, tuple(ref_problems))


def _subject_alt_names(
    specs: tuple[res.SubjectAltNameSpec, ...], problems: list[Problem]
) -> tuple[ir.SubjectAltName, ...]:
    sans: list[ir.SubjectAltName] = []
    for i, spec in enumerate(specs):
        value = spec.hostname if spec.type == "Hostname" else spec.uri
        other = spec.uri if spec.type == "Hostname" else spec.hostname
        if not value or other:
            field = "hostname" if spec.type == "Hostname" else "uri"
            problems.append(
                Problem(
                    "Invalid",
                    f"spec.validation.subjectAltNames[{i}]: type {spec.type} needs {field} (and only {field})",
                )
            )
            continue
        sans.append(ir.SubjectAltName(spec.type, value))
    return tuple(sans)


def _ca(index: Index, policy: res.BackendTLSPolicy, problems: list[Problem]) -> tuple[str | None, list[Problem]]:
    """The CA (System or a PEM bundle) and the invalid caCertificateRefs."""
    validation = policy.spec.validation
    known, refs = validation.well_known_ca_certificates, validation.ca_certificate_refs
    if known and refs:
        problems.append(
            Problem("Invalid", "spec.validation: set either caCertificateRefs or wellKnownCACertificates, not both")
        )
    elif known and known != SYSTEM_CA:
        problems.append(
            Problem("Invalid", f"spec.validation.wellKnownCACertificates: {known!r} is not supported; use System")
        )
    elif not known and not refs:
        problems.append(
            Problem("NoValidCACertificate", "spec.validation: set caCertificateRefs or wellKnownCACertificates: System")
        )
    if known:
        return SYSTEM_CA, []
    return resolve_ca_refs(index, policy.metadata.namespace, refs, "spec.validation.caCertificateRefs")
