"""kopf handlers: every trigger leads to one idempotent reconcile.

- create/update/resume of a SplitService or SplitPool, and a periodic timer, reconcile it;
- events on objects the operator owns (a deleted or edited child) reconcile their SplitService
  (and, for pool Deployments, their SplitPool), so drift is repaired within seconds;
- a timer runs the built-in autoscaler of every service with `autoscaling.enabled`
  (`splitserve.operator.autoscaling`); it writes under the same per-service lock as the
  reconcile, whose status carries the autoscaler's latest conditions.
Status is patched on the `/status` subresource inside the object's lock and only when it
changed; kopf keeps its own progress in
annotations (the schema prunes unknown status fields) and posts no events of its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf

from splitserve.api.base import GROUP, VERSION
from splitserve.api.names import LABEL_MANAGED_BY, LABEL_SERVICE, MANAGER, Role
from splitserve.operator import autoscaling, events
from splitserve.operator.kube import Kube, KubeError, load_config
from splitserve.operator.planner import naming
from splitserve.operator.reconcile import (
    TemplateCache,
    degraded_note,
    reconcile_pool,
    reconcile_service,
    status_patch,
)
from splitserve.operator.runtime import OperatorOptions, Runtime

SERVICES = "splitservices"
POOLS = "splitpools"
OWNED = {LABEL_MANAGED_BY: MANAGER}
AUTOSCALER_FIELDS = ("lastScalingDecisions",)
log = logging.getLogger(__name__)


def plain(value: Any) -> Any:
    """kopf bodies as plain, independent dicts and lists."""
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def runtime(memo: kopf.Memo) -> Runtime:
    found: Runtime = memo["runtime"]
    return found


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration")
    settings.posting.enabled = False
    # after its own patch kopf waits for the watch to deliver the patched version before it
    # handles the object again; under load the watch lags by more than kopf's default 5 s, and a
    # stale event (without kopf's last-handled annotation) is handled again and patched again
    settings.persistence.consistency_timeout = 60
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    settings.batching.error_delays = [1, 2, 5, 10, 30]
    options: OperatorOptions = memo["options"]
    # reconciles run their blocking API calls in threads; the API server is close, so more
    # threads than cores keep latency-bound work moving
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=16))
    rt = Runtime(options, Kube(load_config(options.kubeconfig)), TemplateCache())
    if options.metrics_port:
        rt.telemetry.serve(options.metrics_port)
    memo["runtime"] = rt


@kopf.on.login()
async def login(memo: kopf.Memo, **_: Any) -> kopf.ConnectionInfo:
    """kopf connects with exactly the configuration the operator's own client uses."""
    options: OperatorOptions = memo["options"]
    cfg = await asyncio.to_thread(load_config, options.kubeconfig)
    token = (cfg.api_key or {}).get("authorization") or (cfg.api_key or {}).get("BearerToken")
    scheme = None
    if token and " " in token:
        scheme, token = token.split(" ", 1)
    return kopf.ConnectionInfo(
        server=cfg.host,
        ca_path=cfg.ssl_ca_cert,
        insecure=not cfg.verify_ssl,
        scheme=scheme or ("Bearer" if token else None),
        token=token,
        certificate_path=cfg.cert_file,
        private_key_path=cfg.key_file,
        username=cfg.username or None,
        password=cfg.password or None,
    )


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    if "runtime" in memo:
        runtime(memo).kube.close()


