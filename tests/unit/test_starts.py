"""Where a partition without a usable committed offset starts (streamcar.kafka.starts.choose)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamcar.kafka.records import CommitPoint
from streamcar.kafka.starts import choose, marker, started_with


@pytest.mark.parametrize("start_from", ["earliest", "latest"])
def test_a_committed_offset_outside_the_log_starts_at_the_log_start(start_from: str) -> None:
    for committed in (5, 5000):  # below: retention deleted it; beyond: the log was replaced or truncated
        point = CommitPoint(committed)
        offset, why = choose(0, low=100, high=200, committed={0: point}, new="", start_from=start_from)
        assert offset == 100
        assert "outside the log" in why


@pytest.mark.parametrize("start_from", ["earliest", "latest"])
def test_a_partition_new_to_the_group_starts_at_its_start_whatever_from_says(start_from: str) -> None:
    offset, why = choose(3, low=0, high=50, committed={}, new="created after ...", start_from=start_from)
    assert (offset, why) == (0, "a partition new to the group (created after ...): from its start")
    # the group read its other partitions: this one came later
    progress = {0: CommitPoint(7, "streamcar:1:7:r:AA=="), 1: CommitPoint(9)}
    offset, why = choose(3, low=0, high=50, committed=progress, new="", start_from=start_from)
    assert offset == 0
    assert "the group has read other partitions of the topic" in why
    # the group started on the topic when it had 3 partitions: partition 3 came later
    starts = {0: CommitPoint(50, marker(3)), 1: CommitPoint(0, marker(3))}
    offset, why = choose(3, low=0, high=50, committed=starts, new="", start_from=start_from)
    assert offset == 0
    assert "the group started on the topic's first 3 partitions" in why


@pytest.mark.parametrize("start_from", ["earliest", "latest"])
def test_the_starts_of_one_first_start_do_not_make_its_other_partitions_new(start_from: str) -> None:
    """The issue's case: the first partition's start, committed at once, made the others of the same assignment
    (or another member's, starting at the same moment) look new to the group."""
    siblings = {0: CommitPoint(100, marker(3)), 2: CommitPoint(100, marker(3))}
    offset, why = choose(1, low=0, high=100, committed=siblings, new="", start_from=start_from)
    assert offset == (0 if start_from == "earliest" else 100)
    assert why == f"the group's first start on it: consume.from {start_from}"


def test_the_groups_first_start_follows_consume_from() -> None:
    assert choose(0, low=10, high=50, committed={}, new="", start_from="earliest") == (
        10,
        "the group's first start on it: consume.from earliest",
    )
    assert choose(0, low=10, high=50, committed={}, new="", start_from="latest")[0] == 50


@given(st.integers(min_value=1, max_value=1 << 20))
def test_a_marker_names_its_partition_count(partitions: int) -> None:
    assert started_with(marker(partitions)) == partitions


@given(st.text(max_size=40))
def test_other_metadata_is_no_marker(metadata: str) -> None:
    if not metadata.startswith("streamcar:start:"):
        assert started_with(metadata) is None
