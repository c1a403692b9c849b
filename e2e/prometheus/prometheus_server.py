"""A real Prometheus for tests: installed by install.sh, scraping given targets (on loopback
unless told to listen where pods can reach it)."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

INSTALL = Path(__file__).with_name("install.sh")


def install() -> Path:
    """The cached Prometheus binary (built from the Go module proxy on first use)."""
    done = subprocess.run(["bash", str(INSTALL)], capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"e2e/prometheus/install.sh failed:\n{done.stderr[-4000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(check: Callable[[], T], timeout: float, what: str, every: float = 0.2) -> T:
    """Poll `check()` until it returns a truthy value; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


class PrometheusServer:
    def __init__(self, binary: Path, workdir: Path, targets: list[str],
                 scrape_interval: str = "1s",
                 jobs: list[dict[str, object]] | None = None, host: str = "127.0.0.1") -> None:
        """Scrapes `targets` keeping their labels; `jobs` replaces that with scrape configs
        of one's own. Listens on `host`."""
        self.port = free_port()
        self.url = f"http://{host}:{self.port}"
        config = workdir / "prometheus.yml"
        config.write_text(json.dumps({  # JSON is YAML
            "global": {"scrape_interval": scrape_interval, "evaluation_interval": "1s"},
            "scrape_configs": jobs or [{"job_name": "splitserve-workers", "honor_labels": True,
                                        "static_configs": [{"targets": targets}]}],
        }))
        self.log = (workdir / "prometheus.log").open("w")
        self.proc = subprocess.Popen(
            [str(binary), f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address={host}:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT)
        try:
            wait_for(self._ready, 60, "Prometheus to become ready")
        except TimeoutError:
            self.stop()
            raise

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"prometheus exited with {self.proc.returncode}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def targets_up(self) -> int:
        with urllib.request.urlopen(f"{self.url}/api/v1/targets", timeout=5) as r:
            body = json.load(r)
        return sum(t["health"] == "up" for t in body["data"]["activeTargets"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
