"""Contiguous watermarks: examples for every method, and properties against a brute-force model."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamcar.engine.offsets import TP, CommitPoint, PartitionOffsets
from streamcar.engine.tracker import OffsetTracker
from streamcar.kafka.doneahead import Run, encode

TP0: TP = ("orders", 0)
TP1: TP = ("orders", 1)


def tracked(*offsets: int) -> PartitionOffsets:
    partition = PartitionOffsets()
    for offset in offsets:
        partition.track(offset)
    return partition


# -- PartitionOffsets ----------------------------------------------------------------------------------------


def test_nothing_tracked() -> None:
    partition = PartitionOffsets()
    assert partition.watermark is None
    assert partition.outstanding == 0
    assert partition.committable() is None
    assert partition.last_committed is None


def test_watermark_is_lowest_outstanding_offset() -> None:
    partition = tracked(5, 6, 9)
    assert partition.watermark == 5
    assert partition.outstanding == 3


def test_track_rejects_non_increasing_offsets() -> None:
    partition = tracked(5)
    with pytest.raises(ValueError, match="not after"):
        partition.track(5)
    with pytest.raises(ValueError, match="not after"):
        partition.track(3)
    assert partition.watermark == 5
    assert partition.outstanding == 1


def test_track_rejects_negative_offsets() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        PartitionOffsets().track(-1)


def test_out_of_order_completion_holds_the_watermark() -> None:
    partition = tracked(0, 1, 2, 3)
    partition.done(2)
    partition.done(1)
    assert partition.watermark == 0
    assert partition.outstanding == 2
    partition.done(0)
    assert partition.watermark == 3
    partition.done(3)
    assert partition.watermark == 4
    assert partition.outstanding == 0


def test_gaps_are_skipped_not_waited_for() -> None:
    # Compaction and transaction markers leave holes: 11..19 will never arrive.
    partition = tracked(10, 20, 21, 30)
    partition.done(20)
    partition.done(10)
    assert partition.watermark == 21
    partition.done(30)
    partition.done(21)
    assert partition.watermark == 31


def test_done_is_idempotent_before_and_after_the_watermark_passes() -> None:
    partition = tracked(0, 1, 2)
    partition.done(1)
    partition.done(1)
    assert partition.outstanding == 2
    partition.done(0)
    assert partition.watermark == 2
    partition.done(1)
    partition.done(0)
    assert partition.watermark == 2
    assert partition.outstanding == 1


def test_done_of_an_untracked_offset_raises() -> None:
    with pytest.raises(KeyError):
        PartitionOffsets().done(0)
    partition = tracked(10, 20)
    with pytest.raises(KeyError):
        partition.done(15)  # a gap inside the window
    with pytest.raises(KeyError):
        partition.done(21)  # not tracked yet
    partition.done(10)
    partition.done(20)
    with pytest.raises(KeyError):
        partition.done(21)
    assert partition.watermark == 21


def test_done_below_the_watermark_is_accepted() -> None:
    # Popped offsets are forgotten, so a gap below the watermark reads as already done.
    partition = tracked(10, 20)
    partition.done(10)
    partition.done(5)
    assert partition.watermark == 20
    assert partition.outstanding == 1


def test_committable_only_reports_changes() -> None:
    partition = tracked(0, 1, 2)
    start = partition.committable()
    assert start == CommitPoint(0)  # nothing committed yet: the start position is worth committing
    partition.mark_committed(start)
    assert partition.committable() is None
    partition.done(1)  # done ahead of the watermark: the commit says so
    ahead = partition.committable()
    assert ahead == CommitPoint(0, encode(0, [(1, 1)]))
    partition.mark_committed(ahead)
    assert partition.committable() is None
    partition.done(0)
    assert partition.committable() == CommitPoint(2)
    assert partition.committable() == CommitPoint(2)  # reading does not consume it
    partition.mark_committed(CommitPoint(2))
    assert partition.last_committed == CommitPoint(2)
    assert partition.committable() is None
    partition.done(2)
    assert partition.committable() == CommitPoint(3)


def test_mark_committed_ignores_lower_offsets() -> None:
    partition = tracked(0, 1)
    partition.done(0)
    partition.done(1)
    partition.mark_committed(CommitPoint(2))
    partition.mark_committed(CommitPoint(1))
    assert partition.last_committed == CommitPoint(2)
    assert partition.committable() is None


def test_committed_before_tracking_hides_a_watermark_that_is_not_past_it() -> None:
    partition = PartitionOffsets()
    partition.mark_committed(CommitPoint(100))
    partition.track(100)
    assert partition.committable() is None
    partition.done(100)
    assert partition.committable() == CommitPoint(101)


def test_reset_forgets_everything() -> None:
    partition = tracked(50, 51)
    partition.done(50)
    partition.mark_committed(CommitPoint(51))
    partition.reset()
    assert partition.watermark is None
    assert partition.outstanding == 0
    assert partition.last_committed is None
    partition.track(7)  # lower than before: a fresh assignment may start anywhere
    assert partition.watermark == 7
    assert partition.committable() == CommitPoint(7)


def test_partition_repr() -> None:
    assert repr(tracked(3)) == "PartitionOffsets(watermark=3, outstanding=1, done_ahead=0, committed=None)"


# -- OffsetTracker -------------------------------------------------------------------------------------------


def test_tracker_starts_partitions_on_first_track() -> None:
    tracker = OffsetTracker()
    assert tracker.partitions() == []
    assert tracker.watermark(TP0) is None
    assert tracker.outstanding(TP0) == 0
    tracker.track(TP1, 7)
    tracker.track(TP0, 3)
    tracker.track(TP0, 4)
    assert tracker.partitions() == [TP1, TP0]
    assert TP0 in tracker
    assert ("other", 0) not in tracker
    assert tracker.watermark(TP0) == 3
    assert tracker.outstanding(TP0) == 2
    assert tracker.total_outstanding == 3
    assert repr(tracker) == "OffsetTracker(partitions=2, outstanding=3)"


def test_tracker_done_counts_each_offset_once() -> None:
    tracker = OffsetTracker()
    tracker.track(TP0, 0)
    tracker.track(TP0, 1)
    assert tracker.done(TP0, 1) is True
    assert tracker.done(TP0, 1) is True
    assert tracker.total_outstanding == 1
    assert tracker.done(TP0, 0) is True
    assert tracker.total_outstanding == 0
    assert tracker.watermark(TP0) == 2


def test_tracker_done_of_an_untracked_offset_raises() -> None:
    tracker = OffsetTracker()
    tracker.track(TP0, 0)
    with pytest.raises(KeyError):
        tracker.done(TP0, 1)
    assert tracker.total_outstanding == 1


def test_tracker_track_error_leaves_total_alone() -> None:
    tracker = OffsetTracker()
    tracker.track(TP0, 5)
    with pytest.raises(ValueError, match="not after"):
        tracker.track(TP0, 5)
    assert tracker.total_outstanding == 1


def test_commit_points_only_lists_advanced_partitions() -> None:
    tracker = OffsetTracker()
    tracker.track(TP0, 10)
    tracker.track(TP0, 11)
    tracker.track(TP1, 20)
    assert tracker.commit_points() == {TP0: CommitPoint(10), TP1: CommitPoint(20)}
    tracker.mark_committed(tracker.commit_points())
    assert tracker.commit_points() == {}
    tracker.done(TP0, 10)
    assert tracker.commit_points() == {TP0: CommitPoint(11)}
    tracker.done(TP1, 20)
    tracker.mark_committed({TP0: CommitPoint(11)})
    assert tracker.commit_points() == {TP1: CommitPoint(21)}


def test_mark_committed_skips_partitions_removed_during_the_commit() -> None:
    tracker = OffsetTracker()
    tracker.track(TP0, 0)
    tracker.track(TP1, 0)
    points = tracker.commit_points()
    tracker.remove([TP1])
    tracker.mark_committed(points)
    assert tracker.partitions() == [TP0]
    assert tracker.commit_points() == {}


def test_remove_returns_final_watermarks_and_abandons_outstanding_work() -> None:
    tracker = OffsetTracker()
    tracker.track(TP0, 0)
    tracker.track(TP0, 1)
    tracker.track(TP1, 5)
    tracker.done(TP0, 0)
    assert tracker.remove([TP0, ("orders", 9)]) == {TP0: CommitPoint(1)}
    assert tracker.total_outstanding == 1
    assert tracker.partitions() == [TP1]
    # Work abandoned on revoke can still complete; it is ignored.
    assert tracker.done(TP0, 1) is False
    assert tracker.done(TP0, 12345) is False
    assert tracker.total_outstanding == 1
    assert tracker.remove([TP1]) == {TP1: CommitPoint(5)}
    assert tracker.total_outstanding == 0


def test_a_reassigned_partition_starts_fresh() -> None:
    tracker = OffsetTracker()
    tracker.track(TP0, 50)
    tracker.mark_committed(tracker.commit_points())
    tracker.remove([TP0])
    tracker.track(TP0, 40)
    assert tracker.watermark(TP0) == 40
    assert tracker.commit_points() == {TP0: CommitPoint(40)}


# -- properties ----------------------------------------------------------------------------------------------


class Model:
    """The obvious, slow definition of the watermark."""

    def __init__(self) -> None:
        self.tracked: list[int] = []
        self.done: set[int] = set()
        self.last = -1

    def track(self, offset: int) -> None:
        self.tracked.append(offset)
        self.last = offset

    def restart(self, offset: int) -> None:
        """The log was replaced from ``offset`` on: what was tracked there is gone."""
        if self.last < offset:
            return
        self.tracked = [o for o in self.tracked if o < offset]
        self.done &= set(self.tracked)
        self.last = max(self.tracked) if self.pending() else offset - 1

    def watermark(self) -> int | None:
        pending = [offset for offset in self.tracked if offset not in self.done]
        if pending:
            return min(pending)
        return self.last + 1 if self.last >= 0 else None

    def pending(self) -> list[int]:
        return [offset for offset in self.tracked if offset not in self.done]

    def point(self) -> CommitPoint | None:
        """The watermark, and the runs above it up to the last done offset that hold no pending offset."""
        watermark = self.watermark()
        if watermark is None:
            return None
        pending = set(self.pending())
        runs: list[Run] = []
        for offset in range(watermark + 1, max(self.done, default=-1) + 1):
            if offset in pending:
                continue
            if runs and runs[-1][1] == offset - 1:
                runs[-1] = (runs[-1][0], offset)
            else:
                runs.append((offset, offset))
        return CommitPoint(watermark, encode(watermark, runs))


def expected_point(model: Model, committed: CommitPoint | None) -> CommitPoint | None:
    """What committable() must give: the model's point unless it is the one committed, or below it."""
    point = model.point()
    if point is None or point == committed or (committed is not None and point.offset < committed.offset):
        return None
    return point


