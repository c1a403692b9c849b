"""A `splitserve worker` as a child process: started, ready (with a deadline), talked to, stopped.

Built on the local runner's `Child` (log file, ready line, no orphans); used by the benchmarks,
the profile command and the tests that need real worker processes.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from splitserve.kvtransfer import kvtransfer_pb2_grpc as kv_grpc
from splitserve.kvtransfer.tls import TLSFiles, open_channel
from splitserve.local.processes import Child
from splitserve.worker import worker_pb2 as pb
from splitserve.worker import worker_pb2_grpc as pb_grpc

T = TypeVar("T")
READY_PREFIX = "SPLITSERVE_WORKER_READY"


class WorkerProcess:
    def __init__(self, role: str, model: str | Path, *extra: str, log_dir: Path | None = None,
                 timeout_s: float = 300.0, tls: TLSFiles | None = None) -> None:
        self.role = role
        log_dir = log_dir or Path(tempfile.mkdtemp(prefix="splitserve-worker-"))
        self.log_path = log_dir / f"{role}-{time.monotonic_ns()}.log"
        self.child = Child(role, ["worker", "--role", role, "--model", str(model),
                                  "--grpc-port", "0", "--http-port", "0", *extra],
                           self.log_path, READY_PREFIX)
        self.child.start()
        try:
            self.child.wait_ready(timeout_s)
        except RuntimeError:
            self.child.stop(10)
            raise
        self.grpc_address = self.child.ready_fields["grpc"]
        self.http_address = self.child.ready_fields["http"]
        assert self.child.ready_at is not None
        self.startup_seconds = self.child.ready_at - self.child.started_at
        self.channel = open_channel(self.grpc_address, tls, [])
        self.stub = pb_grpc.WorkerStub(self.channel)
        self.kv = kv_grpc.KVTransferStub(self.channel)

    @property
    def proc(self) -> subprocess.Popen[str]:
        assert self.child.proc is not None
        return self.child.proc

    def stats(self) -> pb.StatsReply:
        return self.stub.Stats(pb.StatsRequest(), timeout=10)

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.child.alive:
            assert self.child.proc is not None
            self.child.proc.kill()
            self.child.proc.wait(10)

    def stop(self) -> None:
        self.child.stop(30)
        self.channel.close()

    def __enter__(self) -> WorkerProcess:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


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
