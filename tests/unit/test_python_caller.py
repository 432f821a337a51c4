"""The in-process Python caller: loading ``python:module:function`` and mapping results and exceptions to replies.

The handlers live in this module; pytest puts ``tests/unit`` on ``sys.path``, so the urls name it by its bare name.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from streamcar import ConfigError, Event, PermanentCallError, Reply, Result, RetriableCallError
from streamcar.call import build_caller
from streamcar.call.python import PythonCaller
from streamcar.config import CallConfig

HERE = __name__


def event(value: bytes | None = b"hello", key: bytes | None = b"k", offset: int = 0) -> Event:
    return Event(topic="t", partition=0, offset=offset, timestamp=0, key=key, value=value)


# --- handlers ----------------------------------------------------------------------------------------------------


async def async_upper(event: Event) -> bytes:
    return (event.value or b"").upper()


def sync_upper(event: Event) -> bytes:
    return (event.value or b"").upper()


def sync_thread_name(event: Event) -> str:
    return threading.current_thread().name


async def returns_reply(event: Event) -> Reply:
    return Reply.success(b"r", key=b"new", headers={"x": "1"})


async def returns_drop(event: Event) -> Reply:
    return Reply.drop()


async def returns_bytearray(event: Event) -> bytearray:
    return bytearray(b"ba")


async def returns_memoryview(event: Event) -> memoryview:
    return memoryview(b"mv")


async def returns_str(event: Event) -> str:
    return "héllo"


async def returns_none(event: Event) -> None:
    return None


async def returns_int(event: Event) -> int:
    return 42


def sync_returns_dict(event: Event) -> dict[str, int]:
    return {"a": 1}


async def raises_retriable(event: Event) -> None:
    raise RetriableCallError("try later")


async def raises_permanent(event: Event) -> None:
    raise PermanentCallError("bad input")


async def raises_connection(event: Event) -> None:
    raise ConnectionRefusedError("refused")


async def raises_own_timeout(event: Event) -> None:
    raise TimeoutError("upstream timed out")


def sync_raises_oserror(event: Event) -> None:
    raise OSError("disk gone")


def sync_raises_value_error(event: Event) -> None:
    raise ValueError("no good")


class CustomRetriable(Exception):
    retriable = True


class CustomPermanentOSError(OSError):
    retriable = False


async def raises_custom_retriable(event: Event) -> None:
    raise CustomRetriable("flaky")


async def raises_custom_permanent_oserror(event: Event) -> None:
    raise CustomPermanentOSError("said no")


async def async_slow(event: Event) -> bytes:
    await asyncio.sleep(5)
    return b"late"


def sync_slow(event: Event) -> bytes:
    time.sleep(0.5)
    return b"late"


async def by_key(event: Event) -> bytes | None:
    if event.key == b"bad":
        raise PermanentCallError("bad key")
    if event.key == b"none":
        return None
    return event.value


class AsyncCallable:
    async def __call__(self, event: Event) -> bytes:
        return b"callable object"


callable_object = AsyncCallable()
not_callable = 3


# --- helpers -----------------------------------------------------------------------------------------------------


def config(function: str, module: str = HERE, timeout: str = "2s") -> CallConfig:
    return CallConfig.model_validate({"url": f"python:{module}:{function}", "timeout": timeout})


async def started(function: str, call_timeout: str = "2s") -> PythonCaller:
    caller = PythonCaller(config(function, timeout=call_timeout))
    await caller.start()
    return caller


async def one(function: str, value: bytes | None = b"hello", call_timeout: str = "2s") -> Reply:
    caller = await started(function, call_timeout=call_timeout)
    try:
        replies = await caller.call([event(value)])
    finally:
        await caller.close()
    assert len(replies) == 1
    return replies[0]


# --- return values -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("function", ["async_upper", "sync_upper"])
async def test_async_and_sync_handlers_reply_with_bytes(function: str) -> None:
    assert await one(function) == Reply.success(b"HELLO")


async def test_a_sync_handler_runs_off_the_loop_thread() -> None:
    reply = await one("sync_thread_name")
    assert reply.result is Result.SUCCESS
    assert reply.value != threading.current_thread().name.encode()


async def test_an_object_with_async_call_is_awaited() -> None:
    assert await one("callable_object") == Reply.success(b"callable object")


async def test_a_reply_is_passed_through_as_is() -> None:
    assert await one("returns_reply") == Reply.success(b"r", key=b"new", headers={"x": "1"})
    assert await one("returns_drop") == Reply.drop()


@pytest.mark.parametrize(
    ("function", "value"),
    [("returns_bytearray", b"ba"), ("returns_memoryview", b"mv"), ("returns_str", "héllo".encode())],
)
async def test_bytes_like_and_str_results_are_published(function: str, value: bytes) -> None:
    reply = await one(function)
    assert reply == Reply.success(value)
    assert type(reply.value) is bytes


async def test_none_is_success_with_nothing_published() -> None:
    reply = await one("returns_none")
    assert reply.result is Result.SUCCESS
    assert reply.value is None


@pytest.mark.parametrize(("function", "type_name"), [("returns_int", "int"), ("sync_returns_dict", "dict")])
async def test_other_results_are_dead_lettered(function: str, type_name: str) -> None:
    assert await one(function) == Reply.dead_letter(f"handler returned {type_name}", kind="handler-result")


# --- exceptions --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("function", "error"),
    [
        ("raises_retriable", "RetriableCallError: try later"),
        ("raises_custom_retriable", "CustomRetriable: flaky"),
        ("raises_connection", "ConnectionRefusedError: refused"),
        ("raises_own_timeout", "TimeoutError: upstream timed out"),
        ("sync_raises_oserror", "OSError: disk gone"),
    ],
)
async def test_retriable_exceptions_are_retried(function: str, error: str) -> None:
    assert await one(function) == Reply.retry(error=error, kind="exception")


@pytest.mark.parametrize(
    ("function", "error"),
    [
        ("raises_permanent", "PermanentCallError: bad input"),
        ("sync_raises_value_error", "ValueError: no good"),
        ("raises_custom_permanent_oserror", "CustomPermanentOSError: said no"),
    ],
)
async def test_other_exceptions_are_dead_lettered(function: str, error: str) -> None:
    assert await one(function) == Reply.dead_letter(error, kind="exception")


@pytest.mark.parametrize("function", ["async_slow", "sync_slow"])
async def test_a_slow_handler_times_out_into_a_retry(function: str) -> None:
    started_at = time.monotonic()
    reply = await one(function, call_timeout="100ms")
    assert time.monotonic() - started_at < 0.45  # the sync handler's thread is not waited for
    assert reply.result is Result.RETRY
    assert reply.error_kind == "timeout"
    assert reply.error is not None
    assert reply.error == "handler gave no reply within 100ms"


async def test_one_reply_per_event_in_order() -> None:
    caller = await started("by_key")
    events = [event(b"a", b"ok", 0), event(b"b", b"bad", 1), event(b"c", b"none", 2), event(b"d", b"ok", 3)]
    replies = await caller.call(events)
    assert [r.result for r in replies] == [Result.SUCCESS, Result.DEAD_LETTER, Result.SUCCESS, Result.SUCCESS]
    assert [r.value for r in replies] == [b"a", None, None, b"d"]
    assert replies[1].error == "PermanentCallError: bad key"


# --- loading -----------------------------------------------------------------------------------------------------


async def test_the_registry_builds_a_python_caller() -> None:
    caller = build_caller(config("async_upper"), max_in_flight=4)
    assert isinstance(caller, PythonCaller)
    await caller.start()
    assert await caller.call([event()]) == [Reply.success(b"HELLO")]


@pytest.mark.parametrize(
    ("module", "function", "message"),
    [
        ("no_such_module_xyz", "f", "call.url: python:no_such_module_xyz:f: no module named 'no_such_module_xyz'"),
        ("streamcar.no_such", "f", "call.url: python:streamcar.no_such:f: no module named 'streamcar.no_such'"),
        (HERE, "missing", f"call.url: python:{HERE}:missing: module {HERE} has no attribute 'missing'"),
        (HERE, "not_callable", f"call.url: python:{HERE}:not_callable: int is not callable"),
    ],
)
async def test_a_bad_target_is_a_config_error(module: str, function: str, message: str) -> None:
    caller = PythonCaller(config(function, module=module))
    with pytest.raises(ConfigError) as info:
        await caller.start()
    assert str(info.value) == message
    assert "\n" not in str(info.value)
