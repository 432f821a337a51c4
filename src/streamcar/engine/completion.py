"""Completion: the one call that says a message is done, and what follows from it.

A message is done once its outcome is final: its reply or its dead letter was acknowledged by the broker, or it
was dropped. The settling (:mod:`streamcar.engine.attempt`) says so by calling :meth:`Completion.release` exactly
once per message, the way a Benthos input hands each message a release function that acknowledges it. Nothing
else moves a message's offset towards the commit. Releasing a message:

1. ends its trace span and counts its result;
2. lets the checkpoint's watermark pass its offset (:meth:`Checkpoint.done`), or in queue mode acknowledges it
   to the share group (:meth:`ShareSource.acknowledge`: a retry's release too);
3. frees its lane: the next message of its key, or of its partition, may start (unless the lane was already
   given up by :meth:`Completion.handed_over`, when its record went to the producer and nothing else was ready);
4. tells a source that ends whether everything it gave is now done (:meth:`Source.check`).

Everything not released (queued behind its key, in a call, waiting for a retry, abandoned on a revoke) stays
below the watermark, uncommitted, and is redelivered after a crash.
"""

from __future__ import annotations

from collections.abc import Callable

from streamcar.engine.buffer import Buffer
from streamcar.engine.checkpoint import Checkpoint
from streamcar.engine.source import Source
from streamcar.engine.tracing import Tracing
from streamcar.engine.work import Outcome, PipelineStats, Work


class Completion:
    __slots__ = ("_buffer", "_checkpoint", "_done", "_source", "_stats")

    def __init__(
        self,
        checkpoint: Checkpoint,
        buffer: Buffer,
        stats: PipelineStats,
        source: Source,
        *,
        acknowledge: Callable[[Work, Outcome], None] | None = None,
    ) -> None:
        """``acknowledge``: queue mode, where a message done is acknowledged to the share group instead of
        letting the watermark pass (:meth:`ShareSource.acknowledge <streamcar.engine.queue.ShareSource.
        acknowledge>`)."""
        self._checkpoint = checkpoint
        self._buffer = buffer
        self._stats = stats
        self._source = source
        self._done = acknowledge or checkpoint.done

    def handed_over(self, work: Work) -> bool:
        """``work``'s reply or dead letter is with the producer. When no other message is ready to be called, the
        next message of its lane is the only work there is: its lane is freed now, so that message is called while
        the broker acknowledges this one (True). Not done yet: its offset stays uncommitted, and the next
        message's outcome waits for it (see ``InFlight.publishing``). Under load, other lanes' messages fill the
        calls meanwhile, and the lane is freed on release as usual (False)."""
        if self._buffer.ready_count:
            return False
        self._buffer.finish(work)
        return True

    def release(self, work: Work, result: Outcome) -> None:
        """``work`` is done, with ``result``: counted, its offset let pass (or acknowledged), its lane freed."""
        if work.span is not None:
            Tracing.done(work, result)
        self._stats.results[result] += 1
        self._done(work, result)
        self._buffer.finish(work)
        if self._source.bounded:
            self._source.check(self._checkpoint.tracker)
