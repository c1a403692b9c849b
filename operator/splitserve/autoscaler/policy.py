"""The planning function: metrics + SLOs + capacity profiles + current state → both pools' replicas.

`plan()` is pure. Per pool, per decision:
1. Demand now. Prefill: prompt tokens/s arriving (served plus the growth of the queue since the
   last decision). Decode: output tokens/s (plus what the waiting sequences would add),
   concurrent sequences — counting the sequences queued for prefill that its current rate brings
   to decode within the horizon, so a prompt burst raises decode together with prefill — and KV
   blocks in use.
2. Prediction over the recent window (`predict`), looking a pod start-up time plus one interval
   ahead: new capacity ordered now is only useful once it is ready.
3. Modelled per-replica capacity at the SLO target (`capacity`), times the pool's online
   correction factor (`correction`), times `headroom` → raw recommendation. Prefill adds the
   capacity to clear today's queued prompt tokens within the TTFT target.
4. Stabilization (as the Kubernetes HPA): scale up to the lowest recommendation of the up
   window, at most tripling (or +`min_up_step`) per decision; scale down to the highest of the
   down window — only once recommendations cover that whole window — removing at most
   `max_down_fraction` per decision.
5. No adds while the pool has pods the scheduler cannot place, or pods that stayed unready for
   `stuck_startups` start-up times after the last scale-up: hold and report ScalingLimited.
6. min/max bounds, then the prefill/decode ratio bounds across both pools (raising the lower
   pool when it may grow, otherwise lowering the higher one).
A pool whose series are missing holds its replicas (no data is not zero load).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from splitserve.api.names import Reason
from splitserve.api.serving import AutoscalingSpec
from splitserve.autoscaler.capacity import CapacityProfile
from splitserve.autoscaler.correction import CorrectionConfig, correct
from splitserve.autoscaler.history import History, PoolHistory
from splitserve.autoscaler.predict import predict
from splitserve.autoscaler.snapshot import MetricsSnapshot, PoolMetrics


@dataclass(frozen=True)
class PoolState:
    replicas: int  # what the pool's scale subresource says now
    ready: int
    min_replicas: int = 1
    max_replicas: int = 16
    unschedulable: int = 0  # pods the scheduler reported it cannot place
    unschedulable_reason: str = ""

    def __post_init__(self) -> None:
        if self.min_replicas < 1 or self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas={self.min_replicas}, max_replicas="
                             f"{self.max_replicas}: expected 1 <= min <= max")
        if self.replicas < 0 or self.ready < 0 or self.unschedulable < 0:
            raise ValueError("replicas, ready and unschedulable must be non-negative")


@dataclass(frozen=True)
class PolicyConfig:
    headroom: float = 0.85  # plan each replica up to this share of its modelled capacity
    kv_target: float = 0.8  # plan KV usage up to this share of the pool's blocks
    window: float = 900.0  # seconds of history kept
    half_life: float = 60.0  # EWMA half-life of the load
    trend_window: float = 120.0
    max_rise: float = 0.5  # trend term cap, as a share of the latest load
    min_up_step: int = 4
    max_up_factor: float = 3.0
    max_down_fraction: float = 0.25
    stuck_startups: float = 3.0
    backlog_drain: float = 1.0  # queued prompt tokens must clear within this many TTFT targets
    settle_seconds: float = 90.0  # latency window after a change before correcting the profile
    correction: CorrectionConfig = field(default_factory=CorrectionConfig)


@dataclass(frozen=True)
class PlanInputs:
    now: float
    snapshot: MetricsSnapshot
    slo: AutoscalingSpec
    profile: CapacityProfile
    prefill: PoolState
    decode: PoolState
    history: History = field(default_factory=History)
    config: PolicyConfig = field(default_factory=PolicyConfig)


@dataclass(frozen=True)
class PoolDecision:
    pool: str
    current: int
    desired: int
    recommended: int  # from the load alone, before stabilization, holds and bounds
    reason: str  # CamelCase: ScaleUp, ScaleDown, Hold, NoData
    message: str
    inputs: dict[str, float]
    limited: str | None = None  # ScalingLimited reason (splitserve.api.names.Reason)
    limited_message: str = ""
    smoothed: int = 0  # sizing from the load's EWMA; scale-down keeps the window's highest


@dataclass(frozen=True)
class Plan:
    prefill: PoolDecision
    decode: PoolDecision
    history: History  # pass to the next plan() call

    @property
    def decisions(self) -> tuple[PoolDecision, PoolDecision]:
        return (self.prefill, self.decode)


@dataclass(frozen=True)
class _Need:
    raw: int | None  # None: no data
    smooth: int  # the same sizing from the load's EWMA alone (what scale-down looks back on)
    message: str
    inputs: dict[str, float]
    history: PoolHistory


def _settled(x: PlanInputs, state: PoolState, h: PoolHistory) -> bool:
    """All pods ready and no change within the latency window: latency reflects this size."""
    recent = h.last_change is not None and x.now - h.last_change < x.config.settle_seconds
    return state.ready == state.replicas and state.ready > 0 and not recent


def _prefill_need(x: PlanInputs, h: PoolHistory) -> _Need:
    m, cfg = x.snapshot.prefill, x.config
    if m.token_rate is None:
        return _Need(None, 0, "no prompt token rate for the prefill pool", {}, h)
    target = x.slo.ttft_target_ms / 1000.0
    base = x.profile.prefill.capacity(target)
    steady = _settled(x, x.prefill, h)
    fixed = correct(h.factor, observed=x.snapshot.ttft, target=target,
                    load_per_replica=m.token_rate / x.prefill.ready if steady else None,
                    capacity=base, config=cfg.correction)
    queued = m.queued_prompt_tokens or 0.0
    arriving = m.token_rate
    if h.backlog and x.now > h.backlog[-1][0]:
        t0, q0 = h.backlog[-1]
        arriving = max(0.0, m.token_rate + (queued - q0) / (x.now - t0))
    h = replace(h, factor=fixed.factor, demand=(*h.demand, (x.now, arriving)),
                backlog=(*h.backlog, (x.now, queued)))
    horizon = x.profile.startup_seconds + x.slo.interval_seconds
    p = predict(h.demand, now=x.now, horizon=horizon, half_life=cfg.half_life,
                trend_window=cfg.trend_window, max_rise=cfg.max_rise)
    per_replica = base * fixed.factor * cfg.headroom
    backlog = queued / (target * cfg.backlog_drain)
    raw = math.ceil((p.value + backlog) / per_replica - 1e-9)
    smooth = math.ceil((p.ewma + backlog) / per_replica - 1e-9)
    inputs = {"promptTokensPerSecond": m.token_rate,
              "queuedPromptTokens": queued,
              "arrivingTokensPerSecond": arriving, "predictedTokensPerSecond": p.value,
              "ewmaTokensPerSecond": p.ewma, "trendTokensPerSecond2": p.slope,
              "capacityPerReplica": base * fixed.factor, "correctionFactor": fixed.factor}
    if x.snapshot.ttft is not None:
        inputs["ttftSeconds"] = x.snapshot.ttft
    msg = (f"predicted {p.value:.4g} prompt tokens/s over {horizon:.0f}s and "
           f"{queued:.4g} queued; {per_replica:.4g}/s per replica at TTFT {target:.3g}s")
    if fixed.changed:
        msg += f"; capacity corrected to x{fixed.factor:.3g} ({fixed.reason})"
    return _Need(raw, smooth, msg, inputs, h)


def _upstream(prefill: PoolMetrics, horizon: float) -> float:
    """Sequences now queued for or in prefill that reach decode within `horizon` seconds:
    all of them when prefill keeps up, else the share its current rate clears in time."""
    seqs = (prefill.queue_depth or 0.0) + (prefill.running or 0.0)
    queued, rate = prefill.queued_prompt_tokens or 0.0, prefill.token_rate or 0.0
    share = 1.0 if queued <= 0 else min(1.0, horizon * rate / queued)
    return seqs * share


def _decode_need(x: PlanInputs, h: PoolHistory) -> _Need:
    m, cfg, prof = x.snapshot.decode, x.config, x.profile.decode
    if m.token_rate is None and m.running is None:
        return _Need(None, 0, "no token rate or running sequences for the decode pool", {}, h)
    target = x.slo.tpot_target_ms / 1000.0
    base_tps, base_seqs = prof.capacity(target), prof.sequences(target)
    steady = _settled(x, x.decode, h)
    rate = m.token_rate or 0.0
    fixed = correct(h.factor, observed=x.snapshot.tpot, target=target,
                    load_per_replica=rate / x.decode.ready if steady else None,
                    capacity=base_tps, config=cfg.correction)
    waiting, running = m.queue_depth or 0.0, m.running or 0.0
    horizon = x.profile.startup_seconds + x.slo.interval_seconds
    upstream = _upstream(x.snapshot.prefill, horizon)
    per_seq_rate = rate / max(running, 1.0) if running > 0 else 0.0
    demand = rate + waiting * per_seq_rate
    h = replace(h, factor=fixed.factor, demand=(*h.demand, (x.now, demand)),
                concurrency=(*h.concurrency, (x.now, running + waiting + upstream)))
    kw = {"now": x.now, "horizon": horizon, "half_life": cfg.half_life,
          "trend_window": cfg.trend_window, "max_rise": cfg.max_rise}
    p_rate, p_conc = predict(h.demand, **kw), predict(h.concurrency, **kw)
    per_tps = base_tps * fixed.factor * cfg.headroom
    per_seqs = base_seqs * fixed.factor * cfg.headroom
    needs = {"output tokens/s": p_rate.value / per_tps,
             "concurrent sequences": p_conc.value / per_seqs}
    smooth = max(p_rate.ewma / per_tps, p_conc.ewma / per_seqs)
    inputs = {"outputTokensPerSecond": rate, "runningSequences": running,
              "waitingSequences": waiting, "prefillSequences": upstream,
              "predictedTokensPerSecond": p_rate.value,
              "predictedSequences": p_conc.value,
              "capacityPerReplica": base_tps * fixed.factor,
              "sequencesPerReplica": base_seqs * fixed.factor, "correctionFactor": fixed.factor}
    if m.kv_blocks_used is not None:
        h = replace(h, kv_blocks=(*h.kv_blocks, (x.now, m.kv_blocks_used)))
        p_kv = predict(h.kv_blocks, **kw)
        observed = m.kv_blocks_total / x.decode.ready if x.decode.ready > 0 and \
            m.kv_blocks_total else 0.0
        per = observed if observed >= 1.0 else float(prof.kv_blocks)
        needs["KV blocks"] = p_kv.value / (per * cfg.kv_target)
        smooth = max(smooth, p_kv.ewma / (per * cfg.kv_target))
        inputs.update(kvBlocksUsed=m.kv_blocks_used, predictedKvBlocks=p_kv.value,
                      kvBlocksPerReplica=per)
    if x.snapshot.tpot is not None:
        inputs["tpotSeconds"] = x.snapshot.tpot
    driver = max(needs, key=lambda k: needs[k])
    raw = math.ceil(needs[driver] - 1e-9)
    msg = f"sized by {driver} (needs {needs[driver]:.3g} replicas at TPOT {target:.3g}s)"
    if fixed.changed:
        msg += f"; capacity corrected to x{fixed.factor:.3g} ({fixed.reason})"
    return _Need(raw, math.ceil(smooth - 1e-9), msg, inputs, h)


def _stabilize(x: PlanInputs, state: PoolState, need: _Need, raw: int) -> int:
    current, cfg = state.replicas, x.config
    recs = (*need.history.recommendations, (x.now, need.smooth))
    if raw > current:
        since = x.now - x.slo.scale_up_stabilization_seconds
        target = max(current, min([raw] + [r for t, r in recs[:-1] if t >= since]))
        step = max(cfg.min_up_step, math.ceil(current * (cfg.max_up_factor - 1.0)))
        return min(target, current + step)
    if raw < current:
        since = x.now - x.slo.scale_down_stabilization_seconds
        if recs[0][0] > since:
            return current  # the recommendations do not cover the whole window yet
        target = min(current, max(raw, *(r for t, r in recs if t >= since)))
        return max(target, current - max(1, math.floor(current * cfg.max_down_fraction)))
    return current


def _hold(x: PlanInputs, state: PoolState, h: PoolHistory) -> tuple[str, str] | None:
    """Why adds must wait, if they must."""
    if state.unschedulable > 0:
        why = f": {state.unschedulable_reason}" if state.unschedulable_reason else ""
        return (Reason.AS_PENDING_PODS,
                f"{state.unschedulable} pod(s) cannot be scheduled{why}; not adding more")
    stuck_after = x.config.stuck_startups * max(x.profile.startup_seconds, 1.0)
    if (state.ready < state.replicas and h.last_scale_up is not None
            and x.now - h.last_scale_up > stuck_after):
        return (Reason.PODS_NOT_READY,
                f"{state.replicas - state.ready} pod(s) still not ready {stuck_after:.0f}s "
                f"after the last scale-up; not adding more")
    return None


def _decide(x: PlanInputs, name: str, state: PoolState, need: _Need) -> PoolDecision:
    inputs = {**need.inputs, "replicas": float(state.replicas), "ready": float(state.ready),
              "unschedulable": float(state.unschedulable)}
    bounded = min(max(state.replicas, state.min_replicas), state.max_replicas)
    if need.raw is None:
        return PoolDecision(name, state.replicas, bounded, state.replicas, "NoData",
                            f"holding: {need.message}", inputs)
    h = need.history
    target = _stabilize(x, state, need, need.raw)
    limited, limited_msg = None, ""
    hold = _hold(x, state, h) if target > state.replicas else None
    if hold is not None:
        target, (limited, limited_msg) = state.replicas, hold
    if target > state.max_replicas or need.raw > state.max_replicas:
        limited = limited or Reason.AS_AT_MAX
        limited_msg = limited_msg or (f"wants {need.raw} replicas; maxReplicas is "
                                      f"{state.max_replicas}")
    target = min(max(target, state.min_replicas), state.max_replicas)
    reason = ("ScaleUp" if target > state.replicas
              else "ScaleDown" if target < state.replicas else "Hold")
    return PoolDecision(name, state.replicas, target, need.raw, reason, need.message, inputs,
                        limited, limited_msg, need.smooth)


def _ratio(x: PlanInputs, p: PoolDecision, d: PoolDecision, hp: PoolHistory, hd: PoolHistory
           ) -> tuple[PoolDecision, PoolDecision]:
    lo, hi = x.slo.pd_ratio.min, x.slo.pd_ratio.max
    ps, ds = x.prefill, x.decode

    def can_grow(dec: PoolDecision, st: PoolState, to: int) -> bool:
        held = _hold(x, st, hp if dec.pool == "prefill" else hd) is not None
        return to <= st.max_replicas and (to <= dec.current or not held)

    def set_to(dec: PoolDecision, to: int, why: str, limited: bool) -> PoolDecision:
        reason = ("ScaleUp" if to > dec.current else "ScaleDown" if to < dec.current
                  else "Hold")
        return replace(dec, desired=to, reason=reason, message=f"{dec.message}; {why}",
                       limited=Reason.AS_RATIO_BOUND if limited else dec.limited,
                       limited_message=why if limited else dec.limited_message)

    if p.desired > d.desired * hi + 1e-9:
        want = math.ceil(p.desired / hi - 1e-9)
        why = f"prefill/decode ratio kept at most {hi:g}"
        if can_grow(d, ds, want):
            d = set_to(d, want, why, False)
        else:
            p = set_to(p, max(ps.min_replicas, math.floor(d.desired * hi + 1e-9)), why, True)
    elif p.desired < d.desired * lo - 1e-9:
        want = math.ceil(d.desired * lo - 1e-9)
        why = f"prefill/decode ratio kept at least {lo:g}"
        if can_grow(p, ps, want):
            p = set_to(p, want, why, False)
        else:
            d = set_to(d, max(ds.min_replicas, math.floor(p.desired / lo + 1e-9)), why, True)
    return p, d


def _after(need: _Need, dec: PoolDecision, now: float, since: float) -> PoolHistory:
    h = need.history
    if need.raw is not None:
        h = replace(h, recommendations=(*h.recommendations, (now, dec.smoothed)))
    if dec.desired > dec.current:
        h = replace(h, last_scale_up=now)
    if dec.desired != dec.current:
        h = replace(h, last_change=now)
    return h.trimmed(since)


def plan(x: PlanInputs) -> Plan:
    """Desired prefill and decode replicas with reasons and inputs, plus the next history."""
    p_need = _prefill_need(x, x.history.prefill)
    d_need = _decode_need(x, x.history.decode)
    p, d = _ratio(x, _decide(x, "prefill", x.prefill, p_need),
                  _decide(x, "decode", x.decode, d_need), p_need.history, d_need.history)
    since = x.now - x.config.window
    history = History(_after(p_need, p, x.now, since), _after(d_need, d, x.now, since))
    return Plan(p, d, history)
