"""Generated `SplitService` specs against the real API server (server-side dry-run, strict field
validation) and a real operator process.

- A spec with one field spoiled (wrong type, out of range, unknown field, missing required
  field, bad object name) is rejected with a message naming that field.
- The API server and the pydantic models agree on every generated spec, spoiled or not: the
  CRD is generated from the models, so one accepting what the other refuses is a bug.
- A sample of accepted specs, applied one after another to one object in this test's namespace,
  is reconciled by the operator (status.observedGeneration reaches the generation), and the
  operator never crashes or logs a traceback. The applied specs are made cheap first: 0 GPUs,
  one replica per pool, tiny requests and the busybox stand-in image (e2e/operator_lib.py),
  so no real data plane runs.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st
from operator_lib import (
    STANDIN_IMAGE,
    OperatorProcess,
    create_namespace,
    install_crds,
    kubectl,
    wait_for,
)
from pydantic import ValidationError
from spec_strategies import SpecStrategies, Spoiled, spoiled

from splitserve.api.splitservice import SplitServiceSpec
from splitserve.operator.kube import Kube, KubeError, load_config

pytestmark = pytest.mark.cluster

FUZZ = settings(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])
GEN = SpecStrategies(SplitServiceSpec.model_json_schema(by_alias=True))
SMALL = {"requests": {"cpu": "10m", "memory": "16Mi"}}
BASE = {"model": {"name": "tiny", "source": {"hostPath": "/models/tiny"}}}
# Found by this test: the models' and the API server's regular expressions disagreed on
# whitespace outside ASCII, and the models took quantities the server refuses.
FOUND = [
    Spoiled({**BASE, "autoscaling": {"enabled": True, "prometheusUrl": "http://p\u00a0q"}},
            ("autoscaling", "prometheusUrl"), "bad value"),
    Spoiled({**BASE, "autoscaling": {"prometheusUrl": "http://p\x0bq"}},
            ("autoscaling", "prometheusUrl"), "bad value"),
    Spoiled({**BASE, "prefill": {"resources": {"requests": {"cpu": "1\n"}}}},
            ("prefill", "resources", "requests", "cpu"), "bad value"),
    Spoiled({**BASE, "decode": {"resources": {"limits": {"memory": 0.5}}}},
            ("decode", "resources", "limits", "memory"), "bad value"),
]
BAD_NAMES = ["Upper", "under_score", "-leading", "trailing-", "a" * 254, "dots..twice", ""]


@dataclass
class Env:
    kube: Kube
    kubeconfig: str
    namespace: str
    operator: OperatorProcess


@pytest.fixture(scope="module")
def env(cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    kubeconfig = str(cluster.kubeconfig)
    work = tmp_path_factory.mktemp("spec-properties")
    install_crds(kubeconfig)
    namespace = f"e2e-fuzz-{uuid.uuid4().hex[:6]}"
    create_namespace(kubeconfig, namespace)
    kube = Kube(load_config(kubeconfig))
    operator = OperatorProcess(kubeconfig, work / "operator.log", ("--namespace", namespace))
    operator.start()
    try:
        yield Env(kube, kubeconfig, namespace, operator)
    finally:
        operator.stop()
        kubectl(kubeconfig, "delete", "namespace", namespace, "--wait=false", check=False)
        kube.close()


def document(namespace: str, spec: Any, name: str = "fuzz") -> dict[str, Any]:
    return {"apiVersion": "splitserve.io/v1alpha1", "kind": "SplitService",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def dry_run(kube: Kube, doc: dict[str, Any]) -> str | None:
    """None when the API server accepts `doc`, else its message."""
    try:
        kube.create(doc, dry_run=True)
    except KubeError as exc:
        assert exc.invalid, f"the API server failed instead of judging: {exc}"
        return exc.message
    return None


def pydantic_verdict(spec: Any) -> str | None:
    try:
        SplitServiceSpec.model_validate_json(json.dumps(spec), strict=True)
    except ValidationError as exc:
        return str(exc)
    return None


def agree(server: str | None, models: str | None, spec: Any) -> None:
    assert (server is None) == (models is None), (
        f"the API server {'accepts' if server is None else 'refuses'} and the models "
        f"{'accept' if models is None else 'refuse'}:\nspec: {json.dumps(spec)}\n"
        f"server: {server}\nmodels: {models}")


# ---- dry run ------------------------------------------------------------------------------

@settings(FUZZ, max_examples=150)
@given(bad=spoiled(GEN))
@example(bad=FOUND[0])
@example(bad=FOUND[1])
@example(bad=FOUND[2])
@example(bad=FOUND[3])
def test_spoiled_specs_are_refused_naming_the_field(env: Env, bad: Spoiled) -> None:
    server = dry_run(env.kube, document(env.namespace, bad.spec))
    models = pydantic_verdict(bad.spec)
    agree(server, models, bad.spec)
    event("refused" if server is not None else "accepted")
    if server is not None:
        assert bad.field in server, f"{bad.how} at {'.'.join(bad.path)}: {server}"


@settings(FUZZ, max_examples=100)
@given(spec=GEN.object(GEN.root))
def test_generated_specs_get_the_same_verdict_from_server_and_models(
        env: Env, spec: dict[str, Any]) -> None:
    server = dry_run(env.kube, document(env.namespace, spec))
    agree(server, pydantic_verdict(spec), spec)
    event("refused" if server is not None else "accepted")


@settings(FUZZ, max_examples=len(BAD_NAMES))
@given(name=st.sampled_from(BAD_NAMES))
def test_bad_object_names_are_refused_naming_metadata_name(env: Env, name: str) -> None:
    spec = BASE
    assert dry_run(env.kube, document(env.namespace, spec, "tiny")) is None
    server = dry_run(env.kube, document(env.namespace, spec, name))
    assert server is not None, name
    assert "metadata.name" in server or "name or generateName" in server, server


# ---- applied and reconciled ---------------------------------------------------------------

def cheap(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec with no GPU, one small worker per pool, the stand-in image, no autoscaler."""
    out = copy.deepcopy(spec)
    out["image"], out["imagePullPolicy"] = STANDIN_IMAGE, "Never"
    for role in ("prefill", "decode"):
        pool = out.setdefault(role, {})
        pool.pop("image", None)
        pool.update(replicas=1, minReplicas=1, maxReplicas=max(1, pool.get("maxReplicas", 1)))
        pool["resources"] = {"gpus": 0, **copy.deepcopy(SMALL)}
    out.setdefault("router", {}).update(replicas=1, resources=copy.deepcopy(SMALL))
    out.setdefault("autoscaling", {})["enabled"] = False
    return out


