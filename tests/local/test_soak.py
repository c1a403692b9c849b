"""The soak benchmark's machinery, end to end but short: `splitserve run` on the built-in tiny
model, a one-level capacity ramp, a few seconds of open-loop load; the results file carries
the figures the long run reports and no request is lost. (The timings are measured by the
benchmark itself, not asserted here.)"""

from __future__ import annotations

import json

import psutil
import pytest

from bench import soak
from bench.soak_stats import Record, Sample, counts, memory_growth, per_bin, percentile


def test_short_soak_loses_nothing_and_writes_the_figures(tmp_path):
    out, png = tmp_path / "soak.json", tmp_path / "soak.png"
    trace = tmp_path / "trace.csv"  # the trace's columns; the real trace lives outside the repo
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + "".join(
        f"2023-11-16 18:17:0{i}.0,{200 + 97 * i},{8 + 5 * i}\n" for i in range(8)))
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    assert soak.main(["--model", "tiny", "--duration", "6", "--warmup", "2", "--ramp-step", "2",
                      "--max-clients", "1", "--sample-every", "0.5", "--bin", "2",
                      "--hang-timeout", "30", "--out", str(out), "--plot", str(png),
                      "--trace", str(trace)]) == 0
    result = json.loads(out.read_text())
    for key in ("duration_s", "requests", "lost_requests", "error_rate",
                "max_memory_growth_fraction", "capacity_rps", "rate_rps", "per_minute"):
        assert key in result, key
    assert result["duration_s"] == 6
    assert result["requests"] > 0
    assert result["lost_requests"] == 0
    assert result["completed"] + result["failed"] == result["requests"]
    assert result["error_rate"] == 0, result["errors"]
    assert result["rate_rps"] == pytest.approx(0.7 * result["capacity_rps"], rel=1e-2)
    assert set(result["memory"]) == {"router", "prefill-0", "decode-0"}
    assert all(m["baseline_mib"] > 0 for m in result["memory"].values())
    assert len(result["per_minute"]) == 3
    assert sum(b["sent"] for b in result["per_minute"]) == result["requests"]
    assert all(result["processes_alive_at_end"].values())
    assert png.stat().st_size > 0
    left = {p.pid for p in psutil.Process().children(recursive=True)} - before
    assert not left, f"processes left running: {left}"


def test_in_flight_and_silent_endings_count_as_lost():
    records = [Record(0.0, "completed", 0.1, 0.5), Record(0.5, "failed", error="HTTP 503"),
               Record(1.0, "hung"), Record(1.5, "truncated"), Record(2.5)]
    c = counts(records)
    assert (c["completed"], c["failed"], c["lost"], c["in_flight"]) == (1, 1, 3, 1)
    assert c["error_rate"] == pytest.approx(4 / 5)
    bins = per_bin(records, [], 3.0, 2.0)
    assert [b["sent"] for b in bins] == [4, 1]
    assert [b["lost"] for b in bins] == [2, 1]
    assert bins[0]["ttft_p50_ms"] == 100.0


def test_memory_growth_is_measured_from_the_first_sample_after_warmup():
    samples = [Sample(0, {"a": 50}), Sample(10, {"a": 100}), Sample(20, {"a": 108}),
               Sample(30, {"a": 104})]
    g = memory_growth(samples, 10)["a"]
    assert g["growth_fraction"] == pytest.approx(0.08)
    with pytest.raises(ValueError, match="warm-up"):
        memory_growth(samples, 31)


def test_percentile_interpolates_like_numpy():
    assert percentile([], 50) is None
    assert percentile([3.0, 1.0, 2.0, 4.0], 50) == pytest.approx(2.5)
    assert percentile([1.0, 2.0], 99) == pytest.approx(1.99)
