"""Incremental detokenization for streaming (pure; the decode function is passed in).

Each step decodes the whole output so far and emits the new suffix, holding back text that
may still change: a trailing replacement character (an incomplete UTF-8 sequence) and any
tail that could be the start of a stop string (the worker cuts stop strings from the final
text, so nothing past a stop may reach the client).
"""

from __future__ import annotations

from collections.abc import Callable

REPLACEMENT = "\ufffd"


def cut_at_stop(text: str, stop: tuple[str, ...]) -> tuple[str, bool]:
    """-> (text up to the first stop string, whether one was found)."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def _held_tail(text: str, stop: tuple[str, ...]) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of a stop string."""
    best = 0
    for s in stop:
        for n in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:n]):
                best = n
                break
    return best


class TextStream:
    def __init__(self, decode: Callable[[list[int]], str], stop: tuple[str, ...] = ()) -> None:
        self._decode = decode
        self._stop = stop
        self.token_ids: list[int] = []
        self.sent = ""

    def add(self, token_ids: list[int]) -> str:
        """Appends tokens -> the text delta that is safe to send now (maybe empty)."""
        self.token_ids.extend(token_ids)
        text = self._decode(self.token_ids)
        if text.endswith(REPLACEMENT):
            text = text.rstrip(REPLACEMENT)
        text = text[: len(text) - _held_tail(text, self._stop)]
        if not text.startswith(self.sent) or len(text) <= len(self.sent):
            return ""
        delta = text[len(self.sent):]
        self.sent = text
        return delta

    def finish(self, final_text: str) -> str:
        """The rest of `final_text` (the worker's final, stop-cut text) after what was sent."""
        if not final_text.startswith(self.sent):
            return ""  # never re-send; the client already holds a prefix that now differs
        delta = final_text[len(self.sent):]
        self.sent = final_text
        return delta

    def full_text(self) -> str:
        """Decoded output cut at the first stop string (for requests resumed on a new worker)."""
        return cut_at_stop(self._decode(self.token_ids), self._stop)[0]
