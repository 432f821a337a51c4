"""Where a partition without a usable committed offset starts (streamcar.kafka.starts.choose)."""

from __future__ import annotations

import pytest

from streamcar.kafka.starts import choose


@pytest.mark.parametrize("start_from", ["earliest", "latest"])
def test_a_committed_offset_outside_the_log_starts_at_the_log_start(start_from: str) -> None:
    for committed in (5, 5000):  # below: retention deleted it; beyond: the log was replaced or truncated
        offset, why = choose(0, low=100, high=200, committed={0: committed}, new=False, start_from=start_from)
        assert offset == 100
        assert "outside the log" in why


@pytest.mark.parametrize("start_from", ["earliest", "latest"])
def test_a_partition_new_to_the_group_starts_at_its_start_whatever_from_says(start_from: str) -> None:
    assert choose(3, low=0, high=50, committed={}, new=True, start_from=start_from)[0] == 0
    # the group committed its other partitions: this one came later
    assert choose(3, low=0, high=50, committed={0: 7, 1: 9}, new=False, start_from=start_from)[0] == 0


def test_the_groups_first_start_follows_consume_from() -> None:
    assert choose(0, low=10, high=50, committed={}, new=False, start_from="earliest") == (
        10,
        "no committed offset yet: consume.from earliest",
    )
    assert choose(0, low=10, high=50, committed={}, new=False, start_from="latest")[0] == 50
