"""What both consumer threads (:class:`~streamcar.kafka.consumer.ConsumerBridge` for a consumer group,
:class:`~streamcar.kafka.share.ShareBridge` for a share group) need to talk to the asyncio loop they feed, and to
end."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable
from typing import Any, TypeVar

from confluent_kafka import Message

from streamcar.kafka.errors import Said, said
from streamcar.kafka.records import TP, Incoming, incoming

T = TypeVar("T")


def on_loop(loop: asyncio.AbstractEventLoop, coro: Awaitable[Any], timeout: float) -> Any:
    """Run ``coro`` on ``loop`` from the consumer thread and wait (at most ``timeout`` seconds) for its result."""

    async def wrapper() -> Any:
        return await coro

    return asyncio.run_coroutine_threadsafe(wrapper(), loop).result(timeout)


async def end_thread(
    stopping: threading.Event, wake: threading.Event, thread: threading.Thread, done: asyncio.Future[None]
) -> None:
    """Ask the consumer thread to stop, and wait until it has (``done`` is settled as its last act)."""
    stopping.set()
    wake.set()
    if thread.is_alive():
        await done
    else:
        settle(done, None)


def settle(future: asyncio.Future[Any], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


def resolve(future: asyncio.Future[T], value: T) -> None:
    if not future.done():
        future.set_result(value)


def fmt(tps: list[TP]) -> str:
    return ", ".join(_names(tps)) or "nothing"


def fields(event: str, group: str, tps: list[TP]) -> dict[str, object]:
    """A log record's structured fields for ``event`` of ``group`` on ``tps``."""
    return {"event": event, "group": group, "partitions": _names(tps)}


def _names(tps: list[TP]) -> list[str]:
    return [f"{t}[{p}]" for t, p in sorted(tps)]


def handed(messages: list[Message], *, shared: bool = False) -> list[Incoming | Said]:
    """A fetch's messages as the engine takes them, in their order: each record, or what the consumer said in
    its place (an end of partition, a missing topic, no committed offset...). On the consumer's thread."""
    out: list[Incoming | Said] = []
    for msg in messages:
        error = msg.error()
        if error is None:
            out.append(incoming(msg, shared=shared))
        else:
            out.append(said(error, (msg.topic() or "", msg.partition() or 0)))
    return out
