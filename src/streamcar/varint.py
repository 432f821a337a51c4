"""Unsigned LEB128 varints, as protobuf writes them: the done-ahead commit metadata and gRPC fan-out's Records
message both use them."""

from __future__ import annotations


class Truncated(ValueError):
    """The data ends inside a varint (or it runs past 64 bits)."""


def put(out: bytearray, value: int) -> None:
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)


def get(data: bytes, pos: int) -> tuple[int, int]:
    """The varint at ``pos`` and the position after it; :class:`Truncated` when it does not end in ``data``."""
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise Truncated("a truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
