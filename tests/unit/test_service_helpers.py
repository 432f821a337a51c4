"""streamcar.service: the service's half of the HTTP protocol, round-tripped against the sidecar's half."""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any
from unittest import mock

import pytest
from aiohttp.streams import StreamReader
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from streamcar.call.envelope import decode_results, encode_messages
from streamcar.call.http import reply_from_response, request_headers, static_headers
from streamcar.event import KEEP_KEY, Event, Record, Reply, Result
from streamcar.service import (
    aiohttp_event,
    aiohttp_response,
    batch_reply,
    event_from_http,
    events_from_batch,
    http_reply,
    wsgi_event,
    wsgi_response,
)

ODD_HEADERS: tuple[tuple[str, bytes | None], ...] = (
    ("x-trace id", b"a b/c%d"),
    ("ünï:cödé", "wert ü".encode()),
    ("bin", b"\x00\xff\r\n"),
    ("dup", b"1"),
    ("dup", b"2"),
    ("empty", b""),
)


def sidecar_request(event: Event) -> CIMultiDict[str]:
    return CIMultiDict(request_headers(event, static_headers({"Authorization": "Bearer x"})))


@pytest.mark.parametrize("key", [b"order-1", b"\x00\xff/ %", b"", None])
@pytest.mark.parametrize("lowercase", [False, True])
def test_event_round_trips_through_the_sidecars_request_headers(key: bytes | None, lowercase: bool) -> None:
    event = Event("orders", 3, 42, 1_700_000_000_123, key, b'{"a":1}', ODD_HEADERS)
    headers = sidecar_request(event)
    if lowercase:  # what ASGI servers do to names
        headers = CIMultiDict((name.lower(), value) for name, value in headers.items())
    assert event_from_http(headers, b'{"a":1}') == event


def test_header_name_case_survives_when_the_framework_keeps_it() -> None:
    event = Event("t", 0, 1, 5, None, b"", (("X-Trace", b"1"),))
    assert event_from_http(sidecar_request(event), b"").headers == (("X-Trace", b"1"),)


def test_content_type_and_traceparent_come_through() -> None:
    headers = (("content-type", b"application/json"), ("traceparent", b"00-abc-def-01"), ("k", b"v"))
    event = Event("t", 0, 1, -1, b"k", b"{}", headers)
    assert event_from_http(sidecar_request(event), b"{}") == event
    # a request carrying them only as plain HTTP headers still yields them as record headers
    plain = {"Kafka-Topic": "t", "Kafka-Partition": "0", "Kafka-Offset": "1", "Content-Type": "text/csv"}
    plain["traceparent"] = "00-x-y-01"
    got = event_from_http(plain, b"a,b")
    assert got.headers == (("content-type", b"text/csv"), ("traceparent", b"00-x-y-01"))
    assert got.timestamp == -1
    assert got.key is None


def test_octet_stream_is_not_a_content_type_header() -> None:
    event = Event("t", 0, 1, 2, None, b"\x00", ())
    assert sidecar_request(event)["Content-Type"] == "application/octet-stream"
    assert event_from_http(sidecar_request(event), b"\x00").headers == ()


def test_a_null_header_value_comes_back_empty() -> None:
    event = Event("t", 0, 1, 2, None, b"", (("n", None),))
    assert event_from_http(sidecar_request(event), b"").headers == (("n", b""),)


@pytest.mark.parametrize("missing", ["Kafka-Topic", "Kafka-Partition", "Kafka-Offset"])
def test_missing_metadata_is_a_clear_error(missing: str) -> None:
    headers = {"Kafka-Topic": "t", "Kafka-Partition": "0", "Kafka-Offset": "1"}
    del headers[missing]
    with pytest.raises(ValueError, match=missing):
        event_from_http(headers, b"")


def test_malformed_numbers_are_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"Kafka-Offset.*integer"):
        event_from_http({"kafka-topic": "t", "kafka-partition": "0", "kafka-offset": "x"}, b"")


def sidecar_reads(reply: Reply) -> Reply:
    status, headers, body = http_reply(reply)
    return reply_from_response(status, CIMultiDict(headers), body)


@pytest.mark.parametrize("key", [KEEP_KEY, b"new-key", b"\x00\xff /%", b""])
def test_success_round_trips_through_the_sidecars_reply_mapping(key: Any) -> None:
    headers = (("x-y", b"1 2"), ("ünï code", b"\xff\x00"), ("Case", b"v"))
    sent = Reply.success(b"out", key=key, headers=headers, content_type="application/json")
    got = sidecar_reads(sent)
    assert got.result is Result.SUCCESS
    assert got.value == b"out"
    assert got.key == key
    assert got.headers == headers
    assert got.content_type == "application/json"


