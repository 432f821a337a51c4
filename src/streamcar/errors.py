"""The streamcar exception tree.

Every error raised on purpose by streamcar derives from :class:`StreamcarError`. Each class says what
the caller should do through attributes, so policy reads an attribute instead of matching type lists:

* ``exit_code`` -- what the CLI exits with when the error reaches it (1 runtime failure, 2 bad input).
* ``retriable`` -- whether trying the same thing again later may succeed.

::

    StreamcarError                 exit 1
    +-- UsageError                 exit 2   bad command-line arguments
    +-- ConfigError                exit 2   invalid configuration (one line per invalid field)
    +-- ToolingError               exit 1   the local Kafka tooling failed (missing Java/Maven, start timeout)
    +-- KafkaError                 exit 1   the broker refused or could not be reached
    +-- CallError                  exit 1   a call to the service failed; see RetriableCallError/PermanentCallError
        +-- RetriableCallError              retriable = True
        +-- PermanentCallError              retriable = False
"""

from __future__ import annotations


class StreamcarError(Exception):
    """Root of every error streamcar raises on purpose."""

    exit_code: int = 1
    retriable: bool = False


class UsageError(StreamcarError):
    """The command line asks for something impossible."""

    exit_code = 2


class ConfigError(StreamcarError):
    """The configuration is invalid; ``problems`` holds one ``path: message`` line per invalid field."""

    exit_code = 2

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems: list[str] = problems if problems is not None else [message]


class ToolingError(StreamcarError):
    """The local development Kafka could not be fetched, started or stopped."""


class KafkaError(StreamcarError):
    """The Kafka cluster refused a request or could not be reached."""

    retriable = True


class CallError(StreamcarError):
    """A call to the service failed."""

    kind: str = "error"


class RetriableCallError(CallError):
    """A call failed in a way that may succeed if tried again (timeout, 503, connection refused)."""

    retriable = True


class PermanentCallError(CallError):
    """A call failed in a way that will fail again (400, 501, invalid argument)."""

    retriable = False
