"""One level-based reconcile of a SplitService or a SplitPool against the API server.

Steps for a SplitService:
1. validate the spec (the CRD already did; this catches objects stored before a schema change);
2. plan every child (pure);
3. for each pool whose template is about to change, dry-run its rendered Deployment on the API
   server; a rejected template is not applied and marks the service Degraded with the server's
   message;
4. apply each child (compare-then-write: nothing is written when nothing differs);
5. observe pools, Deployments, pods and events, and compute the status (pure).
Status is computed even when a step fails, so the service always says what is wrong.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from splitserve.api.names import LABEL_SERVICE, ConditionType, Reason, Role
from splitserve.operator import applier
from splitserve.operator.kube import Kube, KubeError
from splitserve.operator.planner import (
    Observed,
    naming,
    plan_pool,
    plan_service,
    pool_status,
    service_status,
)
from splitserve.operator.planner.merge import differences
from splitserve.operator.planner.service_plan import retired_children
from splitserve.operator.planner.status import merge_conditions

PLACEHOLDER_UID = "00000000-0000-0000-0000-000000000000"


@dataclass
class Note:
    """A Kubernetes event to post on the SplitService."""

    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass
class Outcome:
    status: dict[str, Any]
    notes: list[Note] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@dataclass
class TemplateCache:
    """Dry-run verdicts by (namespace, pool name) → (spec hash, message or "")."""

    verdicts: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _invalid_status(obj: dict[str, Any], message: str, now: str) -> dict[str, Any]:
    generation = obj.get("metadata", {}).get("generation")
    conditions = [
        {"type": ConditionType.READY.value, "status": "False", "reason": "InvalidSpec",
         "message": message, "observedGeneration": generation},
        {"type": ConditionType.DEGRADED.value, "status": "True", "reason": "InvalidSpec",
         "message": message, "observedGeneration": generation},
    ]
    previous = obj.get("status") or {}
    return {**previous, "observedGeneration": generation,
            "conditions": merge_conditions(previous.get("conditions", []), conditions, now)}


def validate_template(kube: Kube, pool: dict[str, Any], observed: dict[str, Any] | None,
                      cache: TemplateCache) -> str:
    """"" when the pool's rendered Deployment is acceptable, else the API server's message."""
    meta = pool["metadata"]
    key = (meta["namespace"], meta["name"])
    digest = applier.spec_hash(pool)
    cached = cache.verdicts.get(key)
    if cached and cached[0] == digest:
        return cached[1]
    candidate = copy.deepcopy(pool)
    candidate["metadata"]["uid"] = (observed or {}).get("metadata", {}).get("uid",
                                                                            PLACEHOLDER_UID)
    try:
        deployment = plan_pool(candidate)
        deployment["metadata"]["name"] = f"{meta['name']}-validate"
        kube.create(deployment, dry_run=True)
        verdict = ""
    except ValueError as exc:
        verdict = str(exc)
    except KubeError as exc:
        if not exc.invalid:
            raise
        verdict = exc.message
    cache.verdicts[key] = (digest, verdict)
    return verdict


def reconcile_service(kube: Kube, obj: dict[str, Any], cache: TemplateCache,
                      now: str | None = None) -> Outcome:
    now = now or now_rfc3339()
    namespace = obj["metadata"]["namespace"]
    try:
        desired = plan_service(obj)
    except (ValidationError, ValueError) as exc:
        message = " ".join(str(exc).split())[:1000]
        return Outcome(_invalid_status(obj, message, now),
                       [Note("Warning", "InvalidSpec", message)], [message])
    observed = Observed()
    outcome = Outcome(status={})
    for child in desired:
        cmeta = child["metadata"]
        label = f"{child['kind']}/{cmeta['name']}"
        existing = None
        if child["kind"] == "SplitPool":
            role = child["spec"]["role"]
            existing = kube.get("SplitPool", namespace, cmeta["name"])
            if existing is None or applier.needs_write(applier.with_hash(child), existing):
                verdict = validate_template(kube, child, existing, cache)
                if verdict:
                    observed.template_errors[role] = verdict
                    continue
        try:
            result = applier.apply(kube, child)
        except (KubeError, applier.NotOwnedError) as exc:
            outcome.errors.append(f"{label}: {exc}")
            observed.missing.append(label)
            continue
        if result != "unchanged":
            outcome.notes.append(Note("Normal", result.capitalize(), f"{result} {label}"))
    uid = obj["metadata"].get("uid", "")
    for kind, child_name in retired_children(obj):
        try:
            if uid and applier.remove(kube, kind, namespace, child_name, uid):
                outcome.notes.append(Note("Normal", "Deleted", f"deleted {kind}/{child_name}"))
        except KubeError as exc:
            outcome.errors.append(f"{kind}/{child_name}: {exc}")
    observe(kube, obj, observed)
    outcome.status = service_status(obj, observed, now)
    return outcome


def observe(kube: Kube, obj: dict[str, Any], observed: Observed) -> None:
    """Reads what the status is computed from (reads only)."""
    meta = obj["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    for role in (Role.PREFILL, Role.DECODE):
        observed.pools[role] = kube.get("SplitPool", namespace, naming.pool_name(name, role))
        observed.deployments[role] = kube.get("Deployment", namespace,
                                              naming.pool_name(name, role))
    observed.deployments[Role.ROUTER] = kube.get("Deployment", namespace,
                                                 naming.router_name(name))
    observed.router_service = kube.get("Service", namespace, name)
    observed.pods = kube.list("Pod", namespace, label_selector=f"{LABEL_SERVICE}={name}")
    pending = {p["metadata"]["name"] for p in observed.pods
               if p.get("status", {}).get("phase") == "Pending"}
    if pending:
        events = kube.list("Event", namespace,
                           field_selector="involvedObject.kind=Pod,type=Warning")
        observed.events = [e for e in events
                           if e.get("involvedObject", {}).get("name") in pending]


def reconcile_pool(kube: Kube, obj: dict[str, Any], now: str | None = None) -> Outcome:
    """SplitPool → its Deployment, then the pool's status (scale subresource fields)."""
    now = now or now_rfc3339()
    meta = obj["metadata"]
    outcome = Outcome(status={})
    try:
        deployment = plan_pool(obj)
    except (ValidationError, ValueError) as exc:
        message = " ".join(str(exc).split())[:1000]
        outcome.errors.append(message)
        deployment = None
    if deployment is not None:
        try:
            result = applier.apply(kube, deployment)
            if result != "unchanged":
                outcome.notes.append(Note("Normal", result.capitalize(),
                                          f"{result} Deployment/{meta['name']}"))
        except (KubeError, applier.NotOwnedError) as exc:
            outcome.errors.append(f"Deployment/{meta['name']}: {exc}")
    observed = kube.get("Deployment", meta["namespace"], meta["name"])
    status = pool_status(obj, observed)
    previous = (obj.get("status") or {}).get("conditions", [])
    status["conditions"] = merge_conditions(previous, status["conditions"], now)
    outcome.status = status
    return outcome


