"""OpenTelemetry spans for each message: ``process`` (consumed -> done), one ``call`` per attempt, ``publish``.

Off by default (``tracing.enabled``); when off the pipeline holds no :class:`Tracing` and pays one ``is None``
test per step. When on::

    <record's traceparent>                       (the producer's span, if the record carries one)
      └─ "{topic} process"      CONSUMER         consumed -> done (published, dropped or dead-lettered)
           ├─ "{topic} call"    CLIENT           each attempt; the service gets *this* span as its traceparent
           └─ "{topic} publish" PRODUCER         reply or dead letter handed over -> acknowledged; the published
                                                 record carries *this* span as its traceparent

A batch call is one ``call`` span, child of its first message's ``process`` span and linked to the others.
Attribute names follow OpenTelemetry's messaging conventions (``messaging.*``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from streamcar.engine.work import Outcome
from streamcar.event import Event, Headers, Reply, Result

if TYPE_CHECKING:
    from streamcar.engine.work import Work

_PROPAGATOR = TraceContextTextMapPropagator()
_TRACE_HEADERS = ("traceparent", "tracestate")


def _extract(headers: Headers) -> Context:
    carrier = {k: v.decode("latin-1") for k, v in headers if k in _TRACE_HEADERS and v is not None}
    return _PROPAGATOR.extract(carrier)


def _inject(span: Span, headers: Headers) -> Headers:
    """``headers`` with their trace context replaced by ``span``'s."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, trace.set_span_in_context(span))
    kept = [(k, v) for k, v in headers if k not in _TRACE_HEADERS]
    return (*kept, *((k, v.encode("latin-1")) for k, v in carrier.items()))


class Tracing:
    def __init__(self, tracer: Tracer, *, pipeline: str, group: str, target: str) -> None:
        self._tracer = tracer
        self._common: dict[str, Any] = {
            "messaging.system": "kafka",
            "messaging.consumer.group.name": group,
            "streamcar.pipeline": pipeline,
        }
        self._target = target

    def consumed(self, work: Work) -> None:
        event = work.event
        attributes = {
            **self._common,
            "messaging.operation.type": "process",
            "messaging.destination.name": event.topic,
            "messaging.destination.partition.id": str(event.partition),
            "messaging.kafka.offset": event.offset,
        }
        if event.key is not None:
            attributes["messaging.kafka.message.key"] = event.key.decode("utf-8", "replace")
        work.span = self._tracer.start_span(
            f"{event.topic} process", context=_extract(event.headers), kind=SpanKind.CONSUMER, attributes=attributes
        )

    def call(self, works: Sequence[Work]) -> tuple[Span, list[Event]]:
        """Start the call span for ``works``; the events to send carry its trace context."""
        first = works[0]
        parent = trace.set_span_in_context(first.span) if first.span is not None else None
        links = [Link(w.span.get_span_context()) for w in works[1:] if w.span is not None]
        span = self._tracer.start_span(
            f"{first.event.topic} call",
            context=parent,
            kind=SpanKind.CLIENT,
            links=links,
            attributes={
                **self._common,
                "streamcar.call.target": self._target,
                "streamcar.call.messages": len(works),
                "streamcar.call.attempt": first.attempts,
            },
        )
        return span, [replace(w.event, headers=_inject(span, w.event.headers)) for w in works]

    @staticmethod
    def called(span: Span, replies: Sequence[Reply]) -> None:
        results: dict[str, int] = {}
        for reply in replies:
            results[reply.result.value] = results.get(reply.result.value, 0) + 1
        span.set_attribute("streamcar.call.results", [f"{name}={n}" for name, n in sorted(results.items())])
        failed = [r for r in replies if r.result in (Result.RETRY, Result.DEAD_LETTER)]
        if failed and len(failed) == len(replies):
            span.set_status(Status(StatusCode.ERROR, f"{failed[0].error_kind}: {failed[0].error}"))
        span.end()

    def publish(self, work: Work, topic: str, headers: Headers, *, dead_letter: bool) -> tuple[Span, Headers]:
        """Start the publish span of ``work``'s reply or dead letter; the record's headers carry its context,
        unless the service's reply set a ``traceparent`` of its own."""
        parent = trace.set_span_in_context(work.span) if work.span is not None else None
        span = self._tracer.start_span(
            f"{topic} publish",
            context=parent,
            kind=SpanKind.PRODUCER,
            attributes={
                **self._common,
                "messaging.operation.type": "send",
                "messaging.destination.name": topic,
                "streamcar.dead_letter": dead_letter,
            },
        )
        reply = work.reply
        if not dead_letter and reply is not None and any(k == "traceparent" for k, _ in reply.headers):
            return span, headers
        return span, _inject(span, headers)

    @staticmethod
    def published(span: Span, ack: asyncio.Future[Any]) -> None:
        """``ack`` (the broker's acknowledgement of the record) completed."""
        error = "cancelled" if ack.cancelled() else ack.exception()
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, str(error)))
        span.end()

    @staticmethod
    def done(work: Work, result: Outcome) -> None:
        span = work.span
        if span is None:
            return
        span.set_attribute("streamcar.result", str(result))
        span.set_attribute("streamcar.attempts", work.attempts)
        if result is Outcome.DEAD_LETTER:
            reply = work.reply
            span.set_status(Status(StatusCode.ERROR, (reply.error if reply is not None else None) or "dead-lettered"))
        span.end()
        work.span = None
