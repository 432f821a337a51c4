"""Any consumed record, whatever its bytes, becomes what each call mode sends, or a clear rejection; never an
exception out of the conversion. And anything a reply holds can be produced.

Hypothesis draws keys, values and header values of any bytes, and header names of any text (confluent-kafka
hands over names decoded as UTF-8; a name that is not UTF-8 makes the record unreadable, tested below with a
stand-in message). For each call mode the request is checked by decoding it back the way the service would.
"""

from __future__ import annotations

import re

import httptools
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamcar.call.envelope import decode_messages, encode_messages
from streamcar.call.grpc import BIN_SUFFIX, request_metadata, static_metadata
from streamcar.call.http import UnsendableHeader, request_headers, static_headers
from streamcar.call.http1 import Http1Pool
from streamcar.call.python import reply_from_result
from streamcar.event import Event, Reply, Result
from streamcar.kafka.records import UNREADABLE_HEADERS, incoming, producible, safe_bytes, safe_name
from streamcar.service import event_from_http

names = st.text(max_size=12)  # valid Unicode, as confluent-kafka decodes names
values = st.none() | st.binary(max_size=40)
special = st.sampled_from(["content-type", "traceparent", "tracestate", "Kafka-Key", "idempotency-key", "x"])
headers = st.lists(st.tuples(names | special, values), max_size=6).map(tuple)
events = st.builds(
    Event,
    topic=st.just("orders.v1"),
    partition=st.integers(0, 1000),
    offset=st.integers(0, 2**62),
    timestamp=st.integers(-1, 2**42),
    key=st.none() | st.binary(max_size=40),
    value=st.none() | st.binary(max_size=200),
    headers=headers,
)
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


class Stub:
    """What ``incoming`` reads of a consumed message; ``headers=None`` stands for names that are not UTF-8."""

    def __init__(self, event: Event, readable: bool = True) -> None:
        self._event, self._readable = event, readable

    def topic(self) -> str:
        return self._event.topic

    def partition(self) -> int:
        return self._event.partition

    def offset(self) -> int:
        return self._event.offset

    def timestamp(self) -> tuple[int, int]:
        return (1, self._event.timestamp)

    def key(self) -> bytes | None:
        return self._event.key

    def value(self) -> bytes | None:
        return self._event.value

    def headers(self) -> list[tuple[str, bytes | None]]:
        if not self._readable:
            raise SystemError("<method 'headers' of 'cimpl.Message' objects> returned a result with an exception set")
        return list(self._event.headers)


@settings(max_examples=300, deadline=None)
@given(event=events, readable=st.booleans())
def test_every_record_becomes_an_event_or_an_immediate_rejection(event: Event, readable: bool) -> None:
    converted, _, why = incoming(Stub(event, readable))  # type: ignore[arg-type]
    if readable:
        assert (converted, why) == (event, None)
    else:
        assert why == UNREADABLE_HEADERS
        assert (converted.key, converted.value, converted.headers) == (event.key, event.value, ())


