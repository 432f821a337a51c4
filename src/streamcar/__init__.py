"""streamcar: a Kafka sidecar for microservices.

The public API is what ``__all__`` lists; everything else is internal and may change.
"""

from __future__ import annotations

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
from streamcar.event import KEEP_KEY, Event, Reply, Result

__version__ = "0.1.0"

__all__ = [
    "KEEP_KEY",
    "CallError",
    "ConfigError",
    "Event",
    "KafkaError",
    "PermanentCallError",
    "Reply",
    "Result",
    "RetriableCallError",
    "StreamcarError",
    "ToolingError",
    "UsageError",
    "__version__",
]
