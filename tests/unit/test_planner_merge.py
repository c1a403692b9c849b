"""Override merging and the desired-versus-observed comparison that decides every write."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from splitserve.operator.planner.merge import differences, merge_override


def test_merge_without_override_is_a_copy() -> None:
    base = {"a": {"b": 1}}
    out = merge_override(base, None)
    assert out == base and out is not base and out["a"] is not base["a"]


def test_maps_merge_deeply() -> None:
    out = merge_override({"a": {"b": 1, "c": 2}}, {"a": {"c": 3, "d": 4}})
    assert out == {"a": {"b": 1, "c": 3, "d": 4}}


def test_plain_lists_are_replaced() -> None:
    out = merge_override({"args": ["a", "b"]}, {"args": ["c"]})
    assert out == {"args": ["c"]}


@pytest.mark.parametrize("key", ["containers", "initContainers", "volumes", "env", "ports",
                                 "volumeMounts", "imagePullSecrets"])
def test_named_lists_merge_by_name(key: str) -> None:
    base = {key: [{"name": "a", "x": 1}, {"name": "b", "x": 2}]}
    out = merge_override(base, {key: [{"name": "b", "y": 3}, {"name": "c"}]})
    assert out[key] == [{"name": "a", "x": 1}, {"name": "b", "x": 2, "y": 3}, {"name": "c"}]


def test_none_deletes_a_key() -> None:
    assert merge_override({"a": 1, "b": 2}, {"a": None}) == {"b": 2}


def test_inputs_are_not_modified() -> None:
    base = {"containers": [{"name": "w", "env": [{"name": "A"}]}]}
    over = {"containers": [{"name": "w", "env": [{"name": "B"}]}]}
    b0, o0 = copy.deepcopy(base), copy.deepcopy(over)
    merge_override(base, over)
    assert base == b0 and over == o0


def test_override_must_be_an_object() -> None:
    with pytest.raises(ValueError, match="object"):
        merge_override({}, ["x"])  # type: ignore[arg-type]


def test_named_list_item_without_name_names_the_path() -> None:
    with pytest.raises(ValueError, match=r"podTemplateOverride\.spec\.volumes"):
        merge_override({"spec": {"volumes": []}}, {"spec": {"volumes": [{"emptyDir": {}}]}})


def test_nested_named_lists_merge() -> None:
    base = {"containers": [{"name": "w", "env": [{"name": "A", "value": "1"}]}]}
    over = {"containers": [{"name": "w", "env": [{"name": "A", "value": "2"}]}]}
    assert merge_override(base, over)["containers"][0]["env"] == [{"name": "A", "value": "2"}]


# differences(desired, observed)


def test_equal_objects_have_no_differences() -> None:
    obj = {"spec": {"replicas": 2, "template": {"containers": [{"name": "w"}]}}}
    assert differences(obj, copy.deepcopy(obj)) == []


def test_fields_added_by_the_server_are_ignored() -> None:
    desired = {"spec": {"ports": [{"name": "http", "port": 80}]}}
    observed = {"spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
                         "clusterIP": "10.0.0.1"},
                "status": {"loadBalancer": {}}}
    assert differences(desired, observed) == []


def test_changed_value_is_reported_with_its_path() -> None:
    desired = {"spec": {"template": {"containers": [{"name": "w", "image": "b"}]}}}
    observed = {"spec": {"template": {"containers": [{"name": "w", "image": "a"}]}}}
    assert differences(desired, observed) == [".spec.template.containers[0].image"]


def test_missing_key_is_a_difference() -> None:
    assert differences({"a": {"b": 1}}, {"a": {}}) == [".a.b"]


def test_list_length_change_is_a_difference() -> None:
    assert differences({"l": [1, 2]}, {"l": [1]}) == [".l"]


def test_extra_observed_list_item_is_a_difference() -> None:
    assert differences({"l": [{"name": "a"}]}, {"l": [{"name": "a"}, {"name": "b"}]}) == [".l"]


@pytest.mark.parametrize("want,have", [("1", "1000m"), ("1Gi", "1073741824"), (2, "2"),
                                       ("0.5", "500m"), ("1k", "1000")])
def test_quantities_compare_by_value(want: Any, have: Any) -> None:
    assert differences({"cpu": want}, {"cpu": have}) == []


@pytest.mark.parametrize("want,have", [("1", "2"), ("img:1", "img:2"), (True, 1), (False, 0),
                                       ("abc", None)])
def test_different_values_differ(want: Any, have: Any) -> None:
    assert differences({"x": want}, {"x": have}) == [".x"]


def test_empty_desired_matches_absent_observed() -> None:
    assert differences({"nodeSelector": {}, "tolerations": []}, {}) == []


def test_dict_against_scalar_differs() -> None:
    assert differences({"a": {"b": 1}}, {"a": "x"}) == [".a"]
