"""``streamcar offsets show|reset`` on the real broker: committed offsets and lag as a consumer left them, resets
to every kind of position (applied only with --execute), and the refusal while the group has a live member."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from confluent_kafka import ConsumerGroupState, TopicPartition

from streamcar.cli import main

from service import TestService
from sidecar import make_config, pipeline, running
from support import KafkaHandle, TopicFactory, committed, committed_total, produce_records, wait_for

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000  # ms; record i of each partition has timestamp T0 + i * 1000


def produce_timed(kafka: KafkaHandle, topic: str, partitions: int, per_partition: int) -> None:
    producer = kafka.producer()
    for p in range(partitions):
        for i in range(per_partition):
            producer.produce(topic, value=b"%d-%d" % (p, i), partition=p, timestamp=T0 + i * 1000)
    assert producer.flush(30) == 0


def commit(kafka: KafkaHandle, group: str, offsets: dict[tuple[str, int], int]) -> None:
    consumer = kafka.consumer(group)
    consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False)


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def reset(kafka: KafkaHandle, group: str, topic: str, to: str, *extra: str) -> int:
    return main(["offsets", "reset", "--group", group, "--topic", topic, "--to", to, *extra, "-b", kafka.bootstrap])


def test_show_reports_committed_end_and_lag_per_partition(
    kafka: KafkaHandle,
    topic_factory: TopicFactory,
    group_factory: Callable[[], str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    topic, other, group = topic_factory(3), topic_factory(1), group_factory()
    produce_timed(kafka, topic, 2, 10)  # partition 2 stays empty
    produce_timed(kafka, other, 1, 4)
    commit(kafka, group, {(topic, 0): 7, (topic, 1): 10, (other, 0): 1})

    assert main(["offsets", "show", "--group", group, "--json", "-b", kafka.bootstrap]) == 0
    document = json.loads(capsys.readouterr().out)
    assert (document["group"], document["state"], document["members"]) == (group, "empty", 0)
    rows = {(r["topic"], r["partition"]): (r["committed"], r["end"], r["lag"]) for r in document["partitions"]}
    assert rows == {
        (topic, 0): (7, 10, 3),
        (topic, 1): (10, 10, 0),
        (topic, 2): (None, 0, None),  # nothing committed: no lag claimed
        (other, 0): (1, 4, 3),
    }
    assert document["total_lag"] == 6

    assert main(["offsets", "show", "--group", group, "--topic", other, "--json", "-b", kafka.bootstrap]) == 0
    only = json.loads(capsys.readouterr().out)
    assert [(r["topic"], r["partition"], r["lag"]) for r in only["partitions"]] == [(other, 0, 3)]
    assert only["total_lag"] == 3

    assert main(["offsets", "show", "--group", group, "-b", kafka.bootstrap]) == 0
    table = capsys.readouterr().out
    assert f"consumer group {group} (empty, 0 members)" in table
    assert re.search(rf"{re.escape(topic)}\W+0\W+7\W+10\W+3\W", table), table
    assert re.search(rf"{re.escape(topic)}\W+2\W+-\W+0\W+-\W", table), table
    assert "total lag 6" in table


def test_show_of_an_unknown_group_is_one_clear_line(
    kafka: KafkaHandle, group_factory: Callable[[], str], capsys: pytest.CaptureFixture[str]
) -> None:
    group = group_factory()
    assert main(["offsets", "show", "--group", group, "-b", kafka.bootstrap]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"streamcar: consumer group {group!r} does not exist (no members, no committed offsets)\n"


def test_reset_to_a_time_lands_on_the_first_record_at_or_after_it(
    kafka: KafkaHandle,
    topic_factory: TopicFactory,
    group_factory: Callable[[], str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    topic = topic_factory(3)
    produce_timed(kafka, topic, 3, 10)
    group = group_factory()  # a group without offsets yet: reset creates them

    assert reset(kafka, group, topic, iso(T0 + 5000), "--execute") == 0
    assert committed(kafka, group) == {(topic, p): 5 for p in range(3)}
    assert "reset consumer group" in capsys.readouterr().err

    assert reset(kafka, group, topic, iso(T0 + 2500), "--execute") == 0  # between records: the next one
    assert committed(kafka, group) == {(topic, p): 3 for p in range(3)}

    after_all = datetime.fromtimestamp((T0 + 60_000) / 1000, UTC).isoformat()  # the +00:00 form
    assert reset(kafka, group, topic, after_all, "--execute") == 0  # no record that late: the end
    assert committed(kafka, group) == {(topic, p): 10 for p in range(3)}


@pytest.mark.parametrize(
    ("to", "expected"),
    [
        ("earliest", {0: 2, 1: 0}),  # partition 0's first two records were deleted
        ("latest", {0: 10, 1: 10}),
        ("6", {0: 6, 1: 6}),
        ("1", {0: 2, 1: 1}),  # clamped to the low watermark
        ("1000", {0: 10, 1: 10}),  # clamped to the high watermark
        ("-3", {0: 7, 1: 7}),
        ("-9", {0: 2, 1: 1}),
    ],
)
def test_reset_to_positions(
    kafka: KafkaHandle,
    topic_factory: TopicFactory,
    group_factory: Callable[[], str],
    to: str,
    expected: dict[int, int],
) -> None:
    topic, group = topic_factory(2), group_factory()
    produce_timed(kafka, topic, 2, 10)
    admin = kafka.admin()
    deleted = admin.delete_records([TopicPartition(topic, 0, 2)], request_timeout=30)
    for future in deleted.values():
        future.result(timeout=30)
    commit(kafka, group, {(topic, 0): 4, (topic, 1): 4})

    assert reset(kafka, group, topic, to, "--execute") == 0
    assert committed(kafka, group) == {(topic, p): offset for p, offset in expected.items()}


def test_reset_is_a_dry_run_without_execute_and_partition_restricts_it(
    kafka: KafkaHandle,
    topic_factory: TopicFactory,
    group_factory: Callable[[], str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    topic, group = topic_factory(2), group_factory()
    produce_timed(kafka, topic, 2, 10)
    commit(kafka, group, {(topic, 0): 4, (topic, 1): 4})
    before = committed(kafka, group)

    assert reset(kafka, group, topic, "latest") == 0
    captured = capsys.readouterr()
    assert re.search(r"\W0\W+4\W+10\W+\+6\W", captured.out), captured.out  # partition, current, new, change
    assert "dry run: nothing was changed; add --execute to apply" in captured.err
    assert committed(kafka, group) == before

    assert reset(kafka, group, topic, "-2", "--json") == 0
    document = json.loads(capsys.readouterr().out)
    assert document["executed"] is False
    assert document["partitions"] == [
        {"partition": 0, "current": 4, "new": 8},
        {"partition": 1, "current": 4, "new": 8},
    ]
    assert committed(kafka, group) == before

    assert reset(kafka, group, topic, "latest", "--partition", "1", "--execute") == 0
    assert committed(kafka, group) == {(topic, 0): 4, (topic, 1): 10}

    capsys.readouterr()
    assert reset(kafka, group, topic, "earliest", "--partition", "2", "--execute") == 2
    assert capsys.readouterr().err == f"streamcar: --partition: {topic} has no partition 2 (it has 0..1)\n"
    assert reset(kafka, group, topic, "yesterday", "--execute") == 2
    assert capsys.readouterr().err.startswith("streamcar: --to: 'yesterday' is not earliest, latest")
    assert committed(kafka, group) == {(topic, 0): 4, (topic, 1): 10}


def group_state(kafka: KafkaHandle, group: str) -> ConsumerGroupState:
    admin = kafka.admin()  # kept referenced until the future resolves
    state: ConsumerGroupState = admin.describe_consumer_groups([group])[group].result(timeout=30).state
    return state


async def test_reset_is_refused_while_a_sidecar_of_the_group_runs(
    kafka: KafkaHandle,
    topic_factory: TopicFactory,
    group_factory: Callable[[], str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    topic, group = topic_factory(2), group_factory()
    produce_records(kafka, topic, [(b"k%d" % i, b"v%d" % i) for i in range(20)])
    service = TestService().start()
    try:
        config = make_config(kafka.bootstrap, {"orders": pipeline(topic, group, service.url)})
        async with running(config):
            done = lambda: committed_total(kafka, group) == 20  # noqa: E731
            await asyncio.to_thread(wait_for, done, timeout=30, what="the sidecar to commit all 20 records")
            before = committed(kafka, group)
            capsys.readouterr()

            args = ["offsets", "reset", "--group", group, "--topic", topic, "--to", "earliest", "--execute"]
            assert await asyncio.to_thread(main, [*args, "-b", kafka.bootstrap]) == 1
            err = capsys.readouterr().err
            assert len(err.splitlines()) == 1, err
            assert f"consumer group {group!r} has 1 active member (streamcar-orders@" in err
            assert committed(kafka, group) == before

            show = ["offsets", "show", "--group", group, "--json", "-b", kafka.bootstrap]
            assert await asyncio.to_thread(main, show) == 0
            document = json.loads(capsys.readouterr().out)
            assert (document["state"], document["members"], document["total_lag"]) == ("stable", 1, 0)

        await asyncio.to_thread(
            wait_for, lambda: group_state(kafka, group) == ConsumerGroupState.EMPTY, timeout=30, what="an empty group"
        )
        assert await asyncio.to_thread(main, [*args, "-b", kafka.bootstrap]) == 0
        assert committed(kafka, group) == {(topic, 0): 0, (topic, 1): 0}
    finally:
        service.stop()
