"""Acceptance of the local cluster: GPU scheduling, Service DNS, in-cluster RBAC, images built here.

Every workload runs the operator image built from operator/Dockerfile on this machine; its
commands here are small Python programs, not the operator.
"""

from __future__ import annotations

import json
import textwrap
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parent.parent

IMAGE = "splitserve/operator:smoke"
GREETING = "hello from the gpu pod"

SERVER = textwrap.dedent(
    f"""
    import http.server
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = {GREETING!r}.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
    http.server.ThreadingHTTPServer(("0.0.0.0", 8080), Handler).serve_forever()
    """
)

# Retries inside the pod cover the moment between the Service's endpoints turning ready and the
# node's proxy rules catching up.
CLIENT = textwrap.dedent(
    """
    import sys, time, urllib.request
    url = sys.argv[1]
    deadline = time.monotonic() + 60
    while True:
        try:
            print(urllib.request.urlopen(url, timeout=5).read().decode())
            break
        except OSError as error:
            if time.monotonic() > deadline:
                raise
            print("retrying:", error, file=sys.stderr)
            time.sleep(1)
    """
)

LISTER = textwrap.dedent(
    """
    import json, sys
    from kubernetes import client, config
    config.load_incluster_config()
    core = client.CoreV1Api()
    namespace = sys.argv[1]
    pods = [p.metadata.name for p in core.list_namespaced_pod(namespace).items]
    try:
        core.list_namespaced_secret(namespace)
        secrets_status = 200
    except client.ApiException as error:
        secrets_status = error.status
    print(json.dumps({"pods": pods, "secrets_status": secrets_status}))
    """
)


@pytest.fixture(scope="module")
def image(cluster) -> str:
    return cluster.build_image(REPO / "operator" / "Dockerfile", REPO, IMAGE)


def container(name: str, image: str, args: list[str], **resources: str) -> client.V1Container:
    requests = {"cpu": "20m", "memory": "160Mi", **resources}
    limits = {k: v for k, v in requests.items() if k != "cpu"}
    return client.V1Container(
        name=name,
        image=image,
        image_pull_policy="Never",
        command=["python", "-c", *args[:1]],
        args=args[1:],
        resources=client.V1ResourceRequirements(requests=requests, limits=limits),
    )


def run_pod(
    cluster,
    namespace: str,
    name: str,
    spec_container: client.V1Container,
    service_account_name: str | None = None,
) -> None:
    cluster.core.create_namespaced_pod(
        namespace,
        client.V1Pod(
            metadata=client.V1ObjectMeta(name=name),
            spec=client.V1PodSpec(
                containers=[spec_container],
                restart_policy="Never",
                service_account_name=service_account_name,
            ),
        ),
    )


@pytest.fixture
def gpu_service(cluster, namespace: str, image: str) -> Iterator[str]:
    """A one-replica Deployment asking for one GPU, behind Service `echo`; yields its pod name."""
    labels = {"app": "echo"}
    server = container("server", image, [SERVER], **{"nvidia.com/gpu": "1"})
    server.ports = [client.V1ContainerPort(container_port=8080, name="http")]
    server.readiness_probe = client.V1Probe(
        http_get=client.V1HTTPGetAction(path="/", port="http"), period_seconds=1
    )
    cluster.apps.create_namespaced_deployment(
        namespace,
        client.V1Deployment(
            metadata=client.V1ObjectMeta(name="echo"),
            spec=client.V1DeploymentSpec(
                replicas=1,
                selector=client.V1LabelSelector(match_labels=labels),
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels=labels),
                    spec=client.V1PodSpec(containers=[server]),
                ),
            ),
        ),
    )
    cluster.core.create_namespaced_service(
        namespace,
        client.V1Service(
            metadata=client.V1ObjectMeta(name="echo"),
            spec=client.V1ServiceSpec(
                selector=labels, ports=[client.V1ServicePort(port=80, target_port="http")]
            ),
        ),
    )

    def available() -> bool:
        status = cluster.apps.read_namespaced_deployment_status("echo", namespace).status
        return (status.available_replicas or 0) == 1

    cluster.wait_for("Deployment echo to have one available replica", available, timeout=180)
    pods = cluster.core.list_namespaced_pod(namespace, label_selector="app=echo").items
    assert len(pods) == 1
    yield pods[0].metadata.name


