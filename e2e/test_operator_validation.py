"""Invalid SplitServices are rejected by the real API server at server-side apply, naming the
field (OpenAPI schema, CEL rules and strict field validation of the generated CRD)."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from operator_lib import install_crds, kubectl

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def kubeconfig(cluster: Any) -> str:
    return str(cluster.kubeconfig)


@pytest.fixture(scope="module")
def namespace(kubeconfig: str) -> Iterator[str]:
    install_crds(kubeconfig)
    name = f"ssvc-invalid-{uuid.uuid4().hex[:6]}"
    kubectl(kubeconfig, "create", "namespace", name)
    yield name
    kubectl(kubeconfig, "delete", "namespace", name, "--wait=false", check=False)


def base() -> dict[str, Any]:
    return {"apiVersion": "splitserve.io/v1alpha1", "kind": "SplitService",
            "metadata": {"name": "bad"},
            "spec": {"model": {"name": "tiny", "source": {"hostPath": "/models/tiny"}}}}


def spec_with(path: str, value: Any) -> dict[str, Any]:
    obj = base()
    node = obj["spec"]
    parts = path.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return obj


INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("replicas above max", spec_with("decode", {"replicas": 20, "maxReplicas": 4}), "replicas"),
    ("min above max", spec_with("prefill", {"minReplicas": 5, "maxReplicas": 2, "replicas": 2}),
     "minReplicas"),
    ("zero replicas", spec_with("prefill.replicas", 0), "replicas"),
    ("replicas is a string", spec_with("prefill.replicas", "three"), "replicas"),
    ("unknown pool field", spec_with("prefill.gpuCount", 2), "gpuCount"),
    ("unknown top-level field", spec_with("replicas", 2), "replicas"),
    ("bad quantity", spec_with("decode.resources", {"requests": {"cpu": "two"}}), "cpu"),
    ("requests above limits",
     spec_with("decode.resources", {"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}}),
     "memory"),
    ("too many gpus per worker", spec_with("decode.resources", {"gpus": 64}), "gpus"),
    ("empty model name", spec_with("model.name", ""), "name"),
    ("two model sources",
     spec_with("model.source", {"hostPath": "/m", "pvc": {"claimName": "w"}}), "source"),
    ("relative host path", spec_with("model.source", {"hostPath": "models"}), "hostPath"),
    ("unknown dtype", spec_with("model.dtype", "int4"), "dtype"),
    ("ttft target zero", spec_with("autoscaling.ttftTargetMs", 0), "ttftTargetMs"),
    ("tpot target negative", spec_with("autoscaling.tpotTargetMs", -5), "tpotTargetMs"),
    ("autoscaling without prometheus", spec_with("autoscaling.enabled", True), "prometheusUrl"),
    ("pd ratio min above max", spec_with("autoscaling.pdRatio", {"min": 4, "max": 1}), "min"),
    ("unknown compression", spec_with("kvTransfer.compression", "zstd"), "compression"),
    ("chunk above message size",
     spec_with("kvTransfer", {"chunkBytes": 8388608, "maxMessageBytes": 4194304}), "chunkBytes"),
    ("unknown service type", spec_with("router.serviceType", "Ingress"), "serviceType"),
    ("kv cache smaller than one batch",
     spec_with("decode.engine", {"kvCacheBlocks": 4, "blockSize": 16, "maxBatchTokens": 4096}),
     "kvCacheBlocks"),
]


def test_at_least_fifteen_distinct_cases() -> None:
    assert len({name for name, _, _ in INVALID}) >= 15


@pytest.mark.parametrize("obj,field", [(o, f) for _, o, f in INVALID],
                         ids=[n for n, _, _ in INVALID])
def test_rejected_at_server_side_apply(kubeconfig: str, namespace: str, obj: dict[str, Any],
                                       field: str) -> None:
    doc = copy.deepcopy(obj)
    doc["metadata"]["namespace"] = namespace
    out = kubectl(kubeconfig, "apply", "--server-side", "--field-manager=e2e", "-f", "-",
                  stdin=yaml.safe_dump(doc), check=False)
    assert out.returncode != 0, f"accepted: {out.stdout}"
    assert field in out.stderr, out.stderr
    missing = kubectl(kubeconfig, "-n", namespace, "get", "splitservice", "bad",
                      check=False)
    assert missing.returncode != 0 and "NotFound" in missing.stderr


def test_valid_spec_is_accepted_with_defaults(kubeconfig: str, namespace: str) -> None:
    doc = base()
    doc["metadata"]["namespace"] = namespace
    doc["metadata"]["name"] = "good"
    kubectl(kubeconfig, "apply", "--server-side", "--field-manager=e2e", "-f", "-",
            stdin=yaml.safe_dump(doc))
    got = yaml.safe_load(kubectl(kubeconfig, "-n", namespace, "get", "splitservice", "good",
                                 "-o", "yaml").stdout)
    assert got["spec"]["model"]["dtype"] == "bfloat16"
    explain = kubectl(kubeconfig, "explain", "splitservice.spec.decode").stdout
    assert "replicas" in explain and "scale subresource" in explain
    kubectl(kubeconfig, "-n", namespace, "delete", "splitservice", "good")
