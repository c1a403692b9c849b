"""Pure parts of the autoscaler: capacity profiles, prediction, correction, history."""

from __future__ import annotations

import copy
import math

import pytest

from splitserve.autoscaler.capacity import FORMAT, CapacityProfile
from splitserve.autoscaler.correction import CorrectionConfig, correct
from splitserve.autoscaler.history import History, PoolHistory
from splitserve.autoscaler.predict import ewma, predict, slope

PROFILE = {
    "format": FORMAT, "model": "test", "device": "cpu", "command": "splitserve profile test",
    "startupSeconds": 20.0, "maxContext": 2048,
    "prefill": {"overheadSeconds": 0.02, "secondsPerToken": 0.0005, "referenceTokens": 512},
    "decode": {"stepSecondsBase": 0.02, "stepSecondsPerSequence": 0.001, "contextTokens": 512,
               "maxSequences": 64, "kvBlocks": 4096, "blockSize": 16},
}


def profile(**changes: object) -> CapacityProfile:
    data = copy.deepcopy(PROFILE)
    data.update(changes)
    return CapacityProfile.from_dict(data)


# ---- capacity -------------------------------------------------------------------------------

def test_profile_round_trips_through_dict() -> None:
    p = profile()
    assert CapacityProfile.from_dict(p.to_dict()) == p
    assert p.to_dict()["prefill"]["secondsPerToken"] == 0.0005


def test_prefill_capacity_uses_the_slack_between_idle_ttft_and_target() -> None:
    p = profile().prefill
    assert p.tokens_per_second == pytest.approx(2000.0)
    assert p.idle_seconds(512) == pytest.approx(0.276)
    assert p.capacity(2.0) == pytest.approx(2000.0 * (1 - 0.276 / 2.0))
    # a looser target allows a busier replica, bounded at 95 %
    assert p.capacity(4.0) > p.capacity(2.0)
    assert p.capacity(1000.0) == pytest.approx(2000.0 * 0.95)
    # a target below the idle TTFT still plans some capacity rather than none
    assert p.capacity(0.1) == pytest.approx(2000.0 * 0.05)


def test_decode_capacity_is_the_batch_whose_step_fits_the_tpot_target() -> None:
    d = profile().decode
    assert d.idle_tpot == pytest.approx(0.021)
    assert d.sequences(0.05) == pytest.approx(30.0)
    assert d.capacity(0.05) == pytest.approx(30.0 / 0.05)
    # max sequences caps the batch
    assert d.sequences(1.0) == 64
    # so does the KV cache: 256 blocks hold 8 sequences of 512 tokens
    small_kv = profile(decode={**PROFILE["decode"], "kvBlocks": 256}).decode  # type: ignore[dict-item]
    assert small_kv.sequences(1.0) == 8
    # a target below one step still means one sequence
    assert d.sequences(0.001) == 1.0


@pytest.mark.parametrize(("change", "message"), [
    ({"format": "other/v0"}, "profile.format"),
    ({"startupSeconds": "soon"}, "profile.startupSeconds"),
    ({"startupSeconds": -1}, "profile.startupSeconds"),
    ({"maxContext": 0}, "profile.maxContext"),
    ({"maxContext": True}, "profile.maxContext"),
    ({"prefill": None}, "profile.prefill"),
    ({"decode": []}, "profile.decode"),
    ({"prefill": {"overheadSeconds": 0.1, "secondsPerToken": 0, "referenceTokens": 1}},
     "profile.prefill.secondsPerToken"),
    ({"decode": {**PROFILE["decode"], "kvBlocks": float("nan")}},  # type: ignore[dict-item]
     "profile.decode.kvBlocks"),
])
def test_bad_profiles_name_the_field(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        profile(**change)


def test_profile_must_be_an_object() -> None:
    with pytest.raises(ValueError, match="JSON object"):
        CapacityProfile.from_dict([1, 2])  # type: ignore[arg-type]


def test_shipped_profile_loads() -> None:
    import json
    from pathlib import Path

    import splitserve.autoscaler as pkg

    files = sorted((Path(pkg.__file__).parent / "profiles").glob("*.json"))
    assert files, "a measured profile ships with the package"
    for f in files:
        p = CapacityProfile.from_dict(json.loads(f.read_text()))
        assert p.command.startswith("splitserve profile")
        assert p.prefill.tokens_per_second > 0 and p.decode.capacity(1.0) > 0


# ---- prediction -----------------------------------------------------------------------------

def test_ewma_of_a_constant_is_that_constant() -> None:
    assert ewma([(0, 5.0), (10, 5.0), (30, 5.0)], 60) == pytest.approx(5.0)


def test_ewma_moves_half_way_in_one_half_life() -> None:
    assert ewma([(0, 0.0), (60, 10.0)], 60) == pytest.approx(5.0)
    assert ewma([(0, 0.0), (120, 10.0)], 60) == pytest.approx(7.5)


def test_ewma_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="at least one sample"):
        ewma([], 60)
    with pytest.raises(ValueError, match="half_life"):
        ewma([(0, 1.0)], 0)


