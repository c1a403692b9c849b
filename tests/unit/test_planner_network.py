"""The NetworkPolicies planned for a SplitService, judged by what they let through.

`reaches` evaluates NetworkPolicies the way the Kubernetes API defines them (a pod selected by a
policy of a direction is isolated in that direction; a connection passes when the source may send
it and the destination may take it, each by some rule whose peers and ports match), so each test
states who may connect to which port rather than the exact shape of the objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from pydantic import ValidationError

from splitserve.api import SplitService
from splitserve.operator.planner import plan_service
from splitserve.operator.planner.service_plan import retired_children

UID = "0b7c2f9e-1111-4c1a-9d5e-000000000002"
KV, HTTP, ROUTER = 50051, 8080, 8000


def service(name: str = "llama", **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"model": {"name": "m", "source": {"hostPath": "/models/m"}}}
    base.update(spec)
    return {"apiVersion": "splitserve.io/v1alpha1", "kind": "SplitService",
            "metadata": {"name": name, "namespace": "ml", "uid": UID}, "spec": base}


def policies(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return [o for o in plan_service(obj) if o["kind"] == "NetworkPolicy"]


@dataclass
class Pod:
    namespace: str
    labels: dict[str, str] = field(default_factory=dict)


def worker(service_name: str, role: str = "decode", namespace: str = "ml") -> Pod:
    return Pod(namespace, {"splitserve.io/service": service_name, "splitserve.io/role": role})


def router(service_name: str, namespace: str = "ml") -> Pod:
    return Pod(namespace, {"splitserve.io/service": service_name, "splitserve.io/role": "router"})


def matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    if selector is None:
        return True
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for req in selector.get("matchExpressions", []):
        op, present = req["operator"], req["key"] in labels
        if op == "In" and labels.get(req["key"]) not in req["values"]:
            return False
        if op == "NotIn" and present and labels[req["key"]] in req["values"]:
            return False
        if (op == "Exists") != present and op in ("Exists", "DoesNotExist"):
            return False
    return True


def peer_matches(peer: dict[str, Any], src: Pod, policy_ns: str) -> bool:
    ns_labels = {"kubernetes.io/metadata.name": src.namespace}
    if "namespaceSelector" in peer:
        if not matches(peer["namespaceSelector"], ns_labels):
            return False
    elif src.namespace != policy_ns:
        return False
    return matches(peer.get("podSelector"), src.labels)


def allowed(planned: list[dict[str, Any]], direction: str, pod: Pod, peer: Pod,
            port: int) -> bool:
    """Whether `pod` may take (Ingress) or send (Egress) a connection from or to `peer`."""
    key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    selecting = [p for p in planned if p["metadata"]["namespace"] == pod.namespace
                 and direction in p["spec"]["policyTypes"]
                 and matches(p["spec"]["podSelector"], pod.labels)]
    if not selecting:
        return True
    for p in selecting:
        for rule in p["spec"].get(key, []):
            ports = rule.get("ports")
            if ports and not any(x["port"] == port and x["protocol"] == "TCP" for x in ports):
                continue
            peers = rule.get(peers_key)
            if not peers or any(peer_matches(x, peer, p["metadata"]["namespace"])
                                for x in peers):
                return True
    return False


def reaches(planned: list[dict[str, Any]], src: Pod, dst: Pod, port: int) -> bool:
    return allowed(planned, "Egress", src, dst, port) and \
        allowed(planned, "Ingress", dst, src, port)


def test_worker_grpc_port_only_from_the_same_service() -> None:
    planned = policies(service())
    for role in ("prefill", "decode"):
        dst = worker("llama", role)
        assert reaches(planned, router("llama"), dst, KV)
        assert reaches(planned, worker("llama", "prefill"), dst, KV)
        assert not reaches(planned, worker("other", "prefill"), dst, KV)
        assert not reaches(planned, router("other"), dst, KV)
        assert not reaches(planned, Pod("ml", {"app": "debug"}), dst, KV)
        assert not reaches(planned, Pod("monitoring"), dst, KV)
        # a pod that copies the label in another namespace is still another namespace
        assert not reaches(planned, router("llama", namespace="elsewhere"), dst, KV)


def test_metrics_port_from_the_named_namespaces_only() -> None:
    planned = policies(service())
    dst = worker("llama")
    assert reaches(planned, Pod("monitoring", {"app": "prometheus"}), dst, HTTP)
    assert not reaches(planned, Pod("default"), dst, HTTP)
    assert reaches(planned, router("llama"), dst, HTTP)

    custom = policies(service(networkPolicy={"metricsNamespaces": ["obs", "infra"]}))
    assert reaches(custom, Pod("obs"), dst, HTTP)
    assert reaches(custom, Pod("infra"), dst, HTTP)
    assert not reaches(custom, Pod("monitoring"), dst, HTTP)
    assert not reaches(custom, Pod("obs"), dst, KV)

    closed = policies(service(networkPolicy={"metricsNamespaces": []}))
    assert not reaches(closed, Pod("monitoring"), dst, HTTP)
    assert reaches(closed, worker("llama", "prefill"), dst, HTTP)


def test_ports_follow_the_spec() -> None:
    planned = policies(service(kvTransfer={"port": 7000}, router={"port": 9000}))
    dst = worker("llama")
    assert reaches(planned, router("llama"), dst, 7000)
    assert not reaches(planned, router("llama"), dst, KV)
    assert reaches(planned, Pod("anywhere"), router("llama"), 9000)
    assert not reaches(planned, Pod("anywhere"), router("llama"), ROUTER)


def test_router_port_open_to_all_by_default() -> None:
    planned = policies(service())
    for src in (Pod("default"), Pod("ml", {"app": "client"}), worker("other")):
        assert reaches(planned, src, router("llama"), ROUTER)


def test_router_port_limited_to_the_chosen_sources() -> None:
    planned = policies(service(networkPolicy={"routerFrom": [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gateway"}}},
        {"podSelector": {"matchLabels": {"app": "client"}}},
    ]}))
    dst = router("llama")
    assert reaches(planned, Pod("gateway"), dst, ROUTER)
    assert reaches(planned, Pod("ml", {"app": "client"}), dst, ROUTER)
    assert not reaches(planned, Pod("ml", {"app": "other"}), dst, ROUTER)
    assert not reaches(planned, Pod("default", {"app": "client"}), dst, ROUTER)


def test_both_selectors_in_one_peer_must_both_match() -> None:
    planned = policies(service(networkPolicy={"routerFrom": [{
        "namespaceSelector": {"matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["apps"]}]},
        "podSelector": {"matchLabels": {"tier": "web"}},
    }]}))
    dst = router("llama")
    assert reaches(planned, Pod("apps", {"tier": "web"}), dst, ROUTER)
    assert not reaches(planned, Pod("apps", {"tier": "db"}), dst, ROUTER)
    assert not reaches(planned, Pod("ml", {"tier": "web"}), dst, ROUTER)


def quarantined(pod: Pod) -> Pod:
    return Pod(pod.namespace, {**pod.labels, "splitserve.io/quarantine": "true"})


def test_a_quarantined_pod_is_cut_off() -> None:
    planned = policies(service())
    for pod in (worker("llama", "prefill"), worker("llama", "decode"), router("llama")):
        cut = quarantined(pod)
        for peer in (router("llama"), worker("llama", "prefill"), worker("llama", "decode"),
                     Pod("monitoring"), Pod("default")):
            for port in (KV, HTTP, ROUTER, 53, 443):
                assert not reaches(planned, peer, cut, port), (peer, cut, port)
                assert not reaches(planned, cut, peer, port), (cut, peer, port)
    # the rest of the service keeps its paths, and the label means nothing to another service
    assert reaches(planned, router("llama"), worker("llama"), KV)
    assert reaches(planned, quarantined(router("other")), worker("other"), KV)


def test_policies_are_owned_labelled_and_leave_egress_open() -> None:
    for p in policies(service()):
        meta = p["metadata"]
        assert meta["namespace"] == "ml"
        assert meta["ownerReferences"][0]["uid"] == UID
        assert meta["ownerReferences"][0]["controller"] is True
        assert meta["labels"]["splitserve.io/service"] == "llama"
    # egress stays open (DNS, the API server) for every pod not quarantined
    for pod in (worker("llama", "prefill"), worker("llama", "decode"), router("llama")):
        assert reaches(policies(service()), pod, Pod("kube-system"), 53)


def test_disabled_plans_none_and_retires_them() -> None:
    obj = service(networkPolicy={"enabled": False})
    assert policies(obj) == []
    assert sorted(retired_children(obj)) == [("NetworkPolicy", "llama-quarantine"),
                                              ("NetworkPolicy", "llama-router"),
                                              ("NetworkPolicy", "llama-workers")]
    assert retired_children(service()) == []


def test_enabled_by_default() -> None:
    spec = SplitService.model_validate(service()).spec
    assert spec.network_policy.enabled
    assert spec.network_policy.metrics_namespaces == ["monitoring"]
    assert spec.network_policy.router_from == []


@pytest.mark.parametrize(("section", "field_name"), [
    ({"metricsNamespaces": ["Not_A_Namespace"]}, "metricsNamespaces"),
    ({"routerFrom": [{}]}, "routerFrom"),
    ({"routerFrom": [{"podSelector": {"matchExpressions": [
        {"key": "app", "operator": "In"}]}}]}, "values"),
    ({"routerFrom": [{"podSelector": {"matchExpressions": [
        {"key": "app", "operator": "Exists", "values": ["x"]}]}}]}, "values"),
    ({"routerFrom": [{"podSelector": {"matchExpressions": [
        {"key": "app", "operator": "Near", "values": ["x"]}]}}]}, "operator"),
    ({"allowAll": True}, "allowAll"),
])
def test_bad_input_names_the_field(section: dict[str, Any], field_name: str) -> None:
    with pytest.raises(ValidationError) as info:
        plan_service(service(networkPolicy=section))
    assert field_name in str(info.value)
    assert "networkPolicy" in str(info.value)
