"""``streamcar dlq show`` and ``dlq redrive`` on the real broker: dead letters made by a real sidecar, listed and
filtered; redriven through Kafka transactions exactly once, across a --limit stop, a SIGKILL and a re-run.

What was redriven is always checked by reading the source topic with isolation.level=read_committed, as the
sidecar's own consumer does; nothing trusts the tool's summary alone.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer, TopicPartition

from deadletters import (
    ERROR_HEADERS,
    Record,
    dlq,
    end_offsets,
    headers_of,
    id_of,
    json_lines,
    letter,
    mixed_records,
    read_committed,
    sidecar_dead_letters,
    value_of,
)

from support import KafkaHandle, TopicFactory, committed, produce_records, wait_for

pytestmark = pytest.mark.integration


async def test_show_lists_the_dead_letters_of_a_real_sidecar_and_filters_them(
    kafka: KafkaHandle,
    topic_factory: TopicFactory,
    group_factory: Callable[[], str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    source, dead = topic_factory(2), topic_factory(1)
    before = time.time()
    positions = await sidecar_dead_letters(kafka, source, dead, group_factory(), mixed_records(), expect=10)
    b = kafka.bootstrap

    def show(*args: str) -> list[dict[str, Any]]:
        assert dlq("show", "--topic", dead, "--json", *args, bootstrap=b) == 0
        return json_lines(capsys.readouterr().out)

    everything = show()
    assert len(everything) == 10
    for found in everything:
        value = found["value"].encode()
        assert found["dead_letter"] is True
        assert (found["source_topic"], found["source_partition"], found["source_offset"]) == (source, *positions[value])
        assert found["key"] == "k" + found["value"].split("-")[1]
        assert found["headers"] == {"trace": "t-" + found["value"].split("-")[1]}
        if value.startswith(b"bad"):
            assert (found["kind"], found["attempts"]) == ("http-status", 1)
            assert found["error"] == "HTTP 422: invalid order"
        else:
            assert (found["kind"], found["attempts"]) == ("exhausted", 3)
            assert "HTTP 503: busy" in found["error"]
    assert [f["offset"] for f in everything] == list(range(10))

    assert {f["value"] for f in show("--kind", "exhausted")} == {f"down-{i}" for i in range(6, 10)}
    assert len(show("--kind", "http-status")) == 6
    assert show("--kind", "timeout") == []
    assert len(show("--source-topic", source)) == 10
    assert show("--source-topic", "some-other-topic") == []
    assert {f["value"] for f in show("--grep", "busy")} == {f"down-{i}" for i in range(6, 10)}
    assert len(show("--grep", "invalid order")) == 6
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(before - 1))
    assert len(show("--since", since)) == 10
    assert show("--since", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))) == []
    assert [f["offset"] for f in show("-n", "3")] == [0, 1, 2]
    exhausted = [f["value"] for f in everything if f["kind"] == "exhausted"]
    assert [f["value"] for f in show("--kind", "exhausted", "-n", "2")] == exhausted[:2]  # in the topic's order

    assert dlq("show", "--topic", dead, bootstrap=b) == 0
    table = capsys.readouterr().out
    for value, (p, o) in positions.items():
        assert (f"{source}[{p}]@{o}" in table) == (not value.startswith(b"ok"))
    assert "HTTP 422: invalid order" in table
    assert table.strip().splitlines()[-1] == f"10 dead letters in {dead}: exhausted 4, http-status 6"


async def test_redrive_of_real_dead_letters_dry_run_then_execute(
    kafka: KafkaHandle,
    topic_factory: TopicFactory,
    group_factory: Callable[[], str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    source, dead = topic_factory(2), topic_factory(1)
    positions = await sidecar_dead_letters(kafka, source, dead, group_factory(), mixed_records(), expect=10)
    ends = end_offsets(kafka, source)

    assert dlq("redrive", "--topic", dead, bootstrap=kafka.bootstrap) == 0
    out, err = capsys.readouterr()
    assert f"dry run: would redrive 10 dead letters of {dead} to: {source} 10" in out
    assert f"{dead}[0]@0 -> {source}" in out
    assert "... and 5 more" in out
    assert "add --execute" in err
    assert end_offsets(kafka, source) == ends  # nothing published
    assert committed(kafka, f"streamcar-redrive.{dead}") == {}

    assert dlq("redrive", "--topic", dead, "--execute", bootstrap=kafka.bootstrap) == 0
    out = capsys.readouterr().out
    assert f"redriven 10 dead letters of {dead} to: {source} 10" in out
    assert "started from the beginning, offsets [0] 0; now at [0] 10" in out
    redriven = [m for m in read_committed(kafka, source) if (m.partition(), m.offset()) not in positions.values()]
    assert sorted(value_of(m) for m in redriven) == sorted(v for v in positions if not v.startswith(b"ok"))
    for m in redriven:
        i = value_of(m).split(b"-")[1]
        assert m.key() == b"k" + i
        assert m.partition() == positions[value_of(m)][0]  # back to the partition it came from
        assert headers_of(m) == {"trace": b"t-" + i, "streamcar-redrive-count": b"1"}
    assert committed(kafka, f"streamcar-redrive.{dead}") == {(dead, 0): 10}

    assert dlq("redrive", "--topic", dead, "--execute", bootstrap=kafka.bootstrap) == 0  # nothing left
    assert f"redriven 0 dead letters of {dead}\nresumed from offsets [0] 10" in capsys.readouterr().out
    assert len(read_committed(kafka, source)) == 30


async def test_a_record_dead_lettered_again_after_a_redrive_counts_2(
    kafka: KafkaHandle, topic_factory: TopicFactory, group_factory: Callable[[], str]
) -> None:
    source, dead, group = topic_factory(1), topic_factory(1), group_factory()
    await sidecar_dead_letters(kafka, source, dead, group, [(b"k", b"bad-1", [])], expect=1)
    assert dlq("redrive", "--topic", dead, "--execute", bootstrap=kafka.bootstrap) == 0
    # the group resumes after the original: the redriven record is the one that fails again
    await sidecar_dead_letters(kafka, source, dead, group, [], expect=2)
    assert dlq("redrive", "--topic", dead, "--execute", bootstrap=kafka.bootstrap) == 0
    again = read_committed(kafka, source)
    assert len(again) == 3
    assert headers_of(again[-1]).get("streamcar-redrive-count") == b"2"


# --- crafted dead letters ----------------------------------------------------------------------------------------


def test_show_of_crafted_records_times_bytes_and_strangers(
    kafka: KafkaHandle, topic_factory: TopicFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    dead = topic_factory(1)
    produce_records(
        kafka,
        dead,
        [
            letter("orders", 0, 5, b"early", failed_at="2026-01-01T00:00:00.000+00:00"),
            letter("orders", 1, 7, b"\xff\xfe", key=None, failed_at="2026-06-01T12:00:00.000+00:00"),
            (b"stranger", b"not a dead letter", [("h", b"1")]),
            letter("orders", 2, 9, b"late", failed_at="not a time", extra=[("streamcar-redrive-count", b"2")]),
        ],
    )
    b = kafka.bootstrap
    assert dlq("show", "--topic", dead, "--json", bootstrap=b) == 0
    found = json_lines(capsys.readouterr().out)
    assert [f["dead_letter"] for f in found] == [True, True, False, True]
    assert found[1]["encoding"] == "base64"
    assert (found[1]["value"], found[1]["key"]) == ("//4=", None)
    assert found[1]["failed_at"] == "2026-06-01T12:00:00.000+00:00"
    assert (found[2]["source_topic"], found[2]["kind"], found[2]["value"]) == (None, None, "not a dead letter")
    assert (found[3]["failed_at"], found[3]["redrive_count"]) == (None, 2)

    assert dlq("show", "--topic", dead, "--json", "--since", "2026-03-01", bootstrap=b) == 0
    assert [f["source_offset"] for f in json_lines(capsys.readouterr().out)] == [7]
    assert dlq("show", "--topic", dead, "--json", "--since", "2026-01-01T01:00:00+01:00", bootstrap=b) == 0
    assert [f["source_offset"] for f in json_lines(capsys.readouterr().out)] == [5, 7]

    assert dlq("show", "--topic", dead, bootstrap=b) == 0
    table = capsys.readouterr().out
    assert "(not a streamcar dead letter)" in table
    assert "<null>" in table
    assert table.strip().splitlines()[-1] == (
        f"3 dead letters in {dead}: http-status 3; 1 record without streamcar headers (not dead letters)"
    )

    assert dlq("show", "--topic", dead, "--since", "yesterday", bootstrap=b) == 2
    assert capsys.readouterr().err.strip() == (
        "streamcar: --since: 'yesterday' is not a duration back from now (30m, 2h, 1d) or an ISO 8601 time"
        " (e.g. 2026-11-25T10:00:00Z)"
    )
    assert dlq("show", "--topic", "no-such-dlq-here", bootstrap=b) == 1
    assert capsys.readouterr().err.strip() == "streamcar: topic 'no-such-dlq-here' does not exist"


def test_redrive_keeps_other_headers_and_counts_redrives(
    kafka: KafkaHandle, topic_factory: TopicFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    source, dead = topic_factory(3), topic_factory(1)
    produce_records(
        kafka,
        dead,
        [
            letter(source, 2, 11, b"first", extra=[("x-custom", b"a"), ("x-custom", b"b")]),
            letter(source, 1, 12, b"second", extra=[("streamcar-redrive-count", b"1")]),  # dead-lettered twice
            letter(source, 9, 13, b"gone-partition", key=None, extra=[("streamcar-redrive-count", b"junk")]),
        ],
    )
    assert dlq("redrive", "--topic", dead, "--execute", bootstrap=kafka.bootstrap) == 0
    assert f"redriven 3 dead letters of {dead} to: {source} 3" in capsys.readouterr().out
    redriven = {value_of(m): m for m in read_committed(kafka, source)}
    assert set(redriven) == {b"first", b"second", b"gone-partition"}
    first = redriven[b"first"]
    assert first.headers() == [
        ("trace", b"t-1"),
        ("x-custom", b"a"),
        ("x-custom", b"b"),
        ("streamcar-redrive-count", b"1"),
    ]
    assert (first.key(), first.partition()) == (b"k", 2)
    assert headers_of(redriven[b"second"])["streamcar-redrive-count"] == b"2"
    assert redriven[b"second"].partition() == 1
    assert headers_of(redriven[b"gone-partition"])["streamcar-redrive-count"] == b"1"
    assert redriven[b"gone-partition"].key() is None
    assert not any(name in ERROR_HEADERS for m in redriven.values() for name in headers_of(m))


def test_a_redrive_stopped_by_limit_resumes_and_publishes_each_once_in_order(
    kafka: KafkaHandle, topic_factory: TopicFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    source, dead = topic_factory(3), topic_factory(2)
    n = 2_000
    for dlq_partition in (0, 1):
        crafted = [letter(source, i % 3, i, b"id-%d" % i) for i in range(n) if i % 2 == dlq_partition]
        produce_records(kafka, dead, crafted, partition=dlq_partition)
    b = kafka.bootstrap

    assert dlq("redrive", "--topic", dead, "--execute", "--limit", "700", bootstrap=b) == 0
    out = capsys.readouterr().out
    assert f"redriven 700 dead letters of {dead}" in out
    assert "1,300 left before the end offsets measured at start" in out
    assert len(read_committed(kafka, source)) == 700
    progress = committed(kafka, f"streamcar-redrive.{dead}")
    assert sum(progress.values()) == 700

    assert dlq("redrive", "--topic", dead, "--execute", bootstrap=b) == 0
    out = capsys.readouterr().out
    assert f"redriven 1,300 dead letters of {dead}" in out
    resumed = ", ".join(f"[{p}] {progress.get((dead, p), 0):,}" for p in (0, 1))
    assert f"resumed from offsets {resumed}; now at [0] 1,000, [1] 1,000" in out

    redriven = read_committed(kafka, source)
    ids = [id_of(m) for m in redriven]
    assert len(ids) == n
    assert sorted(ids) == list(range(n))  # each exactly once
    # within a source partition, the records of each dead-letter partition keep that partition's order
    order: dict[tuple[int, int], list[int]] = defaultdict(list)
    for m, i in zip(redriven, ids, strict=True):
        assert m.partition() == i % 3
        order[(i % 3, i % 2)].append(i)
    assert all(seq == sorted(seq) for seq in order.values())
    assert len(order) == 6


def test_a_killed_redrive_rerun_publishes_each_exactly_once(
    kafka: KafkaHandle, topic_factory: TopicFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, dead = topic_factory(3), topic_factory(2)
    n = 20_000
    for dlq_partition in (0, 1):
        crafted = [letter(source, i % 3, i, b"id-%d" % i) for i in range(n) if i % 2 == dlq_partition]
        produce_records(kafka, dead, crafted, partition=dlq_partition)
    log_file = tmp_path / "redrive.log"
    args = [sys.executable, "-m", "streamcar", "dlq", "redrive", "--topic", dead, "--execute", "-b", kafka.bootstrap]
    with log_file.open("wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        high = kafka.consumer("probe", **{"isolation.level": "read_uncommitted"})  # the high watermark
        stable = kafka.consumer("probe", **{"isolation.level": "read_committed"})  # the last stable offset
        marks = [TopicPartition(source, p) for p in range(3)]

        def between_transactions() -> bool:
            """A batch was committed, and records of the next one are in the log while its transaction is open."""
            ends = [
                (high.get_watermark_offsets(tp, timeout=5)[1], stable.get_watermark_offsets(tp, timeout=5)[1])
                for tp in marks
            ]
            return (any(s > 0 for _, s in ends) and any(h > s for h, s in ends)) or proc.poll() is not None

        wait_for(between_transactions, timeout=60, what="a redrive transaction after a committed one", interval=0.001)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL, log_file.read_text()  # still running when killed
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)

    assert dlq("redrive", "--topic", dead, "--execute", bootstrap=kafka.bootstrap) == 0
    out = capsys.readouterr().out
    assert "resumed from offsets" in out
    assert "now at [0] 10,000, [1] 10,000" in out
    redriven = int(out.split("redriven ", 1)[1].split(" ", 1)[0].replace(",", ""))
    assert 0 < redriven < n  # the killed run's committed batches were not redone

    ids = Counter(id_of(m) for m in read_committed(kafka, source))
    assert ids.most_common(1)[0][1] == 1  # no duplicates among committed records
    assert set(ids) == set(range(n))


def test_a_record_without_source_topic_is_skipped_once(
    kafka: KafkaHandle, topic_factory: TopicFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    source, dead = topic_factory(1), topic_factory(1)
    stranger: Record = (b"x", b"stranger", [("streamcar-error", b"who knows")])
    produce_records(kafka, dead, [letter(source, 0, 1, b"a"), stranger, letter(source, 0, 2, b"b")])
    b = kafka.bootstrap

    assert dlq("redrive", "--topic", dead, bootstrap=b) == 0  # the dry run warns too
    out, err = capsys.readouterr()
    assert f"warning: {dead}[0]@1 has no streamcar-source-topic header: skipped" in err
    assert "skipped 1 record without a streamcar-source-topic header (they would be passed over" in out

    assert dlq("redrive", "--topic", dead, "--execute", bootstrap=b) == 0
    out, err = capsys.readouterr()
    assert f"redriven 2 dead letters of {dead} to: {source} 2" in out
    assert "skipped 1 record without a streamcar-source-topic header (they were passed over in the committed" in out
    assert f"warning: {dead}[0]@1 has no streamcar-source-topic header: skipped" in err
    assert [m.value() for m in read_committed(kafka, source)] == [b"a", b"b"]

    assert dlq("redrive", "--topic", dead, "--execute", bootstrap=b) == 0
    out, err = capsys.readouterr()
    assert f"redriven 0 dead letters of {dead}" in out
    assert "skipped" not in out + err
    assert len(read_committed(kafka, source)) == 2


def test_a_missing_source_topic_stops_the_redrive_before_its_batch_is_published(
    kafka: KafkaHandle, topic_factory: TopicFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    source, dead = topic_factory(1), topic_factory(1)
    missing = f"no-such-source-{dead}"
    produce_records(kafka, dead, [letter(source, 0, 1, b"a"), letter(missing, 0, 2, b"b"), letter(source, 0, 3, b"c")])

    assert dlq("redrive", "--topic", dead, bootstrap=kafka.bootstrap) == 0
    err = capsys.readouterr().err
    assert f"warning: source topic {missing!r}: topic {missing!r} does not exist (first named by {dead}[0]@1)" in err

    assert dlq("redrive", "--topic", dead, "--execute", bootstrap=kafka.bootstrap) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        f"streamcar: cannot redrive {dead}[0]@1: topic {missing!r} does not exist; its batch was not published"
        " (0 redriven before it; a re-run starts from that batch)"
    )
    assert end_offsets(kafka, source) == {0: 0}
    assert committed(kafka, f"streamcar-redrive.{dead}") == {}
    assert missing not in kafka.admin().list_topics(timeout=10).topics  # not auto-created by the check


def test_a_dead_letter_topic_written_in_transactions_is_redriven_to_its_end(
    kafka: KafkaHandle, topic_factory: TopicFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 30: on a dead-letter topic an exactly-once pipeline writes, the last offset is a transaction marker
    no record reaches, so every run said "1 left ... run again": a script looping until nothing is left never
    ended."""
    source, dead = topic_factory(1), topic_factory(1)
    producer = Producer({"bootstrap.servers": kafka.bootstrap, "transactional.id": f"{dead}-writer"})
    producer.init_transactions(30)
    for batch in range(3):
        producer.begin_transaction()
        for i in range(10 * batch, 10 * batch + 10):
            key, value, headers = letter(source, 0, i, b"id-%d" % i)
            producer.produce(dead, value, key, headers=headers)
        producer.commit_transaction(30)
    b = kafka.bootstrap
    assert dlq("redrive", "--topic", dead, "--execute", bootstrap=b) == 0
    out = capsys.readouterr().out
    assert f"redriven 30 dead letters of {dead}" in out
    assert "left" not in out, out
    assert committed(kafka, f"streamcar-redrive.{dead}") == {(dead, 0): end_offsets(kafka, dead)[0]}
    assert dlq("redrive", "--topic", dead, "--execute", bootstrap=b) == 0
    out = capsys.readouterr().out
    assert "left" not in out, out
    assert "redriven 0" in out or "nothing" in out, out
    assert len(read_committed(kafka, source)) == 30
