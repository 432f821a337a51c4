"""The kinds of failure a message can meet, each carrying what it means for the engine's policy.

A reply that is not a success names its kind (``Reply.error_kind``, and ``streamcar-error-kind`` on a dead
letter). The kind says three things the engine acts on, as attributes rather than lists to test membership in:

* ``outage`` -- the service did not serve the call: it counts against the circuit breaker;
* ``unreached`` -- the service could not be reached at all (nothing to learn about the message): the circuit
  opens at once, and a probe failing so does not count against its message;
* ``dropped`` -- the service took the connection and dropped it without answering: maybe because of this very
  message, so it opens the circuit at once only when nothing else got through either;
* ``unanswered`` -- no answer at all (unreached, dropped, or none in time): a probe failing so counts against its
  message only when other calls were answered meanwhile (see :mod:`streamcar.engine.attempt`).

``retriable`` says whether the sidecar calls again on its own when a call fails so; for the status kinds the
status decides (5xx, 429 and UNAVAILABLE are retried, other codes dead-lettered), and it is None.

A Python handler may name kinds of its own (``Reply.retry(kind=...)``): :meth:`Kind.of` reads those as no kind
at all, with no policy.
"""

from __future__ import annotations

from enum import StrEnum


class Kind(StrEnum):
    CONNECTION = "connection"
    """No connection: refused, unreachable, an unknown host."""
    TLS = "tls"
    """The TLS handshake failed, or the service refused our certificate."""
    DISCONNECTED = "disconnected"
    """The service took the connection and closed it without answering."""
    TIMEOUT = "timeout"
    """No complete reply within ``call.timeout``."""
    HTTP_STATUS = "http-status"
    """The service answered with a status that is not a success."""
    HTTP_CLIENT = "http-client"
    """A reply that is not HTTP streamcar can read."""
    GRPC_STATUS = "grpc-status"
    """The service answered with a gRPC status that is not OK."""
    GRPC_CLIENT = "grpc-client"
    """grpc refused the call before it reached the service."""
    EXCEPTION = "exception"
    """An in-process handler raised."""
    BAD_REPLY = "bad-reply"
    """A reply streamcar cannot map: too large, not the batch envelope, a body that does not decode."""
    RETRY = "retry"
    """The service asked for a retry (``Streamcar-Result: retry``, a batch result)."""
    REJECTED = "rejected"
    """Dead-lettered at once: the service said so, or the record cannot be called at all."""
    HANDLER_RESULT = "handler-result"
    """An in-process handler returned something that is not a reply."""
    EXHAUSTED = "exhausted"
    """Its attempts were spent."""
    BLOCKED = "blocked"
    """It held its key longer than ``retry.max_block``."""
    PUBLISH = "publish"
    """The broker refused its reply for good."""
    ROUTE = "route"
    """Its reply asked for a topic ``publish.allow`` does not list."""
    DEAD_LETTER = "dead-letter"
    """The dead-letter topic refused its dead letter for good (it is kept, and retried slowly)."""
    INTERNAL = "internal"
    """A fault of streamcar's own (a caller bug): retried rather than lost."""

    @classmethod
    def of(cls, text: str | None) -> Kind | None:
        """The kind named ``text``; None for no kind, or one of a handler's own."""
        try:
            return cls(text) if text else None
        except ValueError:
            return None

    @property
    def outage(self) -> bool:
        return self in _OUTAGE

    @property
    def unreached(self) -> bool:
        return self in _UNREACHED

    @property
    def dropped(self) -> bool:
        return self is Kind.DISCONNECTED

    @property
    def unanswered(self) -> bool:
        """The service did not answer at all: unreached, dropped, or no reply in time."""
        return self in _UNANSWERED

    @property
    def retriable(self) -> bool | None:
        return None if self in _BY_STATUS else self not in _FINAL


_OUTAGE = frozenset(
    {
        Kind.CONNECTION,
        Kind.TLS,
        Kind.DISCONNECTED,
        Kind.TIMEOUT,
        Kind.HTTP_STATUS,
        Kind.HTTP_CLIENT,
        Kind.GRPC_STATUS,
        Kind.GRPC_CLIENT,
        Kind.EXCEPTION,
    }
)
# "retry" (the service asking), "bad-reply" and "internal" are the service or the sidecar speaking: no outage
_UNREACHED = frozenset({Kind.CONNECTION, Kind.TLS})
_UNANSWERED = _UNREACHED | {Kind.DISCONNECTED, Kind.TIMEOUT, Kind.GRPC_CLIENT}
_BY_STATUS = frozenset({Kind.HTTP_STATUS, Kind.GRPC_STATUS, Kind.EXCEPTION})
_FINAL = frozenset({Kind.REJECTED, Kind.HANDLER_RESULT, Kind.EXHAUSTED, Kind.BLOCKED, Kind.PUBLISH, Kind.ROUTE})


def outage(text: str | None) -> bool:
    """Whether a failure of kind ``text`` counts against the circuit breaker."""
    kind = Kind.of(text)
    return kind is not None and kind.outage
