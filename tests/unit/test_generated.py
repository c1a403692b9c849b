"""Files generated from the source (`splitserve generate`): committed copies match, the RBAC of
the kustomize bases and the chart is exactly the operator's rule list, the samples are valid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from splitserve.api import reference
from splitserve.api.openapi import structural_schema, walk
from splitserve.api.splitservice import SplitService
from splitserve.operator import generate, rbac

ROOT = Path(__file__).resolve().parents[2]


def test_committed_generated_files_match_the_source() -> None:
    assert generate.stale(ROOT) == [], "run `splitserve generate`"


@pytest.mark.parametrize("rel", ["charts/splitserve/templates/_rules.tpl", "docs/reference.md",
                                 "manifests/rbac/operator.yaml", "manifests/namespaced/rbac.yaml",
                                 "charts/splitserve/crds/splitserve.io_splitservices.yaml"])
def test_check_names_every_drifted_file(tmp_path: Path, rel: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert generate.main(["--root", str(tmp_path)]) == 0
    assert generate.main(["--root", str(tmp_path), "--check"]) == 0
    path = tmp_path / rel
    path.write_text(path.read_text() + "# edited by hand\n")
    capsys.readouterr()
    assert generate.main(["--root", str(tmp_path), "--check"]) == 1
    assert capsys.readouterr().err.strip().endswith(rel)
    assert generate.write(tmp_path) == [rel]


def _docs(path: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((ROOT / path).read_text()) if d]


def _by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, kind
    return found[0]


def test_cluster_wide_base_grants_every_rule_and_nothing_else() -> None:
    docs = _docs("manifests/rbac/operator.yaml")
    assert _by_kind(docs, "ClusterRole")["rules"] == rbac.rules()
    assert not [d for d in docs if d["kind"] in ("Role", "RoleBinding")]
    subject = _by_kind(docs, "ClusterRoleBinding")["subjects"][0]
    account = _by_kind(docs, "ServiceAccount")["metadata"]
    assert (subject["name"], subject["namespace"]) == (account["name"], account["namespace"])


def test_namespaced_base_keeps_only_cluster_scoped_reads_cluster_wide() -> None:
    docs = _docs("manifests/namespaced/rbac.yaml")
    cluster = _by_kind(docs, "ClusterRole")["rules"]
    assert cluster == rbac.rules(cluster_scoped=True)
    assert all(set(r["verbs"]) <= set(rbac.READ) for r in cluster)
    assert _by_kind(docs, "Role")["rules"] == rbac.rules(cluster_scoped=False)
    assert len(cluster) + len(_by_kind(docs, "Role")["rules"]) == len(rbac.RULES)


def test_rules_have_no_wildcards_and_no_duplicates() -> None:
    seen = set()
    for rule in rbac.RULES:
        for values in (rule.groups, rule.resources, rule.verbs):
            assert "*" not in values and values, rule
        for group in rule.groups:
            for resource in rule.resources:
                assert (group, resource) not in seen, (group, resource)
                seen.add((group, resource))


def test_reference_documents_every_object_field() -> None:
    text = (ROOT / reference.PATH).read_text()
    spec = structural_schema(SplitService)["properties"]["spec"]
    for path, node in walk(spec, "SplitService.spec"):
        if node.get("type") == "object" and node.get("properties"):
            assert f"### `{path}`" in text, path
            for name in node["properties"]:
                assert f"| {name}" in text or f"[{name}]" in text, f"{path}.{name}"


@pytest.mark.parametrize("name", ["small", "production"])
def test_samples_are_valid_split_services(name: str) -> None:
    doc = yaml.safe_load((ROOT / "manifests" / "samples" / f"{name}.yaml").read_text())
    service = SplitService.model_validate(doc)
    assert service.metadata["name"]
    if name == "production":
        assert service.spec.autoscaling.enabled and service.spec.kv_transfer.tls_secret_name
        assert service.spec.prefill.resources.gpus >= 1 and service.spec.decode.tolerations
        assert service.spec.prefill.node_selector and service.spec.model.source.pvc
    else:
        assert service.spec.prefill.resources.gpus == 0 == service.spec.decode.resources.gpus