offset_steps = st.lists(st.integers(min_value=1, max_value=4), max_size=60)


@settings(max_examples=150, deadline=None)
@given(start=st.integers(min_value=0, max_value=10**12), steps=offset_steps, data=st.data())
def test_watermark_matches_the_model(start: int, steps: list[int], data: st.DataObject) -> None:
    offsets = [start]
    for step in steps:
        offsets.append(offsets[-1] + step)
    partition = PartitionOffsets()
    model = Model()
    committed: CommitPoint | None = None
    previous: int | None = None
    remaining = list(offsets)
    while remaining or model.pending():
        # Only applicable actions, progress first: the first one is what Hypothesis shrinks towards, so the
        # loop always terminates.
        actions = ["track"] if remaining else []
        actions += ["done"] if model.pending() else []
        actions += ["redo"] if model.done else []
        actions.append("commit")
        action = data.draw(st.sampled_from(actions))
        if action == "track":
            offset = remaining.pop(0)
            partition.track(offset)
            model.track(offset)
        elif action == "done":
            offset = data.draw(st.sampled_from(model.pending()))
            partition.done(offset)
            model.done.add(offset)
        elif action == "redo":
            partition.done(data.draw(st.sampled_from(sorted(model.done))))
        else:
            point = partition.committable()
            assert point == expected_point(model, committed)
            if point is not None:
                partition.mark_committed(point)
                committed = point
        watermark = partition.watermark
        assert watermark == model.watermark()
        assert partition.outstanding == len(model.pending())
        if previous is not None:
            assert watermark is not None
            assert watermark >= previous
        previous = watermark
    assert partition.watermark == offsets[-1] + 1


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_tracker_agrees_with_per_partition_models(data: st.DataObject) -> None:
    tps: list[TP] = [("a", 0), ("a", 1), ("b", 0)]
    tracker = OffsetTracker()
    models: dict[TP, Model] = {}
    committed: dict[TP, CommitPoint] = {}
    for _ in range(data.draw(st.integers(min_value=0, max_value=80))):
        tp = data.draw(st.sampled_from(tps))
        action = data.draw(st.sampled_from(["track", "track", "done", "commit", "remove", "restart"]))
        model = models.get(tp)
        if action == "track":
            model = models.setdefault(tp, Model())
            offset = model.last + data.draw(st.integers(1, 3))
            tracker.track(tp, offset)
            model.track(offset)
        elif action == "restart" and model is not None:
            offset = data.draw(st.integers(0, model.last + 1))
            tracker.restart(tp, offset)
            model.restart(offset)
            if tp in committed and committed[tp].offset > offset:
                committed.pop(tp)  # the new log's commit may be lower
            tracker.track(tp, offset)  # the new log's first record
            model.track(offset)
        elif action == "done" and model is not None and model.pending():
            offset = data.draw(st.sampled_from(model.pending()))
            assert tracker.done(tp, offset) is True
            model.done.add(offset)
        elif action == "done" and model is None:
            assert tracker.done(tp, 0) is False
        elif action == "commit":
            points = tracker.commit_points()
            expected = {}
            for key, each in models.items():
                point = expected_point(each, committed.get(key))
                if point is not None:
                    expected[key] = point
            assert points == expected
            tracker.mark_committed(points)
            committed.update(points)
        elif action == "remove":
            removed = tracker.remove([tp])
            assert removed == ({} if model is None else {tp: model.point()})
            models.pop(tp, None)
            committed.pop(tp, None)
        assert sorted(tracker.partitions()) == sorted(models)
        for key in tps:
            known = models.get(key)
            assert tracker.watermark(key) == (None if known is None else known.watermark())
            assert tracker.outstanding(key) == (0 if known is None else len(known.pending()))
        assert tracker.total_outstanding == sum(len(each.pending()) for each in models.values())


