"""One launch's life: the call, then acting on each reply until every message of it is done or waiting.

The settle loop (:mod:`streamcar.engine.settle`) decides *when* (in lane order, in rounds that cost one round trip
to the broker each); the outcomes (:mod:`streamcar.engine.outcomes`) decide *what* a reply means. A message is done
through :meth:`Completion.release <streamcar.engine.completion.Completion.release>`, called once its outcome is
final: its reply or dead letter acknowledged, or dropped. A retry waits on a timer here, then is launched again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

from opentelemetry.trace import Span

from streamcar.call import Caller
from streamcar.config import PipelineConfig
from streamcar.engine.circuit import Circuit
from streamcar.engine.completion import Completion
from streamcar.engine.flow import Flow
from streamcar.engine.inflight import InFlight
from streamcar.engine.outcomes import Outcomes
from streamcar.engine.pace import Pacing
from streamcar.engine.retry import Backoff
from streamcar.engine.settle import Settle
from streamcar.engine.tracing import Tracing
from streamcar.engine.transaction import AT_LEAST_ONCE, Publishing
from streamcar.engine.work import PipelineStats, Work
from streamcar.event import Reply, Result
from streamcar.failures import Kind
from streamcar.redact import Redactor

log = logging.getLogger("streamcar.pipeline")

ERROR_TEXT = 500
"""Characters of a call's error kept (after redaction) for dead letters, /status, spans and logs."""


class Lease(Protocol):
    """How long a member keeps the records it was given: for good in a consumer group (:data:`KEPT`), under a
    lock in a share group (:class:`~streamcar.engine.queue.ShareSource`). Chosen when the pipeline is wired."""

    def lapsed(self, works: list[Work], probe: bool) -> bool:
        """Whether a call for ``works`` now would outlive their lock (the member was held up): they go back."""
        ...

    def give_back(self, works: list[Work], why: str) -> int:
        """Give ``works`` back to the group, uncalled."""
        ...

    def retry_in(self, delay: float) -> float:
        """How long a retry may wait here before it is called again (or goes back)."""
        ...

    def retry_due(self, due: list[Work]) -> list[Work]:
        """Retries whose wait ran out: those to call here (the others go back to the group)."""
        ...


class _Kept:
    """A consumer group's records are the member's until it commits past them or loses their partition."""

    def lapsed(self, works: list[Work], probe: bool) -> bool:
        return False

    def give_back(self, works: list[Work], why: str) -> int:
        raise AssertionError("a consumer group's records are never given back")

    def retry_in(self, delay: float) -> float:
        return delay

    def retry_due(self, due: list[Work]) -> list[Work]:
        return due


