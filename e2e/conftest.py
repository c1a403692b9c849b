"""Session fixtures for end-to-end tests on the local single-node Kubernetes (e2e/cluster).

The `cluster` fixture uses a cluster that already answers (and leaves it running), or brings one
up with e2e/cluster/up.sh and tears it down with down.sh when the session ends, so a test run
leaves the machine as it found it.

Environment:
  SPLITSERVE_KEEP_CLUSTER=1          keep a cluster the fixture started running after the session
  SPLITSERVE_E2E_KUBECONFIG=PATH     use another cluster (e2e/kind/run.sh) instead of e2e/cluster
  SPLITSERVE_E2E_IMAGES_PRELOADED=1  images are already on that cluster's nodes; build nothing
"""

from __future__ import annotations

import contextlib
import datetime
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest
from kubernetes import client, config
from operator_lib import SESSION_LABEL, session_label

REPO = Path(__file__).resolve().parent.parent
CLUSTER_SCRIPTS = REPO / "e2e" / "cluster"
T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 120.0) -> T:
    """Polls `probe` until it returns something other than None/False; fails after `timeout`."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    last_error: Exception | None = None
    while True:
        try:
            result = probe()
            if result is not None and result is not False:
                return result
        except client.ApiException as error:
            last_error = error
        if time.monotonic() > deadline:
            detail = f" (last API error: {last_error})" if last_error else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(delay)
        delay = min(delay * 2, 1.0)


@dataclass(frozen=True)
class Cluster:
    """A running cluster: its kubeconfig and API clients built from it."""

    kubeconfig: Path
    api: client.ApiClient
    local: bool  # the e2e/cluster node on this machine: pod and Service addresses route here
    images_preloaded: bool

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def apps(self) -> client.AppsV1Api:
        return client.AppsV1Api(self.api)

    @property
    def rbac(self) -> client.RbacAuthorizationV1Api:
        return client.RbacAuthorizationV1Api(self.api)

    wait_for = staticmethod(wait_for)

    def build_image(self, dockerfile: Path, context: Path, name: str) -> str:
        """Builds `name` from a project Dockerfile and loads it into the node; returns its name."""
        if self.images_preloaded:
            return name
        result = subprocess.run(
            [str(CLUSTER_SCRIPTS / "build-image.sh"), str(dockerfile), str(context), name],
            stdout=subprocess.PIPE,
            text=True,
            check=True,
        )
        return result.stdout.strip().splitlines()[-1]

    def pod(self, namespace: str, name: str) -> client.V1Pod:
        return self.core.read_namespaced_pod(name, namespace)

    def wait_pod_phase(
        self, namespace: str, name: str, phases: set[str], timeout: float = 180.0
    ) -> client.V1Pod:
        def probe() -> client.V1Pod | None:
            pod = self.pod(namespace, name)
            status = pod.status or client.V1PodStatus()
            phase = status.phase
            if phase == "Failed" and phase not in phases:
                log = self.core.read_namespaced_pod_log(name, namespace)
                states = [c.state for c in status.container_statuses or []]
                raise AssertionError(f"pod {namespace}/{name} failed: {states}\n{log}")
            return pod if phase in phases else None

        return wait_for(f"pod {namespace}/{name} to be {'/'.join(sorted(phases))}", probe, timeout)

    def pod_output(self, namespace: str, name: str, timeout: float = 180.0) -> str:
        """Waits for a run-to-completion pod to succeed and returns its log."""
        self.wait_pod_phase(namespace, name, {"Succeeded"}, timeout)
        return str(self.core.read_namespaced_pod_log(name, namespace))


def _run_script(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    # stderr (progress) goes to the terminal; stdout's last line is the result.
    return subprocess.run(
        [str(CLUSTER_SCRIPTS / name), *args], stdout=subprocess.PIPE, text=True, check=False
    )


# Namespaces the e2e tests create; the cluster keeps its etcd data across restarts, so a run that
# was interrupted leaves them (and the GPUs their pods hold) for the next one. Several test
# sessions may share one cluster: a namespace is a leftover only when the session that labelled it
# (SESSION_LABEL, see operator_lib.create_namespace) is gone, or, unlabelled, when it is old.
TEST_NAMESPACE_PREFIXES = ("e2e-", "ssvc-e2e-", "ssvc-rbac-")
UNLABELLED_LEFTOVER_AGE = datetime.timedelta(hours=3)


def _namespace_names(core: client.CoreV1Api) -> set[str]:
    return {str(ns.metadata.name) for ns in core.list_namespace().items if ns.metadata}


def _session_gone(value: str) -> bool:
    pid = value.removeprefix("pid-")
    if not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _leftovers(core: client.CoreV1Api) -> set[str]:
    now = datetime.datetime.now(datetime.UTC)
    found: set[str] = set()
    for ns in core.list_namespace().items:
        meta = ns.metadata
        if meta is None or not str(meta.name).startswith(TEST_NAMESPACE_PREFIXES):
            continue
        session = (meta.labels or {}).get(SESSION_LABEL)
        if session is not None:
            if _session_gone(session):
                found.add(str(meta.name))
        elif meta.creation_timestamp and now - meta.creation_timestamp > UNLABELLED_LEFTOVER_AGE:
            found.add(str(meta.name))
    return found


def _remove_leftover_test_namespaces(api: client.ApiClient) -> None:
    """Deletes them; the operator that would release its finalizers is gone, so they are
    dropped here, or the namespaces would stay Terminating."""
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    names = _leftovers(core)
    for name in names:
        with contextlib.suppress(client.ApiException):
            core.delete_namespace(name, grace_period_seconds=0)
        for plural in ("splitservices", "splitpools"):
            with contextlib.suppress(client.ApiException):
                listed = cast(dict[str, Any], custom.list_namespaced_custom_object(
                    "splitserve.io", "v1alpha1", name, plural))
                for item in listed["items"]:
                    custom.patch_namespaced_custom_object(
                        "splitserve.io", "v1alpha1", name, plural, item["metadata"]["name"],
                        {"metadata": {"finalizers": None}})
    if names:
        wait_for(f"leftover test namespaces {sorted(names)} to be deleted",
                 lambda: not names & _namespace_names(core), timeout=300)


@pytest.fixture(scope="session")
def cluster(pytestconfig: pytest.Config) -> Iterator[Cluster]:
    preloaded = os.environ.get("SPLITSERVE_E2E_IMAGES_PRELOADED") == "1"
    external = os.environ.get("SPLITSERVE_E2E_KUBECONFIG")
    if external:
        api = config.new_client_from_config(config_file=external)
        yield Cluster(Path(external), api, local=False, images_preloaded=preloaded)
        api.close()
        return
    status = _run_script("up.sh", "--status")
    started_here = status.returncode != 0
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    if started_here:
        # up.sh reports progress on stderr; a cold start builds for many minutes, so show it.
        with capture.global_and_fixture_disabled():
            up = _run_script("up.sh")
        if up.returncode != 0:
            pytest.fail(f"e2e/cluster/up.sh failed with exit code {up.returncode}")
        status = up
    kubeconfig = Path(status.stdout.strip().splitlines()[-1])
    api = config.new_client_from_config(config_file=str(kubeconfig))
    _remove_leftover_test_namespaces(api)
    try:
        yield Cluster(kubeconfig, api, local=True, images_preloaded=preloaded)
    finally:
        api.close()
        if started_here and os.environ.get("SPLITSERVE_KEEP_CLUSTER") != "1":
            with capture.global_and_fixture_disabled():
                down = _run_script("down.sh")
            if down.returncode != 0:
                pytest.fail(f"e2e/cluster/down.sh failed with exit code {down.returncode}")


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards (its deletion is not awaited)."""
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    cluster.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(
        name=name, labels={SESSION_LABEL: session_label()})))
    wait_for(
        f"the default ServiceAccount in {name}",
        lambda: cluster.core.read_namespaced_service_account("default", name),
        timeout=60,
    )
    yield name
    cluster.core.delete_namespace(name)
