"""A transactional producer for ``publish.exactly_once``: the records and the input offsets of one stretch of work
committed together, or neither.

It wraps an :class:`~streamcar.kafka.producer.AsyncProducer` (the same futures per record) with a
``transactional.id`` of its own per pipeline instance, and runs librdkafka's blocking transaction calls on a
worker thread. What the three kinds of librdkafka error mean here:

* **retriable** (a coordinator moving, a request timing out): the same call again, a few times;
* **abortable** (a record refused, the group's generation gone after a rebalance, KIP-447 fencing of a member
  that was thrown out): the transaction is aborted, nothing of it is visible to read_committed readers, and the
  caller redoes its work (:class:`Aborted`);
* **fatal** (another producer with the same ``transactional.id`` took over, the producer's epoch fenced): the
  producer is replaced by a new one under the same id, whose ``init_transactions`` aborts whatever was open, and
  the caller redoes its work (:class:`Aborted` too). Only a new producer that cannot even start fails the
  pipeline.

Another producer under the same id fences this one, whose replacement fences the other in turn: two live
producers sharing an id fence each other for good (two sidecars of one group on one host with one client id did:
stuck at 9,847 of 10,000 inputs for 50 s, 28,000 calls, and the log never said why). So the id names the process
too (:func:`transactional_id`), and :class:`Fences` turns being fenced :data:`CLASH_FENCES` times within
:data:`CLASH_WINDOW` into a named condition, :attr:`TransactionalProducer.clash`, on /readyz and /status.

A call that does not return within its timeout and :data:`STUCK_AFTER` more counts as fatal too. librdkafka
2.16 can block ``send_offsets_to_transaction`` for good once the group coordinator's node dies (the soak saw a
call hang past 6 minutes, confluentinc/librdkafka#5456), and every revoke then waited behind it. The thread in
that call cannot be stopped, so its producer is abandoned rather than closed (freeing it under a running call
would be a use after free): the new producer's ``init_transactions`` fences it, and it is closed once the call
returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from confluent_kafka import KafkaError as RdKafkaError
from confluent_kafka import KafkaException

from streamcar.config import PipelineConfig
from streamcar.errors import ConfigError
from streamcar.event import Headers
from streamcar.kafka.producer import Ack, AsyncProducer
from streamcar.kafka.records import TP, CommitPoint, commit_list
from streamcar.logs import Throttle, held_back

log = logging.getLogger("streamcar.kafka.transactions")
T = TypeVar("T")

TIMEOUT = 30.0
"""Seconds one transaction call (init, offsets, commit, abort) may take."""
STUCK_AFTER = 15.0
"""Seconds past :data:`TIMEOUT` after which a call that has not returned is taken for stuck."""
RETRIES = 5
CLASH_FENCES = 3
"""Fences within :data:`CLASH_WINDOW` that make a clash: a restarted predecessor fences a producer once."""
CLASH_WINDOW = 60.0
"""Seconds over which fences count, and for which a clash is named after the last one."""
BATCH_SIZE = 1_000_000
"""librdkafka's default ``batch.size``."""
BATCH_MARGIN = 128
"""Bytes a batch keeps below a topic's max.message.bytes (its header, and what the estimate misses)."""
FENCED = frozenset({RdKafkaError._FENCED, RdKafkaError.PRODUCER_FENCED, RdKafkaError.INVALID_PRODUCER_EPOCH})
"""librdkafka's codes for "another producer took this transactional id"."""


class Stuck(KafkaException):
    """A transaction call that did not return in time: fatal, the producer is replaced (see the module)."""

    def __init__(self, what: str, seconds: float) -> None:
        reason = f"{what} did not return within {seconds:g}s; the producer is abandoned"
        super().__init__(RdKafkaError(RdKafkaError._TIMED_OUT, reason, fatal=True))


def transactional_id(client_id: str, pipeline: str, config: PipelineConfig, pid: int | None = None) -> str:
    """One per pipeline instance: ``consume.instance_id`` where set, else the host name (the Pod's name in
    Kubernetes), the client id and the process id (``pid``, this process's by default), so two sidecars of one
    group on one host never share one. An instance id (or a container restarted in its Pod, whose process id is
    the same) keeps it across restarts: the restart's ``init_transactions`` then aborts what its crashed
    predecessor left open at once, rather than after ``transaction.timeout.ms``."""
    pid = os.getpid() if pid is None else pid
    instance = config.consume.instance_id or f"{socket.gethostname()}-{client_id}-{pid}"
    return f"streamcar-{config.consume.group_id}-{pipeline}-{instance}"


