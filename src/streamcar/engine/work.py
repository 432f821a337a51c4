"""The units the pipeline moves around: one :class:`Work` per consumed record, and the pipeline's counters.

The counters only ever grow, and nothing in them knows about time: rates and recent latency percentiles are
the admin server's, which samples the counters once a second (see :mod:`streamcar.admin.window`). So the
per-message cost of everything /status and the page show is an integer increment or two.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from enum import StrEnum

from opentelemetry.trace import Span

from streamcar.engine.scheduler import Lane
from streamcar.event import Event, Reply
from streamcar.failures import outage
from streamcar.kafka.records import TP

CALL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Upper bounds (seconds) of the call-duration histogram of /metrics; a last, unbounded bucket follows."""
LATENCY_BOUNDS = tuple(float(f"{m}e{e}") for e in range(-4, 2) for m in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8))
"""Upper bounds (seconds, 100 µs to 80 s) of the finer histogram calls are counted in: ten buckets a decade, so a
percentile read from it is within a bucket's width (at most 25%) of the true one. /metrics' buckets are among
these bounds (and are sums of these buckets), so a call is counted once, with one bisection."""
_PROMETHEUS_ENDS = tuple(LATENCY_BOUNDS.index(bound) + 1 for bound in CALL_BUCKETS)
DEAD_LETTER_GROUPS = 50
"""Kinds-and-errors of dead letters kept (the least recently seen goes first)."""
CONDITION_SHOWN = 600.0
"""Seconds a noted condition stays on /status."""
REFUSING_SHOWN = 60.0
"""Seconds a topic that refused a record counts as refusing (unless a record is taken meanwhile)."""
FAILING_AFTER = 5
"""Consecutive calls that could not reach the service (connection, timeout, 5xx) before it counts as failing."""


class Outcome(StrEnum):
    """How a message ended, as /status and /metrics count it (``results``)."""

    SUCCESS = "success"
    DROP = "drop"
    DEAD_LETTER = "dead-letter"
    RELEASED = "released"
    """Queue mode: given back to the share group (a retry, or not started in time), delivered again."""


@dataclass
class PipelineStats:
    """The pipeline's counters, read by /metrics and /status at scrape time (nothing is exported per message)."""

    consumed: int = 0
    skipped: int = 0
    """Records read and not processed: the partition's previous owner had done them (its commit said so)."""
    results: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    published: int = 0
    dead_lettered: int = 0
    calls: int = 0
    call_errors: int = 0
    """Calls that did not get through: refused, timed out, a retriable status (the service's trouble)."""
    call_seconds: float = 0.0
    latency: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BOUNDS) + 1))
    """Calls per :data:`LATENCY_BOUNDS` bucket (the last one: slower than 80 s)."""
    failed_calls_in_a_row: int = 0
    last_call_error: str = ""
    """The last failed call's error, with what the service said (its body's start): /status only."""
    last_call_failure: str = ""
    """Its kind alone (``timeout``, ``http-status``...): what /readyz says to a caller without the admin token."""
    last_errors: list[str] = field(default_factory=list)
    recent_dead_letters: deque[dict[str, object]] = field(default_factory=lambda: deque(maxlen=20))
    """The last dead letters, newest last: source topic/partition/offset, key, kind, error, time."""
    dead_letter_groups: OrderedDict[tuple[str, str], DeadLetterGroup] = field(default_factory=OrderedDict)
    """Dead letters by kind and error, the most recently seen last (at most :data:`DEAD_LETTER_GROUPS`)."""
    published_to: Counter[str] = field(default_factory=Counter)
    """Reply records published, per topic: where replies were really routed."""
    conditions: dict[str, tuple[str, float]] = field(default_factory=dict)
    """Named conditions and the time they were last noted (e.g. ``log-restarted``)."""
    publish_errors: Counter[str] = field(default_factory=Counter)
    """Records the broker did not take, per topic (each attempt counts)."""
    concurrency_limit: int | None = None
    """The adaptive limit on calls in flight now (``max_in_flight: auto``); None for a fixed one."""
    refusing: dict[str, tuple[str, float]] = field(default_factory=dict)
    """Topics whose last record was not taken: the error and when (cleared by the next record taken)."""

    def note_publish_error(self, topic: str, error: str, *, of_topic: bool) -> None:
        """The broker did not take a record for ``topic``; ``of_topic``: because of the topic (it is missing or
        we may not write it), which makes it a problem until a record is taken again."""
        self.publish_errors[topic] += 1
        if of_topic:
            self.refusing[topic] = (error, time.monotonic())

    def note_published(self, topic: str) -> None:
        if self.refusing:
            self.refusing.pop(topic, None)

    def refusing_topics(self, within: float = REFUSING_SHOWN) -> list[str]:
        """A line for each topic that refused our last record within ``within`` seconds."""
        now = time.monotonic()
        return [
            f"topic {topic!r} does not take records: {error}"
            for topic, (error, at) in sorted(self.refusing.items())
            if now - at <= within
        ]

    def note_dead_letter(self, event: Event, kind: str, error: str) -> None:
        self.dead_lettered += 1
        key = None if event.key is None else event.key.decode("utf-8", "backslashreplace")
        now = time.time()
        sample = {"topic": event.topic, "partition": event.partition, "offset": event.offset, "key": key}
        self.recent_dead_letters.append({**sample, "kind": kind, "error": error, "at": now})
        groups = self.dead_letter_groups
        group = groups.get((kind, error))
        if group is None:
            group = groups[(kind, error)] = DeadLetterGroup(kind, error, first_at=now)
            if len(groups) > DEAD_LETTER_GROUPS:
                groups.popitem(last=False)
        else:
            groups.move_to_end((kind, error))
        group.count += 1
        group.last_at = now
        group.sample = sample

    def dead_letter_summary(self) -> list[dict[str, object]]:
        """The dead letters by kind and error, the most recently seen first."""
        return [group.summary() for group in reversed(self.dead_letter_groups.values())]

    def note_condition(self, name: str, text: str) -> None:
        """Something happened that an operator should see on /status for a while (see :meth:`recent`)."""
        self.conditions[name] = (text, time.time())

    def recent(self, within: float = CONDITION_SHOWN) -> list[dict[str, object]]:
        """The conditions noted in the last ``within`` seconds, newest first."""
        now = time.time()
        found = [(at, name, text) for name, (text, at) in self.conditions.items() if now - at <= within]
        return [{"name": name, "text": text, "at": at} for at, name, text in sorted(found, reverse=True)]

    def note_error(self, text: str) -> None:
        self.last_errors.append(text)
        del self.last_errors[:-20]

    def observe_call(self, seconds: float, failure: str | None) -> None:
        """One call to the service took ``seconds``; ``failure`` is the error kind of a call that did not get
        through (connection refused, timeout, 5xx), None for one the service answered."""
        self.calls += 1
        self.call_seconds += seconds
        self.latency[bisect_left(LATENCY_BOUNDS, seconds)] += 1
        if failure is not None:
            self.call_errors += 1
        if outage(failure):
            self.failed_calls_in_a_row += 1
        else:
            self.failed_calls_in_a_row = 0

    @property
    def service_failing(self) -> bool:
        return self.failed_calls_in_a_row >= FAILING_AFTER

    @property
    def call_buckets(self) -> list[int]:
        """Calls per :data:`CALL_BUCKETS` bucket (/metrics' histogram, not cumulative), summed from :attr:`latency`."""
        found, start = [], 0
        for end in (*_PROMETHEUS_ENDS, len(self.latency)):
            found.append(sum(self.latency[start:end]))
            start = end
        return found

    @property
    def done(self) -> int:
        """Messages done, whatever their result."""
        return sum(self.results.values())


