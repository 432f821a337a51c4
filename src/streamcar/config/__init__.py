"""The streamcar configuration: pydantic models, the YAML + ``${ENV}`` loader, durations, the JSON Schema.

``load_config(path)`` (or ``parse_config(text)``) returns a frozen :class:`Config` or raises
:class:`~streamcar.errors.ConfigError` listing every invalid field as ``pipelines.orders.call.timeout: ...``.
"""

from __future__ import annotations

from streamcar.config._durations import Duration, format_duration, parse_duration
from streamcar.config._files import read_pem
from streamcar.config._loader import json_schema, load_config, parse_config
from streamcar.config._outputs import DeadLetterConfig, PublishConfig
from streamcar.config._sizes import ByteSize, format_size, parse_size
from streamcar.config._targets import CallTarget, GrpcTarget, HttpTarget, PythonTarget
from streamcar.config.models import (
    AdminConfig,
    BatchConfig,
    CallConfig,
    CircuitBreakerConfig,
    Config,
    ConsumeConfig,
    KafkaConfig,
    LogConfig,
    PipelineConfig,
    RetryConfig,
    SecurityConfig,
    ServiceTlsConfig,
    TracingConfig,
)

__all__ = [
    "AdminConfig",
    "BatchConfig",
    "ByteSize",
    "CallConfig",
    "CallTarget",
    "CircuitBreakerConfig",
    "Config",
    "ConsumeConfig",
    "DeadLetterConfig",
    "Duration",
    "GrpcTarget",
    "HttpTarget",
    "KafkaConfig",
    "LogConfig",
    "PipelineConfig",
    "PublishConfig",
    "PythonTarget",
    "RetryConfig",
    "SecurityConfig",
    "ServiceTlsConfig",
    "TracingConfig",
    "format_duration",
    "format_size",
    "json_schema",
    "load_config",
    "parse_config",
    "parse_duration",
    "parse_size",
    "read_pem",
]
