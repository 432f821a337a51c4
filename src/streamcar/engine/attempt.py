"""One launch's life: the call, then acting on each reply until every message of it is done or waiting.

The pipeline decides *when* (in lane order, in rounds that cost one round trip to the broker each); the outcomes
(:mod:`streamcar.engine.outcomes`) decide *what* a reply means. A message is done through
:meth:`Completion.release <streamcar.engine.completion.Completion.release>`, called once its outcome is final: its
reply or dead letter acknowledged, or dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import replace

from streamcar.call import Caller
from streamcar.config import PipelineConfig
from streamcar.engine.circuit import Circuit
from streamcar.engine.completion import Completion
from streamcar.engine.dispatch import Dispatcher
from streamcar.engine.flow import Flow
from streamcar.engine.inflight import InFlight
from streamcar.engine.outcomes import Outcomes
from streamcar.engine.retry import Backoff
from streamcar.engine.scheduler import Lane
from streamcar.engine.tracing import Tracing
from streamcar.engine.transaction import Transaction
from streamcar.engine.work import PipelineStats, Work
from streamcar.event import Reply, Result
from streamcar.failures import Kind
from streamcar.kafka.producer import Ack
from streamcar.redact import Redactor

log = logging.getLogger("streamcar.pipeline")

ERROR_TEXT = 500
"""Characters of a call's error kept (after redaction) for dead letters, /status, spans and logs."""


