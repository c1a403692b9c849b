"""Control-plane scale: N SplitServices applied at once against a real API server.

Most worker pods stay Pending (the node has few GPUs; routers ask for more CPU than the node
has), which is the point: this measures the operator and the API server, not the workers.

Figures: time until every service converged (every child exists, status.observedGeneration ==
generation, conditions say why pods wait), p50/p99 time from apply to all children created,
the operator's peak RSS, API writes (counted by the API server) per reconcile (counted from the
operator's log), and writes per minute in the steady state after convergence.

    PYTHONPATH=operator:worker:e2e python bench/operator_scale.py --kubeconfig PATH \
        [--services 200]

(`e2e` on the path for the shared helpers: the operator process, kubectl, API write counts.)
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
from operator_lib import OperatorProcess, kubectl, operator_kind_writes
from splitserve.operator.kube import Kube, load_config

ROOT = Path(__file__).resolve().parents[1]

KINDS = ["SplitPool", "Deployment", "Service", "ConfigMap", "PodDisruptionBudget",
         "ServiceAccount", "Role", "RoleBinding"]
EXPECTED = {"SplitPool": 2, "Deployment": 3, "Service": 3, "ConfigMap": 1,
            "PodDisruptionBudget": 3, "ServiceAccount": 1, "Role": 1, "RoleBinding": 1}


def service(name: str, namespace: str) -> dict[str, Any]:
    tiny = {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}}
    return {
        "apiVersion": "splitserve.io/v1alpha1", "kind": "SplitService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"name": "tiny", "source": {"hostPath": "/nonexistent-bench-model"}},
            "image": "docker.io/library/splitserve-standin:e2e", "imagePullPolicy": "Never",
            "prefill": {"replicas": 1, "resources": {"gpus": 1, **tiny}},
            "decode": {"replicas": 1, "resources": {"gpus": 1, **tiny}},
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
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/operator_scale.json")
    args = parser.parse_args(argv)

    kube = Kube(load_config(args.kubeconfig))
    kubectl(args.kubeconfig, "apply", "--server-side", "--force-conflicts", "-f",
            str(ROOT / "manifests/crds"))
    namespace = f"scale-{uuid.uuid4().hex[:6]}"
    kubectl(args.kubeconfig, "create", "namespace", namespace)
    workdir = Path(tempfile.mkdtemp(prefix="operator-scale-"))
    operator = OperatorProcess(args.kubeconfig, workdir / "operator.log")
    operator.start()
    names = [f"svc-{i:03d}" for i in range(args.services)]
    peak = 0.0
    try:
        writes_before = operator_kind_writes(kube)
        docs = "---\n".join(yaml.safe_dump(service(n, namespace)) for n in names)
        (workdir / "services.yaml").write_text(docs)
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
            if not operator.alive():
                raise SystemExit(f"operator exited:\n{operator.log()}")
            time.sleep(1)
        if converged_at is None:
            raise SystemExit(f"not converged within {args.timeout}s "
                             f"({len(created_at)}/{len(names)} with all children)")
        converge_writes = operator_kind_writes(kube) - writes_before
        reconciles = operator.log_path.read_text().count("reconciled SplitService")
        # converged services may still report pods progressing; the steady state starts once
        # the API server has seen no write on the operator's kinds for a whole quiet period
        settle_deadline = time.monotonic() + args.timeout
        last, quiet_since = operator_kind_writes(kube), time.monotonic()
        while time.monotonic() - quiet_since < args.quiet:
            if time.monotonic() > settle_deadline:
                raise SystemExit("writes never stopped after convergence")
            time.sleep(2)
            now_writes = operator_kind_writes(kube)
            if now_writes != last:
                last, quiet_since = now_writes, time.monotonic()
        settled = time.monotonic() - t0
        steady_start = operator_kind_writes(kube)
        s0 = time.monotonic()
        while time.monotonic() - s0 < args.steady_window:
            peak = max(peak, rss_mb(operator.pid))
            time.sleep(2)
        steady = operator_kind_writes(kube) - steady_start
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