def test_a_fanned_out_success_round_trips_its_records() -> None:
    made = (Record(b"a", topic="review"), Record(b"b", key=b"k2", headers=(("x", b"1"),)), Record(b"\xff"))
    status, headers, _ = http_reply(Reply.records(made))
    assert (status, headers["Content-Type"]) == (200, "application/vnd.streamcar.records+json")
    assert sidecar_reads(Reply.records(made)).fanout == made
    assert sidecar_reads(Reply.records([])).fanout == ()


def test_a_routed_success_round_trips_its_topic() -> None:
    assert sidecar_reads(Reply.success(b"out", topic="orders-review")).topic == "orders-review"
    assert sidecar_reads(Reply.success(b"out")).topic is None


def test_success_without_content_type_is_octet_stream() -> None:
    status, headers, body = http_reply(Reply.success(b"\x01"))
    assert (status, headers, body) == (200, {"Content-Type": "application/octet-stream"}, b"\x01")


@pytest.mark.parametrize("value", [None, b""])
def test_success_without_value_is_204_and_publishes_nothing(value: bytes | None) -> None:
    assert http_reply(Reply.success(value)) == (204, {}, b"")
    got = sidecar_reads(Reply.success(value))
    assert got.result is Result.SUCCESS
    assert got.value is None


def test_a_null_key_cannot_be_said_over_single_message_http() -> None:
    with pytest.raises(ValueError, match="null key"):
        http_reply(Reply.success(b"v", key=None))


def test_repeated_reply_headers_do_not_fit_a_dict() -> None:
    with pytest.raises(ValueError, match="repeated"):
        http_reply(Reply.success(b"v", headers=(("a", b"1"), ("a", b"2"))))


def test_drop() -> None:
    assert http_reply(Reply.drop()) == (204, {"Streamcar-Result": "drop"}, b"")
    assert sidecar_reads(Reply.drop()).result is Result.DROP


def test_retry_rounds_retry_after_up() -> None:
    status, headers, body = http_reply(Reply.retry(after=2.5, error="db busy"))
    assert status == 503
    assert headers["Streamcar-Result"] == "retry"
    assert headers["Retry-After"] == "3"
    assert body == b"db busy"
    got = sidecar_reads(Reply.retry(after=2.5, error="db busy"))
    assert got.result is Result.RETRY
    assert got.retry_after == 3.0
    assert got.error is not None
    assert "db busy" in got.error
    assert "Retry-After" not in http_reply(Reply.retry())[1]


def test_dead_letter_carries_the_reason() -> None:
    status, headers, body = http_reply(Reply.dead_letter("amount must be positive"))
    assert (status, headers["Streamcar-Result"], body) == (422, "dead-letter", b"amount must be positive")
    got = sidecar_reads(Reply.dead_letter("amount must be positive"))
    assert got.result is Result.DEAD_LETTER
    assert got.error is not None
    assert got.error.startswith("HTTP 422: amount must be positive")


def test_batch_envelope_round_trips() -> None:
    events = [
        Event("t", 0, 1, 10, b"k", b'{"x":1}', (("a", b"1"), ("n", None))),
        Event("t", 0, 2, -1, None, None, ()),
        Event("t", 1, 3, 11, b"\xff", b"\x00\x01", (("dup", b"1"), ("dup", b"2"))),
    ]
    body = encode_messages(events)
    document = json.loads(body)
    assert [m["encoding"] for m in document["messages"]] == ["utf-8", "utf-8", "base64"]
    assert document["messages"][0]["headers"] == {"a": "1", "n": None}
    assert events_from_batch(body) == events


def test_events_from_batch_reads_the_documented_shape() -> None:
    body = json.dumps(
        {
            "messages": [
                {"topic": "t", "partition": 0, "offset": 5, "timestamp": 1, "key": "AP8=", "headers": {"h": "aGk="},
                 "value": "AAE=", "encoding": "base64"},
                {"topic": "t", "partition": 0, "offset": 6, "value": "plain"},
            ]
        }
    ).encode()  # fmt: skip
    first, second = events_from_batch(body)
    assert (first.key, first.value, first.headers) == (b"\x00\xff", b"\x00\x01", (("h", b"hi"),))
    assert (second.key, second.value, second.timestamp, second.headers) == (None, b"plain", -1, ())