def test_gpu_deployment_runs_and_is_reachable(
    cluster, namespace: str, image: str, gpu_service: str
) -> None:
    pod = cluster.pod(namespace, gpu_service)
    assert pod.status.phase == "Running"
    assert pod.spec.node_name
    assert pod.spec.containers[0].resources.requests["nvidia.com/gpu"] == "1"

    url = f"http://echo.{namespace}.svc.cluster.local/"
    run_pod(cluster, namespace, "dns-client", container("client", image, [CLIENT, url]))
    assert cluster.pod_output(namespace, "dns-client").strip() == GREETING

    if not cluster.local:
        return  # another cluster's pod and Service ranges need not route to the test machine
    # From this machine: the pod's own address and the Service's ClusterIP.
    service_ip = cluster.core.read_namespaced_service("echo", namespace).spec.cluster_ip
    for address in (f"{pod.status.pod_ip}:8080", f"{service_ip}:80"):
        with urllib.request.urlopen(f"http://{address}/", timeout=10) as response:
            assert response.read().decode() == GREETING


def test_service_account_lists_pods_and_is_denied_secrets(
    cluster, namespace: str, image: str
) -> None:
    cluster.core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="lister"))
    )
    cluster.rbac.create_namespaced_role(
        namespace,
        client.V1Role(
            metadata=client.V1ObjectMeta(name="pod-reader"),
            rules=[client.V1PolicyRule(api_groups=[""], resources=["pods"], verbs=["get", "list"])],
        ),
    )
    cluster.rbac.create_namespaced_role_binding(
        namespace,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="lister-reads-pods"),
            role_ref=client.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="Role", name="pod-reader"
            ),
            subjects=[client.RbacV1Subject(kind="ServiceAccount", name="lister")],
        ),
    )
    run_pod(
        cluster,
        namespace,
        "lister",
        container("lister", image, [LISTER, namespace]),
        service_account_name="lister",
    )
    result = json.loads(cluster.pod_output(namespace, "lister").strip().splitlines()[-1])
    assert "lister" in result["pods"]
    assert result["secrets_status"] == 403


def test_pod_asking_for_too_many_gpus_is_unschedulable(cluster, namespace: str, image: str) -> None:
    run_pod(
        cluster,
        namespace,
        "greedy",
        container("greedy", image, ["pass"], **{"nvidia.com/gpu": "100"}),
    )

    def unschedulable() -> client.V1PodCondition | None:
        conditions = cluster.pod(namespace, "greedy").status.conditions or []
        for condition in conditions:
            if condition.type == "PodScheduled" and condition.reason == "Unschedulable":
                return condition
        return None

    condition = cluster.wait_for("pod greedy to be Unschedulable", unschedulable, timeout=60)
    assert condition.status == "False"
    assert "nvidia.com/gpu" in condition.message
    assert cluster.pod(namespace, "greedy").status.phase == "Pending"


def test_gpu_capacity_is_restored_after_a_reset(cluster) -> None:
    if not cluster.local:
        pytest.skip("the watcher that re-advertises GPUs is part of e2e/cluster")
    node = cluster.core.list_node().items[0].metadata.name
    before = cluster.core.read_node_status(node).status.capacity["nvidia.com/gpu"]
    zero = {"status": {"capacity": {"nvidia.com/gpu": "0"}, "allocatable": {"nvidia.com/gpu": "0"}}}
    cluster.core.patch_node_status(node, zero)

    def restored() -> bool:
        status = cluster.core.read_node_status(node).status
        return (
            status.capacity.get("nvidia.com/gpu")
            == before
            == status.allocatable.get("nvidia.com/gpu")
        )

    cluster.wait_for("nvidia.com/gpu to be advertised again", restored, timeout=60)


def test_node_advertises_gpus(cluster) -> None:
    nodes = cluster.core.list_node().items
    assert len(nodes) == 1
    node = nodes[0]
    ready = [c for c in node.status.conditions if c.type == "Ready"]
    assert ready and ready[0].status == "True"
    assert int(node.status.allocatable["nvidia.com/gpu"]) >= 4
    assert node.status.node_info.kubelet_version.startswith("v1.34.")
