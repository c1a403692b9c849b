"""The workers the router knows, per role, with their load (pure state; no network).

Discovery sets the endpoints; the stats poller records each worker's Stats reply or marks it
down; the dispatcher marks a worker down the moment a call to it fails as unavailable and
counts its own in-flight requests. A worker is offered for new work when discovery lists it,
its last poll succeeded and it is not draining: a worker is first polled before it gets work,
so its load and the checkpoint it serves are known when it is paired.

Discovery may also list a worker as standby: Kubernetes says it is not ready, but its pod is
not terminating. Standby workers are polled like the others and offered only while no ready
worker of their role is available. That keeps serving through what the control plane cannot
see: when the API server is away long enough for the node's lease to lapse, every pod on the
node is marked not ready although each still answers. A worker that really cannot serve fails
its polls or reports draining, and is not offered either way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field

from splitserve.router.policy import WorkerLoad

ROLES = ("prefill", "decode")


@dataclass
class WorkerState:
    address: str
    up: bool = True
    polled: bool = False
    draining: bool = False
    standby: bool = False  # listed by discovery as not ready (see the module docstring)
    load: WorkerLoad = field(default_factory=lambda: WorkerLoad(""))


class Registry:
    def __init__(self, block_size: int = 16) -> None:
        self._block_size = block_size
        self._workers: dict[str, dict[str, WorkerState]] = {r: {} for r in ROLES}
        self._inflight: dict[str, int] = {}
        self._inflight_tokens: dict[str, int] = {}

    def _check_role(self, role: str) -> dict[str, WorkerState]:
        if role not in self._workers:
            raise ValueError(f"role={role!r}: expected one of {list(ROLES)}")
        return self._workers[role]

    def set_endpoints(self, role: str, addresses: Iterable[str],
                      standby: Iterable[str] = ()) -> None:
        known = self._check_role(role)
        ready = set(addresses)
        wanted = ready | set(standby)
        for gone in set(known) - wanted:
            del known[gone]
        for address in wanted - set(known):
            known[address] = WorkerState(address, load=WorkerLoad(address,
                                                                  block_size=self._block_size))
        for address, state in known.items():
            state.standby = address not in ready

    def endpoints(self, role: str) -> list[str]:
        return sorted(self._check_role(role))

    def all_endpoints(self) -> list[tuple[str, str]]:
        return [(role, a) for role in ROLES for a in sorted(self._workers[role])]

    def record_stats(self, address: str, *, running: int, waiting: int,
                     queued_prompt_tokens: int, kv_blocks_used: int, kv_blocks_total: int,
                     draining: bool, weights_digest: str = "") -> None:
        for workers in self._workers.values():
            state = workers.get(address)
            if state is not None:
                state.up, state.polled, state.draining = True, True, draining
                state.load = dataclasses.replace(
                    state.load, running=running, waiting=waiting,
                    queued_prompt_tokens=queued_prompt_tokens, kv_blocks_used=kv_blocks_used,
                    kv_blocks_total=kv_blocks_total, model=weights_digest)

    def mark_down(self, address: str) -> None:
        for workers in self._workers.values():
            if address in workers:
                workers[address].up = False

    def mark_draining(self, address: str) -> None:
        for workers in self._workers.values():
            if address in workers:
                workers[address].draining = True

    def begin(self, address: str, prompt_tokens: int = 0) -> None:
        self._inflight[address] = self._inflight.get(address, 0) + 1
        self._inflight_tokens[address] = self._inflight_tokens.get(address, 0) + prompt_tokens

    def end(self, address: str, prompt_tokens: int = 0) -> None:
        self._inflight[address] = max(0, self._inflight.get(address, 0) - 1)
        self._inflight_tokens[address] = max(
            0, self._inflight_tokens.get(address, 0) - prompt_tokens)

    def available(self, role: str, exclude: Iterable[str] = ()) -> list[WorkerLoad]:
        skip = set(exclude)
        offered = [(a, s) for a, s in sorted(self._check_role(role).items())
                   if s.up and s.polled and not s.draining and a not in skip]
        ready = [(a, s) for a, s in offered if not s.standby]
        return [dataclasses.replace(s.load, inflight=self._inflight.get(a, 0),
                                    inflight_prompt_tokens=self._inflight_tokens.get(a, 0))
                for a, s in ready or offered]

    def summary(self) -> dict[str, dict[str, int]]:
        """Per role: known, available (ready; standby ones apart), running and waiting
        sequences, queued prompt tokens."""
        out = {}
        for role, workers in self._workers.items():
            up = [s for s in workers.values() if s.up and s.polled and not s.draining]
            ready = [s for s in up if not s.standby]
            standby = [s for s in up if s.standby]
            serving = ready or standby  # the workers `available` offers
            out[role] = {
                "known": len(workers), "ready": len(ready), "standby": len(standby),
                "running": sum(s.load.running for s in serving),
                "waiting": sum(s.load.waiting for s in serving),
                "queued_prompt_tokens": sum(s.load.queued_prompt_tokens for s in serving),
                "kv_blocks_used": sum(s.load.kv_blocks_used for s in serving),
                "kv_blocks_total": sum(s.load.kv_blocks_total for s in serving),
            }
        return out
