"""How the engine reaches the service: one :class:`Caller` protocol, one implementation per transport.

A caller takes a batch of events (a batch of one in single delivery) and returns one :class:`Reply` per event,
in order. It never raises for a failed call: timeouts, refused connections and error statuses become replies
(``retry`` or ``dead-letter`` with an ``error_kind``), so the engine's policy reads one type. Callers are built
through the explicit registry in :func:`build_caller`, keyed by the URL's scheme.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from streamcar.config import CallConfig
from streamcar.errors import ConfigError
from streamcar.event import Event, Reply, Result
from streamcar.failures import Kind


class Caller(Protocol):
    async def start(self) -> None:
        """Open connections; called once on the running loop before the first call."""

    async def call(self, events: Sequence[Event]) -> list[Reply]:
        """One reply per event, in order; never raises for a failed call."""
        ...

    async def close(self) -> None:
        """Release connections; in-flight calls have finished or been abandoned."""


CallerFactory = Callable[[CallConfig, int], Caller]


def override(value: str | None, *, error: str, header: str, retry_after: float | None, kind: str) -> Reply | None:
    """The reply a service's ``Streamcar-Result`` (HTTP) or ``streamcar-result`` (gRPC) asks for, or ``call.status``
    (``header``: where it was said), or None; a success is the caller's to build (it has the body).

    ``error`` describes the call (``HTTP 503``, ``gRPC UNAVAILABLE: ...``); ``kind`` is a retry's error kind.
    """
    result = Result.named(value)
    if result is Result.DROP:
        return Reply.drop()
    if result is Result.RETRY:
        return Reply.retry(after=retry_after, error=f"{error} ({header}: retry)", kind=kind)
    if result is Result.DEAD_LETTER:
        return Reply.dead_letter(f"{error} ({header}: dead-letter)", kind=Kind.REJECTED)
    return None


def _http(config: CallConfig, max_in_flight: int) -> Caller:
    from streamcar.call.http import HttpCaller

    return HttpCaller(config, max_connections=max_in_flight)


def _grpc(config: CallConfig, max_in_flight: int) -> Caller:
    from streamcar.call.grpc import GrpcCaller

    return GrpcCaller(config, max_in_flight=max_in_flight)


def _python(config: CallConfig, max_in_flight: int) -> Caller:
    from streamcar.call.python import PythonCaller

    return PythonCaller(config)


_REGISTRY: dict[str, CallerFactory] = {"http": _http, "grpc": _grpc, "python": _python}


def build_caller(config: CallConfig, max_in_flight: int) -> Caller:
    kind = config.target.kind
    factory = _REGISTRY.get(kind)
    if factory is None:
        raise ConfigError(f"call.url: {kind} services are not supported")
    return factory(config, max_in_flight)


__all__ = ["Caller", "CallerFactory", "build_caller", "override"]
