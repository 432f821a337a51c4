"""Done-ahead offsets: what a commit says was already done above its offset, in the commit's metadata.

Kafka stores one committed offset per partition: every record below it is done. Records above it complete out
of order (other keys, retries), and a message waiting for its retry holds the offset back while thousands of
later ones complete. So each commit also carries the offsets done above it, in the offset commit's metadata
string, and whoever owns the partition next (the same sidecar restarted, or another member) skips them: a crash
redoes only what was in flight.

The metadata text is ``streamcar:1:<offset>:<encoding>:<base64>``. ``<offset>`` is the committed offset the set
is relative to (a set found beside another offset, e.g. after a reset by another tool, is ignored). Two
encodings of the same set, each optionally deflated, whichever is shortest:

* ``r`` (runs): varint pairs ``(gap, length)``, one per run of done offsets: the run starts ``gap`` offsets
  after the end of the previous one (after the committed offset, for the first) and is ``length`` long. Cheap
  for what a stuck message leaves behind (a few long runs); each run costs 2 to 6 bytes.
* ``b`` (bits): bit ``i`` (least significant first within a byte) says whether ``offset + 1 + i`` is done.
  Costs one byte per 8 offsets of span whatever the pattern: better than runs once runs are short and many
  (out-of-order completion under concurrency).

Suffix ``z``: the bytes were deflated (zlib) first, used when that is shorter.

The size bound (:func:`fits`) is what the engine keeps to: the encoding must fit the broker's
``offset.metadata.max.bytes`` (4,096 by default) for *any* pattern of completions that can still happen, so it
never has to leave information out. Runs number at most one per offset not yet done (each run follows one), and
the bits encoding is bounded by the span; a partition takes no new record that would break both bounds.

Offsets between done ones that are not in the log at all (compaction, transaction markers) may be encoded as
done: no record will ever be read at them.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Iterable, Sequence

from streamcar import varint

PREFIX = "streamcar:1:"
MAX_METADATA = 4096
"""The broker's ``offset.metadata.max.bytes`` by default: the longest metadata a commit may carry."""
_HEADER = len(PREFIX) + 20 + len(":rz:")  # the prefix, the longest offset, the encoding and its separators
_DEFLATE_FROM = 32  # bytes: shorter payloads are never worth deflating

Run = tuple[int, int]
"""First and last offset of a run of done offsets (inclusive)."""


class DoneAheadError(ValueError):
    """Metadata that is not a done-ahead set this version can read."""


def payload_budget(max_metadata: int = MAX_METADATA) -> int:
    """Bytes an encoding may take before base64, so that the whole text fits ``max_metadata`` characters."""
    return (max_metadata - _HEADER) // 4 * 3


