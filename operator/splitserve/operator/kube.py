"""The one module that talks to the Kubernetes API server.

Plain dicts in and out over the REST paths of the few kinds the operator handles. Reads are
free; every write (create, replace, patch, delete) is counted by verb, so tests and benches can
compare the operator's own account with the API server's.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

from kubernetes import client, config

from splitserve.api.base import GROUP, VERSION


@dataclass(frozen=True)
class KindInfo:
    group: str
    version: str
    plural: str
    namespaced: bool = True

    def path(self, namespace: str | None, name: str | None = None,
             subresource: str | None = None) -> str:
        base = f"/api/{self.version}" if not self.group else f"/apis/{self.group}/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
        if subresource:
            base += f"/{subresource}"
        return base


KINDS: dict[str, KindInfo] = {
    "ConfigMap": KindInfo("", "v1", "configmaps"),
    "Service": KindInfo("", "v1", "services"),
    "ServiceAccount": KindInfo("", "v1", "serviceaccounts"),
    "Pod": KindInfo("", "v1", "pods"),
    "Event": KindInfo("", "v1", "events"),
    "Deployment": KindInfo("apps", "v1", "deployments"),
    "PodDisruptionBudget": KindInfo("policy", "v1", "poddisruptionbudgets"),
    "NetworkPolicy": KindInfo("networking.k8s.io", "v1", "networkpolicies"),
    "Role": KindInfo("rbac.authorization.k8s.io", "v1", "roles"),
    "RoleBinding": KindInfo("rbac.authorization.k8s.io", "v1", "rolebindings"),
    "SplitService": KindInfo(GROUP, VERSION, "splitservices"),
    "SplitPool": KindInfo(GROUP, VERSION, "splitpools"),
}

MERGE_PATCH = "application/merge-patch+json"


class KubeError(Exception):
    """An API server error with its HTTP status and the server's message."""

    def __init__(self, status: int, message: str, reason: str = "") -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.message = message
        self.reason = reason

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def invalid(self) -> bool:
        return self.status in (400, 422)


def load_config(kubeconfig: str | None = None) -> client.Configuration:
    """In-cluster configuration when running in a pod, the kubeconfig otherwise."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    configuration.connection_pool_maxsize = 32  # reconciles run in parallel threads
    return configuration


class Kube:
    """Synchronous access to the API server; thread-safe; counts writes by verb."""

    def __init__(self, configuration: client.Configuration) -> None:
        self._api = client.ApiClient(configuration)
        self._lock = threading.Lock()
        self.writes: Counter[str] = Counter()

    def close(self) -> None:
        self._api.close()

    def _request(self, method: str, path: str, body: Any = None,
                 query: list[tuple[str, str]] | None = None,
                 content_type: str = "application/json") -> dict[str, Any]:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        _, url, headers, body, _ = self._api.param_serialize(
            method, path, query_params=query or [], header_params=headers, body=body,
            auth_settings=["BearerToken"],
        )
        if method != "GET" and "dryRun" not in dict(query or []):
            with self._lock:
                self.writes[method] += 1
        response = self._api.call_api(method, url, header_params=headers, body=body,
                                      _request_timeout=(10, 60))
        raw = response.read() or b"{}"
        data = json.loads(raw)
        if response.status >= 400:
            raise KubeError(response.status, data.get("message", raw.decode(errors="replace")),
                            data.get("reason", ""))
        result: dict[str, Any] = data
        return result

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self._request("GET", KINDS[kind].path(namespace, name))
        except KubeError as exc:
            if exc.not_found:
                return None
            raise

    def list(self, kind: str, namespace: str, label_selector: str = "",
             field_selector: str = "") -> list[dict[str, Any]]:
        query = []
        if label_selector:
            query.append(("labelSelector", label_selector))
        if field_selector:
            query.append(("fieldSelector", field_selector))
        items: list[dict[str, Any]] = self._request(
            "GET", KINDS[kind].path(namespace), query=query).get("items", [])
        return items

    def create(self, obj: dict[str, Any], dry_run: bool = False) -> dict[str, Any]:
        kind = KINDS[obj["kind"]]
        query = [("fieldValidation", "Strict")] + ([("dryRun", "All")] if dry_run else [])
        return self._request("POST", kind.path(obj["metadata"].get("namespace")), obj,
                             query=query)

    def replace(self, obj: dict[str, Any]) -> dict[str, Any]:
        """PUT: the object as given, guarded by its metadata.resourceVersion."""
        meta = obj["metadata"]
        path = KINDS[obj["kind"]].path(meta.get("namespace"), meta["name"])
        return self._request("PUT", path, obj, query=[("fieldValidation", "Strict")])

    def patch(self, kind: str, namespace: str, name: str, patch: dict[str, Any],
              subresource: str | None = None) -> dict[str, Any]:
        path = KINDS[kind].path(namespace, name, subresource)
        return self._request("PATCH", path, patch, content_type=MERGE_PATCH)

    def delete(self, kind: str, namespace: str, name: str) -> None:
        try:
            self._request("DELETE", KINDS[kind].path(namespace, name),
                          body={"propagationPolicy": "Background"})
        except KubeError as exc:
            if not exc.not_found:
                raise

    def api_server_metrics(self) -> str:
        """The API server's own /metrics text (for measuring the operator from outside)."""
        _, url, headers, _, _ = self._api.param_serialize(
            "GET", "/metrics", header_params={"Accept": "text/plain"},
            auth_settings=["BearerToken"])
        response = self._api.call_api("GET", url, header_params=headers)
        text: bytes = response.read()
        return text.decode()
