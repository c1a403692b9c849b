"""The operator runs with nothing but the least-privilege RBAC of manifests/rbac (no wildcards)
and still reconciles, repairs drift and reports status, without a single forbidden request."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from audit_log import service_account_kubeconfig
from operator_lib import (
    ROOT,
    OperatorProcess,
    create_namespace,
    install_crds,
    kubectl,
    wait_for,
)

from splitserve.operator.kube import Kube, load_config

pytestmark = pytest.mark.cluster
RBAC = ROOT / "manifests" / "rbac" / "operator.yaml"


@pytest.fixture(scope="module")
def kubeconfig(cluster: Any) -> str:
    return str(cluster.kubeconfig)


def test_rbac_has_no_wildcards() -> None:
    for doc in yaml.safe_load_all(RBAC.read_text()):
        for rule in doc.get("rules", []):
            for key in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule.get(key, []), rule


@pytest.fixture(scope="module")
def restricted(kubeconfig: str, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[tuple[OperatorProcess, str]]:
    install_crds(kubeconfig)
    kubectl(kubeconfig, "create", "namespace", "splitserve-system", check=False)
    kubectl(kubeconfig, "apply", "-f", str(RBAC))
    token = kubectl(kubeconfig, "-n", "splitserve-system", "create", "token",
                    "splitserve-operator", "--duration=1h").stdout.strip()
    workdir = tmp_path_factory.mktemp("rbac")
    config = service_account_kubeconfig(kubeconfig, token, workdir / "operator.kubeconfig")
    namespace = f"ssvc-rbac-{uuid.uuid4().hex[:6]}"
    create_namespace(kubeconfig, namespace)
    operator = OperatorProcess(config, workdir / "operator.log", ("--namespace", namespace))
    operator.start()
    try:
        yield operator, namespace
    finally:
        operator.stop()
        kubectl(kubeconfig, "delete", "namespace", namespace, "--wait=false", check=False)


def test_operator_reconciles_with_least_privilege(kubeconfig: str,
                                                 restricted: tuple[OperatorProcess, str]) -> None:
    operator, namespace = restricted
    kube = Kube(load_config(kubeconfig))
    doc = {"apiVersion": "splitserve.io/v1alpha1", "kind": "SplitService",
           "metadata": {"name": "rbac", "namespace": namespace},
           "spec": {"model": {"name": "tiny", "source": {"hostPath": "/nonexistent"}},
                    "prefill": {"podTemplateOverride": {"spec": {"containers": [
                        {"name": "sidecar"}]}}},
                    "router": {"replicas": 1}}}
    kubectl(kubeconfig, "apply", "--server-side", "-f", "-", stdin=yaml.safe_dump(doc))
    kinds = [("SplitPool", "rbac-decode"), ("Deployment", "rbac-decode"),
             ("Deployment", "rbac-router"), ("Service", "rbac"), ("ConfigMap", "rbac-config"),
             ("PodDisruptionBudget", "rbac-router"), ("Role", "rbac-router"),
             ("RoleBinding", "rbac-router"), ("ServiceAccount", "rbac-router")]
    wait_for("children created by the restricted operator",
             lambda: all(kube.get(k, namespace, n) for k, n in kinds), timeout=120)

    def degraded() -> bool:
        svc = kube.get("SplitService", namespace, "rbac") or {}
        return any(c.get("reason") == "InvalidPodTemplate"
                   for c in svc.get("status", {}).get("conditions", []))

    wait_for("dry-run verdict reported in status", degraded, timeout=120)
    kube.delete("Service", namespace, "rbac")
    wait_for("deleted Service restored", lambda: kube.get("Service", namespace, "rbac"),
             timeout=90)
    log = operator.log_path.read_text()
    assert "is forbidden: user" not in log.lower(), log[-3000:]
    assert operator.alive()
    kube.close()


def test_rbac_allows_what_the_autoscaler_does(kubeconfig: str,
                                             restricted: tuple[OperatorProcess, str]) -> None:
    """The built-in autoscaler reads profiles and pods, writes replicas through the scale
    subresource only, records status and posts events."""
    _, namespace = restricted
    kubectl(kubeconfig, "apply", "-f", str(RBAC))  # the cluster is shared: this tree's version
    who = "system:serviceaccount:splitserve-system:splitserve-operator"
    allowed = [("patch", "splitpools.splitserve.io", "scale"), ("get", "configmaps", ""),
               ("list", "pods", ""), ("create", "events", ""),
               ("patch", "splitservices.splitserve.io", "status")]
    for verb, resource, sub in allowed:
        args = ["auth", "can-i", verb, resource, "-n", namespace, "--as", who]
        out = kubectl(kubeconfig, *args, *(["--subresource", sub] if sub else []), check=False)
        assert out.stdout.strip() == "yes", (verb, resource, sub, out.stdout, out.stderr)