@dataclass(slots=True)
class DeadLetterGroup:
    """The dead letters of one kind and error: how many, when first and last, and the last one's source and key."""

    kind: str
    error: str
    first_at: float
    last_at: float = 0.0
    count: int = 0
    sample: dict[str, object] = field(default_factory=dict)

    def summary(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "error": self.error,
            "count": self.count,
            "first_at": self.first_at,
            "last_at": self.last_at,
            "sample": self.sample,
        }


class Work:
    """One consumed record on its way through the pipeline.

    ``reply`` is the service's latest answer, not acted on yet. ``settled`` names the result of a message whose
    effect already happened (reply published, dead letter acknowledged, dropped) but whose completion waits for
    an earlier message of its lane; ``held`` lists the later messages of this one's lane that wait for it.
    Both only occur with batch delivery, where one call can answer several messages of a lane.
    """

    __slots__ = (
        "acked",
        "alone",
        "attempts",
        "blocked",
        "cuts",
        "event",
        "first_failed_at",
        "generation",
        "held",
        "lane",
        "last_error",
        "last_kind",
        "refusals",
        "refused",
        "reply",
        "settled",
        "size",
        "span",
        "spared",
        "tp",
        "verdict",
    )

    def __init__(self, event: Event, tp: TP, lane: Lane | None, generation: int) -> None:
        self.event = event
        self.size = len(event.key or b"") + len(event.value or b"")
        if event.headers:
            self.size += sum(len(name) + len(value or b"") for name, value in event.headers)
        self.tp = tp
        self.lane = lane
        self.generation = generation
        self.attempts = 0
        self.first_failed_at = 0.0  # when a call of it first failed (time.monotonic()); 0: never
        self.spared = False  # its last failure cost no attempt: the service looked down (see attempt._called)
        self.refusals = 0  # times the service refused it the way a wrong setup does (see Reply.refusal)
        self.refused = 0  # times the broker did not take its record: the wait before handing it over again grows
        self.acked: set[int] | None = None  # a fan-out: the indexes of its records the broker acknowledged
        self.last_error = ""
        self.last_kind = ""
        self.blocked = False
        self.reply: Reply | None = None
        self.settled: Outcome | None = None
        self.held: list[Work] | None = None
        self.span: Span | None = None  # the message's "process" span when tracing is on
        self.alone = False  # its record goes in a batch of its own (its last batch was refused as too large)
        self.cuts = 0  # how far its dead letter is cut down to fit the topic (see records.cut_down)
        self.verdict: Reply | None = None  # decided without a call (the record cannot be called at all)

    def hold(self, later: Work) -> None:
        """``later`` (same lane, later offset) completes only after this one does."""
        if self.held is None:
            self.held = [later]
        else:
            self.held.append(later)

    def __repr__(self) -> str:
        return f"Work({self.event.idempotency_key}, attempts={self.attempts})"


def lane_of(work: Work) -> Lane | None:
    return work.lane


def partition_of(work: Work) -> TP:
    return work.tp