class Fences:
    """When this producer was fenced lately; a clash is :data:`CLASH_FENCES` fences within :data:`CLASH_WINDOW`,
    named until the window passes after the last one. ``clock``: seconds, monotonic."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._times: deque[float] = deque(maxlen=CLASH_FENCES)

    def fenced(self) -> bool:
        """Note a fence; whether a clash just began."""
        before = self.clashing()
        self._times.append(self._clock())
        return self.clashing() and not before

    def clashing(self) -> bool:
        times, now = self._times, self._clock()
        full = len(times) == CLASH_FENCES and times[-1] - times[0] <= CLASH_WINDOW
        return full and now - times[-1] <= CLASH_WINDOW


class Aborted(Exception):
    """The transaction could not be committed: abort it (:meth:`TransactionalProducer.abort`) and redo its work;
    nothing of it is visible."""

    def __init__(self, error: KafkaException) -> None:
        first = error.args[0] if error.args else None
        super().__init__(first.str() if isinstance(first, RdKafkaError) else str(error))
        self.error = error


ProducerFactory = Callable[[Mapping[str, Any], asyncio.AbstractEventLoop], AsyncProducer]


class TransactionalProducer:
    def __init__(
        self,
        config: Mapping[str, Any],
        loop: asyncio.AbstractEventLoop,
        transactional_id: str,
        make: ProducerFactory = AsyncProducer,
    ) -> None:
        self.transactional_id = transactional_id
        self._settings = {**config, "transactional.id": transactional_id}
        self._loop = loop
        self._make = make
        self._producer = make(self._settings, loop)
        self._stuck: asyncio.Future[Any] | None = None  # a call on self._producer that did not return
        self.abandoned: set[asyncio.Task[None]] = set()
        """Closings of abandoned producers, each waiting for its stuck call to return."""
        self._started = False
        self.committed = 0
        """Transactions committed."""
        self.aborted = 0
        """Transactions aborted (a fatal error's replaced producer counts as one)."""
        self.last_abort: str | None = None
        """Why the last transaction was aborted."""
        self._throttle = Throttle()
        self._fences = Fences()
        self._refit = False  # batch.size was lowered: the next abort replaces the producer

    def fit_batches(self, limit: int) -> None:
        """A topic this producer writes takes at most ``limit`` bytes a batch, fewer than the batches it builds:
        the broker refuses such a batch whole, and the transaction with it (at least once, each of its records
        goes again alone; a transaction cannot). The next abort replaces the producer with one whose batches fit."""
        size = max(limit - BATCH_MARGIN, 1)
        if size < int(self._settings.get("batch.size", BATCH_SIZE)):
            self._settings = {**self._settings, "batch.size": size}
            self._refit = True
            log.warning(
                "%s: a topic takes batches of at most %d bytes: batches of %d bytes from the next transaction on",
                self.transactional_id,
                limit,
                size,
                extra={"event": "batch-size-lowered", "transactional_id": self.transactional_id},
            )

    @property
    def clash(self) -> str | None:
        """Why this producer's id seems shared with another live producer (:class:`Fences`); None when not."""
        if not self._fences.clashing():
            return None
        return (
            f"transactional id {self.transactional_id!r} is used by another producer too: fenced "
            f"{CLASH_FENCES} times within {CLASH_WINDOW:g}s (two instances with one consume.instance_id, or "
            "another program?)"
        )

    async def start(self) -> None:
        """Fence this id's previous producer (its open transaction is aborted) and begin the first transaction."""
        try:
            await self._call(lambda: self._producer.client.init_transactions(TIMEOUT), "starting the transactions")
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if isinstance(error, RdKafkaError) and error.code() == RdKafkaError.INVALID_TRANSACTION_TIMEOUT:
                timeout = self._settings.get("transaction.timeout.ms")
                raise ConfigError(
                    f"kafka.librdkafka.transaction.timeout.ms: the brokers refuse a transaction timeout of {timeout} "
                    "ms (above their transaction.max.timeout.ms): set a lower one, or a shorter commit_interval"
                ) from None
            raise
        self._producer.client.begin_transaction()
        self._started = True

    # -- what the engine's outcomes use ----------------------------------------------------------------------
    def send(
        self, topic: str, value: bytes | None, key: bytes | None, headers: Headers = (), *, alone: bool = False
    ) -> Ack:
        """A record in the open transaction (``alone`` is ignored: a second producer would need an id of its
        own, and a record the broker refuses aborts the transaction anyway)."""
        return self._producer.send(topic, value, key, headers)

    def hurry(self, mine: int) -> None:
        self._producer.hurry(mine)

    # -- the transaction ----------------------------------------------------------------------------------------
    async def commit(self, points: Mapping[TP, CommitPoint], group_metadata: object | None) -> None:
        """Commit the open transaction with ``points`` as the group's offsets (none: records only), then begin the
        next. Raises :class:`Aborted` when it could not be committed: then :meth:`abort` it."""
        client = self._producer.client
        offsets = commit_list(points)
        try:
            if offsets and group_metadata is not None:
                await self._call(
                    lambda: client.send_offsets_to_transaction(offsets, group_metadata, TIMEOUT), "sending offsets"
                )
            await self._call(lambda: client.commit_transaction(TIMEOUT), "committing")
        except KafkaException as exc:
            raise Aborted(exc) from exc
        self.committed += 1
        client.begin_transaction()

    async def abort(self, why: str | Aborted) -> None:
        """Abort the open transaction (its records are never visible) and begin the next; a fatal error replaces
        the producer instead."""
        exc = why.error if isinstance(why, Aborted) else KafkaException(RdKafkaError(RdKafkaError._STATE, why))
        error = exc.args[0] if exc.args and isinstance(exc.args[0], RdKafkaError) else None
        text = error.str() if error is not None else str(exc)
        self.aborted += 1
        self.last_abort = text
        fatal = error is not None and error.fatal()
        if error is not None and error.code() in FENCED and self._fences.fenced():
            log.error(
                "%s: %s; each replacement fences the other in turn, and no work gets committed",
                self.transactional_id,
                self.clash,
                extra={"event": "transactional-id-clash", "transactional_id": self.transactional_id},
            )
        event = "transaction-fatal" if fatal else "transaction-aborted"
        held = self._throttle.allow(event)
        if held is not None:
            what = (
                "the transactional producer failed for good (%s); replacing it (whatever it had open is aborted)%s"
                if fatal
                else "transaction aborted (%s); its work is redone%s"
            )
            log.log(
                logging.ERROR if fatal else logging.WARNING,
                "%s: " + what,
                self.transactional_id,
                text,
                held_back(held, self._throttle.interval),
                extra={"event": event, "transactional_id": self.transactional_id},
            )
        if fatal or self._refit:
            self._refit = False
            await self._replace()
            return
        client = self._producer.client
        try:
            await self._call(lambda: client.abort_transaction(TIMEOUT), "aborting")
            client.begin_transaction()
        except KafkaException as again:
            log.error("%s: aborting failed (%s); replacing the producer", self.transactional_id, again)
            await self._replace()

    async def _replace(self) -> None:
        old, stuck = self._producer, self._stuck
        self._producer, self._stuck = self._make(self._settings, self._loop), None
        if stuck is None:
            await old.close(0)  # its records are the aborted transaction's: their futures fail
        else:
            closing = asyncio.create_task(_close_after(old, stuck), name=f"{self.transactional_id}-abandoned")
            self.abandoned.add(closing)
            closing.add_done_callback(self.abandoned.discard)
        await self.start()

    async def _call(self, call: Callable[[], T], what: str) -> T:
        """``call`` on a worker thread; a retriable error is tried again (a few times), others raise; a call that
        does not return in time raises :class:`Stuck` and leaves the producer to be replaced."""
        for attempt in range(RETRIES):
            running = _on_daemon_thread(call, f"{self.transactional_id}: {what}")
            try:
                return await asyncio.wait_for(asyncio.shield(running), TIMEOUT + STUCK_AFTER)
            except TimeoutError:
                self._stuck = running
                log.error(
                    "%s: %s did not return within %gs (librdkafka#5456); replacing the producer",
                    self.transactional_id,
                    what,
                    TIMEOUT + STUCK_AFTER,
                    extra={"event": "transaction-stuck", "transactional_id": self.transactional_id},
                )
                raise Stuck(what, TIMEOUT + STUCK_AFTER) from None
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                if not isinstance(error, RdKafkaError) or not error.retriable() or error.fatal():
                    raise
                if attempt == RETRIES - 1:
                    raise
                log.info("%s: %s: %s; trying again", self.transactional_id, what, error.str())
                await asyncio.sleep(0.1 * (attempt + 1))
        raise AssertionError("unreachable")

    def status(self) -> dict[str, object]:
        """For /status."""
        return {
            "transactional_id": self.transactional_id,
            "committed": self.committed,
            "aborted": self.aborted,
            "last_abort": self.last_abort,
            "clash": self.clash,
        }

    async def close(self, grace: float = 10.0) -> None:
        """Close the producer: an open transaction's records are never committed (its work is redone). A producer
        stuck in a call is left to the process's exit: freeing it under the call is not safe."""
        if self._stuck is None:
            await self._producer.close(grace)


def _on_daemon_thread(call: Callable[[], T], name: str) -> asyncio.Future[T]:
    """``call`` on a daemon thread of its own, its outcome in the future returned. Not the loop's executor: a
    call stuck in librdkafka would hold the process at its exit (the executor's threads are joined then), and the
    sidecar, stopped, would not end (the soak's members did not exit within 25 s of SIGTERM)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(outcome: T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(outcome)  # type: ignore[arg-type]

    def run() -> None:
        outcome: T | None = None
        error: BaseException | None = None
        try:
            outcome = call()
        except BaseException as exc:  # handed to the awaiting task, which raises it
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits for it any more
            loop.call_soon_threadsafe(settle, outcome, error)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future


async def _close_after(producer: AsyncProducer, stuck: asyncio.Future[Any]) -> None:
    """Close an abandoned producer once its stuck call has returned, whatever it returned."""
    with contextlib.suppress(Exception):
        await stuck
    await producer.close(0)