def test_restart_forgets_the_replaced_offsets_and_lets_the_watermark_go_back() -> None:
    partition = tracked(10, 11, 12, 13)
    partition.done(10)
    partition.done(12)
    partition.mark_committed(CommitPoint(11))
    assert partition.restart(12) == 1  # 13 was not done, 12 was
    assert (partition.watermark, partition.outstanding, partition.last) == (11, 1, 11)
    partition.track(12)  # the new log's record at 12
    partition.done(11)
    partition.done(12)
    assert partition.watermark == 13


def test_restart_below_the_watermark_starts_a_new_log() -> None:
    partition = tracked(2000, 2001)
    partition.done(2000)
    partition.done(2001)
    partition.mark_committed(CommitPoint(2002))
    assert partition.restart(0) == 0
    assert partition.watermark is None
    assert partition.committable() is None
    partition.track(0)
    partition.done(0)
    assert partition.committable() == CommitPoint(1)  # lower than the old log's commit: that one is gone


def test_restart_past_the_last_offset_changes_nothing() -> None:
    partition = tracked(5, 6)
    assert partition.restart(7) == 0
    assert (partition.watermark, partition.outstanding) == (5, 2)
    with pytest.raises(ValueError, match=">= 0"):
        partition.restart(-1)


def test_the_tracker_remembers_every_partition_it_ever_tracked() -> None:
    tracker = OffsetTracker()
    tracker.track(TP0, 3)
    tracker.remove([TP0])
    assert TP0 in tracker.ever
    assert TP0 not in tracker
    assert (tracker.last(TP0), tracker.last(TP1)) == (None, None)
