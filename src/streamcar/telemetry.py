"""The OpenTelemetry SDK behind ``tracing:``: a tracer provider of the sidecar's own (not the global one), with a
batching exporter to an OTLP/HTTP collector or the console, and a parent-based ratio sampler.

The SDK and the OTLP exporter are the optional extra ``streamcar[tracing]``; without them tracing stays off and
enabling it is a one-line config error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from streamcar.config import TracingConfig
from streamcar.errors import ConfigError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider


def tracer_provider(config: TracingConfig) -> TracerProvider:
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
    except ImportError:
        raise ConfigError(
            "tracing.enabled: the OpenTelemetry SDK is not installed; pip install 'streamcar[tracing]'"
        ) from None
    exporter: SpanExporter
    if config.exporter == "console":
        exporter = ConsoleSpanExporter()
    else:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            raise ConfigError(
                "tracing.exporter: the OTLP exporter is not installed; pip install 'streamcar[tracing]'"
            ) from None
        exporter = OTLPSpanExporter(endpoint=config.endpoint, headers=dict(config.headers), timeout=10)
    provider = TracerProvider(
        resource=Resource.create({"service.name": config.service_name}),
        sampler=ParentBased(TraceIdRatioBased(config.sample_ratio)),
    )
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=1000))
    return provider
