"""A confluent-kafka ShareConsumer (queue mode, KIP-932) on its own thread, bridged to an asyncio loop.

A share group hands each of its members records from every partition, each acquired under a lock that ends
when the member acknowledges it: ACCEPT (done), RELEASE (deliver it again, counting one more delivery) or
REJECT (never again). The client, in explicit acknowledgement mode, refuses to fetch again while a record of its
last fetch is not acknowledged. So this thread fetches a batch, posts it to the loop, and then only applies the
acknowledgements the loop sends (:meth:`ShareBridge.acknowledge`) until every record of the batch has one; then
it commits them and fetches the next batch. A record the pipeline has not started within half its lock is
released by the pipeline (:mod:`streamcar.engine.queue`), so another member takes it rather than wait here.

There are no partitions to assign and no offsets to commit: a partition is announced to the pipeline the first
time a record of it arrives (``on_assigned``), and never revoked. Stopping releases every record still held, so
the other members get them at once instead of after their locks.

The client is not thread-safe: this thread is its only user. A second, plain consumer (no group) on the same
thread reads the high watermarks for the lag, probes the cluster and checks the topics.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any

from confluent_kafka import AcknowledgeType, Consumer, KafkaException, Message, ShareConsumer, TopicPartition
from confluent_kafka import KafkaError as RdKafkaError

from streamcar.kafka.bridging import end_thread, fields, fmt, handed, on_loop, settle
from streamcar.kafka.consumer import LOOK_EVERY
from streamcar.kafka.errors import failed, said
from streamcar.kafka.listener import ConsumerListener
from streamcar.kafka.probes import PROBE_TIMEOUT
from streamcar.kafka.rdlog import KafkaLog, Reachability
from streamcar.kafka.records import TP, CommitPoint
from streamcar.kafka.topics import TopicWatch
from streamcar.logs import Throttle, held_back

log = logging.getLogger("streamcar.kafka.share")

ACK_TYPES = {"accept": AcknowledgeType.ACCEPT, "release": AcknowledgeType.RELEASE, "reject": AcknowledgeType.REJECT}
CLOSE_TIMEOUT = 10.0
"""Seconds the last acknowledgements get to reach the broker when the bridge stops."""
Key = tuple[str, int, int]


class ShareBridge:
    """What :class:`~streamcar.engine.source.Consumer` asks of a consumer, for a share group, plus
    :meth:`acknowledge`. Pause and resume stop and restart fetching; the partition-level and offset-level
    commands of a consumer group have nothing to act on here."""

    def __init__(
        self,
        config: Mapping[str, Any],
        topics: list[str],
        listener: ConsumerListener,
        loop: asyncio.AbstractEventLoop,
        *,
        batch_size: int = 500,
        revoke_timeout: float = 60.0,
        assignment: Mapping[TP, int] | None = None,
        start_from: str = "earliest",
        watch: TopicWatch | None = None,
        poll_interval: float = 0.05,
    ) -> None:
        conf = dict(config)
        conf["error_cb"] = self._error_cb
        conf.setdefault("logger", KafkaLog())
        self._group = str(conf.get("group.id", ""))
        self._consumer = ShareConsumer(conf)
        self._consumer.set_acknowledgement_commit_callback(self._acked)
        looker = {k: v for k, v in conf.items() if k not in ("share.acknowledgement.mode", "logger", "error_cb")}
        looker.update({"group.id": f"streamcar-look-{uuid.uuid4().hex}", "enable.auto.commit": False})
        looker["logger"] = KafkaLog()
        self._looker = Consumer(looker)
        self._topics = topics
        self._listener = listener
        self._loop = loop
        self._timeout = revoke_timeout
        self._poll_interval = poll_interval
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._acks: queue.SimpleQueue[tuple[Key, AcknowledgeType]] = queue.SimpleQueue()
        self._held: set[Key] = set()  # the last fetch's records without an acknowledgement (the thread's)
        self._known: set[TP] = set()  # partitions announced to the pipeline
        self._paused = False
        self._throttle = Throttle()
        self._reach = Reachability()
        self._watch = watch
        self._next_look = 0.0
        self.acquired_at: float | None = None
        """When the records held now were fetched (time.monotonic()); None while none is held."""
        self.ack_failures = 0
        """Acknowledgements the broker refused: the record's lock had ended (it went to another member)."""
        self.high_watermarks: dict[TP, int] = {}
        self.kafka_error: str | None = None
        self._thread = threading.Thread(target=self._run, name=f"share-{','.join(topics)}", daemon=True)
        self._done: asyncio.Future[None] = loop.create_future()

    # -- called from the loop -------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def acknowledge(self, tp: TP, offset: int, how: str) -> None:
        """Tell the broker ``how`` the record at ``offset`` of ``tp`` ended: accept, release or reject."""
        self._acks.put(((tp[0], tp[1], offset), ACK_TYPES[how]))
        self._wake.set()

    def batch_done(self) -> None:
        self._wake.set()

    def pause_all(self) -> None:
        self._paused = True

    def resume_all(self) -> None:
        self._paused = False
        self._wake.set()

    @property
    def paused(self) -> bool:
        return self._paused

    def pause_partition(self, tp: TP) -> None:
        pass  # a share group has no ranges to end

    def hold_partition(self, tp: TP) -> None:
        pass  # nor done-ahead metadata to wait for

    def resume_partition(self, tp: TP) -> None:
        pass

    def reset_offset(self, tp: TP, *, read_before: bool) -> None:
        pass  # where the group starts is its share.auto.offset.reset (streamcar.kafka.share_group)

    async def commit(self, offsets: Mapping[TP, CommitPoint]) -> None:
        pass  # nothing to commit but acknowledgements, which the thread commits itself

    def rewind(self, tps: list[TP]) -> None:
        pass  # exactly-once is not available in queue mode (config._queue)

    async def group_metadata(self) -> object:
        raise NotImplementedError("a share group has no group metadata for transactions")

    async def stop(self) -> None:
        """Release what is held, commit the acknowledgements, leave the share group and end the thread."""
        await end_thread(self._stopping, self._wake, self._thread, self._done)

    # -- the thread -------------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._consumer.subscribe(self._topics)
            while not self._stopping.is_set():
                if self._take_acks():
                    self._commit()
                if time.monotonic() >= self._next_look:
                    self._look_around()
                if self._held or self._paused:
                    self._wake.wait(self._poll_interval)
                    self._wake.clear()
                    continue
                self._fetch()
        except Exception as exc:
            log.exception("share consumer thread failed")
            self._loop.call_soon_threadsafe(self._listener.on_error, failed(str(exc)))
        finally:
            self._close()
            self._loop.call_soon_threadsafe(settle, self._done, None)

    def _fetch(self) -> None:
        messages: list[Message] = list(self._consumer.poll(self._poll_interval))
        if not messages:
            return
        records = [m for m in messages if m.error() is None]
        self._held = {(m.topic() or "", m.partition() or 0, m.offset() or 0) for m in records}
        self.acquired_at = time.monotonic() if records else None
        new = sorted({(t, p) for t, p, _ in self._held} - self._known)
        if new:
            self._known.update(new)
            log.info("%s: receiving records of %s", self._group, fmt(new), extra=fields("assigned", self._group, new))
            on_loop(self._loop, self._listener.on_assigned(new, {}), self._timeout)
        self._loop.call_soon_threadsafe(self._listener.on_records, handed(messages, shared=True))

    def _take_acks(self) -> bool:
        """Apply the acknowledgements the loop sent; whether there were any (then commit them synchronously:
        asynchronous commits of one fetch's acknowledgements made out of offset order, overlapping, are refused
        by the broker as a whole, INVALID_REQUEST, with librdkafka 2.16's preview share consumer)."""
        taken = False
        while True:
            try:
                key, how = self._acks.get_nowait()
            except queue.Empty:
                break
            if key not in self._held:
                continue  # released already (its lock was running out, or the pipeline stopped)
            self._held.discard(key)
            self._consumer.acknowledge_offset(*key, how)
            taken = True
        if not self._held:
            self.acquired_at = None
        return taken

    def _commit(self) -> None:
        try:
            answers = self._consumer.commit_sync(CLOSE_TIMEOUT)
        except KafkaException as exc:  # the records come back after their locks: redone, not lost
            self._acked({}, exc)
            return
        for tp, error in (answers or {}).items():
            if error is not None:
                self._acked({tp: set()}, error)

    def _close(self) -> None:
        try:
            self._take_acks()
            for key in sorted(self._held):  # not done: the other members take them now rather than after the lock
                self._consumer.acknowledge_offset(*key, AcknowledgeType.RELEASE)
            if self._held:
                log.info("%s: released %d records not done", self._group, len(self._held))
            self._held.clear()
            self._consumer.commit_sync(CLOSE_TIMEOUT)
        except Exception as exc:
            log.warning("%s: the last acknowledgements did not reach the broker (%s)", self._group, exc)
        for client in (self._consumer, self._looker):
            try:
                client.close()
            except Exception:
                log.exception("closing a consumer failed")

    def _look_around(self) -> None:
        """Every few seconds: the high watermarks of the partitions records came from, for the lag, whether the
        cluster answers, and the pipeline's topics."""
        self._next_look = time.monotonic() + LOOK_EVERY
        try:
            highs = {}
            for tp in sorted(self._known):
                _, high = self._looker.get_watermark_offsets(TopicPartition(*tp), timeout=PROBE_TIMEOUT, cached=False)
                if high >= 0:
                    highs[tp] = high
            self._looker.list_topics(topic=self._topics[0], timeout=PROBE_TIMEOUT)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            self.kafka_error = self._reach.explain(error.str() if isinstance(error, RdKafkaError) else str(exc))
            return
        self.high_watermarks = highs
        self.kafka_error = self._reach.explain(None)
        if self._watch is not None:
            try:
                self._watch.check(self._looker)
            except Exception:  # what the topics look like must never end consumption
                log.exception("checking the topics failed")

    def _acked(self, offsets: Mapping[TopicPartition, set[int]], error: KafkaException | None) -> None:
        """The broker answered an acknowledgement commit (on this thread)."""
        if error is None:
            return
        count = sum(len(found) for found in offsets.values()) or 1
        self.ack_failures += count
        held = self._throttle.allow("ack-failed")
        if held is not None:
            log.warning(
                "%s: the broker refused %d acknowledgements (%s): their locks had ended, so those records go to"
                " another member%s",
                self._group,
                count,
                error,
                held_back(held, self._throttle.interval),
                extra={"event": "ack-failed", "group": self._group},
            )

    def _error_cb(self, error: RdKafkaError) -> None:
        self._reach.note(error)
        self._loop.call_soon_threadsafe(self._listener.on_error, said(error))