def status_patch(new: dict[str, Any], old: dict[str, Any] | None,
                 owned_elsewhere: tuple[str, ...] = ()) -> dict[str, Any]:
    """The status fields to write: empty when the stored status already says the same."""
    mine = {k: v for k, v in new.items() if k not in owned_elsewhere}
    old = old or {}
    changed = {k: v for k, v in mine.items()
               if differences(v, old.get(k)) or (isinstance(v, list) and
                                                 len(v) != len(old.get(k) or []))}
    return changed


def degraded_note(old: dict[str, Any] | None, new: dict[str, Any]) -> Note | None:
    """A Warning event when the service becomes Degraded or its reason changes."""
    def find(status: dict[str, Any] | None) -> dict[str, Any]:
        for cond in (status or {}).get("conditions", []):
            if cond.get("type") == ConditionType.DEGRADED.value:
                found: dict[str, Any] = cond
                return found
        return {}

    before, after = find(old), find(new)
    if after.get("status") == "True" and (before.get("status") != "True"
                                          or before.get("reason") != after.get("reason")):
        return Note("Warning", str(after.get("reason", Reason.RECONCILE_FAILED.value)),
                    str(after.get("message", "")))
    if after.get("status") == "False" and before.get("status") == "True":
        return Note("Normal", "Recovered", "no problem observed any more")
    return None
