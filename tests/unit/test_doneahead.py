"""Done-ahead metadata: the encodings round-trip, stay within the size bound the engine keeps to, and anything
that is not one is refused with DoneAheadError (never another exception)."""

from __future__ import annotations

import base64
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamcar.engine.offsets import PartitionOffsets
from streamcar.kafka.doneahead import (
    MAX_METADATA,
    PREFIX,
    DoneAheadError,
    Run,
    count,
    decode,
    encode,
    fits,
    payload_budget,
    runs_of,
)
from streamcar.kafka.records import CommitPoint


@st.composite
def run_sets(draw: st.DrawFn, max_runs: int = 60) -> tuple[int, list[Run]]:
    """A committed offset and increasing, disjoint runs above it (gaps and lengths from 1 to large)."""
    committed = draw(st.integers(0, 10**15))
    runs: list[Run] = []
    cursor = committed
    for _ in range(draw(st.integers(0, max_runs))):
        gap = draw(st.one_of(st.integers(1, 3), st.integers(1, 100_000)))
        length = draw(st.one_of(st.integers(1, 3), st.integers(1, 100_000)))
        first = cursor + gap
        runs.append((first, first + length - 1))
        cursor = first + length - 1
    return committed, runs


def merged(runs: list[Run]) -> list[Run]:
    """Adjacent runs as one (how the bits encoding reads them back)."""
    out: list[Run] = []
    for first, last in runs:
        if out and out[-1][1] + 1 == first:
            out[-1] = (out[-1][0], last)
        else:
            out.append((first, last))
    return out


@settings(max_examples=300, deadline=None)
@given(case=run_sets())
def test_a_set_reads_back_as_it_was_written(case: tuple[int, list[Run]]) -> None:
    committed, runs = case
    text = encode(committed, runs)
    if not runs:
        assert text == ""
        return
    assert text.isascii()
    assert text.startswith(PREFIX)
    base, back = decode(text)
    assert base == committed
    assert merged(back) == merged(runs)
    assert count(back) == count(runs)


@st.composite
def completions(draw: st.DrawFn) -> tuple[int, list[int], int]:
    """A window of offsets above a committed one: which are not done (pending) and the last done one."""
    committed = draw(st.integers(0, 10**12))
    span = draw(st.integers(1, 60_000))
    pending = sorted(draw(st.sets(st.integers(committed + 1, committed + span), max_size=700)))
    return committed, [committed, *pending], committed + span


@settings(max_examples=300, deadline=None)
@given(case=completions(), budget=st.sampled_from([payload_budget(), 500, 64]))
def test_whatever_fits_the_bound_fits_the_metadata(case: tuple[int, list[int], int], budget: int) -> None:
    committed, pending, last_done = case
    runs = runs_of(committed, pending, last_done)
    span = last_done - committed
    data_budget_text = encode(committed, runs)
    if fits(span, len(pending), budget):
        raw = len(base64.b64decode(data_budget_text.rsplit(":", 1)[1])) if runs else 0
        assert raw <= budget
    if budget == payload_budget() and fits(span, len(pending), budget):
        assert len(data_budget_text) <= MAX_METADATA


def test_the_default_bound_in_offsets() -> None:
    """What the bound means: any pattern over ~24k offsets ahead of the oldest unfinished message, and any span
    while few (~500) messages are unfinished."""
    budget = payload_budget()
    assert fits(24_000, 10**6, budget)
    assert not fits(25_000, 600, budget)
    assert fits(10**6, 500, budget)


def test_runs_of_a_stuck_message_and_everything_after_it_done() -> None:
    # 100 is stuck, 101..5000 done: one run, a few bytes
    text = encode(100, runs_of(100, [100], 5000))
    assert decode(text) == (100, [(101, 5000)])
    assert len(text) < 40


def test_many_short_runs_choose_the_bits() -> None:
    pending = [0, *range(2, 4000, 2)]  # every other offset done
    text = encode(0, runs_of(0, pending, 4000))
    assert text.split(":")[3] in ("b", "bz", "rz")
    assert len(text) < 1000
    assert count(decode(text)[1]) == 2001  # the odd offsets, and 4000


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hello",
        "streamcar:2:0:r:AQE=",
        "streamcar:1:x:r:AQE=",
        "streamcar:1:-5:r:AQE=",
        "streamcar:1:0:q:AQE=",
        "streamcar:1:0:r:***",
        "streamcar:1:0:r:AA==",  # a zero gap
        "streamcar:1:0:r:gA==",  # a truncated varint
        "streamcar:1:0:rz:AQE=",  # not deflated
        "streamcar:1:0:r",
        "streamcar:1:0:r:AQE=:more",
    ],
)
def test_what_is_not_a_set_is_refused(text: str) -> None:
    with pytest.raises(DoneAheadError):
        decode(text)


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=64), kind=st.sampled_from(["r", "b", "rz", "bz", "x"]), offset=st.integers(-3, 99))
def test_damaged_payloads_never_raise_anything_else(raw: bytes, kind: str, offset: int) -> None:
    data = zlib.compress(raw) if kind.endswith("z") and raw[:1] == b"\x00" else raw
    text = f"{PREFIX}{offset}:{kind}:{base64.b64encode(data).decode()}"
    try:
        base, runs = decode(text)
    except DoneAheadError:
        return
    assert base == offset
    assert all(first > base and last >= first for first, last in runs)


def test_a_deflate_bomb_is_bounded() -> None:
    bomb = zlib.compress(b"\xff" * (64 << 20), 9)
    text = f"{PREFIX}0:bz:{base64.b64encode(bomb).decode()}"
    _, runs = decode(text)
    assert runs == [(1, (1 << 20) * 8)]  # cut at 1 MiB of bits


# -- the tracker's side: skipping what the previous owner did, and keeping to the bound ------------------------


def test_the_previous_owners_runs_are_skipped_and_carried_on() -> None:
    partition = PartitionOffsets()
    partition.preset([(12, 14), (20, 29)])
    assert [partition.track(o) for o in (10, 11, 12, 13)] == [False, False, True, True]
    assert partition.done_ahead == 2 + 1 + 10  # 12, 13 read; 14 and 20..29 not yet
    point = partition.committable()
    assert point is not None
    assert point.offset == 10
    base, runs = decode(point.metadata)
    assert (base, merged(runs)) == (10, [(12, 14), (20, 29)])  # what it read and what it has not read yet
    partition.done(11)
    partition.done(10)
    # everything below 14 done, and 14 itself done by the previous owner: the commit goes past it
    assert partition.committable() == CommitPoint(15, encode(15, [(20, 29)]))


def test_a_record_that_would_outgrow_the_metadata_does_not_fit_until_room_is_made() -> None:
    partition = PartitionOffsets(budget=6)  # 6 bytes: 48 offsets of bits, or 3 runs of 1-byte varints
    for offset in range(0, 3):
        partition.track(offset)
    assert partition.fits(40)
    assert not partition.fits(100)  # 3 unfinished, 100 offsets of span: neither encoding is sure to fit
    partition.done(0)
    partition.done(1)
    assert partition.fits(100)  # one unfinished: one run
    assert PartitionOffsets(budget=6).fits(10**9)  # nothing unfinished: nothing to wait for
