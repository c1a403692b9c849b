"""Where the workers are: a static list, or the EndpointSlices of the pool Services.

`endpoint_addresses` is the pure part. `EndpointSliceWatch` is a thin thread around the
kubernetes client's watch: it lists, then watches from that resource version, and re-lists
after any error; every change hands the role's full address lists to `on_change`: the ready
endpoints, and the standby ones (listed as not ready but not terminating either: what a node
whose kubelet lost the API server for a while looks like, see Registry).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

log = logging.getLogger(__name__)

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
KV_PORT_NAME = "kv"

OnChange = Callable[[str, list[str], list[str]], None]  # role, ready and standby "host:port"


def parse_static(text: str, what: str) -> list[str]:
    """`host:port,host:port` -> addresses; ValueError naming `what` on a malformed entry."""
    out = []
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{what}: {item!r} is not host:port")
        out.append(item)
    return out


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        if obj is None:
            return None
        obj = obj.get(key) if isinstance(obj, Mapping) else getattr(obj, _snake(key), None)
    return obj


def _snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name)


def endpoint_addresses(slices: Iterable[Any], port_name: str = KV_PORT_NAME
                       ) -> tuple[list[str], list[str]]:
    """EndpointSlices (dicts in API shape or kubernetes client objects) -> sorted unique
    `host:port` of the named port: (ready, standby). An endpoint whose `ready` condition is
    unset counts as ready, as the API documents; one not ready is standby unless it is
    terminating; terminating ones are neither."""
    ready: set[str] = set()
    standby: set[str] = set()
    for s in slices:
        port = next((p for p in (_get(s, "ports") or []) if _get(p, "name") == port_name), None)
        number = _get(port, "port")
        if number is None:
            continue
        for ep in _get(s, "endpoints") or []:
            if _get(ep, "conditions", "terminating") is True:
                continue
            into = standby if _get(ep, "conditions", "ready") is False else ready
            for address in _get(ep, "addresses") or []:
                host = f"[{address}]" if ":" in address else address
                into.add(f"{host}:{number}")
    return sorted(ready), sorted(standby - ready)


def ready_addresses(slices: Iterable[Any], port_name: str = KV_PORT_NAME) -> list[str]:
    return endpoint_addresses(slices, port_name)[0]


class EndpointSliceWatch:
    """Watches the EndpointSlices of the pool Services (thread; kubernetes client)."""

    def __init__(self, namespace: str, services: dict[str, str], on_change: OnChange,
                 port_name: str = KV_PORT_NAME, retry_s: float = 2.0) -> None:
        self._namespace = namespace
        self._roles = {svc: role for role, svc in services.items()}  # service name -> role
        self._on_change = on_change
        self._port_name = port_name
        self._retry_s = retry_s
        self._slices: dict[str, Any] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="endpointslices", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _publish(self) -> None:
        for service, role in self._roles.items():
            mine = [s for s in self._slices.values()
                    if (_get(s, "metadata", "labels") or {}).get(SERVICE_NAME_LABEL) == service]
            self._on_change(role, *endpoint_addresses(mine, self._port_name))

    def _run(self) -> None:
        from kubernetes import client, config, watch

        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        api = client.DiscoveryV1Api()
        selector = f"{SERVICE_NAME_LABEL} in ({','.join(sorted(self._roles))})"
        while not self._stop.is_set():
            try:
                listed = api.list_namespaced_endpoint_slice(self._namespace,
                                                            label_selector=selector)
                self._slices = {_get(s, "metadata", "name"): s for s in listed.items}
                self._publish()
                w = watch.Watch()
                for event in w.stream(api.list_namespaced_endpoint_slice, self._namespace,
                                      label_selector=selector,
                                      resource_version=_get(listed, "metadata",
                                                            "resourceVersion"),
                                      timeout_seconds=300):
                    obj = event["object"]
                    if event["type"] == "DELETED":
                        self._slices.pop(obj.metadata.name, None)
                    elif event["type"] in ("ADDED", "MODIFIED"):
                        self._slices[obj.metadata.name] = obj
                    self._publish()
                    if self._stop.is_set():
                        w.stop()
            except Exception as exc:  # any API error: re-list after a pause
                log.warning("endpointslice watch failed (%s); re-listing", exc)
                self._stop.wait(self._retry_s)