def varint_len(value: int) -> int:
    return max(1, (value.bit_length() + 6) // 7)


def fits(span: int, pending: int, budget: int) -> bool:
    """Whether every set of done offsets within ``span`` offsets above the committed offset, with at most
    ``pending`` offsets not done among them, encodes within ``budget`` bytes, however they complete from here.

    Bits take ``ceil(span / 8)`` bytes. Runs number at most ``pending`` (each follows an offset that is not
    done: the committed offset itself is one), each two varints of at most ``span``.
    """
    return (span + 7) // 8 <= budget or 2 * pending * varint_len(span) <= budget


def runs_of(committed: int, pending: Iterable[int], last_done: int) -> list[Run]:
    """The runs of done offsets above ``committed`` up to ``last_done``, given every offset not done there, in
    increasing order (``pending``, starting with ``committed`` itself): what lies between two of them is done."""
    runs: list[Run] = []
    previous = committed
    for offset in pending:
        if offset > last_done:
            break
        if offset > previous + 1:
            runs.append((previous + 1, offset - 1))
        previous = offset
    if last_done > previous:
        runs.append((previous + 1, last_done))
    return runs


def encode(committed: int, runs: Sequence[Run]) -> str:
    """The metadata text for ``runs`` (increasing, disjoint, all above ``committed``); "" when there are none."""
    if not runs:
        return ""
    candidates = [("r", _runs_bytes(committed, runs)), ("b", _bits_bytes(committed, runs))]
    kind, data = min(candidates, key=lambda c: len(c[1]))
    if len(data) >= _DEFLATE_FROM:
        deflated = zlib.compress(data, 6)
        if len(deflated) < len(data):
            kind, data = kind + "z", deflated
    return f"{PREFIX}{committed}:{kind}:{base64.b64encode(data).decode('ascii')}"


def decode(metadata: str) -> tuple[int, list[Run]]:
    """The committed offset a metadata text is relative to, and its runs of done offsets; raises
    :class:`DoneAheadError` for text that is not a done-ahead set (a foreign tool's, a later version's, damaged)."""
    if not metadata.startswith(PREFIX):
        raise DoneAheadError("not written by streamcar (or by a later version)")
    try:
        offset_text, kind, text = metadata[len(PREFIX) :].split(":")
        committed = int(offset_text)
        data = base64.b64decode(text, validate=True)
        if kind.endswith("z"):
            data = zlib.decompressobj().decompress(data, 1 << 20)  # bounded: a bomb cannot blow the memory up
            kind = kind[:-1]
    except (ValueError, binascii.Error, zlib.error) as exc:
        raise DoneAheadError(f"damaged: {exc}") from None
    if committed < 0:
        raise DoneAheadError(f"damaged: negative offset {committed}")
    if kind == "r":
        return committed, _runs_from_bytes(committed, data)
    if kind == "b":
        return committed, _runs_from_bits(committed, data)
    raise DoneAheadError(f"unknown encoding {kind!r}")


def count(runs: Iterable[Run]) -> int:
    """Offsets in ``runs``."""
    return sum(last - first + 1 for first, last in runs)


def _runs_bytes(committed: int, runs: Sequence[Run]) -> bytes:
    out = bytearray()
    cursor = committed
    for first, last in runs:
        varint.put(out, first - cursor)
        varint.put(out, last - first + 1)
        cursor = last
    return bytes(out)


def _bits_bytes(committed: int, runs: Sequence[Run]) -> bytes:
    span = runs[-1][1] - committed
    bits = bytearray((span + 7) // 8)
    for first, last in runs:
        i, end = first - committed - 1, last - committed  # bit indices [i, end)
        while i < end and i % 8:
            bits[i >> 3] |= 1 << (i & 7)
            i += 1
        if end - i >= 8:
            whole = (end - i) // 8
            bits[i >> 3 : (i >> 3) + whole] = b"\xff" * whole
            i += whole * 8
        while i < end:
            bits[i >> 3] |= 1 << (i & 7)
            i += 1
    return bytes(bits)


def _runs_from_bytes(committed: int, data: bytes) -> list[Run]:
    runs: list[Run] = []
    cursor, pos = committed, 0
    while pos < len(data):
        gap, pos = _get_varint(data, pos)
        length, pos = _get_varint(data, pos)
        if gap < 1 or length < 1:
            raise DoneAheadError("damaged: an empty run or gap")
        first = cursor + gap
        runs.append((first, first + length - 1))
        cursor = first + length - 1
    return runs


def _runs_from_bits(committed: int, data: bytes) -> list[Run]:
    runs: list[Run] = []
    start: int | None = None
    for index, byte in enumerate(data):
        if byte in (0, 0xFF) and (start is None) == (byte == 0):
            continue  # a whole byte that goes on as the run (or the gap) before it
        for bit in range(8):
            offset = committed + 1 + index * 8 + bit
            if byte >> bit & 1:
                if start is None:
                    start = offset
            elif start is not None:
                runs.append((start, offset - 1))
                start = None
    if start is not None:
        runs.append((start, committed + len(data) * 8))
    return runs


def _get_varint(data: bytes, pos: int) -> tuple[int, int]:
    try:
        return varint.get(data, pos)
    except varint.Truncated:
        raise DoneAheadError("damaged: a truncated number") from None
