"""``streamcar replay`` on the real broker: into a topic (complete, ordered per partition) and through a pipeline
(replies and dead letters published, the pipeline's group offsets untouched)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from aiohttp import web
from confluent_kafka import TopicPartition

from streamcar.cli import main

from service import Seen, TestService
from sidecar import make_config, pipeline
from support import KEEP_FOREVER, KafkaHandle, TopicFactory, committed, produce_records, read_topic

pytestmark = pytest.mark.integration


def by_partition(records: list[object]) -> dict[int, list[bytes]]:
    found: dict[int, list[bytes]] = defaultdict(list)
    for m in records:
        found[m.partition()].append(m.value())  # type: ignore[attr-defined]
    return found


def test_replay_of_100000_records_into_a_topic_is_complete_and_ordered_per_partition(
    kafka: KafkaHandle, topic_factory: TopicFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    source, target = topic_factory(3), topic_factory(3)
    n = 100_000
    produce_records(kafka, source, [(f"k{i % 101}".encode(), b"%d" % i) for i in range(n)], headers=[("h", b"1")])

    assert main(["replay", "--topic", source, "--from", "earliest", "--to-topic", target, "-b", kafka.bootstrap]) == 0
    assert f"copied {n:,} records to {target}" in capsys.readouterr().out

    original = read_topic(kafka, source, expect=n, timeout=120)
    copied = read_topic(kafka, target, expect=n, timeout=120)
    assert len(copied) == n
    assert by_partition(copied) == by_partition(original)  # same partition, same order, nothing missing or extra
    first = copied[0]
    assert first.headers() == [("h", b"1")]
    twin = next(m for m in original if m.value() == first.value())
    assert (first.key(), first.timestamp()) == (twin.key(), twin.timestamp())


def test_replay_of_a_range_by_offset_and_time(
    kafka: KafkaHandle, topic_factory: TopicFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    source, target = topic_factory(1, config=KEEP_FOREVER), topic_factory(2, config=KEEP_FOREVER)
    base = 1_700_000_000_000
    producer = kafka.producer()
    for i in range(20):
        producer.produce(source, value=b"%d" % i, partition=0, timestamp=base + i * 1000)
    assert producer.flush(30) == 0
    since = datetime.fromtimestamp((base + 5000) / 1000, UTC).isoformat()

    args = ["replay", "--topic", source, "--from", since, "--until", "15", "--to-topic", target]
    assert main([*args, "-b", kafka.bootstrap]) == 0
    copied = read_topic(kafka, target, expect=10)
    assert [m.value() for m in copied] == [b"%d" % i for i in range(5, 15)]
    assert {m.partition() for m in copied} == {0}  # source partition 0 -> target partition 0

    assert main(["replay", "--topic", source, "--from", "-3", "--to-topic", target, "-b", kafka.bootstrap]) == 0
    assert "copied 3 records" in capsys.readouterr().out


async def test_replay_through_a_pipeline_publishes_like_run_and_leaves_the_group_alone(
    kafka: KafkaHandle,
    topic_factory: TopicFactory,
    group_factory: Callable[[], str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source, out, dlq, group = topic_factory(2), topic_factory(2), topic_factory(1), group_factory()

    async def handler(seen: Seen) -> web.StreamResponse:
        if seen.body.startswith(b"bad"):
            return web.Response(status=422, text="no")
        return web.Response(body=b"re:" + seen.body)

    service = TestService(handler).start()
    try:
        records = [(f"k{i % 7}".encode(), (b"bad%d" if i % 10 == 0 else b"ok%d") % i) for i in range(200)]
        produce_records(kafka, source, records)
        # the pipeline's group has committed offsets that a replay must not move
        consumer = kafka.consumer(group)
        consumer.commit(offsets=[TopicPartition(source, 0, 3), TopicPartition(source, 1, 4)], asynchronous=False)
        before = committed(kafka, group)

        spec = pipeline(source, group, service.url, publish=out, dead_letter=dlq)
        config = make_config(kafka.bootstrap, {"orders": spec})
        config_file = tmp_path / "streamcar.yaml"
        config_file.write_text(yaml.safe_dump(config.model_dump(mode="json", by_alias=True)))

        args = ["replay", "--topic", source, "--from", "earliest", "-c", str(config_file), "--pipeline", "orders"]
        assert await asyncio.to_thread(main, args) == 0
        summary = capsys.readouterr().out
        assert "replayed 200 records through pipeline orders" in summary
        assert "dead-letter 20" in summary
        assert "success 180" in summary

        replies = await asyncio.to_thread(read_topic, kafka, out, expect=180)
        letters = await asyncio.to_thread(read_topic, kafka, dlq, expect=20)
        assert sorted(m.value() for m in replies) == sorted(b"re:" + v for _, v in records if not v.startswith(b"bad"))
        assert len(letters) == 20
        assert service.count() == 200  # every record of the range called once
        assert committed(kafka, group) == before
    finally:
        service.stop()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--to-topic", "x", "--pipeline", "p"], "exactly one destination"),
        ([], "exactly one destination"),
        (["--pipeline", "p"], "--pipeline needs the config"),
        (["--to-topic", "x", "--until", "yesterday"], "--until: 'yesterday' is not earliest, latest"),
    ],
)
def test_bad_replay_arguments_exit_2_with_one_line(
    kafka: KafkaHandle, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", "--topic", "t", "--from", "earliest", *args, "-b", kafka.bootstrap]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert message in err


def test_replay_of_a_missing_topic_is_one_line_exit_1(kafka: KafkaHandle, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["replay", "--topic", "no-such-topic-here", "--from", "earliest", "--to-topic", "x"]
    assert main([*args, "-b", kafka.bootstrap]) == 1
    assert capsys.readouterr().err.strip() == "streamcar: topic 'no-such-topic-here' does not exist"
