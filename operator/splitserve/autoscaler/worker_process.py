"""Start a `splitserve worker` as a child process and wait for it to report its addresses."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import splitserve

READY = re.compile(r"SPLITSERVE_WORKER_READY role=(\S+) grpc=(\S+) http=(\S+)")


def source_roots() -> list[str]:
    """Directories that hold the `splitserve` namespace package (for a child's PYTHONPATH)."""
    return [str(Path(p).parent) for p in splitserve.__path__]


class WorkerProcess:
    """One worker process; `startup_seconds` is spawn-to-ready (imports and model load)."""

    def __init__(self, args: Sequence[str], *, timeout: float = 300.0,
                 python: str = sys.executable) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([*source_roots(), env.get("PYTHONPATH", "")])
        cmd = [python, "-m", "splitserve.cli", "worker", "--grpc-port", "0", "--http-port", "0",
               *args]
        start = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env=env)
        self.output: list[str] = []
        found: dict[str, str] = {}
        ready = threading.Event()

        def pump() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.output.append(line.rstrip())
                m = READY.search(line)
                if m and not ready.is_set():
                    found.update(role=m[1], grpc=m[2], http=m[3])
                    ready.set()
            ready.set()

        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(timeout) or not found:
            self.stop()
            tail = "\n".join(self.output[-20:])
            raise RuntimeError(f"worker did not become ready within {timeout:.0f}s:\n{tail}")
        self.startup_seconds = time.monotonic() - start
        self.role, self.grpc, self.http = found["role"], found["grpc"], found["http"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> WorkerProcess:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
