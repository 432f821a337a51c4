"""Replies refused as too large, remembered across aborted transactions (streamcar.engine.refusals), and the
backoff between aborts in a row (streamcar.engine.transaction.abort_backoff)."""

from __future__ import annotations

from streamcar.engine.records import OutRecord
from streamcar.engine.refusals import FOR_GOOD, Refusals, size_of
from streamcar.engine.transaction import MAX_ABORT_BACKOFF, abort_backoff

POISON = "in-1-300"
BIG = OutRecord(b"k", b"x" * 5000, (("trace", b"t"),))
SMALL = OutRecord(b"k", b"in-1-301", ())


def test_an_input_never_refused_is_sent() -> None:
    refusals = Refusals()
    assert not refusals
    assert refusals.verdict(POISON, [(BIG, "out", 2000)]) is None


def test_a_reply_over_its_topics_limit_is_dead_lettered_on_its_redo_once() -> None:
    refusals = Refusals()
    refusals.refused(POISON)
    error = refusals.verdict(POISON, [(BIG, "out", 2000)])
    assert error is not None
    assert f"it is {size_of(BIG):,} bytes, over topic 'out''s max.message.bytes (2,000)" in error
    assert refusals.verdict(POISON, [(BIG, "out", 2000)]) is None  # forgotten: its dead letter is under way


def test_a_reply_refused_with_its_batch_goes_again() -> None:
    refusals = Refusals()
    neighbour = "in-1-301"
    refusals.refused(neighbour)
    assert refusals.verdict(neighbour, [(SMALL, "out", 2000)]) is None
    assert not refusals  # it fits: forgotten


def test_without_the_topics_limit_a_reply_refused_again_and_again_is_dead_lettered() -> None:
    refusals = Refusals()
    for _ in range(FOR_GOOD - 1):
        refusals.refused(POISON)
        assert refusals.verdict(POISON, [(BIG, "out", None)]) is None
    refusals.refused(POISON)
    error = refusals.verdict(POISON, [(BIG, "out", None)])
    assert error == f"publishing the reply failed: the broker refused it as too large {FOR_GOOD} times"


def test_one_record_of_a_fan_out_over_its_topics_limit_dead_letters_the_input() -> None:
    refusals = Refusals()
    refusals.refused(POISON)
    error = refusals.verdict(POISON, [(SMALL, "a", 2000), (BIG, "b", 1_000_000), (BIG, "c", 2000)])
    assert error is not None
    assert "topic 'c'" in error


def test_aborts_in_a_row_wait_longer_each_time_up_to_a_bound() -> None:
    waits = [abort_backoff(n) for n in range(1, 12)]
    assert waits[0] == 0  # the first abort redoes at once
    assert waits[1] > 0
    assert waits == sorted(waits)
    assert waits[-1] == MAX_ABORT_BACKOFF