async def _reconcile_service(rt: Runtime, obj: dict[str, Any],
                             patch: kopf.Patch | None) -> None:
    meta = obj["metadata"]
    if meta.get("deletionTimestamp"):
        return  # the garbage collector removes the children; nothing left to converge
    started, writes = time.monotonic(), dict(rt.kube.writes)
    async with rt.lock(meta["namespace"], meta["name"]):
        outcome = await asyncio.to_thread(reconcile_service, rt.kube, obj, rt.templates)
        outcome.status = autoscaling.reconciled_status(rt, obj, outcome.status)
        changes = status_patch(outcome.status, obj.get("status"), AUTOSCALER_FIELDS)
        notes = list(outcome.notes)
        note = degraded_note(obj.get("status"), outcome.status)
        if note is not None:
            notes.append(note)
        if changes:
            if patch is not None:
                patch.status.update(changes)
            else:
                await asyncio.to_thread(rt.kube.patch, "SplitService", meta["namespace"],
                                        meta["name"], {"status": changes}, "status")
        if notes:
            await asyncio.to_thread(events.post, rt.kube, obj, notes)
    rt.count("SplitService", "error" if outcome.errors else "ok")
    _record(rt, "SplitService", meta, started, writes, outcome.errors)
    for role in ("prefill", "decode"):
        counts = outcome.status.get(role) or {}
        rt.telemetry.pool(meta["namespace"], meta["name"], role,
                          counts.get("desiredReplicas", 0), counts.get("readyReplicas", 0))
    log.info("reconciled SplitService %s/%s: %d status fields %s, %d events, %d errors",
             meta["namespace"], meta["name"], len(changes), sorted(changes), len(notes),
             len(outcome.errors))
    if outcome.errors:
        raise kopf.TemporaryError("; ".join(outcome.errors)[:2000], delay=10)


def _record(rt: Runtime, kind: str, meta: Mapping[str, Any], started: float,
            writes_before: dict[str, int], errors: list[str]) -> None:
    service = meta.get("labels", {}).get(LABEL_SERVICE, meta["name"]) if kind == "SplitPool" \
        else meta["name"]
    reason = "ApiError" if errors else None
    rt.telemetry.reconciled(kind, meta["namespace"], service, time.monotonic() - started, reason)
    for verb, count in rt.kube.writes.items():
        rt.telemetry.wrote(kind, verb, count - writes_before.get(verb, 0))


@kopf.on.create(GROUP, VERSION, SERVICES)
@kopf.on.update(GROUP, VERSION, SERVICES)
@kopf.on.resume(GROUP, VERSION, SERVICES)
async def service_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    # status is written inside the per-object lock (not by kopf after the handler returns),
    # so a child-event reconcile never races a stale status patch
    await _reconcile_service(runtime(memo), plain(body), None)


async def _reconcile_pool(rt: Runtime, obj: dict[str, Any], patch: kopf.Patch | None) -> None:
    meta = obj["metadata"]
    if meta.get("deletionTimestamp"):
        return
    started, writes = time.monotonic(), dict(rt.kube.writes)
    async with rt.lock(meta["namespace"], meta["name"], kind="pool"):
        # read the pool again under its lock: a body taken before waiting (an event's, a
        # timer's) can predate a scale the HPA or the autoscaler made meanwhile, and applying
        # it would set the Deployment back to the old count
        fresh = await asyncio.to_thread(rt.kube.get, "SplitPool", meta["namespace"],
                                        meta["name"])
        if fresh is None or fresh["metadata"].get("deletionTimestamp"):
            return
        outcome = await asyncio.to_thread(reconcile_pool, rt.kube, fresh)
        changes = status_patch(outcome.status, fresh.get("status"))
        if changes:
            if patch is not None:
                patch.status.update(changes)
            else:
                await asyncio.to_thread(rt.kube.patch, "SplitPool", meta["namespace"],
                                        meta["name"], {"status": changes}, "status")
    rt.count("SplitPool", "error" if outcome.errors else "ok")
    _record(rt, "SplitPool", meta, started, writes, outcome.errors)
    if outcome.errors:
        raise kopf.TemporaryError("; ".join(outcome.errors)[:2000], delay=10)


@kopf.on.create(GROUP, VERSION, POOLS)
@kopf.on.update(GROUP, VERSION, POOLS)
@kopf.on.resume(GROUP, VERSION, POOLS)
async def pool_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await _reconcile_pool(runtime(memo), plain(body), None)


