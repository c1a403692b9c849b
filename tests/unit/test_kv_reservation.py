"""Reservation bookkeeping on the decode side (pure, with an injected clock)."""

from __future__ import annotations

import pytest

from splitserve.kvtransfer.reservation import ReservationError, ReservationState, ReservationTable


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_reservation_lifecycle_open_receive_ready_take() -> None:
    table = ReservationTable(Clock())
    res = table.open("req-1", [4, 5], num_tokens=7, timeout_s=5)
    table.begin_receive(res.id)
    res.received |= {(layer, b) for layer in range(2) for b in range(2)}
    table.mark_ready(res.id, first_token=42, num_layers=2)
    taken = table.take(res.id)
    assert taken.block_ids == [4, 5] and taken.first_token == 42
    assert len(table) == 0
    with pytest.raises(ReservationError, match="unknown or expired"):
        table.get(res.id)


def test_missing_layers_block_readiness() -> None:
    table = ReservationTable(Clock())
    res = table.open("req-1", [1, 2], num_tokens=5, timeout_s=5)
    table.begin_receive(res.id)
    res.received |= {(0, 0), (0, 1), (1, 0)}
    with pytest.raises(ReservationError, match=r"1 missing .* first \(1, 1\)"):
        table.mark_ready(res.id, first_token=1, num_layers=2)
    assert res.state is ReservationState.RECEIVING


def test_expiry_returns_each_reservation_once_for_freeing() -> None:
    clock = Clock()
    table = ReservationTable(clock)
    a = table.open("a", [1], 3, timeout_s=1)
    b = table.open("b", [2], 3, timeout_s=10)
    assert table.next_deadline() == a.deadline
    clock.now += 2
    assert [r.id for r in table.expire()] == [a.id]
    assert table.expire() == []
    clock.now += 10
    assert [r.id for r in table.expire()] == [b.id]
    assert table.next_deadline() is None


def test_a_reservation_takes_one_push_only() -> None:
    table = ReservationTable(Clock())
    res = table.open("a", [1], 3, timeout_s=1)
    table.begin_receive(res.id)
    with pytest.raises(ReservationError, match="is receiving, expected open"):
        table.begin_receive(res.id)


def test_take_before_ready_and_cancel() -> None:
    table = ReservationTable(Clock())
    res = table.open("a", [1], 3, timeout_s=1)
    with pytest.raises(ReservationError, match="expected ready"):
        table.take(res.id)
    assert table.cancel(res.id) is res
    assert table.cancel(res.id) is None


def test_bad_timeout_is_refused() -> None:
    with pytest.raises(ValueError, match="timeout_s=0"):
        ReservationTable(Clock()).open("a", [1], 3, timeout_s=0)


def test_progress_moves_the_deadline_forward_but_silence_expires() -> None:
    clock = Clock()
    table = ReservationTable(clock)
    res = table.open("a", [1], 3, timeout_s=2)
    for _ in range(5):  # 5 s of steady progress, longer than the 2 s timeout
        clock.now += 1
        table.touch(res.id)
        assert table.expire() == []
    clock.now += 2.5
    assert [r.id for r in table.expire()] == [res.id]
    with pytest.raises(ReservationError):
        table.touch(res.id)
