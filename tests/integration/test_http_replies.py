"""Every row of docs/http.md's reply table, against the real broker and a real HTTP service."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable

import pytest
from aiohttp import web

from service import Seen, TestService
from sidecar import make_config, pipeline, running
from support import KafkaHandle, TopicFactory, committed_total, produce_records, read_topic, wait_for

pytestmark = pytest.mark.integration

RETRY_CODES = [408, 425, 429, 500, 502, 503, 504]
PERMANENT_CODES = [400, 404, 409, 422, 501]


def headers_of(msg: object) -> dict[str, bytes]:
    return {k: v for k, v in (msg.headers() or [])}  # type: ignore[attr-defined]


class TableService:
    """Answers by the record's key, so one run exercises every row of the table."""

    def __init__(self) -> None:
        self.attempts: Counter[bytes] = Counter()

    async def __call__(self, seen: Seen) -> web.StreamResponse:
        key = seen.key or b""
        self.attempts[key] += 1
        n = self.attempts[key]
        name = key.decode()
        if name == "ok":
            return web.Response(body=seen.body.upper(), content_type="text/plain")
        if name == "rekey":
            return web.Response(
                body=b"rekeyed",
                headers={"Kafka-Key": "new%00key", "Kafka-Header-x-trace": "a%20b", "Content-Type": "application/x"},
            )
        if name == "s204":
            return web.Response(status=204)
        if name == "empty200":
            return web.Response(status=200)
        if name == "drop":
            return web.Response(body=b"never published", headers={"Streamcar-Result": "drop"})
        if name == "force-dlq":
            return web.Response(body=b"no", headers={"Streamcar-Result": "dead-letter"})
        if name == "force-retry":
            if n == 1:
                return web.Response(body=b"not yet", headers={"Streamcar-Result": "retry"})
            return web.Response(body=b"second time lucky")
        if name.startswith("r"):  # r503: fail twice with that status, then succeed
            if n <= 2:
                return web.Response(status=int(name[1:]), text="busy")
            return web.Response(body=f"recovered {name}".encode())
        if name == "x503":
            return web.Response(status=503, text="always down")
        if name.startswith("p"):  # p400: permanent failure
            return web.Response(status=int(name[1:]), text="bad input")
        raise AssertionError(f"unexpected key {name}")


async def test_every_reply_row(
    kafka: KafkaHandle, topic_factory: TopicFactory, group_factory: Callable[[], str]
) -> None:
    source, out, dlq = topic_factory(3), topic_factory(3), topic_factory(1)
    group = group_factory()
    table = TableService()
    service = TestService(table).start()
    keys = ["ok", "rekey", "s204", "empty200", "drop", "force-dlq", "force-retry", "x503"]
    keys += [f"r{c}" for c in RETRY_CODES] + [f"p{c}" for c in PERMANENT_CODES]
    try:
        # most rows fail on purpose, all at once: the circuit breaker would rightly open and add probe calls to
        # the exact attempt counts checked here (test_circuit_breaker covers it)
        spec = pipeline(source, group, service.url, publish=out, dead_letter=dlq, circuit_breaker={"enabled": False})
        config = make_config(kafka.bootstrap, {"p": spec})
        async with running(config):
            produce_records(
                kafka,
                source,
                [(k.encode(), k.encode()) for k in keys],
                headers=[("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")],
            )
            expected_out = 3 + len(RETRY_CODES)  # ok, rekey, force-retry and each recovered retry code
            expected_dlq = 2 + len(PERMANENT_CODES)  # force-dlq, x503 and each permanent code
            replies = await asyncio.to_thread(read_topic, kafka, out, expect=expected_out)
            letters = await asyncio.to_thread(read_topic, kafka, dlq, expect=expected_dlq)
            await asyncio.to_thread(
                wait_for,
                lambda: committed_total(kafka, group) == len(keys),
                timeout=30,
                what="every input offset committed",
            )
    finally:
        service.stop()

    by_key = {m.key(): m for m in replies}
    assert len(replies) == expected_out, sorted(by_key)
    assert by_key[b"ok"].value() == b"OK"
    assert headers_of(by_key[b"ok"])["content-type"] == b"text/plain"
    # trace context travels to the published reply
    assert headers_of(by_key[b"ok"])["traceparent"].startswith(b"00-0af7651916cd43dd")
    rekeyed = by_key[b"new\x00key"]
    assert rekeyed.value() == b"rekeyed"
    assert headers_of(rekeyed)["x-trace"] == b"a b"
    assert headers_of(rekeyed)["content-type"] == b"application/x"
    assert by_key[b"force-retry"].value() == b"second time lucky"
    for code in RETRY_CODES:
        assert by_key[f"r{code}".encode()].value() == f"recovered r{code}".encode()
        assert table.attempts[f"r{code}".encode()] == 3
    for silent in (b"s204", b"empty200", b"drop"):
        assert silent not in by_key
        assert table.attempts[silent] == 1

    dead = {m.key(): headers_of(m) for m in letters}
    assert len(letters) == expected_dlq, sorted(dead)
    assert dead[b"force-dlq"]["streamcar-error-kind"] == b"rejected"
    assert dead[b"x503"]["streamcar-error-kind"] == b"exhausted"
    assert dead[b"x503"]["streamcar-attempts"] == b"3"
    assert b"HTTP 503" in dead[b"x503"]["streamcar-error"]
    assert table.attempts[b"x503"] == 3
    for code in PERMANENT_CODES:
        h = dead[f"p{code}".encode()]
        assert h["streamcar-error-kind"] == b"http-status"
        assert h["streamcar-attempts"] == b"1"
        assert h["streamcar-error"].startswith(f"HTTP {code}".encode())
        assert h["streamcar-source-topic"] == source.encode()
        assert int(h["streamcar-source-offset"]) >= 0
        assert h["traceparent"].startswith(b"00-")  # original headers kept
        assert table.attempts[f"p{code}".encode()] == 1
    letter = next(m for m in letters if m.key() == b"p400")
    assert letter.value() == b"p400"  # the original value