KEPT: Lease = _Kept()


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
        wake: Callable[[], None],
        launch: Callable[[list[Work]], None],
        pacing: Pacing | None,
        flow: Flow,
        tracing: Tracing | None,
        redactor: Redactor,
        stopping: Callable[[], bool],
        completion: Completion,
        fail: Callable[[BaseException], None],
        publishing: Publishing = AT_LEAST_ONCE,
        lease: Lease = KEPT,
    ) -> None:
        self._name = name
        self._caller = caller
        self._outcomes = outcomes
        self._stats = stats
        self._circuit = circuit
        self._inflight = inflight
        self._wake = wake
        """Starts what free call slots allow (the dispatcher)."""
        self._launch = launch
        """Calls messages again, batch by batch (the dispatcher)."""
        self._pacing = pacing
        self._flow = flow
        self._tracing = tracing
        self._redactor = redactor
        self._stopping = stopping
        self._completion = completion
        self._fail = fail
        self._lease = lease
        self._backoff = Backoff(config.retry.initial_backoff, config.retry.max_backoff)
        self._settle = Settle(
            inflight=inflight,
            outcomes=outcomes,
            completion=completion,
            publishing=publishing,
            later=self._schedule_retry,
            wake=wake,
            backoff=self._backoff,
            max_backoff=config.retry.max_backoff,
        )

    async def process(self, works: list[Work], probe: bool = False) -> None:
        """Call the service for ``works`` (a batch, or a batch of one) and act on each reply; a ``probe`` is the
        one call a half-open circuit lets through. A message with a ``verdict`` (a record that cannot be called at
        all) is not sent: the verdict is its reply."""
        touched = list(works)  # grows by the held messages this task settles; all leave _running at the end
        fanned = 0
        try:
            if self._lease.lapsed(works, probe):
                # the member was held up (frozen, starved of CPU) and a call now would outlive the records' lock:
                # the group has given them to another member already, so they go back uncalled
                self._inflight.returned(len(works))
                self._lease.give_back(works, "their lock ran out before the call")
                return
            calls = self._callable(works) if self._inflight.verdicts else works
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
                    self._inflight.returned(len(calls))
                fanned = self._called(calls, replies, span, started, probe)
            await self._settle.settle(works, touched)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("%s: settling %s failed", self._name, works[0].event.idempotency_key)
            self._fail(exc)
        finally:
            if fanned:
                self._inflight.fan(-fanned)
            self._inflight.ended(touched, asyncio.current_task())
            self._flow.pace()
            self._wake()

    def _callable(self, works: list[Work]) -> list[Work]:
        """The messages of ``works`` to call: not those with a verdict, whose verdict is their reply."""
        if all(work.verdict is None for work in works):
            return works
        calls = [work for work in works if work.verdict is None]
        self._inflight.returned(len(works) - len(calls))
        for work in works:
            if work.verdict is not None:
                work.reply = work.verdict
        return calls

    def _redacted(self, replies: list[Reply]) -> list[Reply]:
        """``replies`` with their errors redacted and cut short. An error's text is the service's words, and a
        service may echo the request's credentials: redacted here, once, as the replies come in, every output
        downstream is clean (dead letters, /status, spans, logs)."""
        scrub = self._redactor.scrub
        return [
            r if r.error is None else replace(r, error=_clip(scrub(r.error)), refusal=r.refusal and scrub(r.refusal))
            for r in replies
        ]

    def _called(self, works: list[Work], replies: list[Reply], span: Span | None, started: float, probe: bool) -> int:
        """A call for ``works``, begun at ``started`` (time.monotonic()), returned ``replies``: the call counts for
        the stats, pacing and the circuit, and each message gets its reply. Returns the records of fan-out
        replies: they count against ``max_in_flight`` until the task ends."""
        if any(reply.error is not None for reply in replies):
            replies = self._redacted(replies)
        if span is not None:
            Tracing.called(span, replies)
        now = time.monotonic()
        failed = [r for r in replies if r.result is Result.RETRY and r.refusal is None]
        failure = failed[0].error_kind if failed and len(failed) == len(replies) else None
        self._observe(works, replies, now - started, failure, failed[0].error if failed else None)
        self._tell_circuit(works, replies, failure, started, probe)
        self._assign(works, replies, Kind.of(failure), started, now, probe)
        fanned = sum(len(reply.fanout) for reply in replies if reply.fanout)
        if fanned:
            self._inflight.fan(fanned)
        return fanned

    def _observe(
        self, works: list[Work], replies: list[Reply], took: float, failure: str | None, error: str | None
    ) -> None:
        """The call, for the stats and pacing."""
        self._stats.observe_call(took, failure)
        pacing = self._pacing
        if pacing is not None:
            in_flight = self._inflight.calling + len(works)
            pacing.observe(took, replies, in_flight=in_flight, failed=failure is not None)
        if failure is not None:
            self._stats.last_call_error = error or failure
            self._stats.last_call_failure = failure

    def _tell_circuit(
        self, works: list[Work], replies: list[Reply], failure: str | None, started: float, probe: bool
    ) -> None:
        """The call, for the circuit breaker: a failure of every message, or a refusal storm."""
        refusal = replies[0].refusal
        if refusal is not None and any(r.refusal != refusal for r in replies):
            refusal = None  # refused in several ways, or not every message: not one setup error
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
        self._circuit.record(
            failure, probe=probe, started=since, fresh=fresh, messages=len(works), refusal=refusal, counts=counts
        )

    def _assign(
        self, works: list[Work], replies: list[Reply], kind: Kind | None, started: float, now: float, probe: bool
    ) -> None:
        """Each message gets its reply; whether the attempt counts against it.

        The service may be down: the attempt does not count against the message unless the service was shown to
        be up. A call while the circuit is open (not a probe) never counts. A call the service got no answer to at
        all (a timeout, a refused or dropped connection) counts only when other calls were answered since the
        message first failed (or since this call began): else the circuit decides first. A failure the service
        answered (a 503, a 500) counts: the message itself may be what fails (a poison message that is the only
        traffic must still reach the dead-letter topic)."""
        circuit = self._circuit
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

    def _schedule_retry(self, works: list[Work], delay: float) -> None:
        """Call ``works`` again (together, as one batch where batching is on) after ``delay`` seconds."""
        if self._stopping():
            return
        self._stats.retries += len(works)
        delay = self._lease.retry_in(delay)
        self._inflight.wait(works, asyncio.get_running_loop().call_later(delay, self._retry_now, works))

    def _retry_now(self, works: list[Work]) -> None:
        due = self._inflight.due(works)
        if self._stopping():
            return
        due = self._lease.retry_due(due)
        if self._circuit.room() is not None or self._pacing is not None:
            # open (called again once it closes, or the first as its probe), ramping or paced: the gate paces them
            self._inflight.park(due)
            self._wake()
            return
        self._launch(due)


def _clip(text: str) -> str:
    return text if len(text) <= ERROR_TEXT else text[: ERROR_TEXT - 3] + "..."
