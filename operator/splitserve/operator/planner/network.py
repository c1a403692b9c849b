"""NetworkPolicies of a SplitService: who may reach its workers and its router.

- `<service>-workers` selects the prefill and decode pods. Their gRPC port (generation, control
  and KV transfer) and HTTP port take connections from the service's own pods (router and the
  peer pool); the HTTP port (metrics, probes) also from `networkPolicy.metricsNamespaces`.
- `<service>-router` selects the router pods: their port takes connections from
  `networkPolicy.routerFrom`, or from everywhere when that list is empty.
- `<service>-quarantine` selects the service's pods labelled `splitserve.io/quarantine` and
  lets nothing in or out. The two policies above leave such pods out, both as the pods they
  protect and as peers, so the label alone cuts a pod off (NetworkPolicies only ever add what
  they allow, so the deny would otherwise lose to the service's own allow rules).

The first two restrict ingress only. Kubelet probes and other traffic from the node pass
wherever the network plugin follows the usual convention of allowing node-originated traffic.
"""

from __future__ import annotations

from typing import Any

from splitserve.api import SplitServiceSpec
from splitserve.api.names import LABEL_QUARANTINE, LABEL_ROLE, LABEL_SERVICE, Role
from splitserve.operator.planner import naming

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # set on every namespace by the API server
KIND = "NetworkPolicy"
NOT_QUARANTINED = {"key": LABEL_QUARANTINE, "operator": "DoesNotExist"}


def workers_policy_name(service: str) -> str:
    return f"{service}-workers"


def router_policy_name(service: str) -> str:
    return f"{service}-router"


def quarantine_policy_name(service: str) -> str:
    return f"{service}-quarantine"


def policy_names(service: str) -> list[str]:
    """Every NetworkPolicy a service may own (to remove them when the section is disabled)."""
    return [workers_policy_name(service), router_policy_name(service),
            quarantine_policy_name(service)]


def network_policies(owner: dict[str, Any], name: str, spec: SplitServiceSpec,
                     worker_http_port: int) -> list[dict[str, Any]]:
    """The service's NetworkPolicies; none when `networkPolicy.enabled` is false."""
    if not spec.network_policy.enabled:
        return []
    return [_workers(owner, name, spec, worker_http_port), _router(owner, name, spec),
            _quarantine(owner, name)]


def _tcp(port: int) -> dict[str, Any]:
    return {"protocol": "TCP", "port": port}


def _workers(owner: dict[str, Any], name: str, spec: SplitServiceSpec,
             http_port: int) -> dict[str, Any]:
    same_service = {"podSelector": {"matchLabels": {LABEL_SERVICE: name},
                                    "matchExpressions": [NOT_QUARANTINED]}}
    ingress: list[dict[str, Any]] = [
        {"from": [same_service], "ports": [_tcp(spec.kv_transfer.port), _tcp(http_port)]},
    ]
    scrapers = spec.network_policy.metrics_namespaces
    if scrapers:
        ingress.append({
            "from": [{"namespaceSelector": {"matchExpressions": [
                {"key": NAMESPACE_NAME_LABEL, "operator": "In", "values": list(scrapers)}]}}],
            "ports": [_tcp(http_port)],
        })
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": KIND,
        "metadata": naming.child_metadata(owner, workers_policy_name(name),
                                          naming.labels(name)),
        "spec": {
            "podSelector": {
                "matchLabels": {LABEL_SERVICE: name},
                "matchExpressions": [{"key": LABEL_ROLE, "operator": "In",
                                      "values": [Role.PREFILL.value, Role.DECODE.value]},
                                     NOT_QUARANTINED],
            },
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        },
    }


def _router(owner: dict[str, Any], name: str, spec: SplitServiceSpec) -> dict[str, Any]:
    rule: dict[str, Any] = {"ports": [_tcp(spec.router.port)]}
    peers = [peer.to_wire() for peer in spec.network_policy.router_from]
    if peers:
        rule["from"] = peers
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": KIND,
        "metadata": naming.child_metadata(owner, router_policy_name(name),
                                          naming.labels(name, Role.ROUTER)),
        "spec": {
            "podSelector": {"matchLabels": naming.selector(name, Role.ROUTER),
                            "matchExpressions": [NOT_QUARANTINED]},
            "policyTypes": ["Ingress"],
            "ingress": [rule],
        },
    }


def _quarantine(owner: dict[str, Any], name: str) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": KIND,
        "metadata": naming.child_metadata(owner, quarantine_policy_name(name),
                                          naming.labels(name)),
        "spec": {
            "podSelector": {"matchLabels": {LABEL_SERVICE: name},
                            "matchExpressions": [{"key": LABEL_QUARANTINE,
                                                  "operator": "Exists"}]},
            "policyTypes": ["Ingress", "Egress"],
        },
    }
