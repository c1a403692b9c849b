"""Who wrote what, from the API server's own audit log, and an operator with its own identity.

The local cluster's API server writes one JSON line per write request (`e2e/cluster/lib/
components.sh`: metadata only; leases and events left out). An operator that runs under its own
ServiceAccount can then have its writes counted by user name, whatever else the shared cluster is
doing meanwhile.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from operator_lib import ROOT, kubectl, wait_for

WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}
OPERATOR_RBAC = ROOT / "manifests" / "rbac" / "operator.yaml"


def default_path() -> Path:
    state = Path(os.environ.get("SS_STATE", "/var/lib/splitserve-cluster"))
    return state / "logs" / "audit.log"


def _timestamp(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass(frozen=True)
class Write:
    user: str
    verb: str
    resource: str
    subresource: str
    namespace: str
    name: str
    at: datetime
    code: int

    def describe(self) -> str:
        sub = f"/{self.subresource}" if self.subresource else ""
        return f"{self.at:%H:%M:%S.%f} {self.verb} {self.resource}{sub} " \
               f"{self.namespace}/{self.name} -> {self.code}"


class AuditLog:
    """Reads the audit log (and its rotated backups) of the local cluster's API server."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_path()

    def available(self) -> bool:
        return self.path.is_file()

    def _lines(self, since: datetime) -> Iterator[str]:
        backups = sorted(self.path.parent.glob(f"{self.path.stem}-*{self.path.suffix}"))
        for file in [*backups, self.path]:
            try:
                if file != self.path and file.stat().st_mtime < since.timestamp():
                    continue  # rotated before the window began
                with file.open(errors="replace") as handle:
                    yield from handle
            except FileNotFoundError:
                continue  # rotated away while we read

    def writes(self, since: datetime, until: datetime | None = None,
               user: str | None = None) -> list[Write]:
        found: list[Write] = []
        for line in self._lines(since):
            if '"ResponseComplete"' not in line or (user and user not in line):
                continue
            try:
                event: dict[str, Any] = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line being written
            if event.get("verb") not in WRITE_VERBS:
                continue
            who = event.get("user", {}).get("username", "")
            if user is not None and who != user:
                continue
            at = _timestamp(event["requestReceivedTimestamp"])
            if at < since or (until is not None and at > until):
                continue
            ref = event.get("objectRef", {})
            found.append(Write(who, event["verb"], ref.get("resource", ""),
                               ref.get("subresource", ""), ref.get("namespace", ""),
                               ref.get("name", ""), at,
                               int(event.get("responseStatus", {}).get("code", 0))))
        return found

    def flush(self, kubeconfig: str, namespace: str, timeout: float = 60.0) -> datetime:
        """Makes a marker write and waits until the log holds it, so every write before the
        returned moment is in the log (the API server writes the log in batches)."""
        marker = f"audit-marker-{uuid.uuid4().hex[:12]}"
        now = datetime.now(UTC)
        kubectl(kubeconfig, "-n", namespace, "create", "configmap", marker)
        wait_for("the audit log to hold the marker write",
                 lambda: any(marker in line for line in self._tail()), timeout=timeout)
        kubectl(kubeconfig, "-n", namespace, "delete", "configmap", marker, "--wait=false")
        return now

    def _tail(self, size: int = 4 << 20) -> list[str]:
        try:
            with self.path.open("rb") as handle:
                handle.seek(max(0, handle.seek(0, os.SEEK_END) - size))
                return handle.read().decode(errors="replace").splitlines()
        except FileNotFoundError:
            return []


def service_account_kubeconfig(admin: str, token: str, path: Path) -> str:
    """A kubeconfig for `token` against the cluster of the `admin` kubeconfig."""
    config = yaml.safe_load(Path(admin).read_text())
    context = next(c for c in config["contexts"] if c["name"] == config["current-context"])
    cluster = next(c for c in config["clusters"] if c["name"] == context["context"]["cluster"])
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster["cluster"]}],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "operator"}}],
        "current-context": "c",
    }))
    path.chmod(0o600)
    return str(path)


def operator_identity(admin: str, namespace: str, workdir: Path) -> tuple[str, str]:
    """A ServiceAccount in `namespace` holding the operator's ClusterRole there only (a
    RoleBinding), for an operator that watches just that namespace.

    Returns (its kubeconfig, its user name as the API server's audit log records it)."""
    cluster_role = next(doc for doc in yaml.safe_load_all(OPERATOR_RBAC.read_text())
                        if doc and doc.get("kind") == "ClusterRole")
    account = "splitserve-operator"
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": account, "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": cluster_role["metadata"]["name"]},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
    }
    sa = {"apiVersion": "v1", "kind": "ServiceAccount",
          "metadata": {"name": account, "namespace": namespace}}
    kubectl(admin, "apply", "--server-side", "-f", "-",
            stdin=yaml.safe_dump_all([cluster_role, sa, binding]))
    token = kubectl(admin, "-n", namespace, "create", "token", account,
                    "--duration=2h").stdout.strip()
    path = service_account_kubeconfig(admin, token, workdir / f"operator-{namespace}.kubeconfig")
    return path, f"system:serviceaccount:{namespace}:{account}"


def wait_quiet(log: AuditLog, user: str, quiet: float, timeout: float,
               alive: Callable[[], None] | None = None) -> datetime:
    """Waits until `user` has written nothing for `quiet` seconds; returns when that began."""
    deadline = time.monotonic() + timeout
    while True:
        now = datetime.now(UTC)
        recent = log.writes(since=datetime.fromtimestamp(now.timestamp() - quiet, UTC),
                            user=user)
        if not recent:
            return now
        if time.monotonic() > deadline:
            raise AssertionError(f"{user} kept writing for {timeout:.0f}s: "
                                 + "; ".join(w.describe() for w in recent[-10:]))
        if alive is not None:
            alive()
        time.sleep(1.0)
