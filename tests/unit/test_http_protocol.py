"""The HTTP protocol's pure parts: request headers out, reply mapping in (docs/http.md's table)."""

from __future__ import annotations

import email.utils
import time

import pytest
from multidict import CIMultiDict

from streamcar.call.http import (
    HttpCaller,
    parse_retry_after,
    replies_from_batch_response,
    reply_from_response,
    request_headers,
    static_headers,
)
from streamcar.config import CallConfig
from streamcar.event import KEEP_KEY, Event, Result


def reply(status: int, body: bytes = b"", **headers: str) -> object:
    return reply_from_response(status, CIMultiDict({k.replace("_", "-"): v for k, v in headers.items()}), body)


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504, 505, 599])
def test_transient_statuses_retry(status: int) -> None:
    r = reply(status, b"busy")
    assert r.result is Result.RETRY  # type: ignore[attr-defined]
    assert r.error_kind == "http-status"  # type: ignore[attr-defined]
    assert r.error == f"HTTP {status}: busy"  # type: ignore[attr-defined]


@pytest.mark.parametrize("status", [300, 301, 400, 401, 403, 404, 409, 413, 422, 501])
def test_other_statuses_dead_letter_at_once(status: int) -> None:
    r = reply(status)
    assert r.result is Result.DEAD_LETTER  # type: ignore[attr-defined]
    assert r.error_kind == "http-status"  # type: ignore[attr-defined]


@pytest.mark.parametrize("status", [401, 403, 404, 405, 415])
def test_refusals_a_wrong_setup_gets_name_the_request(status: int) -> None:
    r = reply_from_response(status, CIMultiDict(), b"nope", request="POST /typo")
    assert r.result is Result.DEAD_LETTER
    assert r.refusal == f"HTTP {status} on POST /typo"


@pytest.mark.parametrize("status", [400, 409, 413, 422, 501, 503])
def test_other_failures_are_no_refusal(status: int) -> None:
    assert reply_from_response(status, CIMultiDict(), b"", request="POST /x").refusal is None


def test_call_status_maps_codes_and_the_service_header_still_wins() -> None:
    statuses = {404: Result.DROP, 409: Result.SUCCESS, 422: Result.RETRY, 200: Result.DEAD_LETTER}
    assert reply_from_response(404, CIMultiDict(), b"", statuses=statuses).result is Result.DROP
    conflict = reply_from_response(409, CIMultiDict(), b"same", statuses=statuses)
    assert (conflict.result, conflict.value) == (Result.SUCCESS, b"same")
    retried = reply_from_response(422, CIMultiDict({"Retry-After": "3"}), b"later", statuses=statuses)
    assert (retried.result, retried.retry_after, retried.error) == (
        Result.RETRY,
        3.0,
        "HTTP 422: later (call.status: retry)",
    )
    assert reply_from_response(200, CIMultiDict(), b"x", statuses=statuses).result is Result.DEAD_LETTER
    assert reply_from_response(404, CIMultiDict(), b"", statuses=statuses).refusal is None  # mapped: not a refusal
    asked = reply_from_response(404, CIMultiDict({"Streamcar-Result": "retry"}), b"", statuses=statuses)
    assert asked.result is Result.RETRY


def test_a_batch_refused_is_retried_and_marked_and_call_status_applies_to_each_message() -> None:
    refused = replies_from_batch_response(404, CIMultiDict(), b"", 3, request="POST /typo")
    assert [r.result for r in refused] == [Result.RETRY] * 3
    assert {r.refusal for r in refused} == {"HTTP 404 on POST /typo"}
    dropped = replies_from_batch_response(404, CIMultiDict(), b"", 2, statuses={404: Result.DROP})
    assert [r.result for r in dropped] == [Result.DROP] * 2


def test_success_with_body_keeps_key_unless_the_reply_sets_one() -> None:
    plain = reply(200, b"out")
    assert plain.result is Result.SUCCESS  # type: ignore[attr-defined]
    assert plain.key is KEEP_KEY  # type: ignore[attr-defined]
    rekeyed = reply(201, b"out", Kafka_Key="a%2Fb%00", Kafka_Header_x_y="1%202", Content_Type="text/csv")
    assert rekeyed.key == b"a/b\x00"  # type: ignore[attr-defined]
    assert rekeyed.headers == (("x-y", b"1 2"),)  # type: ignore[attr-defined]
    assert rekeyed.content_type == "text/csv"  # type: ignore[attr-defined]


