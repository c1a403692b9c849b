"""Decode-side reservations: blocks held for a request until its KV arrives or a deadline passes.

The deadline bounds the time without progress: every chunk that arrives moves it a full timeout
ahead, so a long prompt that streams steadily is never cut off, and a silent sender is.

Pure bookkeeping: the caller allocates and frees the blocks; every path that ends a reservation
returns it so the caller frees exactly once.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum


class ReservationState(Enum):
    OPEN = "open"            # blocks held, nothing received yet
    RECEIVING = "receiving"  # a push is writing into the blocks
    READY = "ready"          # every layer of every block arrived, first token known


class ReservationError(KeyError):
    """Unknown, expired or already used reservation."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "reservation error"


@dataclass
class Reservation:
    id: str
    request_id: str
    block_ids: list[int]
    num_tokens: int
    deadline: float
    timeout_s: float
    state: ReservationState = ReservationState.OPEN
    first_token: int | None = None
    received: set[tuple[int, int]] = field(default_factory=set)  # (layer, block index)
    bytes_received: int = 0


class ReservationTable:
    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._items: dict[str, Reservation] = {}
        self._ids = itertools.count(1)

    def __len__(self) -> int:
        return len(self._items)

    def open(
        self, request_id: str, block_ids: list[int], num_tokens: int, timeout_s: float
    ) -> Reservation:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s={timeout_s}: expected a positive number of seconds")
        rid = f"{request_id}/r{next(self._ids)}"
        res = Reservation(rid, request_id, list(block_ids), num_tokens,
                          self._clock() + timeout_s, timeout_s)
        self._items[rid] = res
        return res

    def get(self, reservation_id: str) -> Reservation:
        res = self._items.get(reservation_id)
        if res is None:
            raise ReservationError(f"reservation {reservation_id!r} is unknown or expired")
        return res

    def begin_receive(self, reservation_id: str) -> Reservation:
        res = self.get(reservation_id)
        if res.state is not ReservationState.OPEN:
            raise ReservationError(
                f"reservation {reservation_id!r} is {res.state.value}, expected open")
        res.state = ReservationState.RECEIVING
        return res

    def touch(self, reservation_id: str) -> None:
        """Progress arrived: the deadline moves to a full timeout from now (never earlier)."""
        res = self.get(reservation_id)
        res.deadline = max(res.deadline, self._clock() + res.timeout_s)

    def mark_ready(self, reservation_id: str, first_token: int, num_layers: int) -> Reservation:
        res = self.get(reservation_id)
        want = {(layer, b) for layer in range(num_layers) for b in range(len(res.block_ids))}
        missing = want - res.received
        if missing:
            layer, block = min(missing)
            raise ReservationError(
                f"reservation {reservation_id!r} ended with {len(missing)} missing "
                f"(layer, block) pairs, first ({layer}, {block})"
            )
        res.first_token = first_token
        res.state = ReservationState.READY
        return res

    def take(self, reservation_id: str) -> Reservation:
        """Hands a READY reservation's blocks to its sequence; the table forgets it."""
        res = self.get(reservation_id)
        if res.state is not ReservationState.READY:
            raise ReservationError(
                f"reservation {reservation_id!r} is {res.state.value}, expected ready")
        del self._items[reservation_id]
        return res

    def cancel(self, reservation_id: str) -> Reservation | None:
        """Ends a reservation on a failure path; returns it (to free its blocks) if it existed."""
        return self._items.pop(reservation_id, None)

    def expire(self) -> list[Reservation]:
        """Removes and returns every reservation past its deadline that was not taken."""
        now = self._clock()
        gone = [r for r in self._items.values() if r.deadline <= now]
        for res in gone:
            del self._items[res.id]
        return gone

    def next_deadline(self) -> float | None:
        return min((r.deadline for r in self._items.values()), default=None)
