"""`splitserve profile`: the fits (pure) and one real measurement against a tiny worker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from splitserve.autoscaler import profile
from splitserve.autoscaler.capacity import CapacityProfile


def test_fit_line_recovers_a_line() -> None:
    a, b = profile.fit_line([64, 256, 512, 1024], [0.05 + 0.001 * x for x in (64, 256, 512, 1024)])
    assert a == pytest.approx(0.05)
    assert b == pytest.approx(0.001)


def test_fit_line_floors_the_intercept_and_keeps_the_slope_positive() -> None:
    a, b = profile.fit_line([1, 2, 3], [0.0, 0.5, 1.0])
    assert a == 0.0 and b == pytest.approx(0.5)
    flat_a, flat_b = profile.fit_line([1, 2, 3], [0.3, 0.2, 0.1])
    assert flat_b > 0 and flat_a >= 0


@pytest.mark.parametrize(("xs", "ys", "message"), [
    ([1], [1.0], "two or more points"),
    ([1, 2], [1.0], "two or more points"),
    ([3, 3], [1.0, 2.0], "distinct"),
])
def test_fit_line_rejects_bad_input(xs: list[float], ys: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        profile.fit_line(xs, ys)


def test_build_profile_takes_the_costlier_per_token_figure() -> None:
    p = profile.build_profile(
        model="m", device="cpu", command="splitserve profile x", startup_seconds=3.21,
        max_context=2048, prefill_points=[(100, 0.12), (200, 0.22)],
        saturated_seconds_per_token=0.002, reference_tokens=128,
        decode_points=[(1, 0.011), (4, 0.014), (8, 0.018)], context_tokens=64,
        max_sequences=16, kv_blocks=128, block_size=16)
    assert p.prefill.overhead_seconds == pytest.approx(0.02)
    assert p.prefill.seconds_per_token == 0.002  # saturated cost beats the idle slope 0.001
    assert p.decode.step_seconds_base == pytest.approx(0.01, abs=5e-4)
    assert p.decode.step_seconds_per_sequence == pytest.approx(0.001, abs=1e-4)
    assert p.startup_seconds == 3.21 and p.command == "splitserve profile x"


@pytest.mark.parametrize("text", ["", "a,b", "0,4", "-1"])
def test_list_arguments_are_checked(text: str) -> None:
    with pytest.raises(SystemExit):
        profile.parser().parse_args(["--out", "x.json", "--batches", text])


def test_profile_of_a_real_tiny_worker(tmp_path: Path) -> None:
    out = tmp_path / "tiny.json"
    rc = profile.main(["--model", "tiny", "--out", str(out), "--prompt-lengths", "16,64,128",
                       "--reference-tokens", "64", "--concurrency", "2", "--batches", "1,2,4",
                       "--context", "32", "--output-tokens", "8", "--reps", "1",
                       "--worker-arg=--num-blocks", "--worker-arg=96"])
    assert rc == 0
    data = json.loads(out.read_text())
    p = CapacityProfile.from_dict(data)
    assert p.model == "tiny"
    assert p.command.startswith("splitserve profile --model tiny")
    assert p.decode.kv_blocks == 96  # read back from the worker
    assert p.startup_seconds > 0
    assert p.prefill.tokens_per_second > 0 and p.decode.idle_tpot > 0
    assert p.max_context == 1024  # the tiny model's positions