def test_slope_is_least_squares_and_needs_three_samples() -> None:
    assert slope([(0, 1.0), (10, 2.0)]) == 0.0
    assert slope([(0, 1.0), (10, 2.0), (20, 3.0)]) == pytest.approx(0.1)
    assert slope([(0, 3.0), (10, 2.0), (20, 1.0)]) == pytest.approx(-0.1)
    assert slope([(5, 3.0), (5, 2.0), (5, 1.0)]) == 0.0


def test_prediction_follows_a_burst_at_once() -> None:
    samples = [(0.0, 100.0), (30.0, 100.0), (60.0, 1000.0)]
    p = predict(samples, now=60, horizon=50, half_life=60, trend_window=120)
    assert p.latest == 1000.0
    assert p.value >= 1000.0


def test_prediction_remembers_a_burst_that_just_ended() -> None:
    samples = [(0.0, 1000.0), (30.0, 1000.0), (60.0, 0.0)]
    p = predict(samples, now=60, horizon=50, half_life=60, trend_window=120)
    assert p.latest == 0.0
    assert p.value == pytest.approx(p.ewma)
    assert p.value > 500.0


def test_prediction_extrapolates_a_rising_trend_over_the_horizon() -> None:
    samples = [(t, 10.0 * t) for t in (0.0, 30.0, 60.0, 90.0)]
    p = predict(samples, now=90, horizon=30, half_life=60, trend_window=120)
    assert p.slope == pytest.approx(10.0)
    assert p.value == pytest.approx(900.0 + 300.0)


def test_trend_term_is_capped_at_a_share_of_the_latest_value() -> None:
    samples = [(0.0, 0.0), (1.0, 10.0), (2.0, 20.0)]
    p = predict(samples, now=2, horizon=1000, half_life=60, trend_window=120)
    assert p.value == pytest.approx(30.0)
    q = predict(samples, now=2, horizon=1000, half_life=60, trend_window=120, max_rise=1.0)
    assert q.value == pytest.approx(40.0)


def test_a_dip_and_recovery_is_not_a_trend() -> None:
    samples = [(0.0, 100.0), (30.0, 5.0), (60.0, 50.0), (90.0, 100.0)]
    p = predict(samples, now=90, horizon=100, half_life=1, trend_window=120)
    assert p.slope > 0
    assert p.value == pytest.approx(100.0)


def test_falling_trend_never_lowers_the_prediction_below_the_present() -> None:
    samples = [(0.0, 300.0), (30.0, 200.0), (60.0, 100.0)]
    p = predict(samples, now=60, horizon=100, half_life=60, trend_window=120)
    assert p.slope < 0
    assert p.value >= 100.0


def test_trend_only_uses_the_trend_window() -> None:
    samples = [(0.0, 1000.0), (200.0, 10.0), (230.0, 10.0), (260.0, 10.0)]
    p = predict(samples, now=260, horizon=60, half_life=1, trend_window=100)
    assert p.slope == pytest.approx(0.0)
    assert p.value == pytest.approx(10.0)