@pytest.mark.parametrize(
    "body", [b"not json", b"[]", b'{"messages": [1]}', b'{"messages": [{"topic": "t"}]}',
             b'{"messages": [{"topic": "t", "partition": 0, "offset": 1, "encoding": "rot13"}]}'],
)  # fmt: skip
def test_events_from_batch_rejects_garbage(body: bytes) -> None:
    with pytest.raises(ValueError, match=r"batch body|messages\[0\]"):
        events_from_batch(body)


def test_batch_reply_round_trips() -> None:
    replies = [
        Reply.success(b'{"ok":1}', headers={"a": "1"}),
        Reply.success(b"\xff", key=b"k2"),
        Reply.success(b"v", key=None),
        Reply.drop(),
        Reply.retry(error="busy"),
        Reply.dead_letter("bad order"),
    ]
    document = json.loads(batch_reply(replies))
    results = document["results"]
    assert [r["status"] for r in results] == ["success", "success", "success", "drop", "retry", "dead-letter"]
    assert results[0] == {"status": "success", "value": '{"ok":1}', "encoding": "utf-8", "headers": {"a": "1"},
                          "error": None}  # fmt: skip
    assert results[1]["encoding"] == "base64"
    assert results[2]["key"] is None
    assert results[5]["error"] == "bad order"
    back = decode_results(batch_reply(replies), len(replies))
    assert [(r.result, r.value, r.key, r.headers) for r in back[:3]] == [
        (Result.SUCCESS, b'{"ok":1}', KEEP_KEY, (("a", b"1"),)),
        (Result.SUCCESS, b"\xff", b"k2", ()),
        (Result.SUCCESS, b"v", None, ()),
    ]
    assert [r.result for r in back[3:]] == [Result.DROP, Result.RETRY, Result.DEAD_LETTER]
    assert back[4].error == "busy"
    assert back[5].error == "bad order"


def test_batch_reply_puts_content_type_in_the_headers() -> None:
    (result,) = json.loads(batch_reply([Reply.success(b"{}", content_type="application/json")]))["results"]
    assert result["headers"] == {"content-type": "application/json"}


def test_wsgi_round_trip() -> None:
    event = Event("orders", 2, 7, 99, b"\x00k", b"body", (("x-trace-id", b"1 2"), ("content-type", b"text/csv")))
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "POST",
        "wsgi.input": io.BytesIO(b"body"),
        "CONTENT_LENGTH": "4",
    }
    for name, value in sidecar_request(event).items():  # what a WSGI server makes of the request
        if name == "Content-Type":
            environ["CONTENT_TYPE"] = value
        else:
            environ["HTTP_" + name.upper().replace("-", "_")] = value
    assert wsgi_event(environ) == event

    calls: list[tuple[str, list[tuple[str, str]]]] = []
    body = wsgi_response(Reply.success(b"out", key=b"k", headers={"h": b"\xff"}), lambda s, h: calls.append((s, h)))
    status, headers = calls[0]
    assert status == "200 OK"
    assert body == [b"out"]
    got = reply_from_response(int(status.split()[0]), CIMultiDict(headers), b"".join(body))
    assert (got.value, got.key, got.headers) == (b"out", b"k", (("h", b"\xff"),))

    calls.clear()
    assert wsgi_response(Reply.dead_letter("nope"), lambda s, h: calls.append((s, h))) == [b"nope"]
    assert calls[0][0].startswith("422 ")
    assert ("Streamcar-Result", "dead-letter") in calls[0][1]


async def test_aiohttp_round_trip() -> None:
    event = Event("orders", 1, 8, 100, b"\xffkey", b"payload", ODD_HEADERS)
    request = make_mocked_request("POST", "/orders", headers=sidecar_request(event), payload=_payload(b"payload"))
    assert await aiohttp_event(request) == event

    response = aiohttp_response(Reply.success(b"out", key=b"k", headers=(("d", b"1"), ("d", b"2"))))
    assert response.status == 200
    assert response.body == b"out"
    got = reply_from_response(response.status, CIMultiDict(response.headers), b"out")
    assert (got.value, got.key, got.headers) == (b"out", b"k", (("d", b"1"), ("d", b"2")))

    retry = aiohttp_response(Reply.retry(after=0.2))
    assert (retry.status, retry.headers["Streamcar-Result"], retry.headers["Retry-After"]) == (503, "retry", "1")
    assert aiohttp_response(Reply.drop()).status == 204


def _payload(data: bytes) -> StreamReader:
    reader = StreamReader(mock.Mock(_reading_paused=False), 2**16, loop=asyncio.get_running_loop())
    reader.feed_data(data)
    reader.feed_eof()
    return reader
