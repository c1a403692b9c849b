"""Incremental detokenization: never re-sends, holds back incomplete characters and stop
prefixes."""

from __future__ import annotations

from splitserve.router.text_stream import TextStream, cut_at_stop

VOCAB = {1: "he", 2: "llo", 3: " wor", 4: "ld", 5: "\n", 6: "STO", 7: "P", 8: "!"}


def decode(ids: list[int]) -> str:
    return "".join(VOCAB[i] for i in ids)


def test_deltas_concatenate_to_the_text() -> None:
    ts = TextStream(decode)
    assert [ts.add([i]) for i in (1, 2, 3, 4)] == ["he", "llo", " wor", "ld"]
    assert ts.finish("hello world") == ""


def test_stop_prefix_is_held_back_until_resolved() -> None:
    ts = TextStream(decode, ("STOP",))
    assert ts.add([1]) == "he"
    assert ts.add([6]) == ""  # "STO" may start "STOP"
    assert ts.finish("he") == ""  # the worker cut at the stop: nothing of it leaked
    ts2 = TextStream(decode, ("STOP",))
    ts2.add([6])
    assert ts2.add([8]) == "STO!"  # not a stop after all


def test_incomplete_utf8_is_held() -> None:
    pieces = {1: "a", 2: "\ufffd", 3: "é"}
    state: list[str] = []

    def dec(ids: list[int]) -> str:
        text = "".join(pieces[i] for i in ids)
        return text.replace("\ufffdé", "é")  # byte pieces completing one character

    ts = TextStream(dec)
    state.append(ts.add([1]))
    state.append(ts.add([2]))
    state.append(ts.add([3]))
    assert state == ["a", "", "é"]


def test_finish_never_resends_and_full_text_cuts_stops() -> None:
    ts = TextStream(decode, ("\n",))
    ts.add([1, 2])
    assert ts.finish("hello") == ""
    assert ts.finish("hexx") == ""  # diverged: nothing sent twice
    ts2 = TextStream(decode, ("\n",))
    ts2.token_ids.extend([1, 5, 3])
    assert ts2.full_text() == "he"
    assert cut_at_stop("a b c", ("b", "c")) == ("a ", True)
    assert cut_at_stop("abc", ()) == ("abc", False)
