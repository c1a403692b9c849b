"""The API models: defaults, ranges and cross-field rules, with errors naming the field."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from splitserve.api import SplitPool, SplitService, parse_quantity
from splitserve.api.base import ApiModel


def minimal() -> dict[str, Any]:
    return {
        "apiVersion": "splitserve.io/v1alpha1",
        "kind": "SplitService",
        "metadata": {"name": "llama", "namespace": "ml"},
        "spec": {"model": {"name": "llama-3-8b", "source": {"hostPath": "/models/llama"}}},
    }


def with_spec(**patch: Any) -> dict[str, Any]:
    obj = minimal()
    spec = obj["spec"]
    for dotted, value in patch.items():
        parts = dotted.split("__")
        node = spec
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return obj


def test_minimal_spec_gets_documented_defaults() -> None:
    svc = SplitService.model_validate(minimal())
    assert svc.spec.prefill.replicas == 1
    assert svc.spec.decode.max_replicas == 16
    assert svc.spec.prefill.resources.gpus == 1
    assert svc.spec.router.policy == "least-loaded"
    assert svc.spec.kv_transfer.compression == "none"
    assert svc.spec.autoscaling.enabled is False
    assert svc.spec.model.dtype == "bfloat16"


def test_wire_form_is_camel_case_and_round_trips() -> None:
    obj = with_spec(prefill__minReplicas=2, prefill__replicas=3, router__shortPromptThreshold=0)
    svc = SplitService.model_validate(obj)
    wire = svc.to_wire()
    assert wire["spec"]["prefill"]["minReplicas"] == 2
    assert wire["spec"]["router"]["shortPromptThreshold"] == 0
    assert "min_replicas" not in str(wire)
    assert SplitService.model_validate(wire) == svc


def test_every_field_is_documented() -> None:
    undocumented = []

    def visit(model: type[ApiModel], path: str) -> None:
        for name, info in model.model_fields.items():
            if not info.description:
                undocumented.append(f"{path}.{name}")
            for arg in _model_args(info.annotation):
                visit(arg, f"{path}.{name}")

    visit(SplitService, "SplitService")
    visit(SplitPool, "SplitPool")
    assert not undocumented


def _model_args(annotation: Any) -> list[type[ApiModel]]:
    if isinstance(annotation, type) and issubclass(annotation, ApiModel):
        return [annotation]
    found: list[type[ApiModel]] = []
    for arg in getattr(annotation, "__args__", ()):
        found += _model_args(arg)
    return found


INVALID = [
    ("replicas above max", with_spec(decode__replicas=20, decode__maxReplicas=4), "replicas"),
    ("replicas below min", with_spec(decode__replicas=1, decode__minReplicas=2), "replicas"),
    ("min above max",
     with_spec(prefill__minReplicas=5, prefill__maxReplicas=2, prefill__replicas=5),
     "minReplicas"),
    ("zero replicas", with_spec(prefill__replicas=0), "replicas"),
    ("replicas string", with_spec(prefill__replicas="three"), "replicas"),
    ("unknown pool field", with_spec(prefill__gpuCount=2), "gpuCount"),
    ("bad quantity", with_spec(prefill__resources={"requests": {"cpu": "two"}}), "cpu"),
    ("negative quantity", with_spec(prefill__resources={"limits": {"memory": "-1Gi"}}), "memory"),
    ("requests above limits",
     with_spec(decode__resources={"requests": {"cpu": "4"}, "limits": {"cpu": "2"}}), "cpu"),
    ("too many gpus", with_spec(decode__resources={"gpus": 64}), "gpus"),
    ("empty model name", with_spec(model__name=""), "name"),
    ("two model sources",
     with_spec(model__source={"hostPath": "/m", "pvc": {"claimName": "w"}}), "model.source"),
    ("no model source", with_spec(model__source={}), "model.source"),
    ("relative host path", with_spec(model__source={"hostPath": "models"}), "hostPath"),
    ("bad dtype", with_spec(model__dtype="int4"), "dtype"),
    ("ttft zero", with_spec(autoscaling__ttftTargetMs=0), "ttftTargetMs"),
    ("tpot negative", with_spec(autoscaling__tpotTargetMs=-5), "tpotTargetMs"),
    ("percentile too high", with_spec(autoscaling__percentile=100), "percentile"),
    ("enabled without url", with_spec(autoscaling__enabled=True), "prometheusUrl"),
    ("bad url", with_spec(autoscaling__prometheusUrl="prometheus:9090"), "prometheusUrl"),
    ("ratio min above max", with_spec(autoscaling__pdRatio={"min": 4, "max": 1}), "pdRatio.min"),
    ("bad compression", with_spec(kvTransfer__compression="zstd"), "compression"),
    ("chunk above message",
     with_spec(kvTransfer__chunkBytes=8 << 20, kvTransfer__maxMessageBytes=4 << 20), "chunkBytes"),
    ("connect above transfer",
     with_spec(kvTransfer__connectTimeoutMs=9000, kvTransfer__transferTimeoutMs=1000),
     "connectTimeoutMs"),
    ("bad service type", with_spec(router__serviceType="Ingress"), "serviceType"),
    ("bad policy", with_spec(router__policy="random"), "policy"),
    ("kv cache smaller than a batch",
     with_spec(decode__engine={"kvCacheBlocks": 4, "blockSize": 16, "maxBatchTokens": 4096}),
     "kvCacheBlocks"),
    ("exists toleration with value",
     with_spec(decode__tolerations=[{"key": "gpu", "operator": "Exists", "value": "x"}]),
     "toleration.value"),
    ("bad tls secret name", with_spec(kvTransfer__tlsSecretName="Not_A_Name"), "tlsSecretName"),
    ("unknown top-level field", with_spec(replicas=3), "replicas"),
]


@pytest.mark.parametrize(
    "obj,field", [(o, f) for _, o, f in INVALID], ids=[n for n, _, _ in INVALID]
)
def test_invalid_specs_are_rejected_naming_the_field(obj: dict[str, Any], field: str) -> None:
    before = copy.deepcopy(obj)
    with pytest.raises(ValidationError) as info:
        SplitService.model_validate(obj)
    assert field in str(info.value)
    assert obj == before


def test_at_least_fifteen_distinct_invalid_specs() -> None:
    assert len({name for name, _, _ in INVALID}) >= 15


@pytest.mark.parametrize(
    "text,value",
    [("500m", "0.5"), ("2", "2"), ("16Gi", str(16 * 2**30)), ("1e3", "1000"), ("1.5k", "1500"),
     ("100n", "1E-7"), ("2E", "2E+18")],
)
def test_quantities_parse_to_their_value(text: str, value: str) -> None:
    from decimal import Decimal

    assert parse_quantity(text) == Decimal(value)


@pytest.mark.parametrize("text", ["", "two", "1.2.3", "5 Gi", "Gi", "1gi"])
def test_bad_quantities_raise_value_error(text: str) -> None:
    with pytest.raises(ValueError, match="quantity"):
        parse_quantity(text)


def test_integer_quantities_are_accepted_as_text() -> None:
    obj = with_spec(prefill__resources={"requests": {"cpu": 2, "memory": "1Gi"}})
    svc = SplitService.model_validate(obj)
    assert svc.spec.prefill.resources.requests is not None
    assert svc.spec.prefill.resources.requests.cpu == "2"


def test_splitpool_validates_role_and_allows_zero_replicas() -> None:
    pool: dict[str, Any] = {
        "metadata": {"name": "llama-prefill"},
        "spec": {
            "role": "prefill", "service": "llama", "replicas": 0, "image": "img:1",
            "model": {"name": "m", "source": {"hostPath": "/m"}}, "configMapName": "llama-config",
        },
    }
    assert SplitPool.model_validate(pool).spec.replicas == 0
    pool["spec"]["role"] = "router"
    with pytest.raises(ValidationError, match="role"):
        SplitPool.model_validate(pool)


def test_pod_template_override_keeps_unknown_fields() -> None:
    override = {"spec": {"hostIPC": True, "containers": [{"name": "worker", "env": []}]}}
    svc = SplitService.model_validate(with_spec(decode__podTemplateOverride=override))
    assert svc.spec.decode.pod_template_override == override


@pytest.mark.parametrize("url", ["http://p\u00a0q", "http://p\x0bq", "http://pq\n",
                                 "http://p q"])
def test_prometheus_urls_with_any_whitespace_are_refused(url: str) -> None:
    from splitserve.api.serving import AutoscalingSpec

    with pytest.raises(ValueError, match=r"prometheusUrl|prometheus_url"):
        AutoscalingSpec.model_validate({"prometheusUrl": url})


@pytest.mark.parametrize("value", ["1\n", " 1", 0.5])
def test_quantities_the_api_server_refuses_are_refused(value: object) -> None:
    from splitserve.api.pool import ResourceList

    with pytest.raises(ValueError, match="cpu"):
        ResourceList.model_validate({"cpu": value})
