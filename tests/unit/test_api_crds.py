"""The generated CRDs: committed copies match the models, and the schema is structural."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from splitserve.api import crdgen
from splitserve.api.openapi import walk

ROOT = Path(__file__).resolve().parents[2]


def test_committed_crds_match_the_models() -> None:
    generated = {name: crdgen.render(crd) for name, crd in crdgen.all_crds().items()}
    for folder in crdgen.OUTPUT_DIRS:
        for name, text in generated.items():
            path = ROOT / folder / name
            assert path.exists(), f"{path} missing: run `splitserve crds`"
            assert path.read_text() == text, f"{path} is stale: run `splitserve crds`"


@pytest.mark.parametrize("folder", crdgen.OUTPUT_DIRS)
def test_check_mode_reports_drift_of_either_copy(tmp_path: Path, folder: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert crdgen.main(["--root", str(tmp_path)]) == 0
    assert crdgen.main(["--root", str(tmp_path), "--check"]) == 0
    stale = tmp_path / folder / "splitserve.io_splitpools.yaml"
    stale.write_text(stale.read_text().replace("Workers passing readiness", "changed"))
    capsys.readouterr()
    assert crdgen.main(["--root", str(tmp_path), "--check"]) == 1
    assert str(stale) in capsys.readouterr().err


def test_chart_and_manifests_hold_the_same_crds() -> None:
    assert set(crdgen.OUTPUT_DIRS) == {"manifests/crds", "charts/splitserve/crds"}
    for name in crdgen.all_crds():
        assert (ROOT / "manifests/crds" / name).read_text() == \
            (ROOT / "charts/splitserve/crds" / name).read_text(), name


def _schema(crd: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


@pytest.fixture(params=["splitservice", "splitpool"])
def crd(request: pytest.FixtureRequest) -> dict[str, Any]:
    made: dict[str, Any] = getattr(crdgen, f"{request.param}_crd")()
    return made


def test_only_the_override_preserves_unknown_fields(crd: dict[str, Any]) -> None:
    preserving = [p for p, n in walk(_schema(crd)) if n.get("x-kubernetes-preserve-unknown-fields")]
    assert preserving and all(p.endswith("podTemplateOverride") for p in preserving)


def test_schema_is_structural(crd: dict[str, Any]) -> None:
    for path, node in walk(_schema(crd)):
        assert "$ref" not in node and "title" not in node, path
        if "anyOf" in node:
            assert node.get("x-kubernetes-int-or-string"), path
        else:
            assert node.get("type") in {"object", "array", "string", "integer", "number",
                                        "boolean"}, path
        if node.get("type") == "object" and "properties" in node:
            assert "additionalProperties" not in node, path
        assert not isinstance(node.get("exclusiveMinimum"), int | float) or isinstance(
            node.get("exclusiveMinimum"), bool), path


def test_every_spec_field_has_a_description(crd: dict[str, Any]) -> None:
    spec = _schema(crd)["properties"]["spec"]
    missing = [p for p, n in walk(spec, ".spec") if "description" not in n
               and not p.endswith(("[]", "{}"))]
    assert not missing


def test_cel_rules_cover_cross_field_constraints() -> None:
    spec = _schema(crdgen.splitservice_crd())["properties"]["spec"]
    rules = {p: [r["rule"] for r in n.get("x-kubernetes-validations", [])]
             for p, n in walk(spec, ".spec")}
    assert any("self.minReplicas <= self.maxReplicas" in r for r in rules[".spec.prefill"])
    assert any("self.replicas >= self.minReplicas" in r for r in rules[".spec.decode"])
    assert any("prometheusUrl" in r for r in rules[".spec.autoscaling"])
    assert any("self.min <= self.max" in r for r in rules[".spec.autoscaling.pdRatio"])
    assert any("exists_one" in r or "== 1" in r for r in rules[".spec.model.source"])
    ttft = spec["properties"]["autoscaling"]["properties"]["ttftTargetMs"]
    assert ttft["minimum"] >= 1


def test_printer_columns_and_names() -> None:
    svc = crdgen.splitservice_crd()
    names = [c["name"] for c in svc["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert names[:4] == ["Ready", "Prefill", "Decode", "Endpoint"] and names[-1] == "Age"
    assert svc["spec"]["names"]["shortNames"] == ["ssvc"]
    assert svc["spec"]["versions"][0]["subresources"] == {"status": {}}


def test_splitpool_has_scale_subresource() -> None:
    pool = crdgen.splitpool_crd()
    scale = pool["spec"]["versions"][0]["subresources"]["scale"]
    assert scale == {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas",
                     "labelSelectorPath": ".status.selector"}
    assert pool["spec"]["names"]["shortNames"] == ["spool"]


def test_generated_yaml_parses_back(tmp_path: Path) -> None:
    assert crdgen.main(["--root", str(tmp_path)]) == 0
    for folder in crdgen.OUTPUT_DIRS:
        for path in (tmp_path / folder).glob("*.yaml"):
            doc = yaml.safe_load(path.read_text())
            assert doc["kind"] == "CustomResourceDefinition"
