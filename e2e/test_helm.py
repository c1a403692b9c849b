"""The Helm chart as a platform engineer uses it: lint, render, schema errors, and in the real
cluster install, a SplitService reconciled by the installed operator with the chart's RBAC,
CRD and operator upgrades that restart no pod of a running service, uninstall.

The operator always runs namespace-scoped here, watching only the test's own namespace: a
cluster-wide operator would also reconcile other tests' SplitServices. The CRDs are shared by
everything on the cluster, so they are applied server-side and never deleted. The data plane
is the stand-in image of operator_lib (see chart_lib), not the real engine.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_lib import (
    CHART,
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
from operator_lib import ROOT, create_namespace, install_crds, kubectl, wait_for

from splitserve.api import metrics as names
from splitserve.operator import rbac
from splitserve.operator.kube import Kube, load_config

pytestmark = pytest.mark.cluster
SCHEMA_ERROR = "values don't meet the specifications of the schema"


@pytest.fixture(scope="module")
def kubeconfig(cluster: Any) -> str:
    return str(cluster.kubeconfig)


def render(kubeconfig: str, *args: str, chart: Path = CHART) -> list[dict[str, Any]]:
    out = helm(kubeconfig, "template", "rel", str(chart), "--namespace", "ns", *args)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def one(docs: list[dict[str, Any]], kind: str, namespace: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind
             and (namespace is None or d["metadata"].get("namespace") == namespace)]
    assert len(found) == 1, (kind, namespace, len(found))
    return found[0]


def test_lint_strict_is_clean(kubeconfig: str) -> None:
    for values in ([], ["--set", "watch.scope=namespaces"]):
        out = helm(kubeconfig, "lint", "--strict", str(CHART), *values)
        assert "0 chart(s) failed" in out.stdout
        assert "[WARNING]" not in out.stdout and "[ERROR]" not in out.stdout, out.stdout


def test_chart_rbac_is_the_operator_rule_list(kubeconfig: str) -> None:
    cluster_wide = render(kubeconfig)
    assert one(cluster_wide, "ClusterRole")["rules"] == rbac.rules()
    assert not [d for d in cluster_wide if d["kind"] in ("Role", "RoleBinding")]
    scoped = render(kubeconfig, "--set", "watch.scope=namespaces",
                    "--set", "watch.namespaces={a,b}")
    assert one(scoped, "ClusterRole")["rules"] == rbac.rules(cluster_scoped=True)
    for namespace in ("a", "b"):
        assert one(scoped, "Role", namespace)["rules"] == rbac.rules(cluster_scoped=False)
        binding = one(scoped, "RoleBinding", namespace)
        assert binding["subjects"] == [{"kind": "ServiceAccount", "namespace": "ns",
                                        "name": "rel-splitserve-operator"}]
    args = one(scoped, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [a for a in args if a.startswith("--namespace")] == ["--namespace=a",
                                                                "--namespace=b"]
    # the default watched namespace is the release's own
    own = render(kubeconfig, "--set", "watch.scope=namespaces")
    assert one(own, "Role", "ns")["metadata"]["name"] == "rel-splitserve-operator"


def test_operator_pod_is_locked_down(kubeconfig: str) -> None:
    pod = one(render(kubeconfig), "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = pod["containers"][0]
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert {"--liveness-port=8081", "--metrics-port=9090"} <= set(container["args"])
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}


@pytest.mark.parametrize("setting,where", [
    ("watch.scope=everywhere", "/watch/scope"),
    ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
    ("operator.metricsPort=70000", "/operator/metricsPort"),
    ("resources.requests.cpu=lots", "/resources/requests/cpu"),
    ("watch.namespaces={Not_A_Namespace}", "/watch/namespaces/0"),
    ("replicas=2", "additional properties 'replicas' not allowed"),
])
def test_invalid_values_fail_with_a_schema_message(kubeconfig: str, setting: str,
                                                   where: str) -> None:
    out = helm(kubeconfig, "template", "rel", str(CHART), "--set", setting, check=False)
    assert out.returncode != 0 and not out.stdout
    assert SCHEMA_ERROR in out.stderr and where in out.stderr, out.stderr


def test_both_monitors_at_once_is_refused(kubeconfig: str) -> None:
    out = helm(kubeconfig, "template", "rel", str(CHART), "--api-versions",
               "monitoring.coreos.com/v1", "--set", "metrics.serviceMonitor.enabled=true",
               "--set", "metrics.podMonitor.enabled=true", check=False)
    assert out.returncode != 0 and "enable one of them, not both" in out.stderr


@pytest.mark.parametrize("monitor,kind", [("serviceMonitor", "ServiceMonitor"),
                                          ("podMonitor", "PodMonitor")])
def test_monitors_render_only_with_the_prometheus_operator_api(kubeconfig: str, monitor: str,
                                                               kind: str) -> None:
    enabled = ["--set", f"metrics.{monitor}.enabled=true"]
    without = render(kubeconfig, *enabled)
    assert not [d for d in without if d["kind"] == kind]
    found = one(render(kubeconfig, *enabled, "--api-versions", "monitoring.coreos.com/v1"), kind)
    endpoints = found["spec"].get("endpoints") or found["spec"]["podMetricsEndpoints"]
    assert endpoints[0]["port"] == "metrics"
    assert found["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "operator"


def test_every_dashboard_file_becomes_a_sidecar_configmap(kubeconfig: str,
                                                          tmp_path: Path) -> None:
    chart = tmp_path / "splitserve"
    shutil.copytree(CHART, chart)
    added = chart / "dashboards" / "Test_Board.json"
    added.write_text('{"title": "test {{ not a template }}", "panels": []}\n')
    files = sorted((chart / "dashboards").glob("*.json"))
    maps = [d for d in render(kubeconfig, "--set", "dashboards.namespace=monitoring",
                              chart=chart) if d["kind"] == "ConfigMap"]
    assert len(maps) == len(files)
    by_key = {key: m for m in maps for key in m["data"]}
    for path in files:
        cm = by_key[path.name]
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert cm["metadata"]["namespace"] == "monitoring"
        assert cm["data"][path.name] == path.read_text().rstrip("\n")
    off = render(kubeconfig, "--set", "dashboards.enabled=false", chart=chart)
    assert not [d for d in off if d["kind"] == "ConfigMap"]


def test_rendered_chart_is_accepted_by_the_api_server(kubeconfig: str, namespace: str) -> None:
    for values in ([], ["--set", "watch.scope=namespaces"]):
        out = helm(kubeconfig, "template", f"dry-{uuid.uuid4().hex[:6]}", str(CHART),
                   "--namespace", namespace, *values)
        applied = kubectl(kubeconfig, "apply", "--dry-run=server", "-f", "-", stdin=out.stdout,
                          check=False)
        assert applied.returncode == 0, applied.stderr
        assert "deployment.apps/" in applied.stdout and "(server dry run)" in applied.stdout


@dataclass
class Release:
    name: str
    namespace: str
    other: str  # a second watched namespace
    kubeconfig: str
    kube: Kube
    image: tuple[str, str]
    local: bool

    @property
    def operator(self) -> str:
        return f"{self.name}-splitserve-operator"

    @property
    def account(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.operator}"

    def values(self, *extra: str) -> list[str]:
        repository, tag = self.image
        return ["--set", "watch.scope=namespaces",
                "--set", f"watch.namespaces={{{self.namespace},{self.other}}}",
                "--set", f"image.repository={repository}",
                "--set", f"image.tag={tag}", "--set", "image.pullPolicy=Never",
                "--set", "resources.requests.cpu=10m", *extra]

    def log(self) -> str:
        return operator_log(self.kubeconfig, self.namespace, self.operator)


@pytest.fixture
def release(cluster: Any, kubeconfig: str, namespace: str,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    image = operator_image(cluster)
    install_crds(kubeconfig)
    load_standin(cluster, tmp_path_factory.mktemp("standin"))
    kube = Kube(load_config(kubeconfig))
    other = f"{namespace}-b"
    create_namespace(kubeconfig, other)
    rel = Release(f"ss{uuid.uuid4().hex[:6]}", namespace, other, kubeconfig, kube, image,
                  cluster.local)
    try:
        yield rel
    finally:
        for svc in kube.list("SplitService", namespace):  # while its operator runs
            with contextlib.suppress(AssertionError):  # else the namespace cleanup drops it
                delete_service(kube, kubeconfig, namespace, svc["metadata"]["name"])
        helm(kubeconfig, "uninstall", rel.name, "-n", namespace, check=False)
        kubectl(kubeconfig, "delete", "namespace", other, "--wait=false", check=False)
        kube.close()


def scrape(kubeconfig: str, namespace: str, service: str) -> str:
    """The metrics text behind a Service's `metrics` port, from its first ready endpoint."""
    out = kubectl(kubeconfig, "-n", namespace, "get", "endpointslices", "-l",
                  f"kubernetes.io/service-name={service}", "-o", "json", check=False)
    if out.returncode != 0:
        return ""
    slices = json.loads(out.stdout)["items"]
    addresses = [a for s in slices for e in s.get("endpoints") or []
                 if (e.get("conditions") or {}).get("ready") for a in e["addresses"]]
    ports = [p["port"] for s in slices for p in s.get("ports") or [] if p["name"] == "metrics"]
    if not addresses or not ports:
        return ""
    try:
        with urllib.request.urlopen(f"http://{addresses[0]}:{ports[0]}/metrics",
                                    timeout=5) as response:
            return str(response.read().decode())
    except OSError:
        return ""


