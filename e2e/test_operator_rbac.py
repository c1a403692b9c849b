"""The operator runs with nothing but the least-privilege RBAC of manifests/rbac (no wildcards)
and still reconciles, repairs drift and reports status, without a single forbidden request.

An audit checks the operator's and the router's ServiceAccounts against tables of allowed and
denied actions with `kubectl auth can-i` (Secrets included: neither account reads any)."""

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


OPERATOR = "system:serviceaccount:splitserve-system:splitserve-operator"
NS, ALL, OTHER = "-n NS", "--all-namespaces", "-n default"
# (verb, resource, where): what the operator does, with the resources it never touches beside
OPERATOR_ALLOWED = [
    ("watch", "splitservices.splitserve.io", ALL), ("patch", "splitservices.splitserve.io", NS),
    ("patch", "splitservices.splitserve.io/status", NS),
    ("create", "splitpools.splitserve.io", NS), ("delete", "splitpools.splitserve.io", NS),
    ("patch", "splitpools.splitserve.io/scale", NS),  # the autoscaler's only replica write
    ("patch", "splitpools.splitserve.io/status", NS),
    ("create", "deployments.apps", NS), ("delete", "deployments.apps", NS),
    ("create", "services", NS), ("update", "configmaps", NS), ("get", "configmaps", NS),
    ("create", "serviceaccounts", NS), ("create", "poddisruptionbudgets.policy", NS),
    ("create", "roles.rbac.authorization.k8s.io", NS),
    ("create", "rolebindings.rbac.authorization.k8s.io", NS),
    ("list", "endpointslices.discovery.k8s.io", NS),  # granted onward to each router
    ("list", "pods", NS), ("create", "events", NS), ("list", "events", NS),
    ("watch", "customresourcedefinitions.apiextensions.k8s.io", ALL),
    ("watch", "namespaces", ALL),
]
OPERATOR_DENIED = [
    ("get", "secrets", NS), ("list", "secrets", NS), ("list", "secrets", ALL),
    ("watch", "secrets", ALL), ("create", "secrets", NS),
    ("create", "pods", NS), ("delete", "pods", NS), ("create", "pods/exec", NS),
    ("get", "pods/log", NS), ("update", "splitpools.splitserve.io/scale", NS),
    ("update", "splitservices.splitserve.io", NS), ("delete", "splitservices.splitserve.io", NS),
    ("create", "serviceaccounts/token", NS), ("escalate", "roles.rbac.authorization.k8s.io", NS),
    ("bind", "clusterroles.rbac.authorization.k8s.io", ALL),
    ("create", "clusterroles.rbac.authorization.k8s.io", ALL),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io", ALL),
    ("create", "customresourcedefinitions.apiextensions.k8s.io", ALL),
    ("delete", "namespaces", ALL), ("create", "namespaces", ALL), ("patch", "nodes", ALL),
    ("create", "persistentvolumes", ALL), ("patch", "endpointslices.discovery.k8s.io", NS),
    ("impersonate", "serviceaccounts", NS), ("create", "mutatingwebhookconfigurations"
                                                       ".admissionregistration.k8s.io", ALL),
]
# the router's own account, rendered by the operator: it only discovers workers
ROUTER_ALLOWED = [("list", "endpointslices.discovery.k8s.io", NS),
                  ("watch", "endpointslices.discovery.k8s.io", NS)]
ROUTER_DENIED = [
    ("list", "endpointslices.discovery.k8s.io", ALL), ("list", "endpointslices.discovery.k8s.io",
                                                       OTHER),
    ("get", "endpointslices.discovery.k8s.io", NS), ("patch", "endpointslices.discovery.k8s.io",
                                                     NS),
    ("get", "secrets", NS), ("list", "secrets", NS), ("list", "secrets", ALL),
    ("watch", "secrets", ALL), ("get", "configmaps", NS), ("list", "pods", NS),
    ("create", "pods", NS), ("list", "services", NS), ("list", "endpoints", NS),
    ("get", "splitservices.splitserve.io", NS), ("patch", "splitpools.splitserve.io/scale", NS),
    ("create", "roles.rbac.authorization.k8s.io", NS), ("create", "events", NS),
    ("create", "serviceaccounts/token", NS), ("list", "namespaces", ALL),
]


def audit(kubeconfig: str, who: str, namespace: str,
          table: list[tuple[str, str, str]]) -> dict[tuple[str, str, str], str]:
    """`kubectl auth can-i` of every row as `who` (the API server adds the account's groups
    to the impersonated user): row -> "yes" or "no"."""
    answers = {}
    for verb, resource, where in table:
        scope = where.replace("NS", namespace).split()
        base, _, sub = resource.partition("/")
        extra = [f"--subresource={sub}"] if sub else []
        out = kubectl(kubeconfig, "auth", "can-i", verb, base, *extra, *scope, f"--as={who}",
                      check=False)
        # a "no" for a resource the server does not serve would prove nothing
        assert "doesn't have a resource type" not in out.stderr, (resource, out.stderr)
        answers[(verb, resource, where)] = out.stdout.strip() or out.stderr.strip()
    return answers


def test_operator_account_can_do_exactly_what_it_needs(
        kubeconfig: str, restricted: tuple[OperatorProcess, str]) -> None:
    """The shipped ClusterRole, bound to the operator's ServiceAccount: every action of the
    allowed table, none of the denied one (no Secrets anywhere)."""
    _, namespace = restricted
    kubectl(kubeconfig, "apply", "-f", str(RBAC))  # the cluster is shared: this tree's version
    answers = audit(kubeconfig, OPERATOR, namespace, OPERATOR_ALLOWED + OPERATOR_DENIED)
    wrong = {row: got for row, got in answers.items()
             if got != ("yes" if row in OPERATOR_ALLOWED else "no")}
    assert not wrong, wrong


def test_router_account_can_only_discover_workers(
        kubeconfig: str, restricted: tuple[OperatorProcess, str]) -> None:
    """The ServiceAccount, Role and RoleBinding the operator renders for a router: list and
    watch EndpointSlices in its own namespace, nothing else."""
    _, namespace = restricted
    kube = Kube(load_config(kubeconfig))
    try:
        wait_for("the router's account, Role and RoleBinding", lambda: all(
            kube.get(kind, namespace, "rbac-router")
            for kind in ("ServiceAccount", "Role", "RoleBinding")), timeout=120)
    finally:
        kube.close()
    router = f"system:serviceaccount:{namespace}:rbac-router"
    answers = audit(kubeconfig, router, namespace, ROUTER_ALLOWED + ROUTER_DENIED)
    wrong = {row: got for row, got in answers.items()
             if got != ("yes" if row in ROUTER_ALLOWED else "no")}
    assert not wrong, wrong
