"""What the admin server may see of a pipeline: a small read-only view, not the engine's internals.

``/metrics``, ``/readyz``, ``/status`` and the page read pipelines through :class:`PipelineView` only; a
:class:`~streamcar.engine.pipeline.Pipeline` is one, and so is anything else that answers these few questions
(a test's stand-in, say).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from streamcar.config import PipelineConfig
from streamcar.engine.breaker import CircuitBreaker
from streamcar.engine.tracker import OffsetTracker
from streamcar.engine.work import PipelineStats
from streamcar.kafka.records import TP


class PipelineView(Protocol):
    name: str
    stats: PipelineStats

    @property
    def in_flight(self) -> int: ...

    @property
    def circuit_open(self) -> str | None:
        """Why the circuit is open (or half-open, probing); None while it is closed."""
        ...

    @property
    def circuit_opened(self) -> int: ...

    @property
    def kafka_error(self) -> str | None:
        """Why the cluster did not answer the consumer's last probe; None when it did."""
        ...

    @property
    def topic_problems(self) -> list[str]:
        """The pipeline's topics that are missing or not usable, a line each; empty when all are fine."""
        ...

    @property
    def producer_problem(self) -> str | None:
        """Why the producer cannot get its work committed (exactly once: another producer shares its
        transactional id); None when it can."""
        ...

    def lag(self) -> dict[TP, int | None]: ...

    def next_offsets(self) -> dict[TP, int | None]:
        """Per assigned partition: the next offset to commit (None: nothing read since it was assigned)."""
        ...

    def status(self) -> dict[str, object]: ...


def lags(assigned: set[TP], tracker: OffsetTracker, highs: Mapping[TP, int]) -> dict[TP, int | None]:
    """Per assigned partition: records from the next offset to commit to the high watermark (None: unknown,
    i.e. nothing read since the partition was assigned, or no watermark seen yet)."""
    found: dict[TP, int | None] = {}
    for tp in sorted(assigned):
        mark, high = tracker.watermark(tp), highs.get(tp)
        found[tp] = None if mark is None or high is None else max(high - mark, 0)
    return found


def status_document(
    view: PipelineView,
    config: PipelineConfig,
    *,
    breaker: CircuitBreaker,
    tracker: OffsetTracker,
    buffered: int,
) -> dict[str, object]:
    """The pipeline at a glance, for /status (no secrets: the config's credentials never appear here)."""
    stats = view.stats
    found = view.lag()
    return {
        "name": view.name,
        "group": config.consume.group_id,
        "queue": config.consume.queue,  # a share group (docs/queues.md) rather than a consumer group
        "topics": list(config.consume.topics),
        "call": {
            **config.call.model_dump(mode="json", include={"timeout", "batch"}),
            "url": config.call.target_text,  # a password in the URL never shows
        },
        "kafka_error": view.kafka_error,
        "topic_problems": view.topic_problems,
        "producer_problem": view.producer_problem,
        "publish_topic": config.publish.topic if config.publish is not None else None,
        "publish_allow": (config.publish.allow or [config.publish.topic]) if config.publish is not None else [],
        "dead_letter_topic": config.dead_letter.topic if config.dead_letter is not None else None,
        "service_failing": stats.service_failing,
        "circuit": breaker.state.value,
        "circuit_reason": breaker.reason or None,
        "circuit_opened": breaker.opened,
        "last_call_error": stats.last_call_error or None,
        "partitions": [
            {
                "topic": t,
                "partition": p,
                "next_offset": tracker.watermark((t, p)),
                "done_ahead": tracker.done_ahead((t, p)),  # done above next_offset: not redone after a crash
                "lag": lag,
            }
            for (t, p), lag in found.items()
        ],
        "lag": sum(lag for lag in found.values() if lag is not None),
        "in_flight": view.in_flight,
        "max_in_flight": config.max_in_flight if isinstance(config.max_in_flight, int) else "auto",
        "concurrency_limit": stats.concurrency_limit,  # the adaptive limit now (max_in_flight: auto), else None
        "rate_limit": None if config.rate_limit is None else config.rate_limit.model_dump(mode="json"),
        "buffered": buffered,
        "consumed": stats.consumed,
        "skipped": stats.skipped,
        "results": dict(stats.results),
        "published": stats.published,
        "dead_lettered": stats.dead_lettered,
        "retries": stats.retries,
        "calls": stats.calls,
        "call_errors": stats.call_errors,
        "last_errors": list(stats.last_errors),
        "conditions": stats.recent(),
        "recent_dead_letters": list(stats.recent_dead_letters),
        "dead_letter_groups": stats.dead_letter_summary(),
    }
