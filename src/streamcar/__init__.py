"""streamcar: a Kafka sidecar for microservices.

The public API is what ``__all__`` lists; everything else is internal and may change. Embedding the engine::

    import streamcar

    async def handle(event: streamcar.Event) -> streamcar.Reply | bytes | None: ...

    streamcar.run("streamcar.yaml")                 # foreground, until SIGTERM/SIGINT
    await streamcar.serve(config, stop_event)       # inside your own asyncio program
"""

from __future__ import annotations

from streamcar.app import Sidecar, run, serve
from streamcar.config import Config, load_config
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
    "CallError",
    "Config",
    "ConfigError",
    "Event",
    "KafkaError",
    "PermanentCallError",
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
