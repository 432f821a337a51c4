"""Queue mode: a pipeline's records from a Kafka share group (KIP-932), each acknowledged on its own.

The rest of the engine is the same as for a consumer group; what differs is what happens at both ends:

* intake: a record's attempts so far are the broker's delivery count less one (:meth:`ShareSource.acquired`); no
  offset is tracked, since nothing is committed but acknowledgements;
* completion: a message done (success, drop, or a dead letter acknowledged) is accepted; one the engine could
  not call at all (its headers unreadable) is dead-lettered and then rejected; a retry is released once its
  backoff ran (``engine.attempt``), and the broker delivers it again, to any member, one delivery later;
* locks: a record is the member's only for the group's record lock (30 s by default). A member keeps what it can
  start while a call begun then still ends within the lock (:attr:`ShareSource.hold`); what its pace says it
  cannot start by then goes back at once, newest first, so that another member takes it now rather than after
  the lock; what is still not started at that point (waiting in the buffer, or for a retry while the circuit is
  open) goes back then. A retry waits at most a quarter of the lock (:attr:`ShareSource.max_hold`);
* stopping: what is not started is released at once, not after its lock;
* the last delivery: a record the broker will not deliver again (``share.delivery.count.limit``) is never
  released without an outcome, which would have the broker archive it: it is dead-lettered without a call.

A member fetches at most four times ``max_in_flight`` records (``max.poll.records``, at most 500). The broker hands
out a producer's batch whole, though (librdkafka has no ``share.acquire.mode``, KIP-1206, nor lock renewal,
KIP-1222), so a topic written in large batches is fetched in larger bites: up to 10,000 records with librdkafka's
producer defaults. Each time a record goes back unstarted and is fetched again costs a delivery, and the broker
hands a record delivered more than half the group's limit out in halving bites, and one by one on its last two
deliveries (KAFKA-17541): a lone member with a backlog fell to one call at a time. Keeping what can still start
within the lock (not half of it) and the group's delivery limit (raised to 10 where the group has none of its
own, :mod:`streamcar.kafka.share_group`) make such a batch cost as few deliveries as the lock allows. The
attempts are the calls: a record this member released without calling it does not use one up when it comes back
here (with a backlog, healthy records released unstarted three times were dead-lettered after one call, "gave up
after 4 attempts": 192 of 193). A
record another member released unstarted counts that delivery, as the broker's delivery count is all there is
to know of it.

The group's lock and delivery limit are read (and the limit raised to ``retry.attempts + 1``) as the pipeline
starts (:func:`streamcar.kafka.share_group.prepare_share_group`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

from streamcar.config import KafkaConfig, PipelineConfig
from streamcar.config._queue import queue_warnings
from streamcar.engine.buffer import Buffer
from streamcar.engine.inflight import InFlight
from streamcar.engine.source import Consumer, Launch, Unbounded
from streamcar.engine.tracing import Tracing
from streamcar.engine.tracker import OffsetTracker
from streamcar.engine.work import Outcome, PipelineStats, Work
from streamcar.event import Reply
from streamcar.failures import Kind
from streamcar.kafka.records import TP
from streamcar.kafka.settings import share_consumer
from streamcar.kafka.share_group import ShareGroupSettings, prepare_share_group

log = logging.getLogger("streamcar.pipeline")

Prepare = Callable[..., ShareGroupSettings]
UNCALLED_REMEMBERED = 100_000
"""Records released without a call remembered at most (the oldest forgotten first)."""
FETCH = 500
"""The most records a member asks for in one fetch (librdkafka's ``max.poll.records`` default)."""
SHARED_EARLY = 2
"""Deliveries up to which a record a member will not start soon is given back at once for the others: a large
batch is spread over idle members at the cost of at most this many deliveries more."""


@runtime_checkable
class Acknowledger(Protocol):
    """What the share source needs of its consumer (:class:`streamcar.kafka.share.ShareBridge`, or a twin)."""

    acquired_at: float | None

    def acknowledge(self, tp: TP, offset: int, how: str) -> None: ...


class ShareSource(Unbounded):
    """The pipeline's share group: records from every partition, acknowledged one by one; never ends."""

    commits = False
    acknowledges = True

    def __init__(
        self, name: str, config: PipelineConfig, kafka: KafkaConfig, *, prepare: Prepare = prepare_share_group
    ) -> None:
        assert config.consume.share_group is not None
        self._name = name
        self._group = config.consume.share_group
        self._config = config
        self._kafka = kafka
        self._prepare = prepare
        self.ended = asyncio.Event()
        self.group = ShareGroupSettings()
        self.seen: dict[TP, int] = {}
        """Per partition, the offset after the newest record this member was given (for the lag)."""
        self._consumer: Acknowledger | None = None
        self._buffer: Buffer | None = None
        self._inflight: InFlight | None = None
        self._stats: PipelineStats | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._launch: Launch | None = None
        self._deliveries: dict[tuple[TP, int], tuple[int, int]] = {}  # each record held: deliveries, attempts then
        self._uncalled: OrderedDict[tuple[TP, int], int] = OrderedDict()  # deliveries released without a call
        self._unread = 0.0  # when to read the group's settings again (they could not be read); 0: read
        self._stopped = False
        self.pace = Pace()

    # -- Source ---------------------------------------------------------------------------------------------
    def settings(self, kafka: KafkaConfig, client_id: str) -> dict[str, Any]:
        # A fetch of no more than the member can start soon leaves the rest to the other members. The broker
        # hands a producer's batch out whole, so a fetch of large batches is larger (module docstring).
        fetch = min(max(4 * self._config.in_flight_bound, self._config.call.batch.max_messages), FETCH)
        return share_consumer(kafka, group=self._group, client_id=client_id, fetch=fetch)

    async def prepared(self) -> None:
        """Read the group's lock and delivery limit, and set what streamcar needs of it (before consuming)."""
        consume = self._config.consume
        try:  # blocking admin requests: on a thread of their own
            self.group = await asyncio.to_thread(
                self._prepare, self._kafka, self._group, start_from=consume.from_, attempts=self._config.retry.attempts
            )
        except Exception as exc:  # the consumer reports an unreachable cluster in its own words
            text = "%s: cannot read share group %s's settings (%s); assuming Kafka's defaults, reading again in 5s"
            log.warning(text, self._name, self._group, exc)
            self._unread = time.monotonic() + 5.0
            return
        if self.group.deliveries <= self._config.retry.attempts:
            log.warning(
                "%s: share group %s delivers a record at most %d times (share.delivery.count.limit), and"
                " retry.attempts is %d: a record whose last delivery is cut short (a crash, an expired lock) is"
                " archived by the broker without an outcome; raise the limit to %d",
                self._name,
                self._group,
                self.group.deliveries,
                self._config.retry.attempts,
                self._config.retry.attempts + 1,
                extra={"event": "share-group-config", "pipeline": self._name},
            )
        for line in queue_warnings(self._name, self._config.call.timeout, self.group.lock):
            log.warning("%s", line, extra={"event": "lock-shorter-than-timeout", "pipeline": self._name})

    def attach(
        self, consumer: Consumer, buffer: Buffer, inflight: InFlight, stats: PipelineStats, launch: Launch
    ) -> None:
        """The pipeline started ``consumer``: watch the locks of what it holds."""
        assert isinstance(consumer, Acknowledger)
        self._consumer, self._buffer, self._inflight, self._stats = consumer, buffer, inflight, stats
        self._launch = launch
        self._schedule()

    @property
    def max_hold(self) -> float:
        """The longest wait for a retry before the record is released (a quarter of the lock)."""
        return self.group.lock / 4

    # -- the lease (engine.attempt.Lease) -----------------------------------------------------------------------
    def lapsed(self, works: list[Work], probe: bool) -> bool:
        """The member was held up (frozen, starved of CPU): a call now would outlive the records' lock. A
        circuit's probe is made all the same (the circuit waits for its answer), and so is a verdict."""
        return not probe and self.stale() and all(w.verdict is None for w in works)

    def retry_in(self, delay: float) -> float:
        return min(delay, self.max_hold)  # then released: the lock must not run out

    def retry_due(self, due: list[Work]) -> list[Work]:
        """A retry goes back: the broker delivers it again (to any member, counting a delivery; no lane to free,
        the order is none), unless the failure cost no attempt (the service looked down): then it waits here for
        the circuit, as with a group."""
        self.give_back([w for w in due if not w.spared], "a retry")
        return [w for w in due if w.spared]

    def acquired(self, tp: TP, offset: int, deliveries: int | None) -> int:
        """A record at ``offset`` of ``tp``, delivered ``deliveries`` times: the attempts it had before this one."""
        if offset + 1 > self.seen.get(tp, 0):
            self.seen[tp] = offset + 1
        delivered = deliveries or 1
        attempts = max(delivered - 1 - self._uncalled.get((tp, offset), 0), 0)
        self._deliveries[(tp, offset)] = (delivered, attempts)
        return attempts

    def acknowledge(self, work: Work, result: Outcome) -> None:
        """``work`` ended with ``result``: released (a retry) goes back to the group; a record never called and
        dead-lettered is rejected; anything else done is accepted."""
        key = (work.tp, work.event.offset)
        held = self._deliveries.pop(key, None)
        if result is not Outcome.RELEASED:
            self._uncalled.pop(key, None)
            self.pace.done += 1
        elif held is not None and work.attempts == held[1]:  # not called in this delivery
            self._uncalled[key] = self._uncalled.pop(key, 0) + 1
            while len(self._uncalled) > UNCALLED_REMEMBERED:
                self._uncalled.popitem(last=False)
        if self._consumer is None:
            return
        if result is Outcome.RELEASED:
            how = "release"
        elif result is Outcome.DEAD_LETTER and work.verdict is not None:
            how = "reject"
        else:
            how = "accept"
        self._consumer.acknowledge(work.tp, work.event.offset, how)

    def lag(self, assigned: set[TP], tracker: OffsetTracker, highs: Mapping[TP, int]) -> dict[TP, int | None]:
        """Per partition records came from: those after the newest this member was given (the share group's own
        start offset is not exposed by the Kafka client). None: no watermark seen yet."""
        found: dict[TP, int | None] = {}
        for tp in sorted(assigned):
            high = highs.get(tp)
            found[tp] = None if high is None else max(high - self.seen.get(tp, 0), 0)
        return found

    def stopping(self) -> None:
        """The pipeline stops: nothing more is started, so what is not started goes back to the group now."""
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
        self.release_unstarted("stopping", forming=True)

    # -- locks ----------------------------------------------------------------------------------------------
    def _schedule(self) -> None:
        if not self._stopped:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(min(max(self.group.lock / 8, 0.05), 1.0), self._watch)

    @property
    def hold(self) -> float:
        """How long after a fetch what is not started goes back: when a call started then could still end within
        the lock (``call.timeout``, and a look of the watch, before it ends); at least an eighth of the lock."""
        lock = self.group.lock
        return max(lock - self._config.call.timeout - lock / 8, lock / 8)

    def stale(self) -> bool:
        """Whether a call started now on what the member holds would outlive its lock (the member was held up)."""
        consumer = self._consumer
        since = consumer.acquired_at if consumer is not None else None
        lock = self.group.lock
        return since is not None and time.monotonic() - since > max(lock - self._config.call.timeout, self.hold)

    def _watch(self) -> None:
        consumer = self._consumer
        since = consumer.acquired_at if consumer is not None else None
        now = time.monotonic()
        buffered = len(self._buffer) if self._buffer is not None else 0
        self.pace.look(now, busy=buffered > 0)
        if since is not None and now - since > self.hold:
            self.release_unstarted("not started in time: their lock would run out")
        elif since is not None:
            self._release_excess(since + self.hold - now)
        if self._unread and now >= self._unread:
            self._unread = 0.0
            asyncio.get_running_loop().create_task(self.prepared())
        self._schedule()

    def release_unstarted(self, why: str, *, forming: bool = False) -> int:
        """Give back every record not in a call: waiting in the buffer, for a retry, or parked behind the
        circuit (and, stopping, in a batch being formed). Returns how many were released."""
        buffer, inflight = self._buffer, self._inflight
        if buffer is None or inflight is None:
            return 0
        unstarted = [work for tp in list(self.seen) for work in buffer.drop_partition(tp)]
        taken = inflight.unstarted(forming=forming)
        for work in taken:
            buffer.finish(work)
        count = self.give_back(unstarted + taken, why)
        if count:
            log.info(
                "%s: released %d records to the share group (%s)",
                self._name,
                count,
                why,
                extra={"event": "released", "pipeline": self._name},
            )
        return count

    def _release_excess(self, left: float) -> None:
        """Give back at once, newest first, the buffered records this member cannot start before their lock runs
        out (``left`` seconds) at its pace; and, so that idle members get a share of a large batch, those at
        their first or second delivery beyond what it starts in a quarter of the lock. Nothing before the pace is
        measured."""
        buffer, slots = self._buffer, self._config.in_flight_bound
        whole, soon = self.pace.can_start(left, slots), self.pace.can_start(min(left, self.group.lock / 4), slots)
        if buffer is None or whole is None or soon is None or len(buffer) <= soon:
            return
        if len(buffer) <= whole and not any(d <= SHARED_EARLY for d, _ in self._deliveries.values()):
            return  # nothing would go back: the buffer is not taken apart and put together again
        works = sorted((w for tp in list(self.seen) for w in buffer.drop_partition(tp)), key=_oldest_first)
        kept: list[Work] = []
        back: list[Work] = []
        for work in works:
            early = self._deliveries.get((work.tp, work.event.offset), (1, 0))[0] <= SHARED_EARLY
            (back if len(kept) >= whole or (len(kept) >= soon and early) else kept).append(work)
        for work in kept:
            buffer.submit(work)
        count = self.give_back(back, "more than this member can start soon")
        if count:
            log.info(
                "%s: released %d records to the share group at once: at %.0f calls/s it starts %d of its %d"
                " unstarted ones soon",
                self._name,
                count,
                self.pace.rate or 0.0,
                len(kept),
                len(works),
                extra={"event": "released", "pipeline": self._name},
            )

    def give_back(self, works: list[Work], why: str) -> int:
        """Release ``works`` to the group (not in a call, not done), except those on their last delivery: the
        broker would archive those with no outcome, so they are dead-lettered instead. Returns how many were
        released."""
        last = [w for w in works if self._last_delivery(w)]
        if last:
            self._dead_letter(last, why)
        released = [w for w in works if not self._last_delivery(w)]
        for work in released:
            if work.span is not None:
                Tracing.done(work, Outcome.RELEASED)
            self.acknowledge(work, Outcome.RELEASED)
        if released and self._stats is not None:
            self._stats.results[Outcome.RELEASED] += len(released)
        return len(released)

    def _last_delivery(self, work: Work) -> bool:
        return self._deliveries.get((work.tp, work.event.offset), (0, 0))[0] >= self.group.deliveries

    def _dead_letter(self, works: list[Work], why: str) -> None:
        """``works`` are on their last delivery: released, the broker would archive them without an outcome.
        They are dead-lettered instead, without a call (then rejected)."""
        assert self._launch is not None
        assert self._inflight is not None
        limit = self.group.deliveries
        text = f"delivered {limit} times (share.delivery.count.limit) without a call that ended: {why}"
        for work in works:
            work.verdict = Reply.dead_letter(text, kind=Kind.EXHAUSTED)
        self._inflight.decided(len(works))
        self._launch(works)
        log.warning(
            "%s: dead-lettering %d records on their last delivery (%s)",
            self._name,
            len(works),
            why,
            extra={"event": "last-delivery", "pipeline": self._name},
        )


def _oldest_first(work: Work) -> tuple[int, str, int]:
    return (work.event.offset, work.tp[0], work.tp[1])


class Pace:
    """How many records a member finishes per second while it has more to start than call slots: what it can
    start in a given time. Measured from one look of the lock watch to the next, over looks when records waited
    in the buffer at both ends (a member with nothing waiting shows its load, not its pace) and some were done
    (none done is an outage, which the circuit breaker and the lock's deadline deal with)."""

    SAFETY = 1.25
    """What the member is assumed to start beyond its measured pace before anything goes back early."""

    def __init__(self) -> None:
        self.done = 0
        """Records finished (accepted or rejected) so far."""
        self.rate: float | None = None
        """Records finished per second while busy (a moving average); None until measured."""
        self._at = 0.0
        self._done_then = 0
        self._busy = False

    def look(self, now: float, *, busy: bool) -> None:
        """The watch looks at ``now``; ``busy``: records wait in the buffer."""
        elapsed = now - self._at
        if busy and self._busy and elapsed > 0 and self.done > self._done_then:  # none done: an outage, not a pace
            sample = (self.done - self._done_then) / elapsed
            self.rate = sample if self.rate is None else (self.rate + sample) / 2
        self._at, self._done_then, self._busy = now, self.done, busy

    def can_start(self, within: float, slots: int) -> int | None:
        """How many records the member can start within ``within`` seconds, with ``slots`` calls at once; None
        until the pace is measured."""
        if self.rate is None:
            return None
        return int(self.rate * max(within, 0.0) * self.SAFETY) + slots
