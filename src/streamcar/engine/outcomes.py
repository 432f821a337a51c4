"""What a reply means for its message: the record to hand to the broker, or that the message stays unresolved.

The settle loop (:mod:`streamcar.engine.settle`) decides *when* (in lane order, batched round trips); this module
decides *what*, as a :data:`Decision`: a success publishes its value, a drop is done (both :class:`Handed`, the
one with the broker's acknowledgement to wait for), a retry waits (:data:`RETRY`, or is exhausted into a dead
letter), a dead letter is produced (:class:`Handed`), and without a dead-letter topic an undeliverable message
is kept and retried slowly, never dropped (:data:`UNDELIVERABLE`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from streamcar.config import PipelineConfig, format_duration
from streamcar.engine.records import MAX_CUTS, OutRecord, cut_down, dead_letter_record, reply_record, together
from streamcar.engine.refusals import Refusals
from streamcar.engine.tracing import Tracing
from streamcar.engine.transaction import Transactional, Unsent
from streamcar.engine.work import Outcome, PipelineStats, Work
from streamcar.event import MAX_FANOUT, Event, Reply, Result, too_many_records
from streamcar.failures import Kind
from streamcar.kafka.producer import Ack, AsyncProducer, ProduceError
from streamcar.logs import Throttle, held_back

log = logging.getLogger("streamcar.pipeline")
MAX_RECORD = 1_000_000
"""librdkafka's default message.max.bytes."""
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")


class Handed(NamedTuple):
    """The message is done with ``result`` once ``ack`` is (None: nothing to wait for, a drop or a success with
    nothing to publish); its record went to the producer. (A tuple: one is made per message.)"""

    result: Outcome
    ack: Ack | None


@dataclass(frozen=True, slots=True)
class Later:
    """The message stays unresolved: called again after its backoff (``slowly``: at the longest backoff, as it
    cannot be delivered at all, there being no dead-letter topic)."""

    slowly: bool = False


RETRY = Later()
UNDELIVERABLE = Later(slowly=True)
Decision = Handed | Later
"""What a reply means for its message, as :meth:`Outcomes.act` decides it."""


def _unsent(topic: str, problem: str) -> Ack:
    future: Ack = asyncio.get_running_loop().create_future()
    future.set_exception(Unsent.topic_refused(f"topic {topic!r} {problem}"))
    return future


