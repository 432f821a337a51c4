"""In-process Python handlers (docs/python.md): ``python:pkg.module:function``.

The handler takes an :class:`Event` and returns a :class:`Reply`, the reply value (``bytes``-like or ``str``) or
``None`` (done, nothing published). ``async def`` handlers run on the loop; plain ``def`` handlers run in a worker
thread so they cannot block it. Exceptions become replies: a timeout, an exception with a truthy ``retriable``
attribute (such as :class:`RetriableCallError`) or an ``OSError`` is retried, anything else is dead-lettered.

With batch delivery (``batch.max_messages > 1``) the handler takes a ``list[Event]`` and returns a sequence with
one such result per event, in order; an exception, a timeout or a result of the wrong length applies to the whole
batch.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from streamcar.config import CallConfig, PythonTarget, format_duration
from streamcar.errors import ConfigError
from streamcar.event import Event, KeepKey, Reply
from streamcar.failures import Kind

Handler = Callable[[Any], Any]  # Event -> result, or list[Event] -> results with batch delivery


def load_handler(module_name: str, function: str) -> Handler:
    """The handler named by ``python:module:function``; ConfigError with one line if it cannot be had."""
    where = f"python:{module_name}:{function}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise ConfigError(f"call.url: {where}: no module named {exc.name!r}") from None
        raise ConfigError(f"call.url: {where}: importing {module_name} failed: {_describe(exc)}") from None
    except Exception as exc:
        raise ConfigError(f"call.url: {where}: importing {module_name} failed: {_describe(exc)}") from None
    try:
        handler = getattr(module, function)
    except AttributeError:
        raise ConfigError(f"call.url: {where}: module {module_name} has no attribute {function!r}") from None
    if not callable(handler):
        raise ConfigError(f"call.url: {where}: {type(handler).__name__} is not callable")
    return handler  # type: ignore[no-any-return]


def reply_from_result(value: object) -> Reply:
    """Map what a handler returned to a reply."""
    if isinstance(value, Reply):
        return _checked(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return Reply.success(bytes(value))
    if isinstance(value, str):
        return Reply.success(value.encode())
    if value is None:
        return Reply.success(None)
    return Reply.dead_letter(f"handler returned {type(value).__name__}", kind=Kind.HANDLER_RESULT)


def _checked(reply: Reply) -> Reply:
    """``reply`` with bytes where the record needs bytes (``str`` as UTF-8), or a ``handler-result`` dead letter
    naming what cannot be a record: a handler is code, and its mistakes must not reach the producer."""
    value, key, headers = reply.value, reply.key, reply.headers
    if (
        (value is None or type(value) is bytes)
        and (key is None or type(key) is bytes or isinstance(key, KeepKey))
        and all(type(pair) is tuple and len(pair) == 2 and type(pair[0]) is str for pair in headers)
        and all(v is None or type(v) is bytes for _, v in headers)
    ):
        return reply
    try:
        fixed_headers = tuple((_name(name), _data(data, "a header value")) for name, data in headers)
        fixed_key = key if isinstance(key, KeepKey) else _data(key, "the key")
        return replace(reply, value=_data(value, "the value"), key=fixed_key, headers=fixed_headers)
    except (TypeError, ValueError) as exc:
        return Reply.dead_letter(f"the handler's Reply cannot be published: {exc}", kind=Kind.HANDLER_RESULT)


def _data(data: object, what: str) -> bytes | None:
    if data is None or isinstance(data, bytes):
        return data
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    if isinstance(data, str):
        return data.encode("utf-8", "backslashreplace")
    raise TypeError(f"{what} must be bytes, str or None, not {type(data).__name__}")


def _name(name: object) -> str:
    if not isinstance(name, str):
        raise TypeError(f"a header name must be a str, not {type(name).__name__}")
    return name


def reply_from_exception(exc: Exception) -> Reply:
    """Retry if the exception says it is retriable (or is an OSError), dead-letter otherwise."""
    retriable = getattr(exc, "retriable", None)
    if retriable is None:
        retriable = isinstance(exc, OSError)  # ConnectionError and TimeoutError included
    if retriable:
        return Reply.retry(error=_describe(exc), kind=Kind.EXCEPTION)
    return Reply.dead_letter(_describe(exc), kind=Kind.EXCEPTION)


def _describe(exc: BaseException) -> str:
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _is_async(handler: Handler) -> bool:
    # an object whose class defines ``async def __call__`` counts too
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(type(handler).__call__)


class PythonCaller:
    def __init__(self, config: CallConfig) -> None:
        target = config.target
        if not isinstance(target, PythonTarget):
            raise ConfigError(f"call.url: {config.url!r} is not a python:pkg.module:function target")
        self._target = target
        self._timeout = config.timeout
        self._batch = config.batch.max_messages > 1
        self._handler: Handler | None = None
        self._async = False

    async def start(self) -> None:
        self._handler = load_handler(self._target.module, self._target.function)
        self._async = _is_async(self._handler)

    async def close(self) -> None:
        pass

    async def call(self, events: Sequence[Event]) -> list[Reply]:
        if not self._batch:
            return [await self._call_one(event) for event in events]
        try:
            outcome = await self._invoke(list(events))
        except _HandlerFailed as failed:
            return [failed.reply] * len(events)
        if isinstance(outcome, Reply):  # one answer for the whole batch
            return [outcome] * len(events)
        if isinstance(outcome, str | bytes | bytearray) or not isinstance(outcome, Sequence):
            error = f"a batch handler must return a sequence of results, got {type(outcome).__name__}"
            return [Reply.dead_letter(error, kind=Kind.HANDLER_RESULT)] * len(events)
        if len(outcome) != len(events):
            error = f"the batch handler returned {len(outcome)} results for {len(events)} events"
            return [Reply.dead_letter(error, kind=Kind.HANDLER_RESULT)] * len(events)
        return [reply_from_result(result) for result in outcome]

    async def _call_one(self, event: Event) -> Reply:
        try:
            return reply_from_result(await self._invoke(event))
        except _HandlerFailed as failed:
            return failed.reply

    async def _invoke(self, argument: Event | list[Event]) -> object:
        """What the handler returned; :class:`_HandlerFailed` with the reply its failure maps to."""
        handler = self._handler
        if handler is None:
            raise RuntimeError("PythonCaller.start() was not awaited")
        deadline = asyncio.timeout(self._timeout)
        try:
            async with deadline:
                if self._async:
                    result = await handler(argument)
                else:
                    # the thread runs on after a timeout: Python cannot stop it, but the loop is not held up
                    result = await asyncio.to_thread(handler, argument)
                if inspect.isawaitable(result):  # a plain def that returned a coroutine
                    result = await result
        except TimeoutError as exc:
            if deadline.expired():
                error = f"handler gave no reply within {format_duration(self._timeout)}"
                raise _HandlerFailed(Reply.retry(error=error, kind=Kind.TIMEOUT)) from None
            raise _HandlerFailed(reply_from_exception(exc)) from None
        except Exception as exc:
            raise _HandlerFailed(reply_from_exception(exc)) from None
        return result


class _HandlerFailed(Exception):
    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.error)
        self.reply = reply