def _parse_request(data: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    got: dict[str, object] = {"headers": [], "body": b""}

    class Sink:
        def on_header(self, name: bytes, value: bytes) -> None:
            got["headers"].append((name, value))  # type: ignore[attr-defined]

        def on_body(self, body: bytes) -> None:
            got["body"] += body  # type: ignore[operator]

    httptools.HttpRequestParser(Sink()).feed_data(data)
    return got["headers"], got["body"]  # type: ignore[return-value]


POOL = Http1Pool("http://service.local:8080/orders?x=1", limit=1, timeout=1, host_header="ünï.example")
STATIC = static_headers({"Authorization": "Bearer ✓ token", "X-Team": "orders"})


@settings(max_examples=300, deadline=None)
@given(event=events)
def test_single_http_delivery_sends_any_record_exactly_or_rejects_it(event: Event) -> None:
    try:
        sent = request_headers(event, STATIC)
    except UnsendableHeader:
        raw = [event.header(name) for name in ("content-type", "traceparent", "tracestate")]
        assert any(v is not None and _CONTROL.search(v) for v in raw)
        return
    data = b"".join(POOL.request_bytes(sent, event.value or b""))
    parsed, body = _parse_request(data)  # llhttp reads it as one request: nothing injected
    assert body == (event.value or b"")
    assert len(parsed) == len(sent) + 2  # Host and Content-Length besides ours
    assert (b"Authorization", "Bearer ✓ token".encode()) in parsed  # UTF-8 config values go out as UTF-8
    decoded = event_from_http({n.decode("latin-1"): v.decode("latin-1") for n, v in parsed}, body)
    assert decoded.key == event.key
    assert (decoded.topic, decoded.partition, decoded.offset) == (event.topic, event.partition, event.offset)
    if len({name for name, _ in event.headers}) == len(event.headers):  # one value per name survives as such
        assert sorted(decoded.headers, key=repr) == sorted(((n, v or b"") for n, v in event.headers), key=repr)
    content_type = event.header("content-type")
    if content_type is not None:  # passed through as the very bytes (around which whitespace does not count)
        assert dict(parsed)[b"Content-Type"] == content_type.lstrip(b" \t")  # llhttp drops leading OWS


@settings(max_examples=300, deadline=None)
@given(batch=st.lists(events, min_size=1, max_size=4))
def test_batch_delivery_carries_any_record_exactly(batch: list[Event]) -> None:
    assert decode_messages(encode_messages(batch)) == [
        Event(e.topic, e.partition, e.offset, e.timestamp, e.key, e.value, e.headers) for e in batch
    ]


_GRPC_KEY = re.compile(r"[0-9a-z_.-]+")


@settings(max_examples=300, deadline=None)
@given(event=events)
def test_grpc_metadata_of_any_record_is_valid_metadata(event: Event) -> None:
    for key, value in request_metadata(event, static_metadata({"x-team": "orders"})):
        assert _GRPC_KEY.fullmatch(key)
        assert not key.startswith("grpc-")
        if key.endswith(BIN_SUFFIX):
            assert isinstance(value, bytes)
        else:
            assert isinstance(value, str)
            assert re.fullmatch(r"[\x20-\x7e]*", value)
    if event.key is not None:
        assert ("kafka-key-bin", event.key) in request_metadata(event)


any_text = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=12)


@settings(max_examples=300, deadline=None)
@given(pairs=st.lists(st.tuples(any_text | st.binary(max_size=8), any_text | values), max_size=6))
def test_anything_a_reply_holds_can_be_produced(pairs: list[tuple[object, object]]) -> None:
    for name, value in producible(pairs):
        name.encode()  # what confluent-kafka does, strictly: it segfaulted on a lone surrogate
        assert "\x00" not in name
        assert value is None or isinstance(value, bytes)
    assert safe_name("\ud800bad") == "\\ud800bad"
    assert safe_bytes("\udcff") == b"\\udcff"


@pytest.mark.parametrize(
    ("reply", "value"),
    [
        (Reply.success("text"), b"text"),  # type: ignore[arg-type]
        (Reply.success(bytearray(b"raw")), b"raw"),  # type: ignore[arg-type]
        (Reply.success(b"v", headers=(("h", "\ud800"),)), b"v"),  # type: ignore[arg-type]
    ],
)
def test_a_python_handlers_reply_is_made_of_bytes(reply: Reply, value: bytes) -> None:
    checked = reply_from_result(reply)
    assert checked.result is Result.SUCCESS
    assert checked.value == value
    assert all(isinstance(v, bytes) for _, v in checked.headers)


@pytest.mark.parametrize(
    "reply",
    [
        Reply.success(42),  # type: ignore[arg-type]
        Reply.success(b"v", key=3.5),  # type: ignore[arg-type]
        Reply.success(b"v", headers=((1, b"x"),)),  # type: ignore[arg-type]
        Reply.success(b"v", headers=("not pairs",)),  # type: ignore[arg-type]
    ],
)
def test_a_python_reply_that_cannot_be_a_record_is_a_dead_letter(reply: Reply) -> None:
    checked = reply_from_result(reply)
    assert (checked.result, checked.error_kind) == (Result.DEAD_LETTER, "handler-result")
    assert "cannot be published" in (checked.error or "")