async def test_request_carries_kafka_metadata(
    kafka: KafkaHandle, topic_factory: TopicFactory, group_factory: Callable[[], str]
) -> None:
    source = topic_factory(1)
    service = TestService().start()
    try:
        config = make_config(kafka.bootstrap, {"p": pipeline(source, group_factory(), service.url)})
        async with running(config):
            produce_records(
                kafka,
                source,
                [(b"\x00k/y \xff", b'{"a": 1}'), (None, b"no key")],
                headers=[("content-type", b"application/json"), ("x id", b"v\n1"), ("empty", None)],
            )
            await asyncio.to_thread(wait_for, lambda: service.count() >= 2, timeout=30, what="2 requests")
    finally:
        service.stop()
    first, second = sorted(service.requests(), key=lambda s: s.offset)
    h = first.headers
    assert first.body == b'{"a": 1}'
    assert h["Content-Type"] == "application/json"
    assert h["Kafka-Topic"] == source
    assert h["Kafka-Partition"] == "0"
    assert h["Kafka-Offset"] == "0"
    assert abs(int(h["Kafka-Timestamp"]) - time.time() * 1000) < 120_000
    assert h["Kafka-Key"] == "%00k%2Fy%20%FF"
    assert h["Kafka-Header-x%20id"] == "v%0A1"
    assert h["Kafka-Header-empty"] == ""
    assert h["Idempotency-Key"] == f"{source}-0-0"
    assert "Kafka-Key" not in second.headers
    assert second.headers["Idempotency-Key"] == f"{source}-0-1"


async def test_retry_after_is_honoured_and_timeouts_retry(
    kafka: KafkaHandle, topic_factory: TopicFactory, group_factory: Callable[[], str]
) -> None:
    source, dlq = topic_factory(1), topic_factory(1)
    calls: Counter[bytes] = Counter()

    async def handler(seen: Seen) -> web.StreamResponse:
        key = seen.key or b""
        calls[key] += 1
        if key == b"slow":
            await asyncio.sleep(2)  # beyond the 300 ms call timeout, every time
            return web.Response(body=b"too late")
        if calls[key] == 1:
            return web.Response(status=429, headers={"Retry-After": "1"})
        return web.Response(status=204)

    service = TestService(handler).start()
    try:
        spec = pipeline(source, group_factory(), service.url, dead_letter=dlq, call={"timeout": "300ms"})
        async with running(make_config(kafka.bootstrap, {"p": spec})):
            produce_records(kafka, source, [(b"limited", b"x"), (b"slow", b"y")])
            letters = await asyncio.to_thread(read_topic, kafka, dlq, expect=1)
            await asyncio.to_thread(wait_for, lambda: calls[b"limited"] >= 2, timeout=30, what="the retry")
    finally:
        service.stop()
    limited = [s.at for s in service.requests() if s.key == b"limited"]
    assert limited[1] - limited[0] >= 0.95  # Retry-After: 1 beats the 20 ms backoff
    (letter,) = letters
    h = headers_of(letter)
    assert letter.key() == b"slow"
    assert h["streamcar-error-kind"] == b"exhausted"
    assert b"(timeout)" in h["streamcar-error"]
    assert h["streamcar-attempts"] == b"3"
    # its timeouts while nothing else was answered (limited's 429 is no answer) cost no attempt: the service may
    # be down; once limited is answered, the slow one's next three count
    assert calls[b"slow"] >= 3
