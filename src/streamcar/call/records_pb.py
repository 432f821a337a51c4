"""gRPC fan-out: a response that is a ``streamcar.v1.Records`` message (``docs/records.proto``), read and written
by hand.

A gRPC method's response type is the service's, not ours: a method whose replies fan out is marked so in the
config (``call.fanout: true``), and then answers this message instead of the bytes to publish::

    message Records { repeated Record records = 1; }
    message Record {
      bytes value = 1;
      optional bytes key = 2;      // absent: the input's key
      string topic = 3;            // empty: publish.topic
      repeated Header headers = 4;
      bool null_key = 5;           // true: a null key
    }
    message Header { string name = 1; bytes value = 2; }

The protobuf wire format of these few fields is small enough to read here, without generated code or a
protobuf runtime in the sidecar.
"""

from __future__ import annotations

from streamcar import varint
from streamcar.event import KEEP_KEY, KeepKey, Record

_VARINT, _LEN = 0, 2


class RecordsError(ValueError):
    """The response is not a Records message."""


def decode(data: bytes) -> list[Record]:
    records = []
    for field, wire, value in _fields(data):
        if field == 1 and wire == _LEN:
            assert isinstance(value, bytes)
            records.append(_record(value))
    return records


def _record(data: bytes) -> Record:
    value = b""
    key: bytes | KeepKey | None = KEEP_KEY
    topic = ""
    headers: list[tuple[str, bytes | None]] = []
    null_key = False
    for field, wire, item in _fields(data):
        if wire == _LEN and isinstance(item, bytes):
            if field == 1:
                value = item
            elif field == 2:
                key = item
            elif field == 3:
                topic = _text(item, "topic")
            elif field == 4:
                headers.append(_header(item))
        elif wire == _VARINT and field == 5:
            null_key = bool(item)
    return Record(value, key=None if null_key else key, headers=tuple(headers), topic=topic or None)


def _header(data: bytes) -> tuple[str, bytes | None]:
    name, value = "", b""
    for field, wire, item in _fields(data):
        if wire == _LEN and isinstance(item, bytes):
            if field == 1:
                name = _text(item, "header name")
            elif field == 2:
                value = item
    return name, value


def _text(data: bytes, what: str) -> str:
    try:
        return data.decode()
    except UnicodeDecodeError as exc:
        raise RecordsError(f"a record's {what} is not UTF-8") from exc


def _fields(data: bytes) -> list[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of each field: varints as ints, length-delimited ones as bytes; other
    wire types are skipped, as protobuf does with fields it does not know."""
    found: list[tuple[int, int, int | bytes]] = []
    at = 0
    while at < len(data):
        tag, at = _varint(data, at)
        field, wire = tag >> 3, tag & 7
        if wire == _VARINT:
            number, at = _varint(data, at)
            found.append((field, wire, number))
        elif wire == _LEN:
            size, at = _varint(data, at)
            if at + size > len(data):
                raise RecordsError("a field runs past the end of the message")
            found.append((field, wire, data[at : at + size]))
            at += size
        elif wire == 1:  # 64-bit
            at += 8
        elif wire == 5:  # 32-bit
            at += 4
        else:
            raise RecordsError(f"wire type {wire} is not protobuf's")
    if at != len(data):
        raise RecordsError("the message ends inside a field")
    return found


def _varint(data: bytes, at: int) -> tuple[int, int]:
    try:
        return varint.get(data, at)
    except varint.Truncated:
        raise RecordsError("a varint runs past the end of the message") from None


def encode(records: list[Record]) -> bytes:
    """The Records message of ``records`` (what a service, or a test, answers)."""
    out = bytearray()
    for record in records:
        _put(out, 1, _encode_record(record))
    return bytes(out)


def _encode_record(record: Record) -> bytes:
    out = bytearray()
    _put(out, 1, record.value or b"")
    if record.key is None:
        out += bytes([5 << 3 | _VARINT, 1])
    elif not isinstance(record.key, KeepKey):
        _put(out, 2, record.key)
    if record.topic:
        _put(out, 3, record.topic.encode())
    for name, value in record.headers:
        header = bytearray()
        _put(header, 1, name.encode())
        _put(header, 2, value or b"")
        _put(out, 4, bytes(header))
    return bytes(out)


def _put(out: bytearray, field: int, value: bytes) -> None:
    varint.put(out, field << 3 | _LEN)
    varint.put(out, len(value))
    out += value
