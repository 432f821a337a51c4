"""The trivial in-process handlers of the benchmarks: ``python:bench.echo_handlers:echo`` and ``echo_batch``."""

from __future__ import annotations

from streamcar import Event


async def echo(event: Event) -> bytes | None:
    return event.value


async def echo_batch(events: list[Event]) -> list[bytes | None]:
    return [event.value for event in events]
