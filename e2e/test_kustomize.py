"""The kustomize bases as a platform engineer uses them: `kubectl apply -k` installs a working
operator, a sample SplitService reconciles, and the documented uninstall keeps the CRDs.

The install runs manifests/namespaced (the operator watches only its own namespace) through an
overlay that moves it into the test's namespace: a cluster-wide operator would also reconcile
other tests' SplitServices. The data plane is the stand-in image of operator_lib (see chart_lib).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_lib import (
    apply_service,
    can_i,
    crds_exist,
    delete_service,
    deployment_ready,
    helm,
    load_standin,
    model_dir,
    operator_image,
    operator_log,
    pod_states,
    sample_service,
    service_ready,
)
from operator_lib import ROOT, install_crds, kubectl, wait_for

from splitserve.operator import rbac
from splitserve.operator.kube import Kube, load_config

pytestmark = pytest.mark.cluster
MANIFESTS = ROOT / "manifests"
OPERATOR_SELECTOR = "app.kubernetes.io/name=splitserve-operator"


@pytest.fixture(scope="module")
def kubeconfig(cluster: Any) -> str:
    return str(cluster.kubeconfig)


def build(kubeconfig: str, path: Path) -> list[dict[str, Any]]:
    out = kubectl(kubeconfig, "kustomize", str(path))
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def by_kind(docs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        found.setdefault(doc["kind"], []).append(doc)
    return found


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = by_kind(docs)["Deployment"]
    found: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return found


def test_default_base_installs_a_cluster_wide_operator(kubeconfig: str) -> None:
    kinds = by_kind(build(kubeconfig, MANIFESTS))
    assert sorted(kinds) == ["ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                             "Deployment", "Namespace", "Service", "ServiceAccount"]
    assert len(kinds["CustomResourceDefinition"]) == 2
    assert kinds["ClusterRole"][0]["rules"] == rbac.rules()
    for kind in ("Deployment", "Service", "ServiceAccount"):
        assert kinds[kind][0]["metadata"]["namespace"] == "splitserve-system"
    args = container(build(kubeconfig, MANIFESTS))["args"]
    assert not [a for a in args if a.startswith("--namespace")]


def test_namespaced_base_watches_its_own_namespace(kubeconfig: str) -> None:
    docs = build(kubeconfig, MANIFESTS / "namespaced")
    kinds = by_kind(docs)
    assert kinds["ClusterRole"][0]["rules"] == rbac.rules(cluster_scoped=True)
    assert kinds["Role"][0]["rules"] == rbac.rules(cluster_scoped=False)
    main = container(docs)
    assert "--namespace=$(POD_NAMESPACE)" in main["args"]
    env = {e["name"]: e for e in main["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"


def test_operator_deployment_is_the_charts(kubeconfig: str) -> None:
    """The kustomize Deployment is hand-written; it must stay the one the chart renders."""
    chart = [d for d in yaml.safe_load_all(helm(
        kubeconfig, "template", "rel", str(ROOT / "charts" / "splitserve")).stdout) if d]
    ours, theirs = container(build(kubeconfig, MANIFESTS)), container(chart)
    for key in ("args", "ports", "startupProbe", "livenessProbe", "readinessProbe",
                "resources", "securityContext", "volumeMounts"):
        assert ours[key] == theirs[key], key
    pod = by_kind(build(kubeconfig, MANIFESTS))["Deployment"][0]["spec"]["template"]["spec"]
    chart_pod = by_kind(chart)["Deployment"][0]["spec"]["template"]["spec"]
    for key in ("securityContext", "volumes", "automountServiceAccountToken"):
        assert pod[key] == chart_pod[key], key
    assert ours["image"].rsplit(":", 1)[1] == theirs["image"].rsplit(":", 1)[1]


def overlay(path: Path, namespace: str, image: tuple[str, str], base: str = "namespaced") -> Path:
    """What a user writes to install a base (manifests/namespaced by default) into their own
    namespace."""
    path.mkdir(parents=True, exist_ok=True)
    repository, tag = image
    (path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "namespace": namespace,
        "nameSuffix": f"-{namespace}",  # cluster-wide names must not collide
        "resources": [os.path.relpath(MANIFESTS / base, path)],
        "images": [{"name": "splitserve/operator", "newName": repository, "newTag": tag}],
        "patches": [{"target": {"kind": "Deployment"}, "patch": yaml.safe_dump([
            {"op": "replace", "path": "/spec/template/spec/containers/0/imagePullPolicy",
             "value": "Never"},
            {"op": "replace", "path": "/spec/template/spec/containers/0/resources/requests/cpu",
             "value": "10m"}])}],
    }))
    return path


@pytest.mark.parametrize("base", ["", "namespaced"])
def test_overlay_is_accepted_by_the_api_server(cluster: Any, kubeconfig: str, namespace: str,
                                               tmp_path: Path, base: str) -> None:
    path = overlay(tmp_path / "overlay", namespace, ("splitserve/operator", "dry"), base)
    out = kubectl(kubeconfig, "apply", "--dry-run=server", "-k", str(path), check=False)
    assert out.returncode == 0, out.stderr
    assert f"deployment.apps/splitserve-operator-{namespace}" in out.stdout


def test_apply_k_installs_a_working_operator(cluster: Any, kubeconfig: str, namespace: str,
                                            tmp_path: Path) -> None:
    image = operator_image(cluster)
    install_crds(kubeconfig)  # server-side first, so `apply -k` finds them Established
    load_standin(cluster, tmp_path / "standin")
    kube = Kube(load_config(kubeconfig))
    name = f"splitserve-operator-{namespace}"
    path = overlay(tmp_path / "overlay", namespace, image)
    try:
        kubectl(kubeconfig, "apply", "-k", str(path))
        deployment_ready(kube, namespace, name)
        account = f"system:serviceaccount:{namespace}:{name}"
        assert can_i(kubeconfig, account, "create", "deployments", "-n", namespace)
        assert not can_i(kubeconfig, account, "create", "deployments", "-n", "default")
        assert not can_i(kubeconfig, account, "*", "*", "--all-namespaces")

        apply_service(kubeconfig, namespace, sample_service("tiny", model_dir(tmp_path / "m")))
        service_ready(kube, namespace, "tiny",
                      diagnose=lambda: operator_log(kubeconfig, namespace, name))
        assert len(pod_states(kube, namespace, "tiny")) == 3
        delete_service(kube, kubeconfig, namespace, "tiny")
    finally:
        # the documented uninstall: the operator's objects only, never the CRDs
        kubectl(kubeconfig, "delete", "-k", str(path), "-l", OPERATOR_SELECTOR,
                "--ignore-not-found", "--wait=false")
        kube.close()

    def gone() -> bool:
        left = kubectl(kubeconfig, "get", "-n", namespace, "deployment,serviceaccount,service,"
                       "role,rolebinding", "-l", OPERATOR_SELECTOR, "-o", "name").stdout.split()
        left += kubectl(kubeconfig, "get", "clusterrole,clusterrolebinding", "-o", "name",
                        "--field-selector", f"metadata.name={name}").stdout.split()
        return not left

    wait_for("the operator's objects removed", gone, timeout=120)
    assert crds_exist(kubeconfig)
    assert kubectl(kubeconfig, "get", "namespace", namespace, check=False).returncode == 0
