"""The progress of filtered redrives: a group per filter, the filter kept in its commits exactly, and the rule that
tells which dead letters another run redrove."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamcar.errors import UsageError
from streamcar.tools.dlq import DeadLetter, Filter
from streamcar.tools.redrive_progress import (
    Covered,
    Progress,
    canonical,
    filter_from,
    group_of,
    metadata_of,
    unfiltered_group,
)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

filters = st.builds(
    Filter,
    source_topic=st.none() | st.text(min_size=1, max_size=20),
    kind=st.none() | st.text(max_size=20),
    since=st.none() | st.integers(0, 4_000_000_000_000).map(lambda ms: EPOCH + timedelta(milliseconds=ms)),
    grep=st.none() | st.text(max_size=40),
    key=st.none() | st.binary(max_size=20),
)


def dead_letter(partition: int, offset: int, *, kind: str = "exhausted", key: bytes | None = b"k") -> DeadLetter:
    return DeadLetter(
        partition=partition,
        offset=offset,
        key=key,
        value=b"v",
        source_topic="orders",
        source_partition=0,
        source_offset=offset,
        error="HTTP 503: busy",
        kind=kind,
        attempts=3,
        failed_at=datetime(2026, 1, 2, tzinfo=UTC),
        redrive_count=0,
        headers=[],
    )


@given(filters)
def test_the_filter_a_commit_carries_reads_back_exactly(where: Filter) -> None:
    if where.empty:
        assert metadata_of(where) == ""
        return
    assert filter_from(metadata_of(where)) == where
    assert group_of("orders-dlq", filter_from(metadata_of(where))) == group_of("orders-dlq", where)


@given(filters, filters)
def test_two_filters_share_a_group_exactly_when_they_are_equal(a: Filter, b: Filter) -> None:
    assert (group_of("dlq", a) == group_of("dlq", b)) == (canonical(a) == canonical(b))
    assert (canonical(a) == canonical(b)) == (a == b)


def test_the_unfiltered_group_keeps_its_name_and_a_filtered_one_cannot_be_another_topics() -> None:
    assert group_of("orders-dlq", None) == group_of("orders-dlq", Filter()) == "streamcar-redrive.orders-dlq"
    assert unfiltered_group("orders-dlq") == "streamcar-redrive.orders-dlq"
    name = group_of("orders", Filter(kind="exhausted"))
    assert name.startswith("streamcar-redrive.orders:")  # ':' is never in a topic name: not topic "orders.x"'s
    assert len(name.rsplit(":", 1)[1]) == 16
    assert group_of("orders", Filter(kind="exhausted")) == name  # stable across runs


def test_a_since_is_kept_to_the_millisecond_rounding_up() -> None:
    exact = datetime(2026, 1, 2, 3, 4, 5, 678_000, tzinfo=UTC)
    assert Filter(since=exact).since == exact
    assert Filter(since=exact + timedelta(microseconds=1)).since == exact + timedelta(milliseconds=1)
    assert Filter(since=datetime(2026, 1, 2)).since == datetime(2026, 1, 2, tzinfo=UTC)  # no zone: UTC


@pytest.mark.parametrize(
    "metadata",
    [
        "",
        "streamcar:1:10:r:AQI=",  # the sidecar's done-ahead metadata
        "streamcar-redrive:1:not json",
        'streamcar-redrive:1:{"kind":1}',
        'streamcar-redrive:1:{"colour":"red"}',
        'streamcar-redrive:1:{"key_b64":"***"}',
        'streamcar-redrive:2:{"kind":"exhausted"}',  # a later version's: not read as this one's
        "streamcar-redrive:1:[]",
    ],
)
def test_metadata_that_is_not_this_versions_filter_reads_as_none(metadata: str) -> None:
    assert filter_from(metadata) is None


def test_a_filter_too_long_for_the_brokers_metadata_limit_is_a_usage_error() -> None:
    assert metadata_of(Filter(grep="x" * 3000))
    with pytest.raises(UsageError, match="too long to be kept with the redrive's progress"):
        metadata_of(Filter(grep="x" * 5000))


def test_another_run_redrove_a_dead_letter_below_its_progress_that_its_filter_takes() -> None:
    exhausted = Progress("g:1", Filter(kind="exhausted"), {0: 10})
    everything = Progress("g", None, {1: 5})
    covered = Covered([exhausted, everything, Progress("g:2", Filter(kind="timeout"), {})])
    assert covered.by(dead_letter(0, 9)) is exhausted
    assert covered.by(dead_letter(0, 10)) is None  # at its committed offset: not handled yet
    assert covered.by(dead_letter(0, 3, kind="http-status")) is None  # passed over by it: still to do
    assert covered.by(dead_letter(1, 4, kind="http-status")) is everything
    assert covered.by(dead_letter(2, 0)) is None
    assert (covered.start(0), covered.start(1)) == (0, 5)
    assert len(covered.others) == 2  # a group without progress covers nothing
