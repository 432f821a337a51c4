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

__version__ = "0.1.0"

__all__ = [
    "CallError",
    "ConfigError",
    "KafkaError",
    "PermanentCallError",
    "RetriableCallError",
    "StreamcarError",
    "ToolingError",
    "UsageError",
    "__version__",
]
