"""The streamcar configuration: pydantic models, the YAML + ``${ENV}`` loader, durations, the JSON Schema.

``load_config(path_or_mapping)`` (or ``parse_config(text)``) returns a frozen :class:`Config` or raises
:class:`~streamcar.errors.ConfigError` listing every invalid field as ``pipelines.orders.call.timeout: ...``.
The models are also built directly in code (``Config(kafka=KafkaConfig(...), pipelines={...})``).
:mod:`streamcar.config.reference` writes docs/config.md from the JSON Schema.
"""

from __future__ import annotations

from streamcar.config._call import BatchConfig, CallConfig, ServiceTlsConfig
from streamcar.config._durations import Duration, format_duration, parse_duration
from streamcar.config._files import read_pem
from streamcar.config._loader import json_schema, load_config, parse_config
from streamcar.config._outputs import DeadLetterConfig, PublishConfig
from streamcar.config._sizes import ByteSize, format_size, parse_size
from streamcar.config._targets import CallTarget, GrpcTarget, HttpTarget, PythonTarget
from streamcar.config.models import (
    AdminConfig,
    CircuitBreakerConfig,
    Config,
    ConsumeConfig,
    KafkaConfig,
    LogConfig,
    PipelineConfig,
    RetryConfig,
    SecurityConfig,
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
