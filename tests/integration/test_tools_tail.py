"""``streamcar tail`` and ``streamcar produce`` on the real broker: positions, -n, --no-follow, JSON and escaped
text forms, following until Ctrl-C; lines from stdin as records (keyed, with headers), and their errors."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO

import pytest

from streamcar.cli import main

from support import KEEP_FOREVER, KafkaHandle, TopicFactory, produce_records, read_topic

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000  # ms


def cli(kafka: KafkaHandle, *args: str, stdin: bytes = b"", timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "streamcar", *args, "-b", kafka.bootstrap],
        input=stdin,
        capture_output=True,
        timeout=timeout,
        check=False,
    )


def messages(err: bytes) -> list[str]:
    """stderr's lines without librdkafka's own log lines (``%4|...``)."""
    return [line for line in err.decode().splitlines() if not line.startswith("%")]


def tail(kafka: KafkaHandle, capsys: pytest.CaptureFixture[str], topic: str, *args: str) -> list[str]:
    assert main(["tail", "--topic", topic, *args, "-b", kafka.bootstrap]) == 0
    return capsys.readouterr().out.splitlines()


def test_tail_no_follow_prints_the_last_10_of_each_partition_then_stops(
    kafka: KafkaHandle, topic_factory: TopicFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = topic_factory(3)
    produce_records(kafka, topic, [(b"k%d" % i, b"v%d" % i) for i in range(15)], partition=0)
    produce_records(kafka, topic, [(None, b"w%d" % i) for i in range(3)], partition=1)

    lines = tail(kafka, capsys, topic, "--no-follow")
    first = [line for line in lines if line.startswith("0:")]
    assert first == [f"0:{i}  key=k{i}  v{i}" for i in range(5, 15)]  # in offset order
    assert sorted(line for line in lines if not line.startswith("0:")) == [f"1:{i}  w{i}" for i in range(3)]
    assert len(lines) == 13

    assert len(tail(kafka, capsys, topic, "--no-follow", "-n", "4", "--from", "earliest")) == 4
    assert tail(kafka, capsys, topic, "--no-follow", "--from", "latest") == []


def test_tail_from_an_offset_a_time_and_minus_n(
    kafka: KafkaHandle, topic_factory: TopicFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = topic_factory(1, config=KEEP_FOREVER)
    producer = kafka.producer()
    for i in range(10):
        producer.produce(topic, value=b"v%d" % i, partition=0, timestamp=T0 + i * 1000)
    assert producer.flush(30) == 0

    def offsets(*args: str) -> list[int]:
        return [int(line.split()[0].split(":")[1]) for line in tail(kafka, capsys, topic, "--no-follow", *args)]

    assert offsets("--from", "7") == [7, 8, 9]
    assert offsets("--from", "1000") == []
    assert offsets("--from", "-2") == [8, 9]
    assert offsets("--from", datetime.fromtimestamp((T0 + 4000) / 1000, UTC).isoformat()) == [4, 5, 6, 7, 8, 9]
    assert offsets("--from", "earliest", "-n", "3") == [0, 1, 2]

    assert main(["tail", "--topic", topic, "--from", "soon", "-b", kafka.bootstrap]) == 2
    assert capsys.readouterr().err.startswith("streamcar: --from: 'soon' is not earliest")


def test_tail_n_stops_a_following_tail(kafka: KafkaHandle, topic_factory: TopicFactory) -> None:
    topic = topic_factory(1)
    produce_records(kafka, topic, [(None, b"v%d" % i) for i in range(5)])
    done = cli(kafka, "tail", "--topic", topic, "--from", "earliest", "-n", "3")
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().splitlines() == ["0:0  v0", "0:1  v1", "0:2  v2"]


def test_tail_json_and_text_forms_of_binary_keys_values_and_headers(
    kafka: KafkaHandle, topic_factory: TopicFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = topic_factory(1)
    records: list[tuple[bytes | None, bytes | None, list[tuple[str, str | bytes | None]]]] = [
        (b"k", b"hello \xc3\xa9", [("content-type", b"text/plain"), ("empty", None)]),
        (b"bin", b"a\nb\\c\xff\x00", [("h", b"1"), ("h", b"2")]),
        (None, None, []),
    ]
    produce_records(kafka, topic, records, partition=0)

    lines = tail(kafka, capsys, topic, "--no-follow")
    assert lines == ["0:0  key=k  hello é", "0:1  key=bin  a\\nb\\\\c\\xff\\x00", "0:2  <null>"]

    found = [json.loads(line) for line in tail(kafka, capsys, topic, "--no-follow", "--json")]
    text, binary, tombstone = found
    assert text == {
        "topic": topic,
        "partition": 0,
        "offset": 0,
        "timestamp": text["timestamp"],
        "key": "k",
        "value": "hello é",
        "headers": {"content-type": "text/plain", "empty": None},
        "encoding": "utf-8",
    }
    assert isinstance(text["timestamp"], int)
    assert text["timestamp"] > 0
    assert binary["encoding"] == "base64"
    assert (binary["key"], binary["value"]) == ("Ymlu", "YQpiXGP/AA==")  # base64 of b"bin", b"a\nb\\c\xff\x00"
    assert binary["headers"] == [["h", "MQ=="], ["h", "Mg=="]]  # a repeated name: pairs, in order
    assert (tombstone["key"], tombstone["value"], tombstone["headers"]) == (None, None, {})


def _lines_of(stream: IO[bytes]) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line.decode().rstrip("\n"))

    threading.Thread(target=pump, daemon=True).start()
    return lines


def test_tail_follows_new_records_until_interrupted(kafka: KafkaHandle, topic_factory: TopicFactory) -> None:
    topic = topic_factory(2)
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamcar", "tail", "--topic", topic, "-b", kafka.bootstrap],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    try:
        lines = _lines_of(proc.stdout)  # type: ignore[arg-type]
        produce_records(kafka, topic, [(b"a", b"first")], partition=1)
        assert lines.get(timeout=30) == "1:0  key=a  first"  # the tail is up and reading
        produce_records(kafka, topic, [(b"b", b"second")], partition=0)
        assert lines.get(timeout=30) == "0:0  key=b  second"
        assert proc.poll() is None  # still following

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
        assert proc.stderr is not None
        assert messages(proc.stderr.read()) == ["streamcar: interrupted"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_produce_lines_unkeyed_and_keyed_with_headers(kafka: KafkaHandle, topic_factory: TopicFactory) -> None:
    plain = topic_factory(1)
    done = cli(kafka, "produce", "--topic", plain, stdin=b"one\n\ntwo\r\nthree")
    assert done.returncode == 0, done.stderr
    assert messages(done.stderr) == [f"produced 4 records to {plain}"]
    got = read_topic(kafka, plain, expect=4)
    assert [(m.key(), m.value(), m.headers()) for m in got] == [
        (None, b"one", None),
        (None, b"", None),  # an empty line is an empty value
        (None, b"two\r", None),  # only the newline is removed
        (None, b"three", None),  # a last line without a newline counts
    ]

    keyed = topic_factory(3)
    stdin = b"k1\tv1\nk2\tv\t2\n\tno key\n"
    done = cli(kafka, "produce", "--topic", keyed, "--keyed", "-H", "source=test", "-H", "eq=a=b", stdin=stdin)
    assert done.returncode == 0, done.stderr
    assert messages(done.stderr) == [f"produced 3 records to {keyed}"]
    got = read_topic(kafka, keyed, expect=3)
    assert sorted((m.key(), m.value()) for m in got) == [(b"", b"no key"), (b"k1", b"v1"), (b"k2", b"v\t2")]
    assert {tuple(m.headers()) for m in got} == {(("source", b"test"), ("eq", b"a=b"))}


def test_produce_stops_at_a_line_without_a_tab_after_producing_the_lines_before(
    kafka: KafkaHandle, topic_factory: TopicFactory
) -> None:
    topic = topic_factory(1)
    done = cli(kafka, "produce", "--topic", topic, "--keyed", stdin=b"k1\tv1\nk2\tv2\nno tab here\nk4\tv4\n")
    assert done.returncode == 2
    assert done.stdout == b""
    assert messages(done.stderr) == [
        f"streamcar: line 3: no TAB between key and value (--keyed wants key<TAB>value); "
        f"the 2 lines before it were produced to {topic}"
    ]
    assert [(m.key(), m.value()) for m in read_topic(kafka, topic, expect=2)] == [(b"k1", b"v1"), (b"k2", b"v2")]


@pytest.mark.parametrize("header", ["no-equals", "=value"])
def test_produce_rejects_a_bad_header_before_producing(
    kafka: KafkaHandle, topic_factory: TopicFactory, header: str
) -> None:
    topic = topic_factory(1)
    done = cli(kafka, "produce", "--topic", topic, "-H", header, stdin=b"x\n")
    assert (done.returncode, messages(done.stderr)) == (2, [f"streamcar: -H {header!r}: expected NAME=VALUE"])
    assert read_topic(kafka, topic, expect=0, timeout=1) == []


def test_produce_and_tail_of_a_missing_topic_fail_in_one_line_without_creating_it(
    kafka: KafkaHandle, group_factory: Callable[[], str]
) -> None:
    missing = f"missing-{group_factory()}"
    done = cli(kafka, "produce", "--topic", missing, stdin=b"x\n")
    assert (done.returncode, messages(done.stderr)) == (1, [f"streamcar: topic {missing!r} does not exist"])
    done = cli(kafka, "tail", "--topic", missing, "--no-follow")
    assert (done.returncode, messages(done.stderr)) == (1, [f"streamcar: topic {missing!r} does not exist"])
    # listing every topic does not auto-create one (asking about a single topic may)
    assert missing not in kafka.consumer(group_factory()).list_topics(timeout=10).topics