class Attempts:
    def __init__(
        self,
        name: str,
        config: PipelineConfig,
        *,
        caller: Caller,
        outcomes: Outcomes,
        stats: PipelineStats,
        circuit: Circuit,
        inflight: InFlight,
        dispatcher: Dispatcher,
        flow: Flow,
        tracing: Tracing | None,
        redactor: Redactor,
        stopping: Callable[[], bool],
        completion: Completion,
        fail: Callable[[BaseException], None],
        transaction: Transaction | None = None,
    ) -> None:
        self._name = name
        self._caller = caller
        self._outcomes = outcomes
        self._stats = stats
        self._circuit = circuit
        self._inflight = inflight
        self._dispatcher = dispatcher
        self._flow = flow
        self._tracing = tracing
        self._redactor = redactor
        self._stopping = stopping
        self._completion = completion
        self._fail = fail
        self._transaction = transaction  # exactly-once: records go only while it is open
        self._backoff = Backoff(config.retry.initial_backoff, config.retry.max_backoff)
        self._max_backoff = config.retry.max_backoff

    async def process(self, works: list[Work], probe: bool = False) -> None:
        """Call the service for ``works`` (a batch, or a batch of one) and act on each reply; a ``probe`` is the
        one call a half-open circuit lets through. A message with a ``verdict`` (a record that cannot be called at
        all) is not sent: the verdict is its reply."""
        touched = list(works)  # grows by the held messages this task settles; all leave _running at the end
        fanned = 0
        try:
            share = self._completion.share
            if share is not None and not probe and share.stale() and all(w.verdict is None for w in works):
                # queue mode, the member was held up (frozen, starved of CPU): a call now would outlive the
                # records' lock, and the group has given them to another member already (a circuit's probe is
                # made all the same: the circuit waits for its answer)
                self._inflight.calling -= len(works)
                share.give_back(works, "their lock ran out before the call")
                return
            calls = works
            if self._inflight.verdicts and any(work.verdict is not None for work in works):
                calls = [work for work in works if work.verdict is None]
                self._inflight.calling -= len(works) - len(calls)
                for work in works:
                    if work.verdict is not None:
                        work.reply = work.verdict
            if calls:  # one call, inline: a coroutine of its own per call costs as much as the bookkeeping
                for work in calls:
                    work.attempts += 1
                tracing = self._tracing
                span, events = tracing.call(calls) if tracing is not None else (None, [work.event for work in calls])
                started = time.monotonic()
                try:
                    replies = await self._caller.call(events)
                    if len(replies) != len(calls):
                        raise RuntimeError(f"{len(replies)} replies for {len(calls)} events")
                except Exception as exc:  # a caller bug must not lose messages: retry them like a failed call
                    log.exception("%s: caller failed", self._name)
                    replies = [Reply.retry(error=f"{type(exc).__name__}: {exc}", kind=Kind.INTERNAL)] * len(calls)
                finally:
                    self._inflight.calling -= len(calls)
                if any(reply.error is not None for reply in replies):
                    replies = self._redacted(replies)
                if span is not None:
                    Tracing.called(span, replies)
                self._called(calls, replies, started, probe)
                fanned = sum(len(reply.fanout) for reply in replies if reply.fanout)
                self._inflight.fanned += fanned
            await self._settle(works, touched)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("%s: settling %s failed", self._name, works[0].event.idempotency_key)
            self._fail(exc)
        finally:
            self._inflight.fanned -= fanned
            running = self._inflight.running
            for work in touched:
                running.pop(work, None)
            self._inflight.changed.set()
            self._flow.pace()
            self._dispatcher.dispatch()

    def _redacted(self, replies: list[Reply]) -> list[Reply]:
        """``replies`` with their errors redacted and cut short. An error's text is the service's words, and a
        service may echo the request's credentials: redacted here, once, as the replies come in, every output
        downstream is clean (dead letters, /status, spans, logs)."""
        scrub = self._redactor.scrub
        return [
            r if r.error is None else replace(r, error=_clip(scrub(r.error)), refusal=r.refusal and scrub(r.refusal))
            for r in replies
        ]

    def _called(self, works: list[Work], replies: list[Reply], started: float, probe: bool) -> None:
        """A call for ``works``, begun at ``started`` (time.monotonic()), returned ``replies``: each message gets
        its reply, and the call counts for the stats and the circuit."""
        now = time.monotonic()
        failed = [r for r in replies if r.result is Result.RETRY and r.refusal is None]
        failure = failed[0].error_kind if failed and len(failed) == len(replies) else None
        refusal = replies[0].refusal
        if refusal is not None and any(r.refusal != refusal for r in replies):
            refusal = None  # refused in several ways, or not every message: not one setup error
        self._stats.observe_call(now - started, failure)
        pacing = self._dispatcher.pacing
        if pacing is not None:
            in_flight = self._inflight.calling + len(works)
            pacing.observe(now - started, replies, in_flight=in_flight, failed=failure is not None)
        if failure is not None:
            self._stats.last_call_error = failed[0].error or failure
            self._stats.last_call_failure = failure
        circuit = self._circuit
        fresh = all(not work.first_failed_at for work in works)  # distinct messages: a retry does not count again
        # silence since the messages first failed (or since this call began) is what tells an outage: retries
        # of messages others were answered after are those messages' trouble, not the service's (only a failure
        # asks the breaker about silence)
        since = started if failure is None else min(work.first_failed_at or started for work in works)
        counts = False
        if refusal is not None:
            # distinct messages make a storm: each counts once, and once more after it was held (were it poison
            # held by a false alarm, it is then dead-lettered rather than held again and again)
            counts = all(work.refusals < 2 for work in works)
            for work in works:
                work.refusals += 1
        circuit.record(
            failure, probe=probe, started=since, fresh=fresh, messages=len(works), refusal=refusal, counts=counts
        )
        kind = Kind.of(failure)
        # The service may be down: the attempt does not count against the message unless the service was shown
        # to be up. A call while the circuit is open (not a probe) never counts. A call the service got no answer
        # to at all (a timeout, a refused or dropped connection) counts only when other calls were answered since
        # the message first failed (or since this call began): else the circuit decides first. A failure the
        # service answered (a 503, a 500) counts: the message itself may be what fails (a poison message that is
        # the only traffic must still reach the dead-letter topic).
        outage = kind is not None and kind.outage and circuit.breaker.enabled
        closed = circuit.allows()
        for work, reply in zip(works, replies, strict=True):
            spared = False
            if outage:
                assert kind is not None
                shown_up = not kind.unanswered or not circuit.silent(work.first_failed_at or started, kind)
                spared = not ((closed or probe) and shown_up)
            if circuit.holds(reply.refusal):
                # a reject storm: the setup is wrong, not the message; it waits (no attempt spent) for the circuit,
                # and counts as tried (called again once the service answers, a refusal dead-letters it)
                reply = Reply.retry(error=reply.error, kind=reply.error_kind or Kind.HTTP_STATUS)
                spared = True
            if spared:
                work.attempts -= 1
            work.spared = spared
            if reply.result is Result.RETRY and not work.first_failed_at:
                work.first_failed_at = now
            work.reply = reply

    async def _settle(self, works: list[Work], touched: list[Work]) -> None:
        """Act on the replies of ``works`` (in offset order within each lane) until each is done or waiting.

        Three phases, so that a batch costs one round trip to the broker rather than one per message:
        1. in order, decide each message and hand its reply or dead letter to the producer. Records reach the
           producer in offset order per lane and the idempotent producer keeps that order, so a key's replies
           are published in order. A message that stays unresolved (retry, or no dead-letter topic) holds the
           later messages of its lane from the same batch: they are not sent again, and not completed before it.
           A message whose record went to the producer may give its lane up (:meth:`Completion.handed_over`):
           the lane's next message is called while the broker acknowledges, and its own outcome waits until
           this one is done (it is held behind it in its turn), so a refused record sent again still goes first.
        2. wait for the broker to acknowledge everything handed over.
        3. in order, complete what was acknowledged. Completing a message releases the messages it held, which
           are settled in the next round; a record the broker refused is acted on again (or dead-lettered).
        """
        inflight = self._inflight
        publishing = inflight.publishing
        transaction = self._transaction
        while works:
            if (
                transaction is not None
                and not transaction.is_open
                and all(w.settled is None for w in works if inflight.current(w))
            ):
                await transaction.opened()  # nothing here to finish: wait for the next transaction
            blockers: dict[Lane, Work] = {}
            sent: list[tuple[Work, str, Ack | None]] = []
            retry: list[Work] = []
            slow: list[Work] = []
            deferred: list[Work] = []  # decided while the transaction commits: the next one takes them
            behind_broker = 0  # messages held behind an earlier one's unacknowledged record
            handed: set[Lane] = set()  # lanes of this round's records: the producer keeps their order
            for work in works:
                if not inflight.current(work):
                    continue  # the partition was revoked meanwhile; its new owner redoes this message
                lane = work.lane
                if lane is not None:
                    blocker = blockers.get(lane)
                    if blocker is None and lane not in handed:
                        blocker = self._publishing_before(lane, work)
                        behind_broker += blocker is not None
                    if blocker is not None:
                        self._hold(blocker, work)
                        continue
                if transaction is not None and work.settled is None and not transaction.is_open:
                    deferred.append(work)
                    if lane is not None:
                        blockers[lane] = work
                    continue
                outcome = self._outcomes.act(work, retry, slow)
                if outcome is None:
                    if lane is not None:
                        blockers[lane] = work
                    continue
                sent.append((work, *outcome))
                future = outcome[1]
                if transaction is not None and future is not None:
                    transaction.sent(work)
                if lane is not None and future is not None and not future.done():
                    handed.add(lane)
                    if self._completion.handed_over(work):
                        latest = publishing.get(lane)
                        if latest is None or latest.event.offset < work.event.offset or not inflight.current(latest):
                            publishing[lane] = work  # the latest: the lane's next message waits for it
            if retry:
                attempts = max(w.attempts for w in retry)
                after = max((w.reply.retry_after or 0.0 for w in retry if w.reply is not None), default=0.0)
                self._schedule_retry(retry, self._backoff.delay(attempts, after or None))
            if slow:
                self._schedule_retry(slow, self._max_backoff)

            pending = [future for _, _, future in sent if future is not None and not future.done()]
            if behind_broker and not inflight.calling:
                # these wait for acknowledgements: if those records are all that awaits the broker, nothing
                # else will share their batch
                self._outcomes.hurry(behind_broker)
            if pending:
                # every message of this round is now publishing, waiting for a retry or held: the call slots of
                # the publishing ones are free, and the next calls need not wait for the broker's acks
                self._dispatcher.dispatch()
                if not inflight.calling:
                    # no call in progress: no reply will join these in the producer's linger, and the next
                    # message of their lanes may be waiting for them (one at a time per partition)
                    self._outcomes.hurry(len(pending))
                await _all_done(pending)

            blockers.clear()
            again: list[Work] = []
            released: list[Work] = []
            for work, result, future in sent:
                error = None if future is None else future.exception()  # retrieved, whoever still wants it
                if not inflight.current(work):
                    continue  # rewound or revoked meanwhile (an aborted transaction's records fail as purged)
                lane = work.lane
                blocker = blockers.get(lane) if lane is not None else None
                if error is None and blocker is not None:
                    work.settled = result  # done, but an earlier message of its lane is not: wait for it
                    self._hold(blocker, work)
                elif error is None:
                    self._outcomes.count(work, result)
                    self._completion.release(work, result)
                    if transaction is not None:
                        transaction.released(work)
                    if lane is not None and publishing.get(lane) is work:
                        del publishing[lane]
                    if work.held is not None:
                        released.extend(work.held)
                        work.held = None
                else:
                    if transaction is not None:
                        transaction.refused(work, error)  # aborted at the next commit, and redone
                    self._outcomes.refused(work, result, error)
                    again.append(work)
                    if lane is not None:
                        blockers[lane] = work
            if released:
                task = asyncio.current_task()
                assert task is not None
                for work in released:  # settled by this task now: revoke and shutdown wait for them like any call
                    inflight.held.discard(work)
                    inflight.running[work] = task
                    touched.append(work)
            if again:
                await asyncio.sleep(self._backoff.delay(max(w.refused for w in again)))
            works = deferred + again + released

    def _publishing_before(self, lane: Lane, work: Work) -> Work | None:
        """The message of ``work``'s lane, earlier than it, whose record is with the producer, if any."""
        earlier = self._inflight.publishing.get(lane)
        if earlier is not None and earlier.event.offset < work.event.offset and self._inflight.current(earlier):
            return earlier
        return None

    def _hold(self, blocker: Work, work: Work) -> None:
        blocker.hold(work)
        self._inflight.held.add(work)

    def _schedule_retry(self, works: list[Work], delay: float) -> None:
        """Call ``works`` again (together, as one batch where batching is on) after ``delay`` seconds."""
        if self._stopping():
            return
        self._stats.retries += len(works)
        if self._completion.share is not None:
            delay = min(delay, self._completion.share.max_hold)  # then released: the lock must not run out
        handle = asyncio.get_running_loop().call_later(delay, self._retry_now, works)
        for work in works:
            self._inflight.waiting[work] = handle

    def _retry_now(self, works: list[Work]) -> None:
        due = [w for w in works if self._inflight.waiting.pop(w, None) is not None and self._inflight.current(w)]
        if self._stopping():
            return
        share = self._completion.share
        if share is not None:
            # queue mode: the broker delivers it again (to any member, counting a delivery; no lane to free, the
            # order is none), unless the failure cost no attempt (the service looked down): then it waits here
            # for the circuit, as with a group
            share.give_back([w for w in due if not w.spared], "a retry")
            due = [w for w in due if w.spared]
        if self._circuit.room() is not None or self._dispatcher.pacing is not None:
            # open (called again once it closes, or the first as its probe), ramping or paced: the gate paces them
            self._inflight.parked.extend(due)
            self._dispatcher.dispatch()
            return
        self._dispatcher.launch_in_batches(due)


def _clip(text: str) -> str:
    return text if len(text) <= ERROR_TEXT else text[: ERROR_TEXT - 3] + "..."


def _all_done(futures: list[Ack]) -> asyncio.Future[None]:
    """A future done once every one of ``futures`` is (whatever their outcome): what ``asyncio.wait`` does, minus
    its sets, timeout and per-call wrapping, which showed in profiles of the per-message path."""
    waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    remaining = len(futures)

    def one_done(_: Ack) -> None:
        nonlocal remaining
        remaining -= 1
        if remaining == 0 and not waiter.done():
            waiter.set_result(None)

    for future in futures:
        future.add_done_callback(one_done)
    return waiter