def release_objects(rel: Release) -> list[str]:
    """Every object labelled with the release, namespaced (in its namespace) or cluster-wide."""
    selector = f"app.kubernetes.io/instance={rel.name}"
    found = []
    for namespace in (rel.namespace, rel.other):
        found += [f"{namespace}/{n}" for n in kubectl(
            rel.kubeconfig, "get", "-n", namespace,
            "deployment,serviceaccount,service,configmap,role,rolebinding",
            "-l", selector, "-o", "name").stdout.split()]
    found += kubectl(rel.kubeconfig, "get", "clusterrole,clusterrolebinding", "-l", selector,
                     "-o", "name").stdout.split()
    return found


def test_install_serve_upgrade_uninstall(release: Release, tmp_path: Path) -> None:
    rel, kube = release, release.kube
    out = helm(rel.kubeconfig, "install", rel.name, str(CHART), "-n", rel.namespace,
               *rel.values(), "--wait", "--timeout", "180s")
    assert "kubectl -n " + rel.namespace + " rollout status" in out.stdout  # NOTES.txt
    first = deployment_ready(kube, rel.namespace, rel.operator)
    # the image: a non-root user and nothing that builds or installs software
    probe = ("import importlib.util as u, os, shutil; print(os.getuid(), u.find_spec('pip'), "
             "[t for t in ('gcc', 'cc', 'make', 'pip', 'pip3', 'git') if shutil.which(t)])")
    inside = kubectl(rel.kubeconfig, "-n", rel.namespace, "exec", f"deploy/{rel.operator}", "--",
                     "python3", "-c", probe)
    assert inside.stdout.split() == ["10001", "None", "[]"], inside.stdout

    # least privilege: the chart's RBAC, namespace-scoped, and nothing like cluster-admin
    assert can_i(rel.kubeconfig, rel.account, "create", "deployments", "-n", rel.namespace)
    assert can_i(rel.kubeconfig, rel.account, "patch", "splitpools.splitserve.io/status",
                 "-n", rel.namespace)
    assert can_i(rel.kubeconfig, rel.account, "create", "deployments", "-n", rel.other)
    assert not can_i(rel.kubeconfig, rel.account, "create", "deployments", "-n", "default")
    assert not can_i(rel.kubeconfig, rel.account, "get", "secrets", "-n", rel.namespace)
    assert not can_i(rel.kubeconfig, rel.account, "*", "*", "--all-namespaces")

    apply_service(rel.kubeconfig, rel.namespace, sample_service("tiny", model_dir(tmp_path)))
    service_ready(kube, rel.namespace, "tiny", diagnose=rel.log)
    if rel.local:  # pod addresses route to this machine on e2e/cluster
        reconciles = names.RECONCILES.name + "_total{"
        wait_for("the operator's metrics through its Service",
                 lambda: reconciles in scrape(rel.kubeconfig, rel.namespace,
                                             f"{rel.operator}-metrics"),
                 timeout=60)
    before = pod_states(kube, rel.namespace, "tiny")
    assert len(before) == 3  # prefill, decode, router
    generations = {d["metadata"]["name"]: d["metadata"]["generation"]
                   for d in kube.list("Deployment", rel.namespace,
                                      label_selector="splitserve.io/service=tiny")}

    # the documented upgrade path: CRDs first (server-side), then the operator release
    crds = kubectl(rel.kubeconfig, "apply", "--server-side", "--force-conflicts", "-f",
                   str(ROOT / "manifests" / "crds"))
    assert "serverside-applied" in crds.stdout
    helm(rel.kubeconfig, "upgrade", rel.name, str(CHART), "-n", rel.namespace,
         *rel.values("--set", "operator.resyncSeconds=20", "--set",
                     "podAnnotations.splitserve\\.io/upgraded=yes"),
         "--wait", "--timeout", "180s")
    second = wait_for("a new operator pod", lambda: (lambda uid: uid if uid != first else None)(
        deployment_ready(kube, rel.namespace, rel.operator)), timeout=180)
    assert second != first
    # the new operator reconciles the running service: a deleted child comes back
    kube.delete("Service", rel.namespace, "tiny")
    wait_for("Service tiny restored by the upgraded operator",
             lambda: kube.get("Service", rel.namespace, "tiny"), timeout=120)
    service_ready(kube, rel.namespace, "tiny", diagnose=rel.log)
    assert pod_states(kube, rel.namespace, "tiny") == before
    assert {d["metadata"]["name"]: d["metadata"]["generation"]
            for d in kube.list("Deployment", rel.namespace,
                               label_selector="splitserve.io/service=tiny")} == generations
    assert "is forbidden" not in rel.log()

    delete_service(kube, rel.kubeconfig, rel.namespace, "tiny")
    installed = release_objects(rel)
    for namespace in (rel.namespace, rel.other):
        for kind in ("role", "rolebinding"):
            assert f"{namespace}/{kind}.rbac.authorization.k8s.io/{rel.operator}" in installed
    assert f"{rel.namespace}/deployment.apps/{rel.operator}" in installed
    helm(rel.kubeconfig, "uninstall", rel.name, "-n", rel.namespace, "--wait")
    wait_for("every object of the release removed", lambda: not release_objects(rel),
             timeout=120)
    assert crds_exist(rel.kubeconfig)
