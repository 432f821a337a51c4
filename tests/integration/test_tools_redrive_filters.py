"""``dlq redrive`` with filters on the real broker: poison records stay behind while the others go around again.

Each filter keeps its own progress; a run never redrives a dead letter another run redrove, so filtered runs
then an unfiltered one publish every dead letter exactly once. What was redriven is always checked by reading the
source topic (read_committed), never from the tool's summary alone.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import TopicPartition

from deadletters import Record, dlq, json_lines, letter, mixed_records, read_committed, sidecar_dead_letters, value_of

from support import KafkaHandle, TopicFactory, committed, produce_records

pytestmark = pytest.mark.integration


def redriven_values(kafka: KafkaHandle, source: str, originals: int) -> list[bytes]:
    """The values of the source topic's records after its first ``originals`` (the redriven ones), in order."""
    found = read_committed(kafka, source)
    return [value_of(m) for m in found[originals:]] if len(found) > originals else []


def progress_groups(kafka: KafkaHandle, dead: str) -> set[str]:
    admin = kafka.admin()  # referenced until the future resolves
    listed = admin.list_consumer_groups(request_timeout=30).result(timeout=30)
    return {g.group_id for g in listed.valid if g.group_id.startswith(f"streamcar-redrive.{dead}")}


async def test_redrive_one_kind_leaves_the_rest_then_an_unfiltered_run_does_the_rest_without_duplicates(
    kafka: KafkaHandle,
    topic_factory: TopicFactory,
    group_factory: Callable[[], str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    source, dead = topic_factory(1), topic_factory(1)
    # a real sidecar dead-letters 6 records at once (HTTP 422: http-status) and 4 after its retries (exhausted)
    await sidecar_dead_letters(kafka, source, dead, group_factory(), mixed_records(), expect=10)
    exhausted = {b"down-%d" % i for i in range(6, 10)}
    poison = {b"bad-%d" % i for i in range(6)}
    b = kafka.bootstrap
    originals = 20

    assert dlq("redrive", "--topic", dead, "--kind", "exhausted", bootstrap=b) == 0
    out = capsys.readouterr().out
    assert f"dry run: would redrive 4 dead letters of {dead} to: {source} 4" in out
    assert "would pass over 6 records the filter does not take (http-status 6): they stay for other runs" in out
    assert f"filter: --kind exhausted; progress: consumer group streamcar-redrive.{dead}:" in out
    assert redriven_values(kafka, source, originals) == []

    assert dlq("redrive", "--topic", dead, "--kind", "exhausted", "--execute", bootstrap=b) == 0
    out = capsys.readouterr().out
    assert f"redriven 4 dead letters of {dead} to: {source} 4" in out
    assert "passed over 6 records the filter does not take (http-status 6)" in out
    assert set(redriven_values(kafka, source, originals)) == exhausted  # exactly those, once each
    assert len(redriven_values(kafka, source, originals)) == 4
    (filtered,) = progress_groups(kafka, dead) - {f"streamcar-redrive.{dead}"}
    assert committed(kafka, filtered) == {(dead, 0): 10}
    assert committed(kafka, f"streamcar-redrive.{dead}") == {}  # the unfiltered progress is untouched

    assert dlq("redrive", "--topic", dead, "--kind", "exhausted", "--execute", bootstrap=b) == 0  # the same again
    out = capsys.readouterr().out
    assert f"redriven 0 dead letters of {dead}\nresumed from offsets [0] 10" in out
    assert len(redriven_values(kafka, source, originals)) == 4

    assert dlq("redrive", "--topic", dead, bootstrap=b) == 0  # unfiltered: the passed-over ones are still there
    out = capsys.readouterr().out
    assert f"dry run: would redrive 6 dead letters of {dead} to: {source} 6" in out
    assert f"4 matching dead letters left alone: redriven already by {filtered} (--kind exhausted) 4" in out

    assert dlq("redrive", "--topic", dead, "--execute", bootstrap=b) == 0
    out = capsys.readouterr().out
    assert f"redriven 6 dead letters of {dead} to: {source} 6" in out
    assert f"progress: consumer group streamcar-redrive.{dead}" in out
    again = Counter(redriven_values(kafka, source, originals))
    assert set(again) == exhausted | poison
    assert set(again.values()) == {1}  # every dead letter redriven exactly once across the three runs
    assert committed(kafka, f"streamcar-redrive.{dead}") == {(dead, 0): 10}

    assert dlq("redrive", "--topic", dead, "--execute", bootstrap=b) == 0
    assert f"redriven 0 dead letters of {dead}" in capsys.readouterr().out
    assert dlq("redrive", "--topic", dead, "--kind", "http-status", "--execute", bootstrap=b) == 0
    assert f"redriven 0 dead letters of {dead}" in capsys.readouterr().out  # starts at the unfiltered progress
    assert len(redriven_values(kafka, source, originals)) == 10


def test_filters_by_key_time_text_and_source_each_redrive_only_what_no_run_redrove(
    kafka: KafkaHandle, topic_factory: TopicFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    source, other, dead = topic_factory(1), topic_factory(1), topic_factory(2)
    now = datetime.now(UTC)

    def ago(delta: timedelta) -> str:
        return (now - delta).isoformat(timespec="milliseconds")

    crafted: list[Record] = [
        letter(
            source, 0, 1, b"a", key=b"k1", kind="exhausted", error="HTTP 503: busy", failed_at=ago(timedelta(hours=2))
        ),
        letter(
            source,
            0,
            2,
            b"b",
            key=b"k2",
            kind="http-status",
            error="HTTP 422: bad",
            failed_at=ago(timedelta(minutes=20)),
        ),
        letter(source, 0, 3, b"c", key=b"k2", kind="exhausted", error="timeout", failed_at=ago(timedelta(minutes=5))),
        (b"x", b"stranger", [("h", b"1")]),
        letter(other, 0, 4, b"d", key=b"k1", kind="timeout", error="deadline", failed_at=ago(timedelta(minutes=1))),
    ]
    produce_records(kafka, dead, crafted[:3], partition=0)
    produce_records(kafka, dead, crafted[3:], partition=1)
    b = kafka.bootstrap

    def run(*args: str) -> str:
        assert dlq("redrive", "--topic", dead, *args, "--execute", bootstrap=b) == 0
        return capsys.readouterr().out

    def published(topic: str) -> list[bytes]:
        return sorted(value_of(m) for m in read_committed(kafka, topic))

    assert dlq("show", "--topic", dead, "--json", "--key", "k2", bootstrap=b) == 0
    assert [f["value"] for f in json_lines(capsys.readouterr().out)] == ["b", "c"]
    assert dlq("show", "--topic", dead, "--json", "--since", "30m", bootstrap=b) == 0
    assert sorted(f["value"] for f in json_lines(capsys.readouterr().out)) == ["b", "c", "d"]

    out = run("--key", "k2")
    assert "redriven 2 dead letters" in out
    assert "passed over 3 records the filter does not take (not dead letters 1, exhausted 1, timeout 1)" in out
    assert published(source) == [b"b", b"c"]

    out = run("--since", ago(timedelta(minutes=30)))  # b, c and d failed since then; b and c went with --key k2
    assert "redriven 1 dead letter of" in out
    assert "2 matching dead letters left alone: redriven already by" in out
    assert published(other) == [b"d"]

    out = run("--source-topic", source, "--grep", "busy")
    assert "redriven 1 dead letter of" in out
    assert published(source) == [b"a", b"b", b"c"]

    out = run()  # only the stranger is left: skipped, nothing redriven twice
    assert "redriven 0 dead letters" in out
    assert "4 matching dead letters left alone" in out
    assert "skipped 1 record without a streamcar-source-topic header" in out
    assert (published(source), published(other)) == ([b"a", b"b", b"c"], [b"d"])
    assert len(progress_groups(kafka, dead)) == 4  # the unfiltered progress and one per filter


def test_a_filtered_run_starts_at_the_unfiltered_progress_and_resumes_its_own(
    kafka: KafkaHandle, topic_factory: TopicFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    source, dead = topic_factory(1), topic_factory(1)
    produce_records(kafka, dead, [letter(source, 0, i, b"old-%d" % i, kind="exhausted") for i in range(3)])
    b = kafka.bootstrap
    assert dlq("redrive", "--topic", dead, "--execute", bootstrap=b) == 0
    capsys.readouterr()
    produce_records(kafka, dead, [letter(source, 0, i, b"new-%d" % i, kind="exhausted") for i in range(3, 5)])

    assert dlq("redrive", "--topic", dead, "--kind", "exhausted", "--limit", "1", "--execute", bootstrap=b) == 0
    out = capsys.readouterr().out
    assert "started where the unfiltered redrive is, offsets [0] 3; now at [0] 4" in out
    assert dlq("redrive", "--topic", dead, "--kind", "exhausted", "--execute", bootstrap=b) == 0
    out = capsys.readouterr().out
    assert "resumed from offsets [0] 4; now at [0] 5" in out
    assert [value_of(m) for m in read_committed(kafka, source)] == [b"old-0", b"old-1", b"old-2", b"new-3", b"new-4"]


def test_since_a_duration_is_the_moment_of_the_run_and_needs_a_unit(
    kafka: KafkaHandle, topic_factory: TopicFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    source, dead = topic_factory(1), topic_factory(1)
    recent = datetime.now(UTC).isoformat(timespec="milliseconds")
    produce_records(kafka, dead, [letter(source, 0, 1, b"old"), letter(source, 0, 2, b"new", failed_at=recent)])
    b = kafka.bootstrap
    assert dlq("redrive", "--topic", dead, "--since", "1h", bootstrap=b) == 0
    out = capsys.readouterr().out
    assert "would redrive 1 dead letter of" in out
    moment = out.split("filter: --since ", 1)[1].split(";", 1)[0]
    since = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    assert abs((datetime.now(UTC) - timedelta(hours=1) - since).total_seconds()) < 60
    assert dlq("redrive", "--topic", dead, "--since", "60", bootstrap=b) == 2
    assert "--since: '60' is not a duration back from now" in capsys.readouterr().err
    # with --execute, each run of a time back from now was a new filter, and a new progress group (issue 30)
    assert dlq("redrive", "--topic", dead, "--since", "1h", "--execute", bootstrap=b) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("streamcar: --since 1h with --execute: a time back from now is a new filter"), err
    given = err.rstrip().rsplit("--since ", 1)[1]
    for _ in range(2):
        assert dlq("redrive", "--topic", dead, "--since", given, "--execute", bootstrap=b) == 0
    assert "redriven 0 dead letters" in capsys.readouterr().out  # the second run resumed the first's progress
    assert [value_of(m) for m in read_committed(kafka, source)] == [b"new"]
    assert len(progress_groups(kafka, dead)) == 1


def test_a_progress_group_whose_filter_cannot_be_read_stops_every_run(
    kafka: KafkaHandle, topic_factory: TopicFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    source, dead = topic_factory(1), topic_factory(1)
    produce_records(kafka, dead, [letter(source, 0, 1, b"a")])
    stranger = f"streamcar-redrive.{dead}:0123456789abcdef"
    consumer = kafka.consumer(stranger)
    consumer.commit(offsets=[TopicPartition(dead, 0, 1, "not a filter")], asynchronous=False)

    assert dlq("redrive", "--topic", dead, "--execute", bootstrap=kafka.bootstrap) == 1
    err = capsys.readouterr().err
    assert err == (
        f"streamcar: the progress of group {stranger} does not say which dead letters it redrove (not written by"
        " this version of streamcar?): refusing to redrive what it may have redriven; delete the group if it is"
        " not a redrive's\n"
    )
    assert read_committed(kafka, source) == []