def test_a_kafka_topic_reply_header_routes_the_reply() -> None:
    assert reply(200, b"out", Kafka_Topic="orders-review").topic == "orders-review"  # type: ignore[attr-defined]
    assert reply(200, b"out").topic is None  # type: ignore[attr-defined]


def test_success_without_body_publishes_nothing() -> None:
    assert reply(204).value is None  # type: ignore[attr-defined]
    assert reply(200).value is None  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("status", "override", "expected"),
    [
        (200, "drop", Result.DROP),
        (503, "drop", Result.DROP),
        (200, "retry", Result.RETRY),
        (400, "retry", Result.RETRY),
        (200, "dead-letter", Result.DEAD_LETTER),
        (500, "Dead-Letter", Result.DEAD_LETTER),
    ],
)
def test_streamcar_result_overrides_the_status(status: int, override: str, expected: Result) -> None:
    assert reply(status, b"x", Streamcar_Result=override).result is expected  # type: ignore[attr-defined]


def test_retry_after_seconds_and_dates() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    parsed = parse_retry_after(later)
    assert parsed is not None
    assert 25 <= parsed <= 31
    assert reply(429, Retry_After="3").retry_after == 3.0  # type: ignore[attr-defined]


def test_request_headers_encode_metadata() -> None:
    event = Event(
        "orders",
        2,
        41,
        1700000000000,
        b"k\xff y",
        b"v",
        (("content-type", b"application/json"), ("traceparent", b"00-a-b-01"), ("a b", b"\x00"), ("n", None)),
    )
    h = CIMultiDict(request_headers(event, static_headers({"Authorization": "Bearer t"})))
    assert h["Authorization"] == "Bearer t"
    assert h["Content-Type"] == "application/json"
    assert (h["Kafka-Topic"], h["Kafka-Partition"], h["Kafka-Offset"]) == ("orders", "2", "41")
    assert h["Kafka-Timestamp"] == "1700000000000"
    assert h["Kafka-Key"] == "k%FF%20y"
    assert h["Kafka-Header-a%20b"] == "%00"
    assert h["Kafka-Header-n"] == ""
    assert h["Idempotency-Key"] == "orders-2-41"
    assert h["traceparent"] == "00-a-b-01"


def test_request_without_key_or_content_type() -> None:
    h = CIMultiDict(request_headers(Event("t", 0, 0, -1, None, None), []))
    assert "Kafka-Key" not in h
    assert h["Content-Type"] == "application/octet-stream"


async def test_a_record_header_with_control_characters_is_dead_lettered_without_a_call() -> None:
    caller = HttpCaller(CallConfig.model_validate({"url": "http://127.0.0.1:9/x"}), max_connections=1)
    await caller.start()
    try:
        event = Event("t", 0, 1, 0, b"k", b"v", (("content-type", b"text/plain\r\nX-Injected: yes"),))
        [reply] = await caller.call([event])  # port 9 listens to nothing: a call would come back a retry
    finally:
        await caller.close()
    assert reply.result is Result.DEAD_LETTER
    assert reply.error_kind == "rejected"
    assert reply.error == "record header 'content-type' holds control characters: it cannot be an HTTP header"


def test_call_headers_give_way_to_what_each_request_sets() -> None:
    configured = {"Content-Type": "text/x", "kafka-offset": "1", "Idempotency-Key": "k", "X-Team": "a"}
    assert static_headers(configured) == [("X-Team", "a")]
    event = Event("t", 0, 5, 0, None, b"v", (("traceparent", b"00-rec-01"),))
    headers = request_headers(event, [("traceparent", "00-static-01"), ("X-Team", "a")])
    assert [value for name, value in headers if name == "traceparent"] == ["00-rec-01"]
    assert ("X-Team", "a") in headers
