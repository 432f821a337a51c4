"""The small bounded pieces: a dead letter cut down to fit, the log throttle, the buffer's bounds, byte sizes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamcar.config import CallConfig, format_size, parse_size
from streamcar.engine.buffer import Buffer
from streamcar.engine.records import CUT_HEADER, MAX_ERROR_TEXT, OutRecord, cut_down, dead_letter_record
from streamcar.engine.work import Work
from streamcar.errors import ConfigError
from streamcar.event import Event
from streamcar.logs import Throttle, held_back


def letter(value: bytes, key: bytes | None, headers: tuple[tuple[str, bytes | None], ...]) -> OutRecord:
    event = Event("orders", 2, 7, 0, key, value, headers)
    return dead_letter_record(event, error="boom", kind="http-status", attempts=1)


def test_a_first_cut_replaces_what_is_over_a_kib_and_keeps_the_rest() -> None:
    record = letter(b"v" * 5000, b"k", (("big", b"b" * 2000), ("small", b"s"), ("none", None)))
    cut = cut_down(record, 1)
    headers = dict(cut.headers)
    assert cut.value == b"<cut by streamcar: 5000 bytes>"
    assert cut.key == b"k"
    assert headers["big"] == b"<cut by streamcar: 2000 bytes>"
    assert (headers["small"], headers["none"]) == (b"s", None)
    assert headers["streamcar-source-offset"] == b"7"
    assert headers[CUT_HEADER] == b"value 5000 bytes; header 'big' 2000 bytes"


def test_a_second_cut_keeps_only_the_streamcar_headers() -> None:
    record = letter(b"v", b"key", tuple((f"h{i}", b"x" * 10) for i in range(100)))
    cut = cut_down(record, 2)
    names = [name for name, _ in cut.headers]
    assert all(name.startswith("streamcar-") for name in names)
    assert cut.key == b"<cut by streamcar: 3 bytes>"
    assert b"and 82 more" in (dict(cut.headers)[CUT_HEADER] or b"")  # 102 things cut, 20 named


def test_the_error_text_of_a_dead_letter_is_bounded() -> None:
    event = Event("orders", 0, 1, 0, None, b"v")
    record = dead_letter_record(event, error="e" * 100_000, kind="http-status", attempts=1)
    assert len(dict(record.headers)["streamcar-error"] or b"") <= 4 * MAX_ERROR_TEXT


def test_the_throttle_lets_one_line_per_key_per_interval_and_counts_the_rest() -> None:
    now = [0.0]
    throttle = Throttle(10.0, clock=lambda: now[0])
    assert throttle.allow("a") == 0
    assert [throttle.allow("a") for _ in range(3)] == [None, None, None]
    assert throttle.allow("b") == 0  # another condition has its own line
    now[0] = 10.0
    assert throttle.allow("a") == 3
    assert held_back(3, 10.0) == " (and 3 more like it in the last 10s)"
    assert held_back(0, 10.0) == ""


def work(offset: int, size: int, key: bytes | None = None) -> Work:
    event = Event("t", 0, offset, 0, key, b"x" * size)
    return Work(event, ("t", 0), None if key is None else ("t", 0, key), 1)


def test_the_buffer_is_full_by_messages_or_by_bytes() -> None:
    buffer = Buffer(10, max_bytes=1000)
    assert buffer.max_messages == 2000
    for offset in range(4):
        buffer.submit(work(offset, 300))
    assert (len(buffer), buffer.bytes, buffer.full) == (4, 1200, True)
    taken = buffer.take(3)
    assert (len(taken), buffer.bytes, buffer.full, buffer.half) == (3, 300, False, True)
    assert [w.event.offset for w in buffer.drop_partition(("t", 0))] == [3]
    assert buffer.bytes == 0


@settings(max_examples=100, deadline=None)
@given(sizes=st.lists(st.integers(0, 500), max_size=40), takes=st.lists(st.integers(0, 5), max_size=20))
def test_the_buffer_counts_exactly_the_bytes_it_holds(sizes: list[int], takes: list[int]) -> None:
    buffer = Buffer(4, max_bytes=10_000)
    works = [work(i, size, key=b"k%d" % (i % 3)) for i, size in enumerate(sizes)]
    for item in works:
        buffer.submit(item)
    out: list[Work] = []
    for n in takes:
        taken = buffer.take(n)
        out += taken
        for item in taken:
            buffer.finish(item)
    held = sum(item.size for item in works if item not in out)
    assert buffer.bytes == held
    dropped = buffer.drop_partition(("t", 0))
    assert buffer.bytes == 0
    assert sum(item.size for item in dropped) == held


def test_sizes_parse_and_format() -> None:
    assert [parse_size(v) for v in ("16MiB", "512KiB", "1MB", "100B", "7", 42)] == [
        16 * 1024**2,
        512 * 1024,
        10**6,
        100,
        7,
        42,
    ]
    assert [format_size(n) for n in (16 * 1024**2, 1500, 2048)] == ["16MiB", "1500B", "2KiB"]
    for bad in ("16 MiBs", "-1", "1.5MiB", True):
        with pytest.raises(ValueError, match="size"):
            parse_size(bad)


def test_max_response_bytes_is_a_call_setting_with_a_floor() -> None:
    assert CallConfig.model_validate({"url": "http://x/"}).max_response_bytes == 16 * 1024**2
    assert CallConfig.model_validate({"url": "http://x/", "max_response_bytes": "1MiB"}).max_response_bytes == 2**20
    with pytest.raises((ConfigError, ValueError)):
        CallConfig.model_validate({"url": "http://x/", "max_response_bytes": 10})
