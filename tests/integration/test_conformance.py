"""The conformance suite: every call mode keeps the same promises, on the real broker.

Modes: HTTP single and batch delivery, in-process Python (single and batch) and gRPC. Each is driven by the same
service behaviour (:mod:`conformance`) and checked by reading the topics and the group's committed offsets:
success with reply, drop, retry-then-success, exhausted to dead letter, permanent to dead letter, per-key order
under concurrency, batches that never re-send what succeeded, and no loss under SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import conformance
from conformance import Behaviour, HttpBehaviourService, grpc_handler, receipt_for
from grpc_service import TestGrpcService, echo_pb2, order, receipt_of
from sidecar import SidecarProcess, make_config, pipeline, running
from support import KafkaHandle, RecordHeaders, TopicFactory, committed_total, produce_records, read_topic, wait_for

pytestmark = pytest.mark.integration

TESTS_DIR = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mode:
    name: str
    kind: str
    batch: int = 1
    reject_kind: str = "rejected"

    @property
    def grpc(self) -> bool:
        return self.kind == "grpc"


MODES = [
    Mode("http", "http"),
    Mode("http-batch", "http", batch=20),
    Mode("python", "python"),
    Mode("python-batch", "python", batch=20),
    Mode("grpc", "grpc", reject_kind="grpc-status"),
]


@pytest.fixture(params=MODES, ids=[m.name for m in MODES])
def mode(request: pytest.FixtureRequest) -> Mode:
    return request.param  # type: ignore[no-any-return]


@contextlib.contextmanager
def reach(mode: Mode, behaviour: Behaviour) -> Iterator[str]:
    """The call URL at which ``behaviour`` answers in ``mode``, for as long as the block runs."""
    if mode.kind == "http":
        http = HttpBehaviourService(behaviour).start()
        try:
            yield http.url(batch=mode.batch > 1)
        finally:
            http.stop()
    elif mode.kind == "grpc":
        behaviour.reply = receipt_for
        grpc_service = TestGrpcService(grpc_handler(behaviour)).start()
        try:
            yield grpc_service.url
        finally:
            grpc_service.stop()
    else:
        conformance.install(behaviour)
        try:
            yield f"python:conformance:{'handle_batch' if mode.batch > 1 else 'handle'}"
        finally:
            conformance.install(Behaviour())


def call_spec(mode: Mode) -> dict[str, Any]:
    return {"batch": {"max_messages": mode.batch, "max_wait": "5ms"}}


def record(i: int, key: str, cmd: str) -> tuple[bytes, bytes, RecordHeaders]:
    return key.encode(), order(str(i), i), [("cmd", cmd)]


def input_id(value: bytes | None) -> int:
    return int(echo_pb2().Order.FromString(value or b"").id)


def reply_id(mode: Mode, value: bytes | None) -> int:
    if mode.grpc:
        receipt = receipt_of(value or b"")
        assert receipt.status == "ok"
        return int(receipt.id)
    assert value is not None
    assert value.startswith(b"done:")
    return input_id(value.removeprefix(b"done:"))


async def read(kafka: KafkaHandle, topic: str, expect: int) -> list[Any]:
    return await asyncio.to_thread(read_topic, kafka, topic, expect=expect)


async def committed_reaches(kafka: KafkaHandle, group: str, n: int) -> None:
    await asyncio.to_thread(
        wait_for, lambda: committed_total(kafka, group) == n, timeout=30, what=f"the group to commit {n}"
    )


CYCLE = ["ok", "ok", "drop", "flaky", "fail", "ok", "reject"]


async def test_every_reply_kind(
    mode: Mode, kafka: KafkaHandle, topic_factory: TopicFactory, group_factory: Callable[[], str]
) -> None:
    source, out, dlq, group = topic_factory(3), topic_factory(3), topic_factory(1), group_factory()
    n = 70
    cmds = {i: CYCLE[i % len(CYCLE)] for i in range(n)}
    behaviour = Behaviour()
    with reach(mode, behaviour) as url:
        # 2 in 7 messages fail every call: the circuit breaker would rightly open, and add probe calls to the
        # exact counts checked here (test_circuit_breaker covers it)
        spec = pipeline(
            source, group, url, publish=out, dead_letter=dlq, call=call_spec(mode), circuit_breaker={"enabled": False}
        )
        async with running(make_config(kafka.bootstrap, {"p": spec})):
            produce_records(kafka, source, [record(i, f"k{i % 10}", cmds[i]) for i in range(n)])
            want = [i for i in range(n) if cmds[i] in ("ok", "flaky")]
            failed = [i for i in range(n) if cmds[i] in ("fail", "reject")]
            replies = await read(kafka, out, len(want))
            letters = await read(kafka, dlq, len(failed))
            await committed_reaches(kafka, group, n)

    assert sorted(reply_id(mode, m.value()) for m in replies) == want  # each exactly once, none for drops
    for m in replies:
        assert m.key() == f"k{reply_id(mode, m.value()) % 10}".encode()  # the input key is kept
    assert sorted(input_id(m.value()) for m in letters) == failed
    for letter in letters:
        i = input_id(letter.value())
        headers = dict(letter.headers() or [])
        assert letter.key() == f"k{i % 10}".encode()
        assert headers["cmd"] == cmds[i].encode()  # the original headers travel with the dead letter
        assert headers["streamcar-source-topic"] == source.encode()
        if cmds[i] == "fail":
            assert headers["streamcar-error-kind"] == b"exhausted"
            assert headers["streamcar-attempts"] == b"3"
        else:
            assert headers["streamcar-error-kind"] == mode.reject_kind.encode()
            assert headers["streamcar-attempts"] == b"1"
    calls_per_input = Counter(input_id(call.value) for call in behaviour.snapshot())
    expected_calls = {"ok": 1, "drop": 1, "flaky": conformance.FLAKY_FAILURES + 1, "fail": 3, "reject": 1}
    assert calls_per_input == {i: expected_calls[cmds[i]] for i in range(n)}


async def test_replies_go_where_they_say_when_allowed_and_carry_the_input_headers(
    mode: Mode, kafka: KafkaHandle, topic_factory: TopicFactory, group_factory: Callable[[], str]
) -> None:
    source, out, review, dlq, group = (
        topic_factory(3),
        topic_factory(3),
        topic_factory(2),
        topic_factory(1),
        group_factory(),
    )
    n = 30
    kinds = ["ok", "route", "misroute"]
    behaviour = Behaviour()
    with reach(mode, behaviour) as url:
        spec = pipeline(source, group, url, publish=out, dead_letter=dlq, call=call_spec(mode))
        spec["publish"]["allow"] = [review]
        async with running(make_config(kafka.bootstrap, {"p": spec})):
            records: list[tuple[bytes | None, bytes | None] | tuple[bytes | None, bytes | None, RecordHeaders]] = []
            for i in range(n):
                kind = kinds[i % 3]
                where = review if kind == "route" else f"{review}-not-allowed"
                sent: RecordHeaders = [
                    ("cmd", "ok" if kind == "ok" else "route"),
                    ("origin", "acc"),
                    ("route-to", where),
                ]
                records.append((f"k{i % 5}".encode(), order(str(i), i), sent))
            produce_records(kafka, source, records)
            plain = await read(kafka, out, n // 3)
            routed = await read(kafka, review, n // 3)
            letters = await read(kafka, dlq, n // 3)
            await committed_reaches(kafka, group, n)

    assert sorted(reply_id(mode, m.value()) for m in plain) == [i for i in range(n) if i % 3 == 0]
    assert sorted(reply_id(mode, m.value()) for m in routed) == [i for i in range(n) if i % 3 == 1]
    assert sorted(input_id(m.value()) for m in letters) == [i for i in range(n) if i % 3 == 2]
    for m in plain:
        forwarded = dict(m.headers() or [])
        assert (forwarded["origin"], forwarded["cmd"]) == (b"acc", b"ok")  # the input's headers, forwarded
    for m in routed:
        kept = sorted((k, v) for k, v in m.headers() or [] if k in ("cmd", "origin"))
        assert kept == [("cmd", b"done"), ("origin", b"acc")]  # the reply's own cmd, not the input's
    for letter in letters:
        story = dict(letter.headers() or [])
        assert story["streamcar-error-kind"] == b"route"
        assert b"not-allowed" in story["streamcar-error"]


async def test_a_fanned_out_reply_publishes_each_record_once_in_order_per_key(
    mode: Mode, kafka: KafkaHandle, topic_factory: TopicFactory, group_factory: Callable[[], str]
) -> None:
    source, out, review, group = topic_factory(3), topic_factory(3), topic_factory(2), group_factory()
    n = 40
    fans = {i: [0, 1, 10, 3][i % 4] for i in range(n)}
    behaviour = Behaviour()
    with reach(mode, behaviour) as url:
        call = {**call_spec(mode), **({"fanout": True} if mode.grpc else {})}
        spec = pipeline(source, group, url, publish=out, call=call, max_in_flight=16)
        spec["publish"]["allow"] = [review]
        async with running(make_config(kafka.bootstrap, {"p": spec})):
            records: list[tuple[bytes | None, bytes | None] | tuple[bytes | None, bytes | None, RecordHeaders]] = []
            for i in range(n):
                sent: RecordHeaders = [("cmd", "fanout"), ("fan", str(fans[i])), ("route-to", review), ("origin", "a")]
                records.append((f"k{i % 4}".encode(), order(str(i), i), sent))
            produce_records(kafka, source, records)
            plain = await read(kafka, out, sum((f + 1) // 2 for f in fans.values()))
            routed = await read(kafka, review, sum(f // 2 for f in fans.values()))
            await committed_reaches(kafka, group, n)

    for topic, got, first in ((out, plain, 0), (review, routed, 1)):  # even parts to publish.topic, odd routed
        seen = sorted((reply_id(mode, m.value()), int(dict(m.headers() or [])["part"])) for m in got)
        assert seen == sorted((i, j) for i in range(n) for j in range(first, fans[i], 2)), topic  # each once
        by_key: dict[bytes | None, list[int]] = defaultdict(list)
        for m in got:
            assert dict(m.headers() or [])["origin"] == b"a"  # the input's headers, on every record
            assert m.key() == f"k{reply_id(mode, m.value()) % 4}".encode()  # the input's key
            by_key[m.key()].append(reply_id(mode, m.value()))
        for key, seq in by_key.items():
            assert seq == sorted(seq), f"{topic}: the records of {key!r} were published out of order"


async def test_key_order_under_concurrency(
    mode: Mode, kafka: KafkaHandle, topic_factory: TopicFactory, group_factory: Callable[[], str]
) -> None:
    source, out, group = topic_factory(3), topic_factory(3), group_factory()
    n, keys = 1500, 30
    behaviour = Behaviour(delay=(0.0, 0.003))
    with reach(mode, behaviour) as url:
        spec = pipeline(source, group, url, publish=out, call=call_spec(mode), max_in_flight=64)
        async with running(make_config(kafka.bootstrap, {"p": spec})):
            produce_records(kafka, source, [record(i, f"k{i % keys}", "ok") for i in range(n)])
            replies = await read(kafka, out, n)
            await committed_reaches(kafka, group, n)

    calls = behaviour.snapshot()
    assert len(calls) == n  # nothing called twice in a healthy run
    by_key: dict[bytes | None, list[int]] = defaultdict(list)
    for call in calls:
        by_key[call.key].append(input_id(call.value))
    assert len(by_key) == keys
    for key, seq in by_key.items():
        assert seq == sorted(seq), f"{key!r} was called out of order"
    published: dict[bytes | None, list[int]] = defaultdict(list)
    for m in replies:
        published[m.key()].append(reply_id(mode, m.value()))
    for key, seq in published.items():
        assert seq == sorted(seq), f"the replies of {key!r} were published out of order"
    assert sum(len(seq) for seq in published.values()) == n
    if mode.batch > 1:
        assert max(behaviour.batches) > 1, "batch delivery never sent more than one message at once"
        assert max(behaviour.batches) <= mode.batch
        assert behaviour.peak >= 2, "batches never overlapped"
    else:
        assert behaviour.peak >= 8, f"peak concurrency {behaviour.peak}: keys did not run concurrently"


async def test_a_failed_entry_holds_its_key_without_resending_what_succeeded(
    mode: Mode, kafka: KafkaHandle, topic_factory: TopicFactory, group_factory: Callable[[], str]
) -> None:
    """``ordering: partition`` on one partition: batches are runs of one lane, so a flaky entry in the middle of a
    batch has later entries of its lane in the same call. They are answered once and never sent again, and the
    replies still come out in offset order."""
    source, out, group = topic_factory(1), topic_factory(1), group_factory()
    n = 200
    cmds = {i: "flaky" if i % 17 == 5 else "ok" for i in range(n)}
    behaviour = Behaviour()
    with reach(mode, behaviour) as url:
        spec = pipeline(source, group, url, publish=out, call=call_spec(mode), ordering="partition")
        async with running(make_config(kafka.bootstrap, {"p": spec})):
            produce_records(kafka, source, [record(i, f"k{i % 5}", cmds[i]) for i in range(n)])
            replies = await read(kafka, out, n)
            await committed_reaches(kafka, group, n)

    assert [reply_id(mode, m.value()) for m in replies] == list(range(n))  # one partition: offset order, once each
    calls = Counter(input_id(call.value) for call in behaviour.snapshot())
    assert calls == {i: conformance.FLAKY_FAILURES + 1 if cmds[i] == "flaky" else 1 for i in range(n)}
    if mode.batch > 1:
        assert max(behaviour.batches) > 1


def test_sigkill_loses_nothing(
    mode: Mode, kafka: KafkaHandle, topic_factory: TopicFactory, group_factory: Callable[[], str], tmp_path: Path
) -> None:
    """A third of the inputs fan out to 2 or 3 records: each of them must be there too."""
    source, out, group = topic_factory(3), topic_factory(3), group_factory()
    n, kills, max_in_flight, max_delay = 4000, 2, 64, 0.001
    fans = {i: 2 + i % 2 for i in range(n) if i % 3 == 0}
    behaviour = Behaviour(delay=(0.0, max_delay))
    behaviour.grpc_fanout = mode.grpc
    process: SidecarProcess | None = None
    with reach(mode, behaviour) as url:
        # commits come from the count trigger alone (every max_in_flight / 2 completions): the interval is long
        call = {**call_spec(mode), **({"fanout": True} if mode.grpc else {})}
        # static membership: the restarted member takes its partitions back at once, instead of waiting out the
        # killed one's session (dynamic members' SIGKILLs: tests/faults/test_sigkill.py and the crash scenarios)
        spec = pipeline(
            source,
            group,
            url,
            publish=out,
            call=call,
            max_in_flight=max_in_flight,
            commit_interval="5s",
            consume={"instance_id": f"{group}-0"},
        )
        config = make_config(
            kafka.bootstrap, {"p": spec}, librdkafka={"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000}
        )
        probe = kafka.consumer("probe")  # closed at teardown
        # python:conformance:handle is imported by the sidecar process, which makes its own Behaviour
        env = {"PYTHONPATH": str(TESTS_DIR), "CONFORMANCE_MAX_DELAY": str(max_delay)}
        records: list[tuple[bytes | None, bytes | None] | tuple[bytes | None, bytes | None, RecordHeaders]] = []
        for i in range(n):
            key, value, headers = record(i, f"k{i % 40}", "fanout" if i in fans else "ok")
            records.append((key, value, [*headers, ("fan", str(fans.get(i, 0))), ("route-to", out)]))
        produce_records(kafka, source, records)
        expected = n + sum(fans.values()) - len(fans)
        try:
            for round_ in range(kills):
                process = SidecarProcess(config, tmp_path, env=env).start()
                target = published(probe, out) + n // (kills + 2)
                wait_for(
                    lambda target=target: published(probe, out) >= target,  # type: ignore[misc]
                    timeout=120,
                    what=f"progress before kill {round_ + 1}",
                )
                process.kill()  # SIGKILL: no drain, no commit, replies in the producer's buffer gone
            process = SidecarProcess(config, tmp_path, env=env).start()
            # everything done and committed first: read_topic counts duplicates towards what it expects
            wait_for(lambda: committed_total(kafka, group) == n, timeout=120, what="the final commit")
            replies = read_topic(kafka, out, expect=expected, timeout=60)
            ids = Counter((reply_id(mode, m.value()), int(dict(m.headers() or []).get("part", b"0"))) for m in replies)
            want = {(i, j) for i in range(n) for j in range(fans.get(i, 1))}
            missing = want - set(ids)
            assert not missing, f"{len(missing)} replies or fanned-out records missing, e.g. {sorted(missing)[:5]}"
            duplicates = sum(ids.values()) - expected
            print(f"{mode.name}: {duplicates} duplicates after {kills} SIGKILLs")
            # A crash redoes what was in flight (max_in_flight), what completed since the last commit was
            # triggered (max_in_flight / 2) and what completed during that commit's round trip to the broker
            # (throughput x round trip: a few thousand messages/s here, times a few ms). Commits on the 5 s
            # interval alone would redo thousands per crash.
            assert duplicates <= kills * 4 * max_in_flight * 3, duplicates  # up to 3 records an input
            process.signal(signal.SIGTERM)
            assert process.wait(30) == 0, process.log_tail()
        finally:
            if process is not None:
                process.kill()


def published(consumer: Any, topic: str) -> int:
    """How many records ``topic`` holds (the sum of its partitions' high watermarks)."""
    from confluent_kafka import TopicPartition

    partitions = consumer.list_topics(topic=topic, timeout=10).topics[topic].partitions
    return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions)
