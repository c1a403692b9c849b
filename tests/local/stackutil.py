"""Helpers for tests against real local stacks: `splitserve run` as a subprocess, polling."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import yaml

from splitserve.local.metrics_text import counter_sum
from splitserve.local.processes import child_env

READY_TIMEOUT_S = 600


def wait_for(cond: Callable[[], Any], timeout_s: float, what: str, step_s: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(step_s)


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.read().decode()


def spec_doc(name: str, prefill: int, decode: int, threshold: int, kv_blocks: int = 256,
             **router: Any) -> dict[str, Any]:
    engine = {"maxBatchTokens": 512, "maxRunningSeqs": 32, "kvCacheBlocks": kv_blocks}
    return {"apiVersion": "splitserve.io/v1alpha1", "kind": "SplitService",
            "metadata": {"name": name},
            "spec": {"model": {"name": "tiny", "dtype": "float32", "maxContext": 1024},
                     "prefill": {"replicas": prefill, "drainSeconds": 5, "engine": engine},
                     "decode": {"replicas": decode, "drainSeconds": 5, "engine": engine},
                     "router": {"shortPromptThreshold": threshold, "maxRetries": 2, **router}}}


@dataclass
class RunHandle:
    """A `splitserve run` process and what it announced."""

    proc: subprocess.Popen[str]
    log_dir: Path
    url: str = ""
    workers: dict[str, dict[str, str]] = field(default_factory=dict)  # name -> grpc, http
    lines: list[str] = field(default_factory=list)

    def metric(self, name: str, url: str, **labels: str) -> float:
        return counter_sum(get(url + "/metrics"), name, **labels)

    def worker_http(self, role: str) -> list[str]:
        return ["http://" + w["http"] for n, w in sorted(self.workers.items())
                if n.startswith(role)]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(90)
        return self.proc.returncode


READY_LINE = re.compile(r"(\w+-\d+) ready in [\d.]+s \(grpc (\S+), http (\S+)\)")


def start_run(spec: dict[str, Any], tmp: Path) -> RunHandle:
    spec_path = tmp / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    proc = subprocess.Popen(
        [sys.executable, "-m", "splitserve.cli", "run", str(spec_path), "--port", "0",
         "--log-dir", str(tmp / "logs"), "--plain", "--interval", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=child_env())
    handle = RunHandle(proc, tmp / "logs")
    ready = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            handle.lines.append(line.rstrip())
            m = READY_LINE.search(line)
            if m:
                handle.workers[m.group(1)] = {"grpc": m.group(2), "http": m.group(3)}
            m2 = re.search(r"router ready at (\S+)", line)
            if m2:
                handle.url = m2.group(1)
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not ready.wait(0.2):
        if proc.poll() is not None or time.monotonic() > deadline:
            handle.stop()
            raise RuntimeError("splitserve run did not come up:\n" + "\n".join(handle.lines))
    return handle


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def reference_text(engine, prompt: str | list[int], max_tokens: int,
                   stop: tuple[str, ...] = ()) -> tuple[str, int]:
    from splitserve.engine.sampling_params import SamplingParams

    out = engine.generate([prompt], SamplingParams(max_tokens=max_tokens, ignore_eos=True,
                                                   stop=stop))[0]
    return out.text, len(out.token_ids)


def stats(worker_http: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(get(worker_http + "/stats"))
    return result
