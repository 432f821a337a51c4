"""``streamcar offsets show|reset`` on the real broker: committed offsets and lag as a consumer left them, resets
to every kind of position (applied only with --execute), the refusal while the group has a live member, and
safe resets: a reset that would skip unprocessed records is flagged and needs --yes, --shift-by, durations and
kafka-consumer-groups' vocabulary."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from confluent_kafka import ConsumerGroupState, ConsumerGroupTopicPartitions, KafkaError, KafkaException, TopicPartition

from streamcar.cli import main
from streamcar.kafka.doneahead import encode

from service import TestService
from sidecar import make_config, pipeline, running
from support import KEEP_FOREVER, KafkaHandle, TopicFactory, committed, committed_total, produce_records, wait_for

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000  # ms; record i of each partition has timestamp T0 + i * 1000


def produce_timed(kafka: KafkaHandle, topic: str, partitions: int, per_partition: int) -> None:
    producer = kafka.producer()
    for p in range(partitions):
        for i in range(per_partition):
            producer.produce(topic, value=b"%d-%d" % (p, i), partition=p, timestamp=T0 + i * 1000)
    assert producer.flush(30) == 0


COORDINATOR = {
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
}


def commit(kafka: KafkaHandle, group: str, offsets: dict[tuple[str, int], int]) -> None:
    """Commit ``offsets`` for ``group``, once its coordinator is ready: a busy broker (a parallel run) answered a
    new group's first commit with NOT_COORDINATOR while it was still loading the group."""
    consumer = kafka.consumer(group)
    tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
    deadline = time.monotonic() + 30
    while True:
        try:
            consumer.commit(offsets=tps, asynchronous=False)
            return
        except KafkaException as exc:
            error = exc.args[0]
            if not (error.retriable() or error.code() in COORDINATOR) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


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
    topic, other, group = topic_factory(3, config=KEEP_FOREVER), topic_factory(1, config=KEEP_FOREVER), group_factory()
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
    topic = topic_factory(3, config=KEEP_FOREVER)
    produce_timed(kafka, topic, 3, 10)
    group = group_factory()  # a group without offsets yet: reset creates them

    assert reset(kafka, group, topic, iso(T0 + 5000), "--execute") == 0
    assert committed(kafka, group) == {(topic, p): 5 for p in range(3)}
    assert "reset consumer group" in capsys.readouterr().err

    assert reset(kafka, group, topic, iso(T0 + 2500), "--execute") == 0  # between records: the next one
    assert committed(kafka, group) == {(topic, p): 3 for p in range(3)}

    after_all = datetime.fromtimestamp((T0 + 60_000) / 1000, UTC).isoformat()  # the +00:00 form
    assert reset(kafka, group, topic, after_all, "--execute", "--yes") == 0  # no record that late: the end
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
    topic, group = topic_factory(2, config=KEEP_FOREVER), group_factory()
    produce_timed(kafka, topic, 2, 10)
    admin = kafka.admin()
    deleted = admin.delete_records([TopicPartition(topic, 0, 2)], request_timeout=30)
    for future in deleted.values():
        future.result(timeout=30)
    commit(kafka, group, {(topic, 0): 4, (topic, 1): 4})

    assert reset(kafka, group, topic, to, "--execute", "--yes") == 0  # --yes: some move forward
    assert committed(kafka, group) == {(topic, p): offset for p, offset in expected.items()}


