"""Continuous batching with chunked prefill and preemption by recompute (pure Python).

Each step has a token budget. Running sequences that decode (one pending token) go first, so a
long prompt never stalls them; then running sequences in the middle of a chunked prefill; then
waiting sequences in arrival order, each taking at most what is left of the budget. When blocks
run out, the most recently arrived running sequence is preempted: its blocks are freed and it
goes back to the front of the queue, to be recomputed (its full blocks usually come back from
the prefix cache).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from splitserve.engine.block_manager import BlockManager
from splitserve.engine.sequence import Sequence, SequenceStatus


@dataclass
class ScheduledSeq:
    seq: Sequence
    num_tokens: int  # tokens computed for this sequence in this step

    @property
    def completes(self) -> bool:
        """True when this step reaches the end of the sequence's tokens (so it samples)."""
        return self.seq.num_computed_tokens + self.num_tokens == self.seq.num_tokens


@dataclass
class SchedulerOutput:
    decodes: list[ScheduledSeq] = field(default_factory=list)
    prefills: list[ScheduledSeq] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)

    @property
    def scheduled(self) -> list[ScheduledSeq]:
        return self.decodes + self.prefills

    @property
    def num_tokens(self) -> int:
        return sum(s.num_tokens for s in self.scheduled)


@dataclass
class SchedulerCounters:
    steps: int = 0
    prefill_chunks: int = 0  # prefill pieces that stopped short of the sequence's end
    preemptions: int = 0
    mixed_steps: int = 0  # steps running decodes and prefill together


class Scheduler:
    def __init__(
        self, block_manager: BlockManager, max_num_seqs: int, max_num_batched_tokens: int
    ) -> None:
        if max_num_seqs <= 0 or max_num_batched_tokens <= 0:
            raise ValueError(
                f"max_num_seqs={max_num_seqs}, max_num_batched_tokens={max_num_batched_tokens}: "
                "expected positive integers")
        self.blocks = block_manager
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.counters = SchedulerCounters()

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def add_running(self, seq: Sequence) -> None:
        """Adopts a sequence whose blocks are already allocated and filled (imported KV)."""
        seq.status = SequenceStatus.RUNNING
        self.running.append(seq)

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def remove(self, seq: Sequence) -> None:
        """Drops a finished or aborted sequence; frees its blocks unless it holds them."""
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        if not seq.hold_kv:
            self.blocks.free(seq)

    def schedule(self) -> SchedulerOutput:
        out = SchedulerOutput()
        budget = self.max_num_batched_tokens
        taken: set[str] = set()
        for decoding in (True, False):
            for seq in list(self.running):
                if budget == 0:
                    break
                if seq.seq_id in taken or seq not in self.running:
                    continue
                if (seq.num_pending == 1) != decoding:
                    continue
                n = min(seq.num_pending, budget)
                if not self._make_room(seq, n, taken, out):
                    continue
                self._take(seq, n, out.decodes if decoding else out.prefills, taken)
                budget -= n
        while self.waiting and budget and len(self.running) < self.max_num_seqs \
                and not out.preempted:
            seq = self.waiting[0]
            self.blocks.match_prefix(seq)
            n = min(seq.num_pending, budget)
            if not self.blocks.can_allocate(seq, n):
                self._reset(seq)
                break
            self.waiting.popleft()
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            self._take(seq, n, out.prefills, taken)
            budget -= n
        self.counters.steps += 1
        if out.decodes and out.prefills:
            self.counters.mixed_steps += 1
        return out

    def _take(self, seq: Sequence, n: int, into: list[ScheduledSeq], taken: set[str]) -> None:
        self.blocks.allocate(seq, n)
        into.append(ScheduledSeq(seq, n))
        taken.add(seq.seq_id)
        if n < seq.num_pending:
            self.counters.prefill_chunks += 1

    def _make_room(self, seq: Sequence, n: int, taken: set[str], out: SchedulerOutput) -> bool:
        while not self.blocks.can_allocate(seq, n):
            victims = [s for s in self.running if s.seq_id not in taken and s is not seq]
            if victims:
                self._preempt(victims[-1], out)
            else:
                if not taken:
                    self._preempt(seq, out)
                return False
        return True

    def _preempt(self, seq: Sequence, out: SchedulerOutput) -> None:
        self.running.remove(seq)
        self._reset(seq)
        seq.status = SequenceStatus.WAITING
        seq.num_preemptions += 1
        self.waiting.appendleft(seq)
        out.preempted.append(seq)
        self.counters.preemptions += 1

    def _reset(self, seq: Sequence) -> None:
        self.blocks.free(seq)
        seq.num_computed_tokens = 0
        seq.num_cached_tokens = 0
