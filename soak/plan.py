"""The nemesis's schedule: which fault, when, and for how long, drawn up front from the run's random source, so
that a seed names one schedule whatever happens while it runs.

* A fault starts 10-30 s after the one before it (the first 10-30 s into the run) and is healed after its hold.
  A hold may outlast the gap to the next fault, so faults overlap now and then: Jepsen's and Kafka's own system
  tests find their bugs where faults combine.
* Kinds are drawn from a shuffled bag of the six, refilled when empty, so a two-minute run already meets every
  kind and a long one meets them evenly.
* Members join and leave in turn: two members run at the start, the first member fault adds a third, the next
  takes one away, and so on. (A SIGKILLed member is not one that left: it comes back.)
* ``pick`` chooses the target at run time among the candidates there are then (the members up, the input
  partitions) without drawing from the random source again: what happens at run time cannot shift the schedule.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

SIGKILL_SIDECAR = "sigkill_sidecar"
SIGSTOP_SIDECAR = "sigstop_sidecar"
SIGSTOP_SERVICE = "sigstop_service"
KILL_LEADER = "kill_leader"
MEMBER_JOIN = "member_join"
MEMBER_LEAVE = "member_leave"
SLOW_SERVICE = "slow_service"
KINDS = (SIGKILL_SIDECAR, SIGSTOP_SIDECAR, SIGSTOP_SERVICE, KILL_LEADER, MEMBER_JOIN, MEMBER_LEAVE, SLOW_SERVICE)
"""Every kind of fault, as the summary counts them."""

_MEMBER = "member"
_BAG = (SIGKILL_SIDECAR, SIGSTOP_SIDECAR, SIGSTOP_SERVICE, KILL_LEADER, _MEMBER, SLOW_SERVICE)
GAP = (10.0, 30.0)
"""Seconds from one fault's start to the next one's."""


def holds(session_timeout: float) -> dict[str, tuple[float, float]]:
    """Per kind, the range of its hold in seconds: how long until it is healed."""
    return {
        SIGKILL_SIDECAR: (1.0, 5.0),  # dead, then started again under the same name
        # frozen past the session timeout, so the group throws it out and its partitions move; then SIGCONT
        SIGSTOP_SIDECAR: (session_timeout + 2.0, session_timeout + 8.0),
        SIGSTOP_SERVICE: (3.0, 15.0),  # beyond call.timeout (10 s) at the long end
        KILL_LEADER: (5.0, 20.0),  # SIGKILLed, then started again (and caught up) before the next broker fault
        MEMBER_JOIN: (0.0, 0.0),
        MEMBER_LEAVE: (0.0, 0.0),
        SLOW_SERVICE: (10.0, 30.0),
    }


@dataclass(frozen=True)
class Fault:
    at: float
    """Seconds from the start of the input."""
    kind: str
    hold: float
    """Seconds from ``at`` until it is healed."""
    pick: float
    """In [0, 1): which of the candidates at run time is the target."""

    def target(self, candidates: Sequence[T]) -> T | None:
        """The candidate ``pick`` chooses; None when there is none."""
        if not candidates:
            return None
        return candidates[min(int(self.pick * len(candidates)), len(candidates) - 1)]


def plan(rng: random.Random, seconds: float, *, session_timeout: float) -> list[Fault]:
    """The faults of a run of ``seconds``, in order of their start; each starts before ``seconds``."""
    ranges = holds(session_timeout)
    faults: list[Fault] = []
    bag: list[str] = []
    joined = False  # whether the third member is in: the next member fault then takes one away
    at = rng.uniform(*GAP)
    while at < seconds:
        if not bag:
            bag = list(_BAG)
            rng.shuffle(bag)
        kind = bag.pop()
        if kind == _MEMBER:
            kind, joined = (MEMBER_LEAVE, False) if joined else (MEMBER_JOIN, True)
        faults.append(Fault(at, kind, rng.uniform(*ranges[kind]), rng.random()))
        at += rng.uniform(*GAP)
    return faults