def test_reset_is_a_dry_run_without_execute_and_partition_restricts_it(
    kafka: KafkaHandle,
    topic_factory: TopicFactory,
    group_factory: Callable[[], str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    topic, group = topic_factory(2, config=KEEP_FOREVER), group_factory()
    produce_timed(kafka, topic, 2, 10)
    commit(kafka, group, {(topic, 0): 4, (topic, 1): 4})
    before = committed(kafka, group)

    assert reset(kafka, group, topic, "latest") == 0
    captured = capsys.readouterr()
    # partition, current, new, change, skips
    assert re.search(r"\W0\W+4\W+10\W+\+6\W+6 unprocessed\W", captured.out), captured.out
    assert "dry run: nothing was changed; add --execute to apply" in captured.err
    assert committed(kafka, group) == before

    assert reset(kafka, group, topic, "-2", "--json") == 0
    document = json.loads(capsys.readouterr().out)
    assert document["executed"] is False
    assert document["partitions"] == [
        {"partition": 0, "current": 4, "new": 8, "skips": 4},
        {"partition": 1, "current": 4, "new": 8, "skips": 4},
    ]
    assert document["skips"] == 8
    assert committed(kafka, group) == before

    assert reset(kafka, group, topic, "latest", "--partition", "1", "--execute", "--yes") == 0
    assert committed(kafka, group) == {(topic, 0): 4, (topic, 1): 10}

    capsys.readouterr()
    assert reset(kafka, group, topic, "earliest", "--partition", "2", "--execute") == 2
    assert capsys.readouterr().err == f"streamcar: --partition: {topic} has no partition 2 (it has 0..1)\n"
    assert reset(kafka, group, topic, "yesterday", "--execute", "--yes") == 2
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
    topic, group = topic_factory(2, config=KEEP_FOREVER), group_factory()
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


# --- safe resets ------------------------------------------------------------------------------------------------


def test_minus_n_on_a_group_further_behind_is_a_skip_the_dry_run_flags_and_execute_refuses(
    kafka: KafkaHandle,
    topic_factory: TopicFactory,
    group_factory: Callable[[], str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The reported failure: ``--to -20 --execute`` moved a group that was more than 20 records behind *forward*,
    past records it had never processed, without a word."""
    topic, group = topic_factory(3, config=KEEP_FOREVER), group_factory()
    produce_timed(kafka, topic, 3, 100)
    commit(kafka, group, {(topic, 0): 22, (topic, 1): 17, (topic, 2): 90})  # 2 is within the last 20
    before = committed(kafka, group)

    assert reset(kafka, group, topic, "-20", "--execute") == 2
    captured = capsys.readouterr()
    assert captured.err == (
        f"streamcar: refusing to skip 121 unprocessed records of {topic} (partitions 0, 1: the new offsets are past"
        " the committed ones); add --yes to skip them (--shift-by -N moves back from the committed offsets instead)\n"
    )
    assert committed(kafka, group) == before  # nothing moved
    assert re.search(r"\W0\W+22\W+80\W+\+58\W+58 unprocessed\W", captured.out), captured.out
    assert re.search(r"\W2\W+90\W+80\W+-10\W+-\W", captured.out), captured.out  # back: reprocessing, no skips

    assert reset(kafka, group, topic, "-20") == 0  # the dry run says so too
    captured = capsys.readouterr()
    assert "would skip 121 unprocessed records on 2 partitions (partitions 0, 1)" in captured.out
    assert "add --execute to apply (and --yes to skip those records)" in captured.err

    assert reset(kafka, group, topic, "-20", "--json") == 0
    document = json.loads(capsys.readouterr().out)
    assert [(r["partition"], r["new"], r["skips"]) for r in document["partitions"]] == [
        (0, 80, 58),
        (1, 80, 63),
        (2, 80, 0),
    ]
    assert (document["skips"], document["executed"]) == (121, False)

    assert reset(kafka, group, topic, "-20", "--execute", "--yes") == 0
    out = capsys.readouterr().out
    assert "skipped 121 unprocessed records on 2 partitions" in out
    assert committed(kafka, group) == {(topic, p): 80 for p in range(3)}

    assert reset(kafka, group, topic, "-30", "--execute") == 0  # back from 80 to 70 everywhere: no --yes needed
    assert committed(kafka, group) == {(topic, p): 70 for p in range(3)}


def test_shift_by_moves_from_the_committed_offsets_clamped_and_leaves_uncommitted_partitions(
    kafka: KafkaHandle,
    topic_factory: TopicFactory,
    group_factory: Callable[[], str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    topic, group = topic_factory(3, config=KEEP_FOREVER), group_factory()
    produce_timed(kafka, topic, 3, 50)
    commit(kafka, group, {(topic, 0): 30, (topic, 1): 5})  # nothing committed on partition 2

    def shift(by: str, *extra: str) -> int:
        argv = ["offsets", "reset", "--group", group, "--topic", topic, f"--shift-by={by}", *extra]
        return main([*argv, "-b", kafka.bootstrap])

    assert shift("-10", "--execute") == 0
    out = capsys.readouterr().out
    assert re.search(r"\W2\W+-\W+-\W+left: not committed\W", out), out
    assert "no committed offset on partition 2: nothing to shift from, left as it is" in out
    assert committed(kafka, group) == {(topic, 0): 20, (topic, 1): 0}  # 5 - 10 clamped to the low watermark

    assert shift("+45", "--execute") == 2  # forward: a skip
    assert "refusing to skip 75 unprocessed records" in capsys.readouterr().err  # 20 -> 50 and 0 -> 45
    assert shift("45", "--execute", "--yes") == 0
    assert committed(kafka, group) == {(topic, 0): 50, (topic, 1): 45}  # clamped to the end

    capsys.readouterr()
    assert shift("-5", "--partition", "2") == 2
    assert capsys.readouterr().err == (
        f"streamcar: --shift-by: consumer group {group!r} has no committed offset on partition 2 of {topic}, so"
        " nothing to shift from (use --to earliest, latest, an offset or a time)\n"
    )


def test_kafka_consumer_groups_vocabulary_and_exactly_one_target(
    kafka: KafkaHandle,
    topic_factory: TopicFactory,
    group_factory: Callable[[], str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    topic, group = topic_factory(1, config=KEEP_FOREVER), group_factory()
    produce_timed(kafka, topic, 1, 10)
    base = ["offsets", "reset", "--group", group, "--topic", topic]

    def run(*args: str) -> int:
        return main([*base, *args, "-b", kafka.bootstrap])

    assert run("--to-latest", "--execute") == 0  # a new group: nothing committed, nothing skipped
    assert committed(kafka, group) == {(topic, 0): 10}
    assert run("--to-earliest", "--execute") == 0
    assert committed(kafka, group) == {(topic, 0): 0}
    assert run("--to-offset", "4", "--execute", "--yes") == 0
    assert committed(kafka, group) == {(topic, 0): 4}
    assert run("--to-datetime", iso(T0 + 2000), "--execute") == 0
    assert committed(kafka, group) == {(topic, 0): 2}
    assert run("--by-duration", "PT1M", "--execute", "--yes") == 0  # T0 is long ago: no record that recent
    assert committed(kafka, group) == {(topic, 0): 10}
    capsys.readouterr()
    assert run("--by-duration", "P36500D", "--dry-run", "--json") == 0
    assert json.loads(capsys.readouterr().out)["partitions"][0]["new"] == 0
    capsys.readouterr()

    refusals = [
        (["--to-latest", "--to", "earliest"], "argument --to: not allowed with argument --to-latest"),
        ([], "one of the arguments --to --to-earliest --to-latest --to-offset --to-datetime --by-duration"),
        (["--to-earliest", "--dry-run", "--execute"], "argument --execute: not allowed with argument --dry-run"),
        (["--to-offset", "-3"], "--to-offset: -3 is not an offset (0 or more)"),
        (["--to-datetime", "10m"], "--to-datetime: '10m' is not an ISO 8601 time"),
        (["--by-duration", "10 minutes"], "--by-duration: '10 minutes' is not a duration such as PT10M"),
        (["--by-duration", "-PT5M"], "--by-duration: '-PT5M' is not a duration"),
        (["--to", "-10x"], "--to: '-10x' is not earliest, latest, an offset, -N, a duration back from now"),
    ]
    for args, message in refusals:
        assert run(*args) == 2, args
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1, (args, err)
        assert message in err, (args, err)
    assert committed(kafka, group) == {(topic, 0): 10}


def test_a_duration_back_from_now_resolves_through_record_timestamps(
    kafka: KafkaHandle,
    topic_factory: TopicFactory,
    group_factory: Callable[[], str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    topic, group = topic_factory(1, config=KEEP_FOREVER), group_factory()
    now = int(time.time() * 1000)
    producer = kafka.producer()
    for i in range(10):  # record i is (9.5 - i) minutes old: a few seconds of test time move no boundary
        producer.produce(topic, value=b"%d" % i, partition=0, timestamp=now - 570_000 + i * 60_000)
    assert producer.flush(30) == 0

    assert reset(kafka, group, topic, "-5m", "--execute") == 0
    assert committed(kafka, group) == {(topic, 0): 5}
    header = capsys.readouterr().out.splitlines()[0]
    assert re.search(r"reset to -5m \(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z\)$", header), header
    assert reset(kafka, group, topic, "2h", "--execute") == 0
    assert committed(kafka, group) == {(topic, 0): 0}
    assert reset(kafka, group, topic, "90s", "--execute", "--yes") == 0
    assert committed(kafka, group) == {(topic, 0): 9}
    assert reset(kafka, group, topic, "-10", "--execute") == 0  # ten records before the end, not ten minutes
    assert committed(kafka, group) == {(topic, 0): 0}


def committed_metadata(kafka: KafkaHandle, group: str, topic: str) -> dict[int, tuple[int, str]]:
    admin = kafka.admin()
    request = [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, 0), TopicPartition(topic, 1)])]
    answer = admin.list_consumer_group_offsets(request)[group].result(timeout=30)
    return {tp.partition: (tp.offset, tp.metadata or "") for tp in answer.topic_partitions if tp.offset >= 0}


def test_offsets_the_sidecar_already_did_are_no_skips_and_survive_a_forward_move(
    kafka: KafkaHandle,
    topic_factory: TopicFactory,
    group_factory: Callable[[], str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    topic, group = topic_factory(2, config=KEEP_FOREVER), group_factory()
    produce_timed(kafka, topic, 2, 40)
    ahead = encode(10, [(12, 14), (20, 29)])  # 13 offsets above 10 done, as a sidecar's commit says
    consumer = kafka.consumer(group)
    consumer.commit(
        offsets=[TopicPartition(topic, 0, 10, ahead), TopicPartition(topic, 1, 10, ahead)], asynchronous=False
    )

    assert reset(kafka, group, topic, "25", "--json") == 0
    rows = json.loads(capsys.readouterr().out)["partitions"]
    assert [r["skips"] for r in rows] == [15 - 3 - 5, 15 - 3 - 5]  # 10..24, less 12..14 and 20..24

    assert reset(kafka, group, topic, "25", "--partition", "0", "--execute", "--yes") == 0
    metadata = committed_metadata(kafka, group, topic)
    assert metadata[0] == (25, encode(25, [(26, 29)]))  # what lies above 25 stays done
    assert metadata[1] == (10, ahead)  # not part of the reset: its commit untouched

    assert reset(kafka, group, topic, "earliest", "--partition", "1", "--execute") == 0
    assert committed_metadata(kafka, group, topic)[1] == (0, "")  # back: everything from 0 is done again
