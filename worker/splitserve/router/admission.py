"""Admission control: at most `max_inflight` requests run, at most `max_queue` wait for a slot.

A request that finds the queue full, or waits longer than `queue_timeout_s`, is refused with
429 and a Retry-After hint.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from splitserve.router.errors import ApiError


def too_busy(message: str) -> ApiError:
    return ApiError(429, message, type="rate_limit_error", code="router_busy", retry_after_s=1)


class Admission:
    def __init__(self, max_inflight: int, max_queue: int, queue_timeout_s: float) -> None:
        if max_inflight < 1:
            raise ValueError(f"max_inflight={max_inflight}: expected an integer >= 1")
        if max_queue < 0:
            raise ValueError(f"max_queue={max_queue}: expected an integer >= 0")
        self.max_inflight = max_inflight
        self.max_queue = max_queue
        self._queue_timeout_s = queue_timeout_s
        self._slots = asyncio.Semaphore(max_inflight)
        self.inflight = 0
        self.queued = 0

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._slots.locked():
            if self.queued >= self.max_queue:
                raise too_busy(f"the router is at capacity ({self.max_inflight} requests "
                               f"running, {self.queued} queued); retry later")
            self.queued += 1
            try:
                await asyncio.wait_for(self._slots.acquire(), self._queue_timeout_s)
            except TimeoutError:
                raise too_busy(f"no capacity within {self._queue_timeout_s:g}s; retry later") \
                    from None
            finally:
                self.queued -= 1
        else:
            await self._slots.acquire()
        self.inflight += 1
        try:
            yield
        finally:
            self.inflight -= 1
            self._slots.release()
