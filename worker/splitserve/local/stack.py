"""A whole service on one machine: prefill and decode workers and the router as processes."""

from __future__ import annotations

import json
import tempfile
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from splitserve.local.processes import Child
from splitserve.local.spec import LocalPlan, model_dir, router_args, worker_args
from splitserve.worker.config import resolve_model

WORKER_READY = "SPLITSERVE_WORKER_READY"
ROUTER_READY = "SPLITSERVE_ROUTER_READY"
Progress = Callable[[str], None]


class LocalStack:
    def __init__(self, plan: LocalPlan, router_port: int | None = None,
                 log_dir: str | Path | None = None, ready_timeout_s: float = 600.0) -> None:
        self.plan = plan
        spec = plan.service.spec
        self.router_port = spec.router.port if router_port is None else router_port
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix=f"splitserve-{plan.name}-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.ready_timeout_s = ready_timeout_s
        self.workers: list[tuple[str, Child]] = []
        self.router: Child | None = None
        self.model_path = ""

    @property
    def url(self) -> str:
        assert self.router is not None
        return "http://" + self.router.ready_fields["http"]

    def worker_children(self, role: str) -> list[Child]:
        return [c for r, c in self.workers if r == role]

    def start(self, progress: Progress = lambda line: None) -> None:
        spec = self.plan.service.spec
        name = model_dir(self.plan)
        progress(f"model: {name} (preparing)")
        self.model_path = str(resolve_model(name))
        try:
            for role, pool in (("prefill", spec.prefill), ("decode", spec.decode)):
                for i in range(pool.replicas):
                    child = Child(f"{role}-{i}", worker_args(self.plan, role, self.model_path),
                                  self.log_dir / f"{role}-{i}.log", WORKER_READY)
                    self.workers.append((role, child))
                    child.start()
            progress(f"loading {len(self.workers)} workers (logs in {self.log_dir})")
            with ThreadPoolExecutor(len(self.workers)) as pool_exec:
                for _, child in self.workers:
                    pool_exec.submit(self._await, child, progress)
            for _, child in self.workers:
                child.wait_ready(0)  # raises for a worker that failed to come up
            self.router = Child("router", router_args(
                self.plan, self.model_path,
                [c.ready_fields["grpc"] for c in self.worker_children("prefill")],
                [c.ready_fields["grpc"] for c in self.worker_children("decode")],
                self.router_port), self.log_dir / "router.log", ROUTER_READY)
            self.router.start()
            self.router.wait_ready(self.ready_timeout_s)
            progress(f"router ready at {self.url}")
        except BaseException:
            self.stop()
            raise

    def _await(self, child: Child, progress: Progress) -> None:
        try:
            child.wait_ready(self.ready_timeout_s)
        except RuntimeError:
            return  # reported by the caller's own wait_ready
        assert child.ready_at is not None
        progress(f"{child.name} ready in {child.ready_at - child.started_at:.1f}s "
                 f"(grpc {child.ready_fields.get('grpc')}, http {child.ready_fields.get('http')})")

    def status(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "/status", timeout=2) as resp:
            result: dict[str, Any] = json.loads(resp.read())
        return result

    def stop(self) -> None:
        """Router first (it drains its requests), then every worker; nothing is left running."""
        if self.router is not None:
            self.router.stop(15)
        for child in [c for _, c in self.workers]:
            child.terminate()
        deadline = time.monotonic() + 20
        for _, child in self.workers:
            child.stop(max(0.1, deadline - time.monotonic()))
