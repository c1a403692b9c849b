"""Trace-driven discrete-event simulation of prefill/decode autoscaling policies.

    python bench/autoscale_sim.py [TRACE ...] [--profile PROFILE.json] [--out RESULTS.json]

Replays request traces (Azure LLM inference CSV: TIMESTAMP, ContextTokens, GeneratedTokens;
Mooncake JSONL: timestamp ms, input_length, output_length) against two simulated pools whose
per-replica speed and pod start-up delay come from a measured capacity profile:
- a prefill replica serves its queue first come first served; one prompt of n tokens takes
  overhead + n * secondsPerToken;
- a decode replica runs its sequences together, one token each per step of
  base + perSequence * batch seconds (processor sharing), admitting a sequence while it has a
  sequence slot and KV blocks for prompt + output; otherwise the sequence waits for a slot
  (the wait counts in its TTFT);
- new replicas serve after the start-up delay; a removed replica takes no new work and keeps
  its GPU until it has finished what it holds.
Requests go to the prefill replica with the least queued work and then to the decode replica
with the most free room. Autoscaled runs start with the pools the first minute's load needs (a
service already running), static_peak with its peak size. Prompts are capped to the model's
context. When the trace's peak needs
more than `--max-peak-replicas` replicas of a pool, arrival times are stretched until it fits.

Policies decide every 15 s (KEDA: every 30 s, its default polling interval).
SLOs are fixed per trace before running, from the profile: TTFT 3x the idle TTFT of the trace's
p99 prompt, TPOT 1.5x the idle (batch 1) decode step. Policies:
- static_peak: both pools sized once for the trace's peak minute;
- hpa: per pool, utilization (token throughput / saturated throughput of the ready replicas)
  with a 70 % target, Kubernetes HPA default behaviour (up: 100 % or 4 pods per period, no
  stabilization; down: 300 s stabilization);
- keda: the llm-d P/D shape: prefill on queued prompt tokens (target: the backlog one replica
  clears in half the TTFT SLO), decode on KV-cache usage 0.8; one pod per 180 s up, one per 300 s
  down, 300 s stabilization;
- oracle: knows the future arrivals; sizes each pool, with the same capacity model and headroom
  as ours, for the ideal load of the next interval, ordering pods one start-up delay ahead;
- splitserve: `splitserve.autoscaler.policy.plan` on snapshots built as Prometheus would give
  them (token rates, queues, KV usage, TTFT/TPOT at the percentile over the last minute).
Reports, per trace and policy: share of requests within both SLOs, GPU-hours (replica-hours of
both pools, including starting and draining replicas) and scaling actions (pool replica changes).
"""

from __future__ import annotations

import argparse
import bisect
import csv
import heapq
import json
import math
import sys
import time as wallclock
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from splitserve.api.serving import AutoscalingSpec
from splitserve.autoscaler.capacity import CapacityProfile
from splitserve.autoscaler.history import History
from splitserve.autoscaler.policy import PlanInputs, PolicyConfig, PoolState, plan
from splitserve.autoscaler.snapshot import MetricsSnapshot, PoolMetrics

ROOT = Path(__file__).resolve().parent.parent
# the shared/ folder sits beside the checkout (one level further up from a worktree)
TRACES = next((d / "shared" / "traces" for d in (ROOT.parent, ROOT.parent.parent)
               if (d / "shared" / "traces").is_dir()), ROOT.parent / "shared" / "traces")
DEFAULT_TRACES = [TRACES / "AzureLLMInferenceTrace_code.csv",
                  TRACES / "AzureLLMInferenceTrace_conv.csv"]
DEFAULT_PROFILE = ROOT / "operator" / "splitserve" / "autoscaler" / "profiles" / "small-cpu.json"
POLICIES = ("static_peak", "hpa", "keda", "oracle", "splitserve")
PERCENTILE = 99.0
# seconds between decisions: the HPA's default sync period, KEDA's default polling interval
PERIODS = {"static_peak": 60.0, "hpa": 15.0, "keda": 30.0, "oracle": 15.0, "splitserve": 15.0}


# ---- traces ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Request:
    arrival: float
    prompt: int
    output: int


