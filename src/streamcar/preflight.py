"""What a config points at, checked on this machine before anything starts.

The config models check its shape; ``streamcar check`` and ``run`` then call :func:`preflight` for what only the
machine can say: that librdkafka knows every ``kafka.librdkafka`` setting and accepts its value, that the
certificate files exist and hold PEM data, that a ``python:`` handler imports. Every problem is reported with the
field's full path (``pipelines.orders.call.tls.ca_file: ...``), as a :class:`ConfigError` (exit 2), instead of
surfacing later as a runtime failure without a path.
"""

from __future__ import annotations

import logging
from pathlib import Path

from confluent_kafka import KafkaException, Producer

from streamcar.config import CallConfig, Config, GrpcTarget, HttpTarget, PythonTarget, SecurityConfig, read_pem
from streamcar.errors import ConfigError

_SILENT = logging.getLogger("streamcar.preflight.librdkafka")
_SILENT.addHandler(logging.NullHandler())
_SILENT.propagate = False


def preflight(config: Config) -> None:
    problems = _librdkafka(config.kafka.librdkafka)
    if config.kafka.security is not None:
        problems += _kafka_files(config.kafka.security)
    for name, pipeline in config.pipelines.items():
        try:
            _call(pipeline.call)
        except ConfigError as exc:
            problems += [f"pipelines.{name}.{line}" for line in exc.problems]
    if problems:
        raise ConfigError(f"invalid config ({len(problems)} problems)", problems)


def _librdkafka(settings: dict[str, str | int | float | bool]) -> list[str]:
    """librdkafka validates its settings when a client is made: make one per setting (no bootstrap server, so
    it connects nowhere; its log silenced) and report each it refuses."""
    found = []
    for name, value in settings.items():
        try:
            Producer({name: value, "logger": _SILENT, "log_level": 0}).flush(0)
        except KafkaException as exc:
            error = exc.args[0]
            found.append(f"kafka.librdkafka.{name}: {error.str() if hasattr(error, 'str') else error}")
        except (TypeError, ValueError) as exc:
            found.append(f"kafka.librdkafka.{name}: {exc}")
    return found


def _kafka_files(security: SecurityConfig) -> list[str]:
    found = []
    for field in ("ca_file", "cert_file", "key_file"):
        path: Path | None = getattr(security, field)
        if path is None:
            continue
        try:
            read_pem(path, f"kafka.security.{field}")
        except ConfigError as exc:
            found += exc.problems
    return found


def _call(call: CallConfig) -> None:
    """ConfigError (paths relative to the pipeline) when the call's target cannot be used."""
    target = call.target
    if isinstance(target, PythonTarget):
        from streamcar.call.python import load_handler

        load_handler(target.module, target.function)
    elif isinstance(target, HttpTarget) and call.tls is not None:
        from streamcar.call.http import ssl_context

        ssl_context(call.tls)
    elif isinstance(target, GrpcTarget) and call.tls is not None:
        from streamcar.call.grpc import read_credentials

        read_credentials(call.tls)
