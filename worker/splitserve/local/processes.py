"""Local child processes: start with a log file, wait for the ready line, stop without orphans.

Children run in their own session (a terminal's Ctrl-C reaches only the runner, which stops
them in order) and get SIGKILL from the kernel if the runner itself dies (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import splitserve

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # not Linux (no libc.so.6): the runner's own signal handling still stops the children
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def child_env() -> dict[str, str]:
    """The environment of a child: this process's `splitserve` source roots come first, so the
    children run exactly the code the runner runs."""
    roots = [str(Path(p).parent) for p in splitserve.__path__ if Path(p).is_dir()]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(
        [*roots, *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class Child:
    """One `splitserve <command>` subprocess whose stdout announces readiness."""

    name: str
    args: list[str]
    log_path: Path
    ready_prefix: str
    proc: subprocess.Popen[str] | None = None
    ready_fields: dict[str, str] = field(default_factory=dict)
    started_at: float = 0.0
    ready_at: float | None = None
    _ready: threading.Event = field(default_factory=threading.Event)
    _log: IO[str] | None = None

    def start(self) -> None:
        self._log = open(self.log_path, "a", buffering=1)  # noqa: SIM115 (closed in stop)
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "splitserve.cli", *self.args], stdout=subprocess.PIPE,
            stderr=self._log, stdin=subprocess.DEVNULL, text=True, env=child_env(),
            start_new_session=True, preexec_fn=_die_with_parent)
        threading.Thread(target=self._read, name=f"{self.name}-stdout", daemon=True).start()

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(self.ready_prefix) and not self._ready.is_set():
                self.ready_fields = dict(part.split("=", 1) for part in line.split()[1:]
                                         if "=" in part)
                self.ready_at = time.monotonic()
                self._ready.set()
            try:
                if self._log is not None:
                    self._log.write(line)
            except ValueError:  # closed by stop()
                return

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def wait_ready(self, timeout_s: float) -> None:
        """Blocks until the ready line; RuntimeError (with the log's tail) if the child exits
        or the time runs out."""
        deadline = time.monotonic() + timeout_s
        while not self._ready.wait(0.1):
            if not self.alive:
                raise RuntimeError(f"{self.name} exited (code {self.proc and self.proc.poll()}) "
                                   f"before it was ready:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} was not ready within {timeout_s:g}s:\n"
                                   f"{self.tail()}")

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-lines:])
        except OSError:
            return ""

    def terminate(self) -> None:
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout_s: float) -> None:
        """SIGTERM, wait up to `timeout_s`, then SIGKILL; always reaps the process."""
        if self.proc is not None:
            self.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log is not None:
            self._log.close()