class Outcomes:
    def __init__(
        self,
        name: str,
        config: PipelineConfig,
        producer: AsyncProducer | Transactional,
        stats: PipelineStats,
        tracing: Tracing | None = None,
        *,
        max_record: int = MAX_RECORD,
        routed: Callable[[str], None] | None = None,
        limit: Callable[[str], int | None] = lambda topic: None,
        want: Callable[[str], None] = lambda topic: None,
        missing: Callable[[str], str | None] = lambda topic: None,
    ) -> None:
        self._name = name
        self._publish_topic = config.publish.topic if config.publish is not None else None
        self._routed = routed
        """Told of each record routed elsewhere than the publish topic (the pipeline watches that topic)."""
        self._limit = limit
        """A topic's max.message.bytes, where known."""
        self._want = want
        """Asks for a topic's max.message.bytes now (a record was refused as too large, the limit not known)."""
        self._missing = missing
        """What is wrong with a topic written, where the topic watch found something (it does not exist...)."""
        self._exactly = isinstance(producer, Transactional)
        self._refusals = Refusals()
        self._max_record = max_record  # the producer's message.max.bytes: a larger record is never sent
        self._tracing = tracing
        self._config = config
        self._producer = producer
        self._stats = stats
        self._throttle = Throttle()

    def act(self, work: Work) -> Decision:
        """Start what ``work``'s reply calls for: the result and the broker's acknowledgement to wait for, or that
        the message stays unresolved. A success that cannot be published, and a retry out of attempts or time,
        become dead letters (``work.reply`` is the dead letter then)."""
        if work.settled is not None:
            return Handed(work.settled, None)
        reply = work.reply
        assert reply is not None
        result = reply.result
        if result is Result.SUCCESS:
            published = self._publish(work, reply)
            if isinstance(published, Handed):
                return published
            reply = work.reply = published
        elif result is Result.DROP:
            return Handed(Outcome.DROP, None)
        elif result is Result.RETRY:
            exhausted = self._exhausted(work, reply)
            if exhausted is None:
                return RETRY
            reply = work.reply = exhausted
        return self._dead_letter(work, reply)

    def _publish(self, work: Work, reply: Reply) -> Handed | Reply:
        """Hand a success's record (or fanned-out records) to the producer; or the dead letter it gets instead
        when it may not or cannot be published."""
        if reply.fanout is not None:
            fanned = self._fan_out(work, reply)
            return fanned if isinstance(fanned, Reply) else Handed(Outcome.SUCCESS, fanned)
        publish = self._config.publish
        if reply.value is None or (publish is None and reply.topic is None):
            return Handed(Outcome.SUCCESS, None)
        refused = self._unroutable(reply.topic)
        if refused is not None:
            return Reply.dead_letter(refused, kind=Kind.ROUTE)
        assert publish is not None
        topic = reply.topic or publish.topic
        record = reply_record(work.event, reply, forward=publish.headers == "forward")
        too_large = self._too_large(work, [(topic, record)])
        if too_large is not None:
            return Reply.dead_letter(too_large, kind=Kind.PUBLISH)
        return Handed(Outcome.SUCCESS, self._send(work, topic, record, dead_letter=False))

    def _exhausted(self, work: Work, reply: Reply) -> Reply | None:
        """A retry's dead letter when it held its key too long or used its attempts up; None: it is retried."""
        work.last_error = reply.error or "retry"
        work.last_kind = reply.error_kind or "retry"
        blocked = self._blocked_for(work)
        if blocked is not None:
            error = (
                f"held its key for {format_duration(blocked)} (retry.max_block), {work.attempts} attempts; "
                f"last error ({work.last_kind}): {work.last_error}"
            )
            return Reply.dead_letter(error, kind=Kind.BLOCKED)
        if work.attempts < self._config.retry.attempts:
            return None
        error = f"gave up after {work.attempts} attempts; last error ({work.last_kind}): {work.last_error}"
        return Reply.dead_letter(error, kind=Kind.EXHAUSTED)

    def _dead_letter(self, work: Work, reply: Reply) -> Decision:
        """Hand ``work``'s dead letter to the producer; without a dead-letter topic it is never dropped: the
        message holds its key and is retried slowly."""
        error = reply.error or "the service rejected the message"
        kind = reply.error_kind or Kind.REJECTED
        dlq = self._config.dead_letter
        if dlq is None:
            if not work.blocked:
                work.blocked = True
                log.error(
                    "%s: %s cannot be delivered and there is no dead_letter topic; its key waits (%s)",
                    self._name,
                    work.event.idempotency_key,
                    error,
                    extra=self._fields("undeliverable", work, kind),
                )
                self._stats.note_error(f"{work.event.idempotency_key}: {error}")
            return UNDELIVERABLE
        record = dead_letter_record(work.event, error=error, kind=kind, attempts=work.attempts)
        if work.cuts:
            record = cut_down(record, work.cuts)
        return Handed(Outcome.DEAD_LETTER, self._send(work, dlq.topic, record, dead_letter=True))

    def _fan_out(self, work: Work, reply: Reply) -> Ack | Reply | None:
        """Hand a fanned-out reply's records to the producer: the acknowledgement of them all (None: no record), or
        the dead letter the input gets instead, before any is sent, when one may not or cannot be published.

        Records already acknowledged (the others were refused and are sent again) are not sent twice."""
        outs = self._fanned_records(work, reply)
        if isinstance(outs, Reply):
            return outs
        too_large = self._too_large(work, outs)
        if too_large is not None:
            return Reply.dead_letter(too_large, kind=Kind.PUBLISH)
        if work.acked is None:
            work.acked = set()
        acks = [
            (i, self._send(work, topic, record, dead_letter=False))
            for i, (topic, record) in enumerate(outs)
            if i not in work.acked
        ]
        return together(acks, work.acked) if acks else None

    def _fanned_records(self, work: Work, reply: Reply) -> list[tuple[str, OutRecord]] | Reply:
        """The records of a fan-out reply, each with its topic; or the dead letter the input gets when there are
        too many, or one may not go where it names or is larger than the producer sends."""
        fanout = reply.fanout
        assert fanout is not None
        if len(fanout) > MAX_FANOUT:
            return Reply.dead_letter(too_many_records(len(fanout)), kind=Kind.PUBLISH)
        publish = self._config.publish
        if publish is None:
            return Reply.dead_letter(f"record 1 of {len(fanout)}: there is no publish topic", kind=Kind.ROUTE)
        forward = publish.headers == "forward"
        outs: list[tuple[str, OutRecord]] = []
        for index, item in enumerate(fanout):
            refused = self._unroutable(item.topic)
            if refused is not None:
                return Reply.dead_letter(f"record {index + 1} of {len(fanout)}: {refused}", kind=Kind.ROUTE)
            one = Reply.success(item.value, key=item.key, headers=item.headers, content_type=item.content_type)
            record = reply_record(work.event, one, forward=forward)
            size = (
                len(record.key or b"")
                + len(record.value or b"")
                + sum(len(k) + len(v or b"") for k, v in record.headers)
            )
            if size > self._max_record:
                error = (
                    f"record {index + 1} of {len(fanout)} is {size:,} bytes, over message.max.bytes "
                    f"({self._max_record:,}); none was published"
                )
                return Reply.dead_letter(error, kind=Kind.PUBLISH)
            outs.append((item.topic or publish.topic, record))
        return outs

    def _too_large(self, work: Work, outs: list[tuple[str, OutRecord]]) -> str | None:
        """Why ``work``'s reply records (topic, record), refused as too large before (exactly once), are
        dead-lettered now; None: they are sent (:mod:`streamcar.engine.refusals`)."""
        if not self._refusals:
            return None
        limited = [(record, topic, self._limit(topic)) for topic, record in outs]
        return self._refusals.verdict(work.event.idempotency_key, limited)

    def _unroutable(self, topic: str | None) -> str | None:
        """Why a reply may not go to the ``topic`` it named (None: it may, or it named none)."""
        if topic is None:
            return None
        publish = self._config.publish
        if not _TOPIC.fullmatch(topic) or topic in (".", ".."):
            return f"the reply names topic {topic!r}, which is not a valid topic name"
        if publish is None or not publish.allows(topic):
            listed = [] if publish is None else [publish.topic, *(publish.allow or ())]
            allowed = ", ".join(listed) or "nothing: there is no publish topic"
            return f"the reply names topic {topic!r}, which publish.allow does not list (it allows {allowed})"
        return None

    def destination(self, work: Work, result: Outcome) -> str:
        """The topic ``work``'s record went to (a fan-out's: the first that was not acknowledged)."""
        if result is Outcome.SUCCESS:
            reply, publish = work.reply, self._config.publish
            if reply is not None and reply.fanout:
                pending = [r for i, r in enumerate(reply.fanout) if i not in (work.acked or ())] or list(reply.fanout)
                return pending[0].topic or (publish.topic if publish is not None else "?")
            if reply is not None and reply.topic is not None:
                return reply.topic
            return publish.topic if publish is not None else "?"
        return self._config.dead_letter.topic if self._config.dead_letter is not None else "?"

    def _count_published(self, work: Work) -> None:
        reply, publish = work.reply, self._config.publish
        if reply is None or publish is None:
            return
        if reply.fanout:
            self._stats.published += len(reply.fanout)
            routed = Counter(r.topic or publish.topic for r in reply.fanout)
            self._stats.published_to.update(routed)
            for topic in routed:
                self._stats.note_published(topic)
        elif reply.value is not None:
            self._stats.published += 1
            topic = self.destination(work, Outcome.SUCCESS)
            self._stats.published_to[topic] += 1
            self._stats.note_published(topic)

    def _blocked_for(self, work: Work) -> float | None:
        """How long ``work`` has held its key, when that is longer than ``retry.max_block`` and its last failure
        counted (a failure spared because the service was down never ends it); else None."""
        limit = self._config.retry.max_block
        if limit is None or work.spared or not work.first_failed_at:
            return None
        held = time.monotonic() - work.first_failed_at
        return held if held >= limit else None

    def hurry(self, sent: int) -> None:
        """The ``sent`` records go to the broker now, not after the producer's linger, if nothing else awaits it
        (see AsyncProducer.hurry)."""
        self._producer.hurry(sent)

    def _send(self, work: Work, topic: str, record: OutRecord, *, dead_letter: bool) -> Ack:
        if topic != self._publish_topic and not dead_letter and self._routed is not None:
            self._routed(topic)
        if self._exactly and (problem := self._missing(topic)) is not None:
            return _unsent(topic, problem)
        tracing = self._tracing
        if tracing is None:
            ack = self._producer.send(topic, record.value, record.key, record.headers, alone=work.alone)
        else:
            span, headers = tracing.publish(work, topic, record.headers, dead_letter=dead_letter)
            ack = self._producer.send(topic, record.value, record.key, headers, alone=work.alone)
            ack.add_done_callback(functools.partial(Tracing.published, span))
        if self._exactly:
            ack.add_done_callback(functools.partial(self._remember, work.event, topic, not dead_letter))
        return ack

    def refused(self, work: Work, result: Outcome, error: BaseException) -> None:
        """The broker did not take ``work``'s reply or dead letter: decide what acting on it again means."""
        transient = isinstance(error, ProduceError) and not error.permanent
        topic = self.destination(work, result)
        self._stats.note_publish_error(topic, str(error), of_topic=isinstance(error, ProduceError) and error.of_topic)
        work.refused += 1
        held = self._throttle.allow((topic, str(error)))
        if held is not None:
            more = held_back(held, self._throttle.interval)
            log.warning("%s: producing to %s failed (%s)%s", self._name, topic, error, more)
        if transient:
            return  # librdkafka gave up after message.timeout.ms: hand the same record over again
        if isinstance(error, ProduceError) and error.too_large and not work.alone:
            # the broker refuses a whole batch when one record is too large for the topic: send each again alone,
            # and only the one that is really too large fails again
            work.alone = True
            return
        if result is Outcome.SUCCESS:
            work.reply = Reply.dead_letter(f"publishing the reply failed: {error}", kind=Kind.PUBLISH)
        elif isinstance(error, ProduceError) and error.too_large and work.cuts < MAX_CUTS:
            work.cuts += 1  # too large alone: the same dead letter again, cut down to fit (never retried forever)
        else:
            # the dead-letter topic refuses it for good: keep the message, retry it slowly
            work.reply = Reply.retry(error=f"the dead-letter topic refused it: {error}", kind=Kind.DEAD_LETTER)
            work.attempts = min(work.attempts, self._config.retry.attempts - 1)

    def _remember(self, event: Event, topic: str, reply: bool, ack: Ack) -> None:
        """Exactly once, when ``ack`` (a record of ``event`` for ``topic``; ``reply``: not a dead letter) fails:
        if its batch was refused as too large for the topic, the transaction is aborted and the work forgotten,
        so its redo asks :mod:`streamcar.engine.refusals` first, and batches larger than the topic takes are
        built no more. At once, as the acknowledgement fails: the redo can come before the settle loop looks."""
        error = None if ack.cancelled() else ack.exception()
        if not (isinstance(error, ProduceError) and error.too_large):
            return
        if reply:
            self._refusals.refused(event.idempotency_key)
        limit = self._limit(topic)
        if limit is None:
            self._want(topic)  # known before the redo, so that it is not refused again and again
        elif isinstance(self._producer, Transactional):
            self._producer.fit_batches(limit)

    def _fields(self, event: str, work: Work, kind: str | None) -> dict[str, object]:
        """The structured fields of a log line about ``work`` (keys in JSON logs)."""
        e = work.event
        return {
            "event": event,
            "pipeline": self._name,
            "topic": e.topic,
            "partition": e.partition,
            "offset": e.offset,
            "kind": kind,
            "attempts": work.attempts,
        }

    def count(self, work: Work, result: Outcome) -> None:
        """``work`` is done with ``result``: what it published counts for /status and /metrics."""
        if result is Outcome.SUCCESS:
            self._count_published(work)
        elif result is Outcome.DEAD_LETTER:
            if self._config.dead_letter is not None:
                self._stats.note_published(self._config.dead_letter.topic)
            reply = work.reply
            kind, error = (reply.error_kind, reply.error) if reply is not None else ("", "")
            self._stats.note_dead_letter(work.event, kind or Kind.REJECTED, error or "")
            self._stats.note_error(f"{work.event.idempotency_key}: {kind}: {error}")
            log.warning(
                "%s: dead-lettered %s (%s): %s",
                self._name,
                work.event.idempotency_key,
                kind,
                error,
                extra=self._fields("dead-letter", work, kind),
            )
