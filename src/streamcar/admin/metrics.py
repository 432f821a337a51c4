"""``/metrics``: the pipelines' counters in the Prometheus text format, with docs/operations.md's names.

Nothing is counted per message for Prometheus: a collector reads each pipeline's :class:`PipelineStats` (and
its lag) when Prometheus scrapes, so the hot path pays nothing for the metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from streamcar.engine.view import PipelineView
from streamcar.engine.work import CALL_BUCKETS


class PipelineCollector(Collector):
    def __init__(self, pipelines: Callable[[], Mapping[str, PipelineView]], version: str) -> None:
        self._pipelines = pipelines
        self._version = version

    def collect(self) -> Iterable[Metric]:
        consumed = CounterMetricFamily("streamcar_consumed", "Records consumed", labels=["pipeline"])
        results = CounterMetricFamily(
            "streamcar_results", "Messages done, by result (success, drop, dead-letter)", labels=["pipeline", "result"]
        )
        retries = CounterMetricFamily("streamcar_retries", "Calls scheduled again after a failure", labels=["pipeline"])
        published = CounterMetricFamily("streamcar_published", "Replies published", labels=["pipeline"])
        dead = CounterMetricFamily(
            "streamcar_dead_letter", "Records sent to the dead-letter topic", labels=["pipeline"]
        )
        in_flight = GaugeMetricFamily(
            "streamcar_in_flight", "Messages taken and not done (in a call, publishing, retrying)", labels=["pipeline"]
        )
        lag = GaugeMetricFamily(
            "streamcar_consumer_lag",
            "Records from the next offset to commit to the high watermark",
            labels=["pipeline", "topic", "partition"],
        )
        circuit = GaugeMetricFamily(
            "streamcar_circuit_open", "1 while the circuit to the service is open or half-open", labels=["pipeline"]
        )
        opened = CounterMetricFamily(
            "streamcar_circuit_opened", "Times the circuit to the service opened", labels=["pipeline"]
        )
        publish_errors = CounterMetricFamily(
            "streamcar_publish_errors",
            "Records the broker did not take (a missing or unwritable topic, a record too large...), each attempt",
            labels=["pipeline", "topic"],
        )
        topic_problems = GaugeMetricFamily(
            "streamcar_topic_problems", "The pipeline's topics that are missing or not usable now", labels=["pipeline"]
        )
        limit = GaugeMetricFamily(
            "streamcar_concurrency_limit", "The adaptive limit on calls (max_in_flight: auto)", labels=["pipeline"]
        )
        calls = HistogramMetricFamily("streamcar_call_seconds", "Duration of calls to the service", labels=["pipeline"])
        build = GaugeMetricFamily("streamcar_build_info", "1, labelled with the streamcar version", labels=["version"])
        build.add_metric([self._version], 1)
        for name, pipeline in sorted(self._pipelines().items()):
            stats = pipeline.stats
            consumed.add_metric([name], stats.consumed)
            for result in ("success", "drop", "dead-letter"):
                results.add_metric([name, result], stats.results.get(result, 0))
            retries.add_metric([name], stats.retries)
            published.add_metric([name], stats.published)
            dead.add_metric([name], stats.dead_lettered)
            in_flight.add_metric([name], pipeline.in_flight)
            if stats.concurrency_limit is not None:
                limit.add_metric([name], stats.concurrency_limit)
            circuit.add_metric([name], 0 if pipeline.circuit_open is None else 1)
            opened.add_metric([name], pipeline.circuit_opened)
            for topic, count in sorted(stats.publish_errors.items()):
                publish_errors.add_metric([name, topic], count)
            topic_problems.add_metric([name], len(pipeline.topic_problems))
            for (topic, partition), value in pipeline.lag().items():
                if value is not None:
                    lag.add_metric([name, topic, str(partition)], value)
            cumulative, buckets = 0, []
            for bound, count in zip((*CALL_BUCKETS, float("inf")), stats.call_buckets, strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            calls.add_metric([name], buckets, stats.call_seconds)
        yield from (consumed, results, retries, published, dead, in_flight, lag, calls, circuit, opened)
        yield from (publish_errors, topic_problems, limit, build)


def registry_for(pipelines: Callable[[], Mapping[str, PipelineView]], version: str) -> CollectorRegistry:
    """A registry of its own per sidecar (not prometheus_client's global one), so several can live in a process."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PipelineCollector(pipelines, version))
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
