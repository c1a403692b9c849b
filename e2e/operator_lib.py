"""Helpers of the operator end-to-end tests: the operator process, the stand-in image, waits.

The stand-in image exists only until the data-plane image is built: it is busybox answering the
worker's and router's health endpoints (`/healthz`, `/readyz`, `/drain`) over HTTP, plus `sh` for
the model check, so Deployments become Ready without a model. Tests that use it say so.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from splitserve.operator.kube import Kube

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache"))) / "splitserve"
STANDIN_IMAGE = "docker.io/library/splitserve-standin:e2e"
T = TypeVar("T")

STANDIN_ENTRYPOINT = """#!/bin/sh
# stand-in data plane: serves the health endpoints on the port named by --http-port or --port
port=8080
while [ $# -gt 0 ]; do
  case "$1" in
    --http-port|--port) port="$2"; shift ;;
  esac
  shift
done
exec /bin/busybox httpd -f -p "$port" -h /www
"""


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 120.0,
             interval: float = 0.5) -> T:
    """Polls `probe` until it returns something truthy; fails naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def kubectl_path() -> str:
    for candidate in sorted(CACHE.glob("bin/kubernetes-v*/kubectl"), reverse=True):
        if candidate.is_file():
            return str(candidate)
    found = shutil.which("kubectl")
    if not found:
        raise RuntimeError("kubectl not found in the cluster's binaries or on PATH")
    return found


def kubectl(kubeconfig: str, *args: str, stdin: str | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([kubectl_path(), "--kubeconfig", kubeconfig, *args], input=stdin,
                         capture_output=True, text=True, timeout=120)
    if check and out.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {out.stderr}")
    return out


# Marks a namespace with the test session (process) that made it; conftest removes the namespaces
# of sessions that are gone (an interrupted run), never those of a session still running.
SESSION_LABEL = "e2e.splitserve.io/session"


def session_label() -> str:
    return f"pid-{os.getpid()}"


def create_namespace(kubeconfig: str, name: str) -> None:
    doc = {"apiVersion": "v1", "kind": "Namespace",
           "metadata": {"name": name, "labels": {SESSION_LABEL: session_label()}}}
    kubectl(kubeconfig, "apply", "--server-side", "--field-manager=e2e", "-f", "-",
            stdin=json.dumps(doc))


def install_crds(kubeconfig: str) -> None:
    """Server-side applies the generated CRDs and waits until both are Established."""
    kubectl(kubeconfig, "apply", "--server-side", "--force-conflicts", "-f",
            str(ROOT / "manifests" / "crds"))
    path = '{.status.conditions[?(@.type=="Established")].status}'

    def established(crd: str) -> bool:
        out = kubectl(kubeconfig, "get", "crd", crd, "-o", f"jsonpath={path}", check=False)
        return out.stdout.strip() == "True"

    for crd in ("splitservices.splitserve.io", "splitpools.splitserve.io"):
        wait_for(f"CRD {crd} Established", functools.partial(established, crd), timeout=60)


def _tar_bytes(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _entry(name: str, data: bytes | None = None, mode: int = 0o644, kind: bytes = tarfile.REGTYPE,
           link: str = "") -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime, info.linkname = kind, mode, 0, link
    if data is not None:
        info.size = len(data)
    return info, data


def build_standin_archive(path: Path) -> Path:
    """A docker-archive of the stand-in image (busybox, entrypoint, health files)."""
    busybox = Path("/bin/busybox")
    if not busybox.exists():
        raise RuntimeError("the stand-in image needs /bin/busybox (Debian package busybox-static)")
    layer = _tar_bytes([
        _entry("bin", mode=0o755, kind=tarfile.DIRTYPE),
        _entry("bin/busybox", busybox.read_bytes(), 0o755),
        _entry("bin/sh", kind=tarfile.SYMTYPE, link="busybox", mode=0o777),
        _entry("standin", STANDIN_ENTRYPOINT.encode(), 0o755),
        _entry("www", mode=0o755, kind=tarfile.DIRTYPE),
        *[_entry(f"www/{n}", b"ok\n") for n in ("healthz", "readyz", "drain")],
        _entry("tmp", mode=0o1777, kind=tarfile.DIRTYPE),
        _entry("models", mode=0o755, kind=tarfile.DIRTYPE),
    ])
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": ["/standin"], "User": "10001", "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }).encode()
    manifest = json.dumps([{"Config": "config.json", "RepoTags": [STANDIN_IMAGE],
                            "Layers": ["layer.tar"]}]).encode()
    path.write_bytes(_tar_bytes([_entry("layer.tar", layer), _entry("config.json", config),
                                 _entry("manifest.json", manifest)]))
    return path


def import_standin(archive: Path, address: str) -> None:
    subprocess.run(["ctr", "--address", address, "-n", "k8s.io", "images", "import", str(archive)],
                   check=True, capture_output=True, timeout=300)


class OperatorProcess:
    """`splitserve operator` as a real process against the test cluster."""

    def __init__(self, kubeconfig: str, log_path: Path, args: tuple[str, ...] = ()) -> None:
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "operator"),
                                                           str(ROOT / "worker")]))
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "import sys; from splitserve.cli import main; "
             "sys.exit(main(sys.argv[1:]))", "operator", "--kubeconfig", self.kubeconfig,
             *self.args],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("operator not started")
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    for cond in (obj or {}).get("status", {}).get("conditions", []):
        if cond.get("type") == kind:
            found: dict[str, Any] = cond
            return found
    return {}


WRITE_VERBS = ("POST", "PUT", "PATCH", "DELETE", "APPLY")
OPERATOR_RESOURCES = {"splitservices", "splitpools", "deployments", "services", "configmaps",
                      "serviceaccounts", "poddisruptionbudgets", "roles", "rolebindings",
                      "networkpolicies"}


def operator_kind_writes(kube: Kube) -> int:
    """Writes the API server counted on the kinds the operator writes, excluding status
    writes of built-in kinds and collection deletes (the cluster's own controllers do those;
    the operator writes single objects only)."""
    total = 0
    for line in kube.api_server_metrics().splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels_text, value = line.rsplit(" ", 1)
        labels = dict(part.split("=", 1) for part in labels_text[len("apiserver_request_total{"):-1]
                      .replace('"', "").split(","))
        if labels.get("verb") not in WRITE_VERBS:
            continue
        if labels.get("verb") == "DELETE" and labels.get("scope") != "resource":
            continue
        resource, sub = labels.get("resource"), labels.get("subresource", "")
        if resource not in OPERATOR_RESOURCES:
            continue
        if sub and resource not in ("splitservices", "splitpools"):
            continue
        total += int(float(value))
    return total
