"""A worker as a child process: start it, wait until it is ready (with a deadline), talk, stop."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from splitserve.kvtransfer import kvtransfer_pb2_grpc as kv_grpc
from splitserve.kvtransfer.tls import TLSFiles, open_channel
from splitserve.worker import worker_pb2 as pb
from splitserve.worker import worker_pb2_grpc as pb_grpc

T = TypeVar("T")
READY = re.compile(r"SPLITSERVE_WORKER_READY role=(\S+) grpc=(\S+) http=(\S+)")


def child_env() -> dict[str, str]:
    """The environment for a child that must import the same splitserve code as this process."""
    import splitserve

    roots = sorted({str(Path(p).parent) for p in splitserve.__path__})
    path = os.pathsep.join([*roots, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=path)


class WorkerProcess:
    def __init__(self, role: str, model: Path, *extra: str, log_dir: Path,
                 timeout_s: float = 120.0, tls: TLSFiles | None = None) -> None:
        self.role = role
        self.log_path = log_dir / f"{role}-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("w")
        cmd = [sys.executable, "-m", "splitserve.cli", "worker", "--role", role,
               "--model", str(model), "--grpc-port", "0", "--http-port", "0", *extra]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._log, text=True,
                                     env=child_env())
        self.grpc_address, self.http_address = self._wait_ready(timeout_s)
        threading.Thread(target=self._drain_stdout, daemon=True).start()
        self.channel = open_channel(self.grpc_address, tls, [])
        self.stub = pb_grpc.WorkerStub(self.channel)
        self.kv = kv_grpc.KVTransferStub(self.channel)

    def _wait_ready(self, timeout_s: float) -> tuple[str, str]:
        deadline = time.monotonic() + timeout_s
        assert self.proc.stdout is not None
        # readline blocks, but the process either prints its ready line or exits (EOF)
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            match = READY.search(line)
            if match:
                return match.group(2), match.group(3)
        self.kill()
        raise RuntimeError(f"{self.role} worker did not become ready; log:\n"
                           f"{self.log_path.read_text()[-4000:]}")

    def _drain_stdout(self) -> None:
        assert self.proc.stdout is not None
        for _ in self.proc.stdout:
            pass

    def stats(self) -> pb.StatsReply:
        return self.stub.Stats(pb.StatsRequest(), timeout=10)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        self.channel.close()
        self._log.close()


def wait_for(predicate: Callable[[], T], timeout_s: float, what: str,
             interval_s: float = 0.05) -> T:
    """Polls `predicate` until it returns a truthy value; fails naming `what` at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(interval_s)
