"""Pure parts of the apply and reconcile layer: what counts as a change, what gets written."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from splitserve.operator import applier
from splitserve.operator.events import event_object, grouped
from splitserve.operator.main import parse_options
from splitserve.operator.reconcile import Note, degraded_note, status_patch


def pool(replicas: int = 1, image: str = "img:1") -> dict[str, Any]:
    return {
        "apiVersion": "splitserve.io/v1alpha1", "kind": "SplitPool",
        "metadata": {"name": "p", "namespace": "ns", "labels": {"a": "1"},
                     "ownerReferences": [{"kind": "SplitService", "uid": "u", "controller": True,
                                          "name": "s", "apiVersion": "splitserve.io/v1alpha1"}]},
        "spec": {"replicas": replicas, "image": image, "role": "decode"},
    }


def observed_from(desired: dict[str, Any], **changes: Any) -> dict[str, Any]:
    obs = applier.with_hash(desired)
    obs["metadata"].update(uid="x", resourceVersion="7", creationTimestamp="t")
    obs["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied"] = "{}"
    obs["status"] = {"replicas": 1}
    for key, value in changes.items():
        obs["spec"][key] = value
    return obs


def test_pool_replicas_are_not_part_of_the_content_or_hash() -> None:
    assert "replicas" not in applier.content(pool())["spec"]
    assert applier.spec_hash(pool(1)) == applier.spec_hash(pool(9))
    assert applier.spec_hash(pool(image="a")) != applier.spec_hash(pool(image="b"))


def test_content_does_not_alias_the_input() -> None:
    obj = pool()
    applier.content(obj)["spec"]["image"] = "changed"
    assert obj["spec"]["image"] == "img:1"


def test_hash_is_recorded_as_an_annotation() -> None:
    out = applier.with_hash(pool())
    assert out["metadata"]["annotations"]["splitserve.io/spec-hash"] == applier.spec_hash(pool())
    assert "annotations" not in pool()["metadata"]


def test_converged_object_needs_no_write() -> None:
    desired = applier.with_hash(pool())
    assert applier.needs_write(desired, observed_from(pool())) == []


def test_replicas_set_by_scale_subresource_need_no_write() -> None:
    desired = applier.with_hash(pool(replicas=1))
    assert applier.needs_write(desired, observed_from(pool(), replicas=5)) == []


def test_changed_spec_needs_a_write() -> None:
    desired = applier.with_hash(pool(image="img:2"))
    diffs = applier.needs_write(desired, observed_from(pool()))
    assert ".spec.image" in diffs
    assert ".metadata.annotations.splitserve.io/spec-hash" in diffs


def test_removed_label_needs_a_write() -> None:
    desired = applier.with_hash(pool())
    obs = observed_from(pool())
    del obs["metadata"]["labels"]["a"]
    assert applier.needs_write(desired, obs) == [".metadata.labels.a"]


def test_lost_owner_reference_needs_a_write() -> None:
    desired = applier.with_hash(pool())
    obs = observed_from(pool())
    obs["metadata"]["ownerReferences"] = []
    assert applier.needs_write(desired, obs) == [".metadata.ownerReferences"]


def test_status_patch_is_empty_when_nothing_changed() -> None:
    status = {"observedGeneration": 2, "conditions": [{"type": "Ready", "status": "True"}],
              "endpoint": "x:1"}
    assert status_patch(status, copy.deepcopy(status)) == {}


def test_status_patch_holds_only_changed_fields() -> None:
    old = {"observedGeneration": 2, "endpoint": "x:1", "conditions": [{"type": "Ready"}]}
    new = {"observedGeneration": 3, "endpoint": "x:1", "conditions": [{"type": "Ready"}]}
    assert status_patch(new, old) == {"observedGeneration": 3}


def test_status_patch_first_time_writes_everything() -> None:
    new = {"observedGeneration": 1, "conditions": []}
    assert status_patch(new, None) == {"observedGeneration": 1}


def test_status_patch_notices_shorter_lists() -> None:
    old = {"conditions": [{"type": "A"}, {"type": "B"}]}
    new = {"conditions": [{"type": "A"}]}
    assert status_patch(new, old) == new


def test_status_patch_leaves_fields_owned_elsewhere() -> None:
    new = {"lastScalingDecisions": [{"pool": "decode"}], "endpoint": "e"}
    assert status_patch(new, {}, ("lastScalingDecisions",)) == {"endpoint": "e"}


def degraded(status: str, reason: str = "X") -> dict[str, Any]:
    return {"conditions": [{"type": "Degraded", "status": status, "reason": reason,
                            "message": f"m-{reason}"}]}


@pytest.mark.parametrize("old,new,expected", [
    (None, degraded("True", "InsufficientGPU"), ("Warning", "InsufficientGPU")),
    (degraded("False"), degraded("True", "ModelNotFound"), ("Warning", "ModelNotFound")),
    (degraded("True", "A"), degraded("True", "B"), ("Warning", "B")),
    (degraded("True", "A"), degraded("True", "A"), None),
    (degraded("True", "A"), degraded("False"), ("Normal", "Recovered")),
    (degraded("False"), degraded("False"), None),
])
def test_degraded_events_only_on_transitions(old: dict[str, Any] | None, new: dict[str, Any],
                                             expected: tuple[str, str] | None) -> None:
    note = degraded_note(old, new)
    assert (None if note is None else (note.type, note.reason)) == expected


def test_event_object_points_at_the_service() -> None:
    obj = {"apiVersion": "splitserve.io/v1alpha1", "kind": "SplitService",
           "metadata": {"name": "llama", "namespace": "ml", "uid": "u1", "resourceVersion": "5"}}
    event = event_object(obj, Note("Warning", "InsufficientGPU", "m" * 5000))
    assert event["involvedObject"]["uid"] == "u1"
    assert event["involvedObject"]["kind"] == "SplitService"
    assert event["metadata"]["generateName"] == "llama."
    assert event["metadata"]["namespace"] == "ml"
    assert event["type"] == "Warning" and len(event["message"]) == 1024


def test_operator_options_from_flags_and_environment() -> None:
    opts = parse_options([], {"KUBECONFIG": "/k", "SPLITSERVE_NAMESPACES": "a,b"})
    assert opts.kubeconfig == "/k" and opts.namespaces == ("a", "b")
    opts = parse_options(["--namespace", "c", "--kubeconfig", "/x"], {"KUBECONFIG": "/k"})
    assert opts.kubeconfig == "/x" and opts.namespaces == ("c",)
    assert parse_options([], {}).namespaces == ()


def test_operator_rejects_a_bad_port() -> None:
    with pytest.raises(SystemExit):
        parse_options(["--liveness-port", "70000"], {})


def test_events_of_one_reconcile_are_grouped_by_reason() -> None:
    notes = [Note("Normal", "Created", "created A"), Note("Normal", "Created", "created B"),
             Note("Warning", "InsufficientGPU", "decode")]
    assert grouped(notes) == [Note("Normal", "Created", "created A; created B"),
                              Note("Warning", "InsufficientGPU", "decode")]
