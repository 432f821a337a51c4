"""The units the pipeline moves around: one :class:`Work` per consumed record, and the pipeline's counters."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from confluent_kafka import Message

from streamcar.engine.offsets import TopicPartition as TP
from streamcar.engine.scheduler import Lane
from streamcar.event import Event, Reply


@dataclass
class PipelineStats:
    consumed: int = 0
    results: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    published: int = 0
    dead_lettered: int = 0
    calls: int = 0
    call_seconds: float = 0.0
    last_errors: list[str] = field(default_factory=list)

    def note_error(self, text: str) -> None:
        self.last_errors.append(text)
        del self.last_errors[:-20]


class Work:
    """One consumed record on its way through the pipeline.

    ``reply`` is the service's latest answer, not acted on yet. ``settled`` names the result of a message whose
    effect already happened (reply published, dead letter acknowledged, dropped) but whose completion waits for
    an earlier message of its lane; ``held`` lists the later messages of this one's lane that wait for it.
    Both only occur with batch delivery, where one call can answer several messages of a lane.
    """

    __slots__ = (
        "attempts",
        "blocked",
        "event",
        "generation",
        "held",
        "lane",
        "last_error",
        "last_kind",
        "reply",
        "settled",
        "tp",
    )

    def __init__(self, event: Event, tp: TP, lane: Lane | None, generation: int) -> None:
        self.event = event
        self.tp = tp
        self.lane = lane
        self.generation = generation
        self.attempts = 0
        self.last_error = ""
        self.last_kind = ""
        self.blocked = False
        self.reply: Reply | None = None
        self.settled: str | None = None
        self.held: list[Work] | None = None

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


def event_from(msg: Message) -> Event:
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    assert topic is not None
    assert partition is not None
    assert offset is not None
    _, timestamp = msg.timestamp()
    raw = msg.headers()
    pairs = raw.items() if isinstance(raw, dict) else (raw or ())
    headers = tuple((k, v if v is None or isinstance(v, bytes) else str(v).encode()) for k, v in pairs)
    return Event(topic, partition, offset, timestamp, msg.key(), msg.value(), headers)
