"""The soak's fault schedule (soak/plan.py): one seed, one schedule; gaps of 10-30 s; every kind met early and
evenly; members joining and leaving by turns; holds in their ranges; a target chosen among what is there."""

from __future__ import annotations

import itertools
import random
from collections import Counter

from soak.plan import GAP, KINDS, MEMBER_JOIN, MEMBER_LEAVE, SIGSTOP_SIDECAR, Fault, holds, plan

SESSION = 15.0


def test_a_seed_names_one_schedule() -> None:
    def schedule(seed: int) -> list[Fault]:
        return plan(random.Random(seed), 1800, session_timeout=SESSION)

    assert schedule(42) == schedule(42)
    assert schedule(42) != schedule(43)


def test_faults_come_every_10_to_30_seconds_within_the_run() -> None:
    for seed in range(20):
        faults = plan(random.Random(seed), 600, session_timeout=SESSION)
        assert GAP[0] <= faults[0].at <= GAP[1]
        assert all(GAP[0] <= b.at - a.at <= GAP[1] for a, b in itertools.pairwise(faults))
        assert faults[-1].at < 600
        assert 600 / GAP[1] - 1 <= len(faults) <= 600 / GAP[0]


def test_a_short_run_meets_every_kind_of_fault() -> None:
    # six faults are one round of the bag: every kind but one of join and leave
    for seed in range(20):
        first = {f.kind for f in plan(random.Random(seed), 400, session_timeout=SESSION)[:6]}
        assert first | {MEMBER_LEAVE} == set(KINDS)


def test_a_long_run_meets_them_evenly() -> None:
    counts = Counter(f.kind for f in plan(random.Random(1), 1800, session_timeout=SESSION))
    members = counts.pop(MEMBER_JOIN) + counts.pop(MEMBER_LEAVE)
    assert max(counts.values()) - min(counts.values()) <= 1
    assert min(counts.values()) <= members <= max(counts.values())


def test_members_join_and_leave_by_turns_starting_with_a_join() -> None:
    for seed in range(20):
        turns = [f.kind for f in plan(random.Random(seed), 1800, session_timeout=SESSION)]
        turns = [kind for kind in turns if kind in (MEMBER_JOIN, MEMBER_LEAVE)]
        assert turns == [MEMBER_JOIN, MEMBER_LEAVE] * (len(turns) // 2) + [MEMBER_JOIN] * (len(turns) % 2)


def test_holds_stay_in_their_ranges_and_a_frozen_member_outlasts_its_session() -> None:
    ranges = holds(SESSION)
    assert ranges[SIGSTOP_SIDECAR][0] > SESSION
    for fault in plan(random.Random(5), 1800, session_timeout=SESSION):
        low, high = ranges[fault.kind]
        assert low <= fault.hold <= high
        assert 0 <= fault.pick < 1


def test_a_target_is_picked_among_the_candidates_there_are() -> None:
    assert Fault(0, MEMBER_JOIN, 0, 0.0).target(["a", "b", "c"]) == "a"
    assert Fault(0, MEMBER_JOIN, 0, 0.5).target(["a", "b", "c"]) == "b"
    assert Fault(0, MEMBER_JOIN, 0, 0.999).target(["a", "b", "c"]) == "c"
    assert Fault(0, MEMBER_JOIN, 0, 0.999).target(["a"]) == "a"
    assert Fault(0, MEMBER_JOIN, 0, 0.3).target([]) is None
