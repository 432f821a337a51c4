"""Record fields across the boundary with confluent-kafka, both ways, for any bytes a topic or a service holds.

Reading: :func:`read_headers`. Kafka header names are bytes on the wire; confluent-kafka hands them over as
``str``, decoded strictly as UTF-8. For a name that does not decode, ``Message.headers()`` returns a list holding
a NULL where the name should be, with the decoding error still pending. Called through a generic C call,
CPython sees that and raises ``SystemError``; called from a warmed-up call site, CPython 3.11's specialised
call skips that check, and the NULL is dereferenced later (an error raised from the wrong place, or SIGSEGV).
The list is also cached on the message, so a second ``headers()`` returns it with no error at all. Hence: the
headers are read once per record, here, through ``operator.methodcaller`` (a generic call), and a record
whose headers cannot be read says so instead of raising.

Writing: :func:`producible`. confluent-kafka 2.16's ``produce`` encodes header names as UTF-8 and segfaults on a
name it cannot encode (a lone surrogate, e.g. ``"\\ud800"`` from a JSON reply), raises on such a key or value,
and cuts a name at a NUL byte. Every record is made safe just before ``produce``: such characters are written as
backslash escapes, and ``str`` keys and values become UTF-8 bytes.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from confluent_kafka import Message, TopicPartition

from streamcar.event import Event

Headers = tuple[tuple[str, bytes | None], ...]
TP = tuple[str, int]
"""A partition, ``(topic, partition)``, as the engine keys its bookkeeping (confluent-kafka's own
``TopicPartition`` objects stay inside the clients)."""


class CommitPoint(NamedTuple):
    """What a commit says of one partition: every record below ``offset`` is done, and so are the offsets
    ``metadata`` names above it (:mod:`streamcar.kafka.doneahead`; "" for none)."""

    offset: int
    metadata: str = ""


def commit_list(points: Mapping[TP, CommitPoint]) -> list[TopicPartition]:
    """``points`` as librdkafka's commit takes them (offset and metadata per partition)."""
    return [TopicPartition(t, p, o, metadata=m) for (t, p), (o, m) in points.items()]


RawHeaders = list[tuple[str, str | bytes | None]]
"""Headers as confluent-kafka's ``produce`` takes them."""

_headers = operator.methodcaller("headers")  # a generic call: see the module docstring

UNREADABLE_HEADERS = "a header name is not valid UTF-8: the record's headers cannot be read"


def raw_headers(msg: Message) -> RawHeaders | None:
    """A consumed record's headers as confluent-kafka gives them (a list, ready to produce again; None when it
    has none), or :data:`UNREADABLE` when a name is not valid UTF-8. Call it at most once per record."""
    try:
        return _headers(msg)  # type: ignore[no-any-return]  # a consumed record's are a list
    except (SystemError, UnicodeDecodeError):
        return UNREADABLE


UNREADABLE: RawHeaders = []
"""What :func:`raw_headers` returns for unreadable headers (compare with ``is``): none of them can be had."""


def read_headers(msg: Message) -> Headers | None:
    """A consumed record's headers, or None when a name is not valid UTF-8. Call it at most once per record."""
    try:
        raw = _headers(msg)
    except (SystemError, UnicodeDecodeError):
        return None
    if not raw:
        return ()
    pairs = raw.items() if isinstance(raw, dict) else raw
    return tuple((k, v if v is None or isinstance(v, bytes) else str(v).encode()) for k, v in pairs)


def safe_name(name: object) -> str:
    """A header name that confluent-kafka can produce, as close to ``name`` as possible."""
    if not isinstance(name, str):
        name = name.decode("utf-8", "backslashreplace") if isinstance(name, bytes) else str(name)
    if name.isascii():
        return name if "\x00" not in name else name.replace("\x00", "\\x00")
    try:
        name.encode()
    except UnicodeEncodeError:
        name = name.encode("utf-8", "backslashreplace").decode()
    return name.replace("\x00", "\\x00")


def safe_bytes(data: object) -> bytes | None:
    """A key, value or header value as bytes (or None)."""
    if data is None or type(data) is bytes:
        return data
    if isinstance(data, str):
        return data.encode("utf-8", "backslashreplace")
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    return str(data).encode("utf-8", "backslashreplace")


def producible(headers: Iterable[tuple[object, object]]) -> RawHeaders:
    """``headers`` as confluent-kafka can produce them (see the module docstring)."""
    safe: RawHeaders = []
    for name, value in headers:
        if type(name) is not str or not name.isascii() or "\x00" in name:
            name = safe_name(name)
        if value is not None and type(value) is not bytes:
            value = safe_bytes(value)
        safe.append((name, value))
    return safe


class Incoming(NamedTuple):
    """A consumed record as the engine takes it: its event, the broker's delivery count (a share group's; None in
    a consumer group), and why it cannot be called at all (None: it can)."""

    event: Event
    deliveries: int | None = None
    unusable: str | None = None


def incoming(msg: Message, *, shared: bool = False) -> Incoming:
    """A consumed record (one without an error) for the engine: a record whose headers cannot be read is
    dead-lettered at once with its key and value (see the module docstring). ``shared``: from a share group,
    which counts its deliveries."""
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    assert topic is not None
    assert partition is not None
    assert offset is not None
    _, timestamp = msg.timestamp()
    headers = read_headers(msg)
    if headers is None:
        headers, unusable = (), UNREADABLE_HEADERS
    else:
        unusable = None
    deliveries = msg.delivery_count() if shared else None
    return Incoming(Event(topic, partition, offset, timestamp, msg.key(), msg.value(), headers), deliveries, unusable)
