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

from streamcar._version import __version__

# Not typing's: importing typing (and re with it) is most of what the package would import at start. Type checkers
# read any constant of this name as theirs.
TYPE_CHECKING = False
if TYPE_CHECKING:  # the names for type checkers; at run time each is imported on first use (below)
    from typing import Any

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

# Imported on first use (PEP 562), not with the package: `streamcar` the command then starts without the engine's
# imports (0.7 s), so a Ctrl-C in its first moments reaches its handler instead of printing an import traceback.
_LAZY: dict[str, tuple[str, ...]] = {
    "streamcar.app": ("Sidecar", "run", "serve"),
    "streamcar.config": (
        "CallConfig",
        "Config",
        "ConsumeConfig",
        "DeadLetterConfig",
        "KafkaConfig",
        "PipelineConfig",
        "PublishConfig",
        "load_config",
    ),
    "streamcar.errors": (
        "CallError",
        "ConfigError",
        "KafkaError",
        "PermanentCallError",
        "RetriableCallError",
        "StreamcarError",
        "ToolingError",
        "UsageError",
    ),
    "streamcar.event": ("KEEP_KEY", "Event", "Record", "Reply", "Result"),
}
_MODULE_OF = {name: module for module, names in _LAZY.items() for name in names}


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


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'streamcar' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