def test_predict_needs_samples() -> None:
    with pytest.raises(ValueError, match="at least one sample"):
        predict([], now=0, horizon=1, half_life=1, trend_window=1)


# ---- correction -----------------------------------------------------------------------------

def test_correction_cuts_capacity_when_latency_misses_at_modelled_load() -> None:
    c = correct(1.0, observed=3.0, target=2.0, load_per_replica=800.0, capacity=1000.0)
    assert c.changed
    assert c.factor == pytest.approx(0.72)
    assert "above target" in c.reason


def test_correction_never_more_than_halves_in_one_step() -> None:
    c = correct(1.0, observed=30.0, target=2.0, load_per_replica=510.0, capacity=1000.0)
    assert c.factor == pytest.approx(0.5)


def test_correction_ignores_slow_latency_at_light_load() -> None:
    c = correct(1.0, observed=3.0, target=2.0, load_per_replica=100.0, capacity=1000.0)
    assert not c.changed and c.factor == 1.0


def test_correction_raises_capacity_when_a_replica_carries_more_within_target() -> None:
    c = correct(1.0, observed=0.5, target=2.0, load_per_replica=1400.0, capacity=1000.0)
    assert c.changed
    assert c.factor == pytest.approx(1.1)
    again = correct(c.factor, observed=0.5, target=2.0, load_per_replica=1400.0, capacity=1000.0)
    assert c.factor < again.factor < 1.4


def test_correction_keeps_factor_without_data_or_when_consistent() -> None:
    assert correct(0.7, observed=None, target=2.0, load_per_replica=500.0,
                   capacity=1000.0).factor == 0.7
    assert correct(0.7, observed=3.0, target=2.0, load_per_replica=None,
                   capacity=1000.0).factor == 0.7
    assert not correct(1.0, observed=1.9, target=2.0, load_per_replica=900.0,
                       capacity=1000.0).changed


def test_correction_respects_its_bounds() -> None:
    cfg = CorrectionConfig(min_factor=0.3, max_factor=1.2)
    low = correct(0.31, observed=9.0, target=1.0, load_per_replica=200.0, capacity=1000.0,
                  config=cfg)
    assert low.factor == pytest.approx(0.3)
    high = correct(1.19, observed=0.1, target=1.0, load_per_replica=5000.0, capacity=1000.0,
                   config=cfg)
    assert high.factor == pytest.approx(1.2)


def test_correction_rejects_non_positive_target_or_capacity() -> None:
    with pytest.raises(ValueError, match="positive"):
        correct(1.0, observed=1.0, target=0.0, load_per_replica=1.0, capacity=1.0)
    with pytest.raises(ValueError, match="positive"):
        correct(1.0, observed=1.0, target=1.0, load_per_replica=1.0, capacity=-1.0)


# ---- history --------------------------------------------------------------------------------

def test_history_trims_everything_older_than_the_window() -> None:
    h = PoolHistory(demand=((0.0, 1.0), (50.0, 2.0)), concurrency=((10.0, 1.0),),
                    kv_blocks=((60.0, 3.0),), recommendations=((0.0, 1), (55.0, 2)),
                    last_scale_up=1.0, factor=0.8)
    t = h.trimmed(50.0)
    assert t.demand == ((50.0, 2.0),)
    assert t.concurrency == ()
    assert t.kv_blocks == ((60.0, 3.0),)
    assert t.recommendations == ((55.0, 2),)
    assert t.last_scale_up == 1.0 and t.factor == 0.8


def test_history_pool_access_checks_the_name() -> None:
    h = History().with_pool("decode", PoolHistory(factor=0.5))
    assert h.pool("decode").factor == 0.5
    assert h.pool("prefill").factor == 1.0
    with pytest.raises(ValueError, match="pool='router'"):
        h.pool("router")
    with pytest.raises(ValueError, match="pool='x'"):
        h.with_pool("x", PoolHistory())
    assert math.isclose(History().trimmed(0).decode.factor, 1.0)
