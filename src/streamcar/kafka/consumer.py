"""A confluent-kafka Consumer on its own thread, bridged to an asyncio loop.

librdkafka's consumer is synchronous and its rebalance callbacks run inside ``consume()``, on the thread that
calls it. So one thread owns the consumer: it fetches batches and posts them to the loop, and when the group
revokes partitions it *blocks inside the callback* until the loop has drained them and returned the offsets
to commit, commits them on this thread, and only then lets librdkafka release them: a rebalance loses nothing.

The thread is the consumer's only user: confluent-kafka's Consumer blocks other threads' calls (assignment,
pause, commit) while one thread sits in ``consume()``. So the loop sends pause, resume and commit as commands
that the thread runs between two fetches (at most ``poll_interval`` apart). The thread never runs ahead of the
loop by more than ``max_pending_batches`` batches; the pipeline's backpressure pauses fetching when too much
work is in flight.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka import KafkaError as RdKafkaError

from streamcar.kafka.bridging import end_thread, fields, fmt, handed, on_loop, resolve, settle
from streamcar.kafka.errors import CommitRefused, failed, said
from streamcar.kafka.listener import ConsumerListener
from streamcar.kafka.probes import committed_points, look_around, seek_committed, wake_fetchers
from streamcar.kafka.rdlog import KafkaLog, Reachability
from streamcar.kafka.records import TP, CommitPoint, commit_list
from streamcar.kafka.security import explain, identity
from streamcar.kafka.starts import Starts, marker
from streamcar.kafka.topics import TopicWatch

log = logging.getLogger("streamcar.kafka.consumer")
T = TypeVar("T")


LOOK_EVERY = 2.0  # seconds between refreshes of the watermarks and probes of the cluster
REWIND_AGAIN = 1.0  # seconds before a rewind the group coordinator did not answer is tried again


class ConsumerBridge:
    def __init__(
        self,
        config: Mapping[str, Any],
        topics: list[str],
        listener: ConsumerListener,
        loop: asyncio.AbstractEventLoop,
        *,
        batch_size: int = 500,
        revoke_timeout: float = 60.0,
        max_pending_batches: int = 2,
        poll_interval: float = 0.02,
        assignment: Mapping[TP, int] | None = None,
        start_from: str = "earliest",
        watch: TopicWatch | None = None,
    ) -> None:
        conf = dict(config)
        conf["error_cb"] = self._error_cb
        conf.setdefault("logger", KafkaLog())  # one line per condition per interval, not per attempt
        self._consumer = Consumer(conf)
        self._topics = topics
        self._group = str(conf.get("group.id", ""))
        self._identity = identity(conf)
        self._security_failed = False
        # Replay: read exactly these partitions from these offsets (assign, no group membership) instead of
        # subscribing; the listener hears of them through on_assigned as if the group had assigned them.
        self._assignment = dict(assignment) if assignment is not None else None
        self._listener = listener
        self._loop = loop
        self._batch_size = batch_size
        self._revoke_timeout = revoke_timeout
        self._pending = threading.BoundedSemaphore(max_pending_batches)
        self._poll_interval = poll_interval
        self._stopping = threading.Event()
        self._commands: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        # Set by batch_done() and by every command: the thread, waiting for the loop to catch up, wakes at once
        # for them. A commit that waited out a whole poll interval here left more completed work uncommitted
        # (hence redone after a crash) at high throughput.
        self._wake = threading.Event()
        self._paused = False  # what the loop wants; the thread applies it (also to partitions assigned later)
        self._finished: set[TP] = set()  # paused whatever _paused says
        self._held: set[TP] = set()  # paused until resume_partition, whatever _paused says
        # Published by the thread for /metrics, /status and /readyz (each a fresh object: readers need no lock).
        self.high_watermarks: dict[TP, int] = {}
        self.kafka_error: str | None = None  # why the cluster did not answer the last probe; None when it did
        self._reach = Reachability()
        self._watch = watch  # the pipeline's topics, checked as the cluster is looked at
        self._next_look = 0.0
        self._held_since: float | None = None  # since when the thread waits for the loop to take its batches
        # where a partition without a usable committed offset starts: see streamcar.kafka.starts
        self._starts = Starts(start_from)
        self._metadata: object | None = None  # the group metadata while the thread is in a revoke callback
        self._rewinding: set[TP] = set()  # held until a rewind the coordinator did not answer is tried again
        self._rewind_at = 0.0
        self._thread = threading.Thread(target=self._run, name=f"consumer-{','.join(topics)}", daemon=True)
        self._done: asyncio.Future[None] = loop.create_future()

    # -- called from the loop -------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def batch_done(self) -> None:
        """The loop accepted a batch: the thread may hand over another."""
        self._pending.release()
        self._wake.set()

    def pause_all(self) -> None:
        if not self._paused:
            self._paused = True
            self._command(self._apply_pause)

    def pause_partition(self, tp: TP) -> None:
        """Stop fetching ``tp`` for good (a replay read its range); resume_all leaves it paused."""
        if tp not in self._finished:
            self._finished.add(tp)
            self._command(self._apply_pause)

    def hold_partition(self, tp: TP) -> None:
        """Stop fetching ``tp`` until :meth:`resume_partition`, whatever resume_all does."""
        if tp not in self._held:
            self._held.add(tp)
            self._command(self._apply_pause)

    def resume_partition(self, tp: TP) -> None:
        """Fetch ``tp`` again after :meth:`hold_partition` (unless everything is paused)."""
        if tp in self._held:
            self._held.discard(tp)
            self._command(self._apply_pause)

    def resume_all(self) -> None:
        if self._paused:
            self._paused = False
            self._command(self._apply_pause)

    @property
    def paused(self) -> bool:
        return self._paused

    def reset_offset(self, tp: TP, *, read_before: bool) -> None:
        """librdkafka found no usable committed offset for ``tp`` (``auto.offset.reset`` is ``error``): decide
        where it starts (:mod:`streamcar.kafka.starts`), on the consumer thread. ``read_before``: this process
        read records of ``tp`` before."""
        if read_before:
            self._starts.seen.add(tp)  # a set's add is atomic: the thread may read it meanwhile
        self._command(lambda: self._reset_offset(tp))

    async def commit(self, offsets: Mapping[TP, CommitPoint]) -> None:
        """Commit synchronously on the consumer thread; raises :class:`CommitRefused` if the broker refuses."""
        if self._stopping.is_set() or not self._thread.is_alive():
            # nobody would run the command: the close already committed what the revoke drained
            raise CommitRefused("the consumer is closing")
        tps = commit_list(offsets)
        try:
            await self._on_thread(lambda: self._commit_sync(tps))
        except KafkaException as exc:
            raise CommitRefused.of(exc) from None

    async def _on_thread(self, call: Callable[[], T]) -> T:
        """``call()`` run on the consumer thread (between two fetches); its result or exception."""
        future: asyncio.Future[T] = self._loop.create_future()

        def command() -> None:
            try:
                value = call()
            except Exception as exc:
                self._loop.call_soon_threadsafe(settle, future, exc)
            else:
                self._loop.call_soon_threadsafe(resolve, future, value)

        self._command(command)
        return await future

    def rewind(self, tps: list[TP]) -> None:
        """Go back to the committed offsets of ``tps`` (an aborted transaction); ``on_rewound`` follows every batch
        posted before the seek (the pipeline drops those: it stopped taking ``tps``)."""
        self._command(lambda: self._rewind(tps))

    async def group_metadata(self) -> object:
        """The group metadata for a transaction's offsets (KIP-447), read on the consumer's thread (from another,
        while this one was in a metadata request, it hung)."""
        if self._metadata is not None:
            return self._metadata  # in a revoke callback, taken before it
        return await self._on_thread(self._consumer.consumer_group_metadata)

    def _command(self, command: Callable[[], None]) -> None:
        self._commands.put(command)
        self._wake.set()

    async def stop(self) -> None:
        """Leave the group (revoking, hence committing, what we hold) and end the thread."""
        await end_thread(self._stopping, self._wake, self._thread, self._done)

    # -- the consumer thread ----------------------------------------------------------------------------
    def _apply_pause(self) -> None:
        assignment = self._consumer.assignment()
        if not assignment:
            return
        stopped = self._finished | self._held
        finished = [tp for tp in assignment if (tp.topic, tp.partition) in stopped]
        if finished:
            self._consumer.pause(finished)
        if self._paused:
            self._consumer.pause(assignment)
            return
        active = [tp for tp in assignment if (tp.topic, tp.partition) not in stopped]
        if active:
            self._consumer.resume(active)
            wake_fetchers(self._consumer, active)

    def _run_commands(self) -> None:
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return
            command()

    def _reset_offset(self, tp: TP) -> None:
        consumer = self._consumer
        if not any((p.topic, p.partition) == tp for p in consumer.assignment()):
            return  # revoked meanwhile: its next owner decides
        try:
            start = self._starts.start(consumer, tp, pause=self._paused or tp in self._finished)
        except KafkaException as exc:
            log.warning("%s: cannot start %s[%d] yet (%s); trying again in 1s", self._group, *tp, exc)
            self._starts.retry(tp, time.monotonic() + 1.0)
            return
        try:  # committed at once: see streamcar.kafka.starts
            self._commit_sync([TopicPartition(tp[0], tp[1], start.offset, metadata=marker(start.partitions))])
        except KafkaException as exc:
            log.debug("committing the start of %s[%d] failed: %s", *tp, exc)
        log.info("%s: %s", self._group, start.text, extra=fields("offset-reset", self._group, [tp]))

    def _rewind(self, asked: list[TP]) -> None:
        tps, self._rewinding = sorted(self._rewinding.union(asked)), set()  # with those still waiting
        try:
            kept, committed, missing = seek_committed(self._consumer, tps)
        except KafkaException as exc:
            # the committed offsets did not come (the coordinator is failing over, or this member was frozen past
            # its session): the partitions fetch nothing meanwhile, and the pipeline keeps waiting for on_rewound
            log.warning("%s: cannot rewind %s yet (%s); trying again in 1s", self._group, fmt(tps), exc)
            self._rewinding.update(tps)
            self._rewind_at = time.monotonic() + REWIND_AGAIN
            self._held.update(tps)
            self._apply_pause()
            return
        for tp in missing:
            self._reset_offset(tp)  # nothing committed yet: it starts where a new assignment would
        self._held.difference_update(tps)
        self._apply_pause()
        log.info(
            "%s: rewound %s to the committed offsets",
            self._group,
            fmt(kept),
            extra=fields("rewound", self._group, kept),
        )
        self._loop.call_soon_threadsafe(self._listener.on_rewound, kept, committed)

    def _commit_sync(self, tps: list[TopicPartition]) -> None:
        if not tps:
            return
        for tp in self._consumer.commit(offsets=tps, asynchronous=False):
            if tp.error is not None:
                raise KafkaException(tp.error)

    def _run(self) -> None:
        try:
            if self._assignment is None:
                self._consumer.subscribe(
                    self._topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
                )
            else:
                tps = list(self._assignment)
                on_loop(self._loop, self._listener.on_assigned(tps, {}), self._revoke_timeout)
                self._consumer.assign([TopicPartition(t, p, o) for (t, p), o in self._assignment.items()])
            while not self._stopping.is_set():
                self._run_commands()
                for tp in self._starts.due(time.monotonic()):
                    self._reset_offset(tp)
                if self._rewinding and time.monotonic() >= self._rewind_at:
                    self._rewind([])
                if time.monotonic() >= self._next_look or (self._watch is not None and self._watch.wanted):
                    self._look_around()
                # The loop is behind: wait. Never poll() here to "serve callbacks": on a consumer poll() returns
                # a record, and one dropped here would be skipped by the watermark, hence lost.
                if not self._pending.acquire(blocking=False):
                    if self._held_since is None:
                        self._held_since = time.monotonic()
                    self._wake.wait(self._poll_interval)
                    self._wake.clear()  # then the loop's top looks at commands and the semaphore again
                    continue
                self._held_since = None
                # consume(n, timeout) waits for n records or the whole timeout: at a low rate every record would
                # wait out the interval. So wait for the first, then take what else is already fetched.
                records = self._consumer.consume(num_messages=1, timeout=self._poll_interval)
                if records and self._batch_size > 1:
                    records += self._consumer.consume(num_messages=self._batch_size - 1, timeout=0)
                if records:
                    self._loop.call_soon_threadsafe(self._listener.on_records, handed(records))
                else:
                    self._pending.release()
        except Exception as exc:  # surfaced to the loop; the pipeline decides what a failed consumer means
            log.exception("consumer thread failed")
            self._loop.call_soon_threadsafe(self._listener.on_error, failed(str(exc)))
        finally:
            self._run_commands()  # a final commit the loop asked for before stopping
            try:
                self._consumer.close()  # runs on_revoke for what we still hold: drained and committed there
            except Exception:
                log.exception("closing the consumer failed")
            self._loop.call_soon_threadsafe(settle, self._done, None)

    def _look_around(self) -> None:
        """Every few seconds: the assigned partitions' high watermarks for the lag, and whether the cluster
        answers (:func:`streamcar.kafka.probes.look_around`)."""
        now = time.monotonic()
        self._next_look = now + LOOK_EVERY
        if self._watch is not None:
            self._watch.wanted = False  # one look for however many wanted it
        held = self._held_since is not None and now - self._held_since > LOOK_EVERY / 2
        fresh = self._paused or held
        stopped = self._finished | self._held  # held partitions fetch nothing: cached watermarks would freeze lag
        highs, self.kafka_error = look_around(self._consumer, self._topics[0], fresh, stopped, self._reach)
        if highs is not None:
            self.high_watermarks = highs
        if self.kafka_error is None and self._watch is not None:
            try:
                self._watch.check(self._consumer)
            except Exception:  # what the topics look like must never end consumption
                log.exception("checking the topics failed")

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        self._starts.learn(consumer, {t for t, _ in tps})
        log.info("%s: assigned %s", self._group, fmt(tps), extra=fields("assigned", self._group, tps))
        # Assign here rather than letting the client do it after we return, so partitions that arrive while
        # backpressure holds the others paused are paused before they fetch anything.
        committed = committed_points(consumer, partitions, self._group)
        self._rewinding.difference_update(tps)  # assigned afresh: they start from the committed offsets anyway
        consumer.incremental_assign(partitions)
        if partitions:
            # librdkafka keeps a partition's pause flag across revoke and re-assign: set it either way
            self._held.difference_update(tps)
            (consumer.pause if self._paused else consumer.resume)(partitions)
        on_loop(self._loop, self._listener.on_assigned(tps, committed), self._revoke_timeout)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        log.info("%s: revoking %s", self._group, fmt(tps), extra=fields("revoked", self._group, tps))
        # an exactly-once pipeline commits its transaction in there: this thread cannot serve group_metadata then
        self._metadata = consumer.consumer_group_metadata()
        try:
            offsets: dict[TP, CommitPoint] = on_loop(
                self._loop, self._listener.on_revoked(tps), self._revoke_timeout + 10
            )
        except TimeoutError:  # a condition, not a bug: one line (a stuck transaction call held the soak's revoke)
            log.warning(
                "%s: draining %s did not end within %gs; their uncommitted work will be redelivered",
                self._group,
                fmt(tps),
                self._revoke_timeout + 10,
                extra=fields("revoke-timeout", self._group, tps),
            )
            return
        except Exception:
            log.exception("draining revoked partitions failed; their uncommitted work will be redelivered")
            return
        finally:
            self._metadata = None
        try:
            self._commit_sync(commit_list(offsets))
        except KafkaException as exc:
            log.warning("commit on revoke failed (the work will be redelivered): %s", exc)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        log.warning(
            "%s: lost %s (another member owns them now; nothing is committed for them)",
            self._group,
            fmt(tps),
            extra=fields("lost", self._group, tps),
        )
        self._metadata = consumer.consumer_group_metadata()  # as in a revoke: a transaction may be committing
        try:
            on_loop(self._loop, self._listener.on_lost(tps), self._revoke_timeout)
        except Exception:
            log.exception("forgetting lost partitions failed; their work is their next owner's")
        finally:
            self._metadata = None

    def _error_cb(self, error: RdKafkaError) -> None:
        self._reach.note(error)
        explained = explain(error, self._identity)
        if explained is not None:
            # librdkafka fails every reconnect the same way: the listener hears it once, in words naming the
            # user or the CA file (the pipeline fails on it, as on any authentication or TLS error)
            if self._security_failed:
                return
            self._security_failed = True
            error = RdKafkaError(error.code(), explained)
        self._loop.call_soon_threadsafe(self._listener.on_error, said(error))