async def _child_event(rt: Runtime, event: Mapping[str, Any], body: kopf.Body) -> None:
    """Reconcile the owners of a child that changed or vanished."""
    meta = body.get("metadata", {})
    labels = meta.get("labels", {})
    service, namespace = labels.get(LABEL_SERVICE), meta.get("namespace")
    if not service or not namespace or event.get("type") is None:
        return
    try:
        role = labels.get("splitserve.io/role")
        if body.get("kind") == "Deployment" and role in (Role.PREFILL, Role.DECODE):
            pool_name = naming.pool_name(service, role)
            if rt.enqueue(namespace, pool_name, "pool"):
                async with rt.lock(namespace, pool_name, kind="pool"):
                    rt.dequeue(namespace, pool_name, "pool")
                pool = await asyncio.to_thread(rt.kube.get, "SplitPool", namespace, pool_name)
                if pool is not None:
                    await _reconcile_pool(rt, pool, None)
        if not rt.enqueue(namespace, service):
            return
        async with rt.lock(namespace, service):
            rt.dequeue(namespace, service)
        # read the owner only now, so the reconcile sees everything that happened meanwhile
        owner = await asyncio.to_thread(rt.kube.get, "SplitService", namespace, service)
        if owner is not None and not owner["metadata"].get("deletionTimestamp"):
            await _reconcile_service(rt, owner, None)
    except (KubeError, kopf.TemporaryError) as exc:
        log.warning("reconcile of %s/%s after a child event deferred: %s", namespace, service,
                    exc)


def register_timers(interval: float, autoscaler_tick: float = 5.0) -> None:
    """Periodic re-observation of every service and pool (status from pods, drift of fields a
    watch event does not reveal), and the autoscaler's tick. Registered by `main` with the
    configured intervals."""

    @kopf.timer(GROUP, VERSION, SERVICES, interval=autoscaler_tick,
                initial_delay=autoscaler_tick, field="spec.autoscaling.enabled", value=True,
                id="autoscaler")
    async def autoscaler_timer(name: str, namespace: str | None, body: kopf.Body,
                               memo: kopf.Memo, **_: Any) -> None:
        await autoscaling.tick(runtime(memo), namespace or "", name, plain(body))

    @kopf.timer(GROUP, VERSION, SERVICES, interval=interval, initial_delay=interval / 6,
                id="service-resync")
    async def service_timer(name: str, namespace: str | None, memo: kopf.Memo,
                            **_: Any) -> None:
        rt = runtime(memo)
        # a timer's body can lag behind the watch under load: reconcile what is stored now
        obj = await asyncio.to_thread(rt.kube.get, "SplitService", namespace or "", name)
        if obj is not None:
            await _reconcile_service(rt, obj, None)

    @kopf.timer(GROUP, VERSION, POOLS, interval=interval, initial_delay=interval / 4,
                id="pool-resync")
    async def pool_timer(name: str, namespace: str | None, memo: kopf.Memo,
                         **_: Any) -> None:
        rt = runtime(memo)
        obj = await asyncio.to_thread(rt.kube.get, "SplitPool", namespace or "", name)
        if obj is not None:
            await _reconcile_pool(rt, obj, None)


@kopf.on.event(GROUP, VERSION, SERVICES, id="autoscaler-forget")
async def service_event(event: kopf.RawEvent, name: str, namespace: str | None,
                        memo: kopf.Memo, **_: Any) -> None:
    if event.get("type") == "DELETED" and "runtime" in memo:
        autoscaling.forget(runtime(memo), namespace or "", name)


def _register_child(group: str, version: str, plural: str) -> None:
    @kopf.on.event(group, version, plural, labels=OWNED, id=f"child-{plural}")
    async def child_event(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo,
                          **_: Any) -> None:
        if event.get("type") in ("DELETED", "MODIFIED"):
            await _child_event(runtime(memo), event, body)


for _group, _version, _plural in [
    ("apps", "v1", "deployments"), ("", "v1", "services"), ("", "v1", "configmaps"),
    ("", "v1", "serviceaccounts"), ("policy", "v1", "poddisruptionbudgets"),
    ("networking.k8s.io", "v1", "networkpolicies"),
    ("rbac.authorization.k8s.io", "v1", "roles"),
    ("rbac.authorization.k8s.io", "v1", "rolebindings"), (GROUP, VERSION, POOLS),
]:
    _register_child(_group, _version, _plural)