def load_trace(path: Path, max_context: int) -> tuple[list[Request], int]:
    """Requests sorted by arrival (seconds from the first) and how many prompts were capped."""
    rows: list[tuple[float, int, int]] = []
    if path.suffix == ".jsonl":
        for line in path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                rows.append((r["timestamp"] / 1000.0, int(r["input_length"]),
                             int(r["output_length"])))
    else:
        with path.open(newline="") as f:
            for r in csv.DictReader(f):
                ts = r["TIMESTAMP"]
                stamp = datetime.strptime(ts[:26], "%Y-%m-%d %H:%M:%S.%f").timestamp()
                rows.append((stamp, int(r["ContextTokens"]), int(r["GeneratedTokens"])))
    if not rows:
        raise ValueError(f"{path}: no requests")
    rows.sort()
    t0, capped, out = rows[0][0], 0, []
    for t, p, o in rows:
        o = max(1, min(o, max_context // 4))
        if p + o > max_context:
            p, capped = max(1, max_context - o), capped + 1
        out.append(Request(t - t0, max(1, p), o))
    return out, capped


def stretch(reqs: list[Request], factor: float) -> list[Request]:
    return [Request(r.arrival * factor, r.prompt, r.output) for r in reqs]


# ---- capacity model -------------------------------------------------------------------------

@dataclass(frozen=True)
class Model:
    prof: CapacityProfile
    ttft_slo: float
    tpot_slo: float
    startup: float
    headroom: float = PolicyConfig().headroom
    kv_target: float = PolicyConfig().kv_target

    def prefill_seconds(self, tokens: int) -> float:
        return self.prof.prefill.idle_seconds(tokens)

    def blocks(self, r: Request) -> int:
        return math.ceil((r.prompt + r.output) / self.prof.decode.block_size)

    @property
    def prefill_per_replica(self) -> float:
        return self.prof.prefill.capacity(self.ttft_slo) * self.headroom

    @property
    def decode_seqs_per_replica(self) -> float:
        return self.prof.decode.sequences(self.tpot_slo) * self.headroom

    @property
    def prefill_saturated(self) -> float:
        return self.prof.prefill.tokens_per_second

    @property
    def decode_saturated(self) -> float:
        d = self.prof.decode
        return d.max_sequences / d.step_seconds(d.max_sequences)

    def pools_for(self, prompt_rate: float, seqs: float, kv_blocks: float) -> tuple[int, int]:
        p = math.ceil(prompt_rate / self.prefill_per_replica - 1e-9)
        d = max(math.ceil(seqs / self.decode_seqs_per_replica - 1e-9),
                math.ceil(kv_blocks / (self.prof.decode.kv_blocks * self.kv_target) - 1e-9))
        return max(1, p), max(1, d)


def slos(prof: CapacityProfile, reqs: list[Request]) -> tuple[float, float]:
    prompts = sorted(r.prompt for r in reqs)
    p99 = prompts[min(len(prompts) - 1, int(0.99 * len(prompts)))]
    return 3.0 * prof.prefill.idle_seconds(p99), 1.5 * prof.decode.idle_tpot


def ideal_load(model: Model, reqs: list[Request]) -> Callable[[float, float], tuple[float, float,
                                                                                     float]]:
    """(start, end) -> (prompt tokens/s arriving, peak concurrent sequences, peak KV blocks)
    if every request were served at its idle TTFT and at the TPOT SLO."""
    arrivals = [r.arrival for r in reqs]
    prompt_cum = [0]
    for r in reqs:
        prompt_cum.append(prompt_cum[-1] + r.prompt)
    points: list[tuple[float, int, int]] = []
    for r in reqs:
        start = r.arrival + model.prefill_seconds(r.prompt)
        end = start + max(0, r.output - 1) * model.tpot_slo
        points += [(start, 1, model.blocks(r)), (end, -1, -model.blocks(r))]
    points.sort()
    times, conc, kv = [], [], []
    c = k = 0
    for t, dc, dk in points:
        c, k = c + dc, k + dk
        times.append(t)
        conc.append(c)
        kv.append(k)

    def load(a: float, b: float) -> tuple[float, float, float]:
        i, j = bisect.bisect_left(arrivals, a), bisect.bisect_left(arrivals, b)
        rate = (prompt_cum[j] - prompt_cum[i]) / max(b - a, 1e-9)
        lo = max(0, bisect.bisect_right(times, a) - 1)
        hi = max(lo + 1, bisect.bisect_right(times, b))
        return rate, float(max(conc[lo:hi], default=0)), float(max(kv[lo:hi], default=0))

    return load


# ---- the simulated cluster ------------------------------------------------------------------

@dataclass
class Replica:
    start: float  # ordered (GPU held from here)
    ready_at: float
    removed: bool = False
    end: float | None = None  # GPU released


@dataclass
class PrefillReplica(Replica):
    free_at: float = 0.0


@dataclass
class Seq:
    req: int
    finish_v: float
    blocks: int


@dataclass
class DecodeReplica(Replica):
    v: float = 0.0
    t_last: float = 0.0
    heap: list[tuple[float, int]] = field(default_factory=list)
    running: dict[int, Seq] = field(default_factory=dict)
    blocks: int = 0
    version: int = 0


@dataclass
class Outcome:
    ttft: list[float]
    tpot: list[float]
    gpu_hours: float
    actions: int
    timeline: list[tuple[float, int, int, float, float]]  # t, prefill, decode, prompt/s, out/s


class Cluster:
    def __init__(self, model: Model, reqs: list[Request], p0: int, d0: int) -> None:
        self.m, self.reqs = model, reqs
        self.prefill: list[PrefillReplica] = [PrefillReplica(0.0, 0.0) for _ in range(p0)]
        self.decode: list[DecodeReplica] = [DecodeReplica(0.0, 0.0) for _ in range(d0)]
        self.events: list[tuple[float, int, str, int, int]] = []
        self.seq = 0
        self.waiting: deque[int] = deque()
        self.first = [math.nan] * len(reqs)  # first token (end of prefill)
        self.decode_start = [math.nan] * len(reqs)
        self.done = [math.nan] * len(reqs)
        self.prompt_done = 0.0  # counters, as the workers export them
        self.tokens_out = 0.0
        self.completed: deque[tuple[float, float, float]] = deque()  # (t, ttft, tpot)
        self.actions = 0
        self.in_prefill = 0

    def push(self, t: float, kind: str, a: int = 0, b: int = 0) -> None:
        self.seq += 1
        heapq.heappush(self.events, (t, self.seq, kind, a, b))

    # decode replica mechanics
    def step_time(self, n: int) -> float:
        return self.m.prof.decode.step_seconds(n)

    def advance(self, r: DecodeReplica, t: float) -> None:
        n = len(r.running)
        if n and t > r.t_last:
            dv = (t - r.t_last) / self.step_time(n)
            r.v += dv
            self.tokens_out += n * dv
        r.t_last = t

    def reschedule(self, ri: int, t: float) -> None:
        r = self.decode[ri]
        r.version += 1
        if r.heap:
            wait = max(0.0, r.heap[0][0] - r.v) * self.step_time(len(r.running))
            self.push(t + wait, "decode", ri, r.version)

    def fits(self, r: DecodeReplica, blocks: int) -> bool:
        d = self.m.prof.decode
        return len(r.running) < d.max_sequences and r.blocks + blocks <= d.kv_blocks

    def admit(self, t: float) -> None:
        while self.waiting:
            i = self.waiting[0]
            blocks = self.m.blocks(self.reqs[i])
            best, room = -1, -1
            for ri, r in enumerate(self.decode):
                if r.removed or r.ready_at > t or not self.fits(r, blocks):
                    continue
                free = self.m.prof.decode.max_sequences - len(r.running)
                if free > room:
                    best, room = ri, free
            if best < 0:
                return
            self.waiting.popleft()
            r = self.decode[best]
            self.advance(r, t)
            self.decode_start[i] = t
            todo = self.reqs[i].output - 1
            r.running[i] = Seq(i, r.v + todo, blocks)
            r.blocks += blocks
            heapq.heappush(r.heap, (r.v + todo, i))
            self.reschedule(best, t)

    def finish(self, i: int, t: float) -> None:
        self.done[i] = t
        ttft = self.decode_start[i] - self.reqs[i].arrival
        out = self.reqs[i].output
        tpot = (t - self.decode_start[i]) / (out - 1) if out > 1 else 0.0
        self.completed.append((t, ttft, tpot))

    def on_decode(self, ri: int, version: int, t: float) -> None:
        r = self.decode[ri]
        if version != r.version:
            return
        self.advance(r, t)
        while r.heap and r.heap[0][0] <= r.v + 1e-9:
            _, i = heapq.heappop(r.heap)
            s = r.running.pop(i)
            r.blocks -= s.blocks
            self.finish(i, t)
        if r.removed and not r.running and r.end is None:
            r.end = t
        self.reschedule(ri, t)
        self.admit(t)

    def on_arrival(self, i: int, t: float) -> None:
        live = [r for r in self.prefill if not r.removed]
        r = min(live, key=lambda x: max(x.free_at, x.ready_at))
        start = max(t, r.free_at, r.ready_at)
        r.free_at = start + self.m.prefill_seconds(self.reqs[i].prompt)
        self.in_prefill += 1
        self.push(r.free_at, "prefilled", i)

    def on_prefilled(self, i: int, t: float) -> None:
        self.first[i] = t
        self.in_prefill -= 1
        self.prompt_done += self.reqs[i].prompt
        if self.reqs[i].output <= 1:
            self.decode_start[i] = t
            self.finish(i, t)
            return
        self.waiting.append(i)
        self.admit(t)

    # scaling
    def live(self, pool: list[PrefillReplica] | list[DecodeReplica]) -> list[Replica]:
        return [r for r in pool if not r.removed]

    def scale(self, name: str, want: int, t: float) -> None:
        pool: list = self.prefill if name == "prefill" else self.decode
        live = [r for r in pool if not r.removed]
        if want == len(live):
            return
        self.actions += 1
        if want > len(live):
            for _ in range(want - len(live)):
                cls = PrefillReplica if name == "prefill" else DecodeReplica
                r = cls(t, t + self.m.startup)
                if isinstance(r, DecodeReplica):
                    r.t_last = t
                pool.append(r)
                self.push(r.ready_at, "ready")
            return
        # remove: starting ones first (newest first), then the least loaded ready ones
        def load(r: Replica) -> float:
            if r.ready_at > t:
                return -1e18 - r.ready_at
            if isinstance(r, PrefillReplica):
                return r.free_at
            return float(len(r.running))  # type: ignore[attr-defined]

        for r in sorted(live, key=load)[: len(live) - want]:
            r.removed = True
            if r.ready_at > t:
                r.end = t
            elif isinstance(r, PrefillReplica):
                r.end = max(t, r.free_at)
            elif not r.running:
                r.end = t

    def gpu_hours(self, t_end: float) -> float:
        total = 0.0
        for r in [*self.prefill, *self.decode]:
            end = r.end if r.end is not None else t_end
            total += max(0.0, min(end, t_end) - r.start)
        return total / 3600.0

    # what Prometheus would show at time t (rates over the last interval)
    def snapshot(self, t: float, last: tuple[float, float], dt: float, window: float = 60.0
                 ) -> MetricsSnapshot:
        for r in self.decode:
            self.advance(r, t)
        prompt_rate = (self.prompt_done - last[0]) / dt
        out_rate = (self.tokens_out - last[1]) / dt
        spt = self.m.prof.prefill.seconds_per_token
        queued = sum(max(0.0, r.free_at - t) / spt for r in self.prefill if r.ready_at <= t)
        ready_d = [r for r in self.decode if r.ready_at <= t and not r.removed]
        while self.completed and self.completed[0][0] < t - window:
            self.completed.popleft()
        ttft = tpot = None
        if self.completed:
            ttfts = sorted(c[1] for c in self.completed)
            tpots = sorted(c[2] for c in self.completed)
            k = min(len(ttfts) - 1, int(PERCENTILE / 100 * len(ttfts)))
            ttft, tpot = ttfts[k], tpots[k]
        return MetricsSnapshot(
            time=t,
            prefill=PoolMetrics(token_rate=prompt_rate, queued_prompt_tokens=queued,
                                queue_depth=float(self.in_prefill)),
            decode=PoolMetrics(
                token_rate=out_rate, queue_depth=float(len(self.waiting)),
                running=float(sum(len(r.running) for r in self.decode)),
                kv_blocks_used=float(sum(r.blocks for r in self.decode)),
                kv_blocks_total=float(len(ready_d) * self.m.prof.decode.kv_blocks)),
            ttft=ttft, tpot=tpot)


# ---- policies -------------------------------------------------------------------------------

Decide = Callable[[float, MetricsSnapshot, Cluster], tuple[int, int]]


def counts(c: Cluster, t: float) -> tuple[int, int, int, int]:
    lp = [r for r in c.prefill if not r.removed]
    ld = [r for r in c.decode if not r.removed]
    return (len(lp), sum(r.ready_at <= t for r in lp), len(ld), sum(r.ready_at <= t for r in ld))


class Behaviour:
    """HPA scaling behaviour: stabilization windows and per-period change limits."""

    def __init__(self, up_window: float, down_window: float,
                 up_limit: Callable[[int], int], down_limit: Callable[[int], int],
                 up_period: float, down_period: float) -> None:
        self.up_window, self.down_window = up_window, down_window
        self.up_limit, self.down_limit = up_limit, down_limit
        self.up_period, self.down_period = up_period, down_period
        self.recs: list[tuple[float, int]] = []
        self.changes: list[tuple[float, int]] = []  # (t, +n / -n)

    def apply(self, t: float, current: int, raw: int, lo: int, hi: int) -> int:
        self.recs = [(s, r) for s, r in self.recs if s >= t - max(self.down_window,
                                                                  self.up_window)] + [(t, raw)]
        want = raw
        if raw > current:
            want = max(current, min(r for s, r in self.recs if s >= t - self.up_window))
            added = sum(n for s, n in self.changes if n > 0 and s > t - self.up_period)
            want = min(want, current + max(0, self.up_limit(current) - added))
        elif raw < current:
            want = min(current, max(r for s, r in self.recs if s >= t - self.down_window))
            removed = -sum(n for s, n in self.changes if n < 0 and s > t - self.down_period)
            want = max(want, current - max(0, self.down_limit(current) - removed))
        want = min(max(want, lo), hi)
        if want != current:
            self.changes.append((t, want - current))
        return want


def static_policy(p: int, d: int) -> Decide:
    return lambda t, s, c: (p, d)


def hpa_policy(model: Model, hi: int) -> Decide:
    beh = [Behaviour(0, 300, lambda n: max(n, 4), lambda n: n, 15, 15) for _ in range(2)]

    def decide(t: float, s: MetricsSnapshot, c: Cluster) -> tuple[int, int]:
        lp, rp, ld, rd = counts(c, t)
        out = []
        for i, (rate, ready, live, sat) in enumerate([
                (s.prefill.token_rate or 0.0, rp, lp, model.prefill_saturated),
                (s.decode.token_rate or 0.0, rd, ld, model.decode_saturated)]):
            util = rate / (max(ready, 1) * sat)
            ratio = util / 0.7
            raw = live if abs(ratio - 1) <= 0.1 else math.ceil(max(ready, 1) * ratio)
            out.append(beh[i].apply(t, live, raw, 1, hi))
        return out[0], out[1]

    return decide


def keda_policy(model: Model, hi: int) -> Decide:
    beh = [Behaviour(0, 300, lambda n: 1, lambda n: 1, 180, 300) for _ in range(2)]
    per_replica_backlog = model.prefill_saturated * model.ttft_slo / 2

    def decide(t: float, s: MetricsSnapshot, c: Cluster) -> tuple[int, int]:
        lp, _, ld, rd = counts(c, t)
        raw_p = math.ceil((s.prefill.queued_prompt_tokens or 0.0) / per_replica_backlog)
        used, total = s.decode.kv_blocks_used or 0.0, s.decode.kv_blocks_total or 0.0
        usage = used / total if total else 0.0
        raw_d = math.ceil(max(rd, 1) * usage / 0.8)
        return beh[0].apply(t, lp, raw_p, 1, hi), beh[1].apply(t, ld, raw_d, 1, hi)

    return decide


def oracle_policy(model: Model, reqs: list[Request], hi: int) -> Decide:
    load = ideal_load(model, reqs)
    period = PERIODS["oracle"]

    def decide(t: float, s: MetricsSnapshot, c: Cluster) -> tuple[int, int]:
        now = model.pools_for(*load(t, t + period))
        ahead = model.pools_for(*load(t + model.startup, t + model.startup + period))
        return min(hi, max(now[0], ahead[0])), min(hi, max(now[1], ahead[1]))

    return decide


def splitserve_policy(model: Model, hi: int) -> Decide:
    spec = AutoscalingSpec(ttft_target_ms=max(1, round(model.ttft_slo * 1000)),
                           tpot_target_ms=max(1, round(model.tpot_slo * 1000)),
                           percentile=PERCENTILE,
                           interval_seconds=int(PERIODS["splitserve"]))
    prof = CapacityProfile(model=model.prof.model, device=model.prof.device,
                           startup_seconds=model.startup, max_context=model.prof.max_context,
                           prefill=model.prof.prefill, decode=model.prof.decode)
    state = {"history": History()}

    def decide(t: float, s: MetricsSnapshot, c: Cluster) -> tuple[int, int]:
        lp, rp, ld, rd = counts(c, t)
        result = plan(PlanInputs(now=t, snapshot=s, slo=spec, profile=prof,
                                 prefill=PoolState(lp, rp, 1, hi),
                                 decode=PoolState(ld, rd, 1, hi), history=state["history"]))
        state["history"] = result.history
        return result.prefill.desired, result.decode.desired

    return decide


# ---- running ---------------------------------------------------------------------------------

def simulate(model: Model, reqs: list[Request], decide: Decide, p0: int, d0: int,
             period: float) -> Outcome:
    c = Cluster(model, reqs, p0, d0)
    for i, r in enumerate(reqs):
        c.push(r.arrival, "arrival", i)
    t_end = reqs[-1].arrival + 60.0
    tick = period
    while tick <= t_end:
        c.push(tick, "tick")
        tick += period
    last = (0.0, 0.0)
    timeline: list[tuple[float, int, int, float, float]] = []
    while c.events:
        t, _, kind, a, b = heapq.heappop(c.events)
        if kind == "arrival":
            c.on_arrival(a, t)
        elif kind == "prefilled":
            c.on_prefilled(a, t)
        elif kind == "decode":
            c.on_decode(a, b, t)
        elif kind == "ready":
            c.admit(t)
        elif kind == "tick":
            snap = c.snapshot(t, last, period)
            last = (c.prompt_done, c.tokens_out)
            want_p, want_d = decide(t, snap, c)
            c.scale("prefill", want_p, t)
            c.scale("decode", want_d, t)
            lp, _, ld, _ = counts(c, t)
            timeline.append((t, lp, ld, snap.prefill.token_rate or 0.0,
                             snap.decode.token_rate or 0.0))
    for rep in c.decode:
        if rep.removed and rep.end is None:
            rep.end = rep.t_last
    ttft = [c.decode_start[i] - r.arrival for i, r in enumerate(reqs)]
    tpot = [(c.done[i] - c.decode_start[i]) / (r.output - 1) if r.output > 1 else 0.0
            for i, r in enumerate(reqs)]
    return Outcome(ttft, tpot, c.gpu_hours(t_end), c.actions, timeline)


def peak_pools(model: Model, reqs: list[Request]) -> tuple[int, int]:
    load = ideal_load(model, reqs)
    end = reqs[-1].arrival
    best = (1, 1)
    t = 0.0
    while t <= end:
        p, d = model.pools_for(*load(t, t + 60.0))
        best = (max(best[0], p), max(best[1], d))
        t += 15.0
    return best


def run_trace(path: Path, prof: CapacityProfile, args: argparse.Namespace) -> dict[str, dict]:
    reqs, capped = load_trace(path, prof.max_context)
    ttft_slo, tpot_slo = slos(prof, reqs)
    startup = args.startup_seconds if args.startup_seconds is not None else prof.startup_seconds
    model = Model(prof, ttft_slo, tpot_slo, startup)
    p_peak, d_peak = peak_pools(model, reqs)
    scale = max(1.0, max(p_peak, d_peak) / args.max_peak_replicas)
    if scale > 1.0:
        reqs = stretch(reqs, scale)
        p_peak, d_peak = peak_pools(model, reqs)
    hi = max(p_peak, d_peak) * 2
    # every autoscaled run starts as a service that was already serving the first minute's load
    warm = model.pools_for(*ideal_load(model, reqs)(0.0, 60.0))
    print(f"{path.name}: {len(reqs)} requests over {reqs[-1].arrival / 60:.1f} min "
          f"(time x{scale:.2f}, {capped} prompts capped to {prof.max_context}); "
          f"SLO TTFT {ttft_slo:.2f}s TPOT {tpot_slo * 1000:.1f}ms at p{PERCENTILE:g}; "
          f"peak needs {p_peak} prefill + {d_peak} decode", flush=True)
    policies: dict[str, Decide] = {
        "static_peak": static_policy(p_peak, d_peak),
        "hpa": hpa_policy(model, hi),
        "keda": keda_policy(model, hi),
        "oracle": oracle_policy(model, reqs, hi),
        "splitserve": splitserve_policy(model, hi),
    }
    results: dict[str, dict] = {}
    for name, decide in policies.items():
        if name not in args.policies:
            continue
        start = wallclock.monotonic()
        p0, d0 = (p_peak, d_peak) if name == "static_peak" else warm
        out = simulate(model, reqs, decide, p0, d0, PERIODS[name])
        ok_ttft = [x <= ttft_slo for x in out.ttft]
        ok_tpot = [x <= tpot_slo for x in out.tpot]
        both = sum(a and b for a, b in zip(ok_ttft, ok_tpot, strict=True)) / len(reqs)
        results[name] = {
            "slo_attainment": round(both, 5),
            "ttft_attainment": round(sum(ok_ttft) / len(reqs), 5),
            "tpot_attainment": round(sum(ok_tpot) / len(reqs), 5),
            "gpu_hours": round(out.gpu_hours, 4),
            "scaling_actions": out.actions,
            "ttft_slo_seconds": round(ttft_slo, 4),
            "tpot_slo_seconds": round(tpot_slo, 5),
            "time_scale": round(scale, 4),
            "timeline": [[round(v, 2) for v in row] for row in out.timeline],
        }
        print(f"  {name:<12} attainment {both * 100:6.2f}%  (TTFT {sum(ok_ttft) / len(reqs):.2%}"
              f", TPOT {sum(ok_tpot) / len(reqs):.2%})  GPU-hours {out.gpu_hours:7.2f}  "
              f"actions {out.actions:4d}  [{wallclock.monotonic() - start:.1f}s]", flush=True)
    return results


def plot(results: dict[str, dict[str, dict]], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for trace, per in results.items():
        names = [n for n in POLICIES if n in per]
        fig, axes = plt.subplots(len(names), 1, figsize=(11, 2.3 * len(names)), sharex=True)
        axes = [axes] if len(names) == 1 else list(axes)
        for ax, name in zip(axes, names, strict=True):
            tl = per[name]["timeline"]
            ts = [r[0] / 60 for r in tl]
            ax.step(ts, [r[1] for r in tl], where="post", label="prefill replicas", color="C0")
            ax.step(ts, [r[2] for r in tl], where="post", label="decode replicas", color="C1")
            ax2 = ax.twinx()
            ax2.plot(ts, [r[3] for r in tl], color="C0", alpha=0.3, lw=0.8,
                     label="prompt tokens/s")
            ax2.plot(ts, [r[4] for r in tl], color="C1", alpha=0.3, lw=0.8,
                     label="output tokens/s")
            ax2.set_ylabel("tokens/s", fontsize=7)
            r = per[name]
            ax.set_title(f"{name}: {r['slo_attainment']:.2%} within SLOs, "
                         f"{r['gpu_hours']:.1f} GPU-h, {r['scaling_actions']} actions",
                         fontsize=9)
            ax.set_ylabel("replicas", fontsize=8)
        axes[0].legend(loc="upper left", fontsize=7)
        axes[-1].set_xlabel("minutes")
        fig.tight_layout()
        path = out_dir / f"autoscale_{Path(trace).stem}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("traces", nargs="*", type=Path, default=DEFAULT_TRACES)
    p.add_argument("--profile", type=Path, default=DEFAULT_PROFILE)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "autoscale_sim.json")
    p.add_argument("--docs", type=Path, default=ROOT / "docs")
    p.add_argument("--policies", default=",".join(POLICIES))
    p.add_argument("--max-peak-replicas", type=int, default=32)
    p.add_argument("--startup-seconds", type=float, default=None,
                   help="pod start-up delay; default: the profile's")
    p.add_argument("--no-plot", action="store_true")
    args = p.parse_args(argv)
    args.policies = set(args.policies.split(","))
    unknown = args.policies - set(POLICIES)
    if unknown:
        print(f"--policies: unknown {sorted(unknown)}; expected from {POLICIES}", file=sys.stderr)
        return 2
    prof = CapacityProfile.from_dict(json.loads(args.profile.read_text()))
    results = {t.name: run_trace(t, prof, args) for t in args.traces}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    slim = {t: {n: {k: v for k, v in r.items() if k != "timeline"} for n, r in per.items()}
            for t, per in results.items()}
    args.out.write_text(json.dumps(slim, indent=2) + "\n")
    print(f"wrote {args.out}")
    if not args.no_plot:
        args.docs.mkdir(parents=True, exist_ok=True)
        for path in plot(results, args.docs):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
