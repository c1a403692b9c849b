"""Control-plane scale: N SplitServices applied at once against a real API server.

Most worker pods stay Pending (the node has few GPUs; routers ask for more CPU than the node
has), which is the point: this measures the operator and the API server, not the workers.

Figures: time until every service converged (every child exists, status.observedGeneration ==
generation, conditions say why pods wait), p50/p99 time from apply to all children created,
the operator's peak RSS, API writes per reconcile (writes from the API server's audit log, by the
operator's own ServiceAccount; reconciles from the operator's log), and writes per minute in the
steady state after convergence. The operator watches only the bench's namespace, with the shipped
RBAC bound there, so other users of the cluster neither disturb nor inflate the figures.

    PYTHONPATH=operator:worker:e2e python bench/operator_scale.py --kubeconfig PATH \
        [--services 200] [--gpus 1]

(`e2e` on the path for the shared helpers: the operator process, kubectl, the audit log.)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import yaml
from audit_log import AuditLog, operator_identity, wait_quiet
from operator_lib import OperatorProcess, create_namespace, kubectl

from splitserve.operator.kube import Kube, load_config

ROOT = Path(__file__).resolve().parents[1]

KINDS = ["SplitPool", "Deployment", "Service", "ConfigMap", "PodDisruptionBudget",
         "ServiceAccount", "Role", "RoleBinding"]
EXPECTED = {"SplitPool": 2, "Deployment": 3, "Service": 3, "ConfigMap": 1,
            "PodDisruptionBudget": 3, "ServiceAccount": 1, "Role": 1, "RoleBinding": 1}


def service(name: str, namespace: str, gpus: int) -> dict[str, Any]:
    tiny = {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}}
    return {
        "apiVersion": "splitserve.io/v1alpha1", "kind": "SplitService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"name": "tiny", "source": {"hostPath": "/nonexistent-bench-model"}},
            "image": "docker.io/library/splitserve-standin:e2e", "imagePullPolicy": "Never",
            "prefill": {"replicas": 1, "resources": {"gpus": gpus, **tiny}},
            "decode": {"replicas": 1, "resources": {"gpus": gpus, **tiny}},
            # routers ask for more CPU than the node has, so they wait too (a capacity reason)
            "router": {"replicas": 1, "resources": {"requests": {"cpu": "64", "memory": "16Mi"}}},
        },
    }


def children_by_service(kube: Kube, namespace: str) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for kind in KINDS:
        for obj in kube.list(kind, namespace,
                             label_selector="app.kubernetes.io/managed-by=splitserve-operator"):
            owner = obj["metadata"].get("labels", {}).get("splitserve.io/service", "")
            counts.setdefault(owner, {}).setdefault(kind, 0)
            counts[owner][kind] += 1
    return counts


def rss_mb(pid: int) -> float:
    try:
        proc = psutil.Process(pid)
        return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20
    except psutil.NoSuchProcess:
        return 0.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--services", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--steady-window", type=float, default=60)
    parser.add_argument("--quiet", type=float, default=20,
                        help="seconds without writes that start the steady-state window")
    parser.add_argument("--gpus", type=int, default=1,
                        help="GPUs per worker pod (more than the node has: no pod schedules)")
    parser.add_argument("--verbose", action="store_true", help="the operator logs at DEBUG")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/operator_scale.json")
    args = parser.parse_args(argv)

    kube = Kube(load_config(args.kubeconfig))
    audit = AuditLog()
    if not audit.available():
        raise SystemExit(f"no audit log at {audit.path}: run against e2e/cluster (up.sh)")
    kubectl(args.kubeconfig, "apply", "--server-side", "--force-conflicts", "-f",
            str(ROOT / "manifests/crds"))
    namespace = f"e2e-scale-{uuid.uuid4().hex[:6]}"
    create_namespace(args.kubeconfig, namespace)
    workdir = Path(tempfile.mkdtemp(prefix="operator-scale-"))
    identity, user = operator_identity(args.kubeconfig, namespace, workdir)
    operator = OperatorProcess(identity, workdir / "operator.log",
                               ("--namespace", namespace, *(["--verbose"] if args.verbose else [])))
    operator.start()
    names = [f"svc-{i:03d}" for i in range(args.services)]
    peak = 0.0

    def alive() -> None:
        if not operator.alive():
            raise SystemExit(f"operator exited:\n{operator.log()}")

    try:
        docs = "---\n".join(yaml.safe_dump(service(n, namespace, args.gpus)) for n in names)
        (workdir / "services.yaml").write_text(docs)
        started = audit.flush(args.kubeconfig, namespace)
        t0 = time.monotonic()
        kubectl(args.kubeconfig, "apply", "--server-side", "-f", str(workdir / "services.yaml"))
        applied = time.monotonic() - t0
        created_at: dict[str, float] = {}
        converged_at: float | None = None
        while time.monotonic() - t0 < args.timeout:
            peak = max(peak, rss_mb(operator.pid))
            now = time.monotonic() - t0
            counts = children_by_service(kube, namespace)
            for name in names:
                if name not in created_at and counts.get(name) == EXPECTED:
                    created_at[name] = now
            if len(created_at) == len(names):
                svcs = kube.list("SplitService", namespace)
                done = [s for s in svcs if s.get("status", {}).get("observedGeneration")
                        == s["metadata"]["generation"] and any(
                            c.get("type") == "Ready" and c.get("reason")
                            for c in s["status"].get("conditions", []))]
                if len(done) == len(names):
                    converged_at = now
                    break
            alive()
            time.sleep(1)
        if converged_at is None:
            raise SystemExit(f"not converged within {args.timeout}s "
                             f"({len(created_at)}/{len(names)} with all children)")
        converged = audit.flush(args.kubeconfig, namespace)
        converge_writes = len(audit.writes(since=started, until=converged, user=user))
        reconciles = operator.log_path.read_text().count("reconciled SplitService")
        # converged services may still report pods progressing; the steady state starts once
        # the operator has written nothing for a whole quiet period
        steady_from = wait_quiet(audit, user, args.quiet, args.timeout, alive)
        settled = time.monotonic() - t0
        s0 = time.monotonic()
        while time.monotonic() - s0 < args.steady_window:
            peak = max(peak, rss_mb(operator.pid))
            alive()
            time.sleep(2)  # sampling period of a fixed measurement window
        steady_to = audit.flush(args.kubeconfig, namespace)
        steady_writes = audit.writes(since=steady_from, until=steady_to, user=user)
        steady = len(steady_writes)
        for write in steady_writes[:20]:
            print("steady-state write:", write.describe(), file=sys.stderr)
        reasons: dict[str, int] = {}
        for svc in kube.list("SplitService", namespace):
            for cond in svc["status"]["conditions"]:
                if cond["type"] == "Ready":
                    reasons[cond["reason"]] = reasons.get(cond["reason"], 0) + 1
        latencies = [created_at[n] - applied for n in names]
        result = {
            "services": len(names),
            "converge_seconds": round(converged_at, 1),
            "apply_seconds": round(applied, 1),
            "settled_seconds": round(settled, 1),
            "apply_to_children_p50_s": round(max(0.0, percentile(latencies, 0.5)), 2),
            "apply_to_children_p99_s": round(max(0.0, percentile(latencies, 0.99)), 2),
            "operator_peak_rss_mb": round(peak, 1),
            "api_writes_during_convergence": converge_writes,
            "service_reconciles": reconciles,
            "api_writes_per_reconcile": round(converge_writes / max(1, reconciles), 2),
            "steady_state_writes_per_min": round(steady * 60 / args.steady_window, 2),
            "ready_reasons": reasons,
            "gpus_per_worker_pod": args.gpus,
            "writes_counted_by": "the API server's audit log, user " + user,
            "command": "PYTHONPATH=operator:worker:e2e python bench/operator_scale.py "
                       f"--kubeconfig KUBECONFIG --services {args.services} --gpus {args.gpus}",
        }
        print(json.dumps(result, indent=2))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    finally:
        operator.stop()
        kubectl(args.kubeconfig, "delete", "namespace", namespace, "--wait=false", check=False)
        kube.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
