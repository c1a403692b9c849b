"""Pure summaries for the soak benchmark: request outcomes per time bin, percentiles, memory
growth after warm-up, and the plot."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OUTCOMES = ("completed", "failed", "hung", "truncated")
LOST = ("hung", "truncated")  # no answer and no error: the client was left without a verdict


@dataclass
class Record:
    """One request of the open-loop phase; times in seconds from the start of that phase."""

    sent_at: float
    outcome: str = ""  # one of OUTCOMES; "" while in flight
    ttft: float | None = None
    e2e: float | None = None
    error: str = ""


@dataclass(frozen=True)
class Sample:
    """RSS (bytes) of each watched process at `t` seconds from the start of the open loop."""

    t: float
    rss: dict[str, int]


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default); None for no values."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1e3, 1)


def counts(records: list[Record]) -> dict[str, Any]:
    """Totals over `records`; a request still in flight counts as lost."""
    n = {o: sum(r.outcome == o for r in records) for o in OUTCOMES}
    in_flight = sum(r.outcome == "" for r in records)
    lost = sum(n[o] for o in LOST) + in_flight
    answered = n["completed"] + n["failed"]
    return {"sent": len(records), **n, "in_flight": in_flight, "lost": lost,
            "error_rate": round((n["failed"] + lost) / len(records), 5) if records else 0.0,
            "answered": answered}


def latency(records: list[Record]) -> dict[str, float | None]:
    done = [r for r in records if r.outcome == "completed"]
    ttft = [r.ttft for r in done if r.ttft is not None]
    e2e = [r.e2e for r in done if r.e2e is not None]
    return {"ttft_p50_ms": _ms(percentile(ttft, 50)), "ttft_p99_ms": _ms(percentile(ttft, 99)),
            "e2e_p50_ms": _ms(percentile(e2e, 50)), "e2e_p99_ms": _ms(percentile(e2e, 99))}


def per_bin(records: list[Record], samples: list[Sample], duration_s: float, bin_s: float
            ) -> list[dict[str, Any]]:
    """Requests binned by when they were sent, with the last RSS sample of each bin."""
    if bin_s <= 0:
        raise ValueError(f"bin_s={bin_s}: expected a positive number of seconds")
    out = []
    for i in range(max(1, math.ceil(duration_s / bin_s))):
        lo, hi = i * bin_s, (i + 1) * bin_s
        rs = [r for r in records if lo <= r.sent_at < hi]
        ss = [s for s in samples if lo <= s.t < hi]
        c = counts(rs)
        out.append({"start_s": lo, "sent": c["sent"], "completed": c["completed"],
                    "failed": c["failed"], "lost": c["lost"], "error_rate": c["error_rate"],
                    **latency(rs),
                    "rss_mib": {k: round(v / 2**20, 1) for k, v in ss[-1].rss.items()}
                    if ss else {}})
    return out


def memory_growth(samples: list[Sample], warmup_s: float) -> dict[str, dict[str, float]]:
    """Per process: RSS at the first sample at or after `warmup_s` (the baseline), the largest
    RSS after it, and the growth (max - baseline) / baseline."""
    after = [s for s in samples if s.t >= warmup_s]
    if not after:
        raise ValueError(f"no memory sample after the warm-up of {warmup_s:g}s: run longer "
                         "than the warm-up or shorten it")
    out = {}
    for name, base in after[0].rss.items():
        peak = max(s.rss.get(name, 0) for s in after)
        end = after[-1].rss.get(name, 0)
        out[name] = {"baseline_mib": round(base / 2**20, 1), "max_mib": round(peak / 2**20, 1),
                     "end_mib": round(end / 2**20, 1),
                     "growth_fraction": round((peak - base) / base, 4) if base else 0.0}
    return out


def plot(result: dict[str, Any], samples: list[Sample], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bins = result["per_minute"]
    bin_s = result["setup"]["bin_s"]
    mid = [(b["start_s"] + bin_s / 2) / 60 for b in bins]
    fig, (lat, mem) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    for key, label, style in (("ttft_p50_ms", "TTFT p50", "-"), ("ttft_p99_ms", "TTFT p99", "--"),
                              ("e2e_p50_ms", "end-to-end p50", "-"),
                              ("e2e_p99_ms", "end-to-end p99", "--")):
        ys = [b[key] / 1e3 if b[key] is not None else float("nan") for b in bins]
        lat.plot(mid, ys, style, marker=".", label=label)
    lat.set_ylabel("latency (s)")
    lat.set_yscale("log")
    lat.set_title(f"{result['rate_rps']:.2f} req/s open loop "
                  f"({result['fraction']:.0%} of {result['capacity_rps']:.2f} req/s capacity); "
                  f"{result['requests']} requests, {result['lost_requests']} lost")
    lat.legend(fontsize=8, ncol=2)
    lat.grid(alpha=0.3)
    names = list(samples[0].rss) if samples else []
    for name in names:
        mem.plot([s.t / 60 for s in samples], [s.rss.get(name, 0) / 2**20 for s in samples],
                 label=name)
    mem.axvspan(0, result["warmup_s"] / 60, color="grey", alpha=0.15, label="warm-up")
    mem.set_ylabel("RSS (MiB)")
    mem.set_xlabel("minutes into the open-loop phase")
    mem.set_title(f"max RSS growth after warm-up: {result['max_memory_growth_fraction']:.1%}")
    mem.legend(fontsize=8)
    mem.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