def observed(env: Env, generation: int) -> dict[str, Any] | None:
    obj = env.kube.get("SplitService", env.namespace, "fuzz") or {}
    status = obj.get("status") or {}
    done = status.get("observedGeneration", -1) >= generation
    return obj if done else None


def operator_healthy(env: Env) -> None:
    assert env.operator.alive(), f"the operator exited:\n{env.operator.log()}"
    log = Path(env.operator.log_path).read_text(errors="replace")
    assert "Traceback" not in log, f"the operator logged a traceback:\n{log[-6000:]}"


def store(env: Env, doc: dict[str, Any]) -> dict[str, Any]:
    """Creates the object or replaces its spec; a replace that lost a race with the operator's
    own writes (409 Conflict) is read again and repeated."""
    for _ in range(20):
        existing = env.kube.get("SplitService", env.namespace, "fuzz")
        if existing is None:
            return env.kube.create(doc)
        doc["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
        try:
            return env.kube.replace(doc)
        except KubeError as exc:
            if exc.status != 409:
                raise
    raise AssertionError("the SplitService kept changing under 20 replaces in a row")


@settings(FUZZ, max_examples=8)
@given(spec=GEN.object(GEN.root).map(cheap))
def test_accepted_specs_are_reconciled_and_the_operator_survives(
        env: Env, spec: dict[str, Any]) -> None:
    server = dry_run(env.kube, document(env.namespace, spec, "fuzz-dry-run"))
    agree(server, pydantic_verdict(spec), spec)
    assume(server is None)  # refused specs are checked above; only accepted ones are applied
    stored = store(env, document(env.namespace, spec))
    generation = stored["metadata"]["generation"]
    obj = wait_for(f"observedGeneration {generation}", lambda: observed(env, generation),
                   timeout=60)
    conditions = {c["type"]: c for c in obj["status"].get("conditions", [])}
    assert "Ready" in conditions, obj["status"]
    event(f"Ready={conditions['Ready']['status']} ({conditions['Ready'].get('reason')})")
    for cond in conditions.values():
        if cond["status"] == "False" or cond["type"] == "Degraded":
            assert cond.get("reason") and cond.get("message") is not None, cond
    operator_healthy(env)


def test_the_operator_is_still_healthy(env: Env) -> None:
    operator_healthy(env)
