"""streamcar: a Kafka sidecar for microservices.

The public API is what ``__all__`` lists, with :mod:`streamcar.config` (every config model) and
:mod:`streamcar.service` (the service's side of the HTTP protocol); everything else is internal and may change.
Embedding the engine (docs/python.md)::

    import streamcar

    async def handle(event: streamcar.Event) -> streamcar.Reply | bytes | None: ...

    config = streamcar.load_config("streamcar.yaml")  # or a mapping, or streamcar.Config(...) built in code
    streamcar.run(config)                             # foreground, until SIGTERM/SIGINT
    await streamcar.serve(config, stop_event)         # inside your own asyncio program
"""

from __future__ import annotations

from streamcar.app import Sidecar, run, serve
from streamcar.config import (
    CallConfig,
    Config,
    ConsumeConfig,
    DeadLetterConfig,
    KafkaConfig,
    PipelineConfig,
    PublishConfig,
    load_config,
)
from streamcar.errors import (
    CallError,
    ConfigError,
    KafkaError,
    PermanentCallError,
    RetriableCallError,
    StreamcarError,
    ToolingError,
    UsageError,
)
from streamcar.event import KEEP_KEY, Event, Record, Reply, Result

__version__ = "0.1.0"

__all__ = [
    "KEEP_KEY",
    "CallConfig",
    "CallError",
    "Config",
    "ConfigError",
    "ConsumeConfig",
    "DeadLetterConfig",
    "Event",
    "KafkaConfig",
    "KafkaError",
    "PermanentCallError",
    "PipelineConfig",
    "PublishConfig",
    "Record",
    "Reply",
    "Result",
    "RetriableCallError",
    "Sidecar",
    "StreamcarError",
    "ToolingError",
    "UsageError",
    "__version__",
    "load_config",
    "run",
    "serve",
]
