"""Batch delivery's wire format: the envelope codec and how a batch reply maps to one reply per message."""

from __future__ import annotations

import json
import re

import pytest
from multidict import CIMultiDict

from streamcar.call.envelope import (
    EnvelopeError,
    TooManyRecords,
    decode_messages,
    decode_records,
    decode_results,
    encode_messages,
    encode_records,
    encode_results,
)
from streamcar.call.http import replies_from_batch_response
from streamcar.event import KEEP_KEY, MAX_FANOUT, Event, Record, Reply, Result

EVENTS = [
    Event("orders", 0, 7, 1700000000000, b"k1", b'{"n":1}', (("content-type", b"application/json"),)),
    Event("orders", 2, 9, -1, None, None, ()),
    Event("orders", 1, 3, 11, b"\xff\x00", b"\x00\x01", (("dup", b"1"), ("dup", None))),
]


def test_messages_follow_the_documented_shape() -> None:
    document = json.loads(encode_messages(EVENTS))
    first, second, third = document["messages"]
    assert first == {
        "topic": "orders",
        "partition": 0,
        "offset": 7,
        "timestamp": 1700000000000,
        "key": "k1",
        "headers": {"content-type": "application/json"},
        "value": '{"n":1}',
        "encoding": "utf-8",
    }
    assert (second["key"], second["value"], second["headers"]) == (None, None, {})
    assert third["encoding"] == "base64"  # one binary field makes the whole entry base64
    assert third["key"] == "/wA="
    assert third["headers"] == [["dup", "MQ=="], ["dup", None]]  # repeated names travel as pairs
    assert decode_messages(encode_messages(EVENTS)) == EVENTS


def test_results_round_trip_every_kind() -> None:
    replies = [
        Reply.success(b"out", headers={"h": b"\xfe"}),
        Reply.success(b"rekeyed", key=b"new"),
        Reply.success(b"unkeyed", key=None, topic="orders-review"),
        Reply.success(None),
        Reply.drop(),
        Reply.retry(after=2.5, error="busy"),
        Reply.dead_letter("bad order"),
    ]
    back = decode_results(encode_results(replies), len(replies))
    assert [r.result for r in back] == [r.result for r in replies]
    assert (back[0].value, back[0].key, back[0].headers) == (b"out", KEEP_KEY, (("h", b"\xfe"),))
    assert (back[1].key, back[2].key) == (b"new", None)
    assert (back[1].topic, back[2].topic) == (None, "orders-review")
    assert back[3].value is None
    assert (back[5].retry_after, back[5].error) == (2.5, "busy")
    assert (back[6].error, back[6].error_kind) == ("bad order", "rejected")


def test_records_round_trip_in_a_batch_result_and_a_single_reply() -> None:
    made = [Record(b"a"), Record(b"\xfe", key=None, headers=(("h", b"v"),), topic="review"), Record(None, key=b"k")]
    [back] = decode_results(encode_results([Reply.records(made)]), 1)
    assert back.fanout == tuple(made)
    assert decode_records(json.dumps({"records": encode_records(made)}).encode()) == made
    assert Reply.records([]).fanout == ()


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"[]", 'not an object with a "records" list'),
        (b'{"records": {}}', '"records" must be a list'),
        (b'{"records": [1]}', "records[0] is not an object"),
        (b'{"records": [{"value": "x", "topic": 3}]}', "records[0].topic must be a string"),
        (b'{"records": [{"value": "%%", "encoding": "base64"}]}', "bad base64"),
    ],
)
def test_a_malformed_records_reply_is_an_envelope_error(body: bytes, problem: str) -> None:
    with pytest.raises(EnvelopeError, match=re.escape(problem)):
        decode_records(body)


def test_a_malformed_result_retries_only_its_message() -> None:
    body = json.dumps(
        {
            "results": [
                {"status": "success", "value": "a"},
                {"status": "maybe"},
                {"status": "success", "value": "!!", "encoding": "base64"},
                "nonsense",
                {"status": "retry", "retry_after": -1},
                {"status": "dead_letter"},
            ]
        }
    ).encode()
    replies = decode_results(body, 6)
    assert [r.result for r in replies] == [Result.SUCCESS] + [Result.RETRY] * 4 + [Result.DEAD_LETTER]
    assert {r.error_kind for r in replies[1:5]} == {"bad-reply"}
    assert "unknown status 'maybe'" in (replies[1].error or "")
    assert replies[5].error == "the service dead-lettered it"


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"<html>", "not JSON"),
        (b'{"result": []}', '"results" list'),
        (b'{"results": [{"status": "drop"}]}', "1 results for 2 messages"),
    ],
)
def test_an_unusable_reply_is_an_envelope_error(body: bytes, problem: str) -> None:
    with pytest.raises(EnvelopeError, match=problem):
        decode_results(body, 2)


def batch(status: int, body: bytes = b"", count: int = 3, **headers: str) -> list[Reply]:
    return replies_from_batch_response(
        status, CIMultiDict({k.replace("_", "-"): v for k, v in headers.items()}), body, count
    )


def test_a_2xx_batch_reply_is_read_result_by_result() -> None:
    body = encode_results([Reply.success(b"a"), Reply.drop(), Reply.dead_letter("no")])
    assert [r.result for r in batch(200, body)] == [Result.SUCCESS, Result.DROP, Result.DEAD_LETTER]
    assert [r.result for r in batch(204)] == [Result.SUCCESS] * 3
    assert all(r.value is None for r in batch(204))


@pytest.mark.parametrize("status", [400, 404, 413, 422, 500, 501, 503])
def test_a_non_2xx_batch_reply_retries_every_message(status: int) -> None:
    replies = batch(status, b"down for maintenance", Retry_After="7")
    assert [r.result for r in replies] == [Result.RETRY] * 3
    assert replies[0].retry_after == 7
    assert replies[0].error == f"HTTP {status} for a batch of 3: down for maintenance"
    assert replies[0].error_kind == "http-status"


@pytest.mark.parametrize(
    ("override", "expected"), [("drop", Result.DROP), ("retry", Result.RETRY), ("dead-letter", Result.DEAD_LETTER)]
)
def test_streamcar_result_applies_to_the_whole_batch(override: str, expected: Result) -> None:
    assert [r.result for r in batch(200, b"{}", Streamcar_Result=override)] == [expected] * 3


def test_a_2xx_reply_that_is_not_the_envelope_retries_the_batch() -> None:
    replies = batch(200, b'{"results": []}')
    assert [r.result for r in replies] == [Result.RETRY] * 3
    assert replies[0].error_kind == "bad-reply"
    assert "0 results for 3 messages" in (replies[0].error or "")


def test_a_records_reply_over_the_cap_is_refused_before_its_records_are_decoded() -> None:
    body = json.dumps({"records": [{"value": "x"}] * (MAX_FANOUT + 1)}).encode()
    with pytest.raises(TooManyRecords, match="10,001 records, over the 10,000"):
        decode_records(body)
    assert len(decode_records(json.dumps({"records": [{"value": "x"}] * MAX_FANOUT}).encode())) == MAX_FANOUT
