"""``streamcar topics create|list|describe`` on the real broker: a dev loop from nothing (create, then produce at
once), the broker's defaults said, configs and their sources, existing topics, the broker's refusals of invalid
input as one line and exit 2, internal topics only with --all, and no topic ever created by a question."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from collections.abc import Callable

import pytest
from confluent_kafka import TopicPartition

from streamcar.cli import main

from support import KafkaHandle, produce_records

pytestmark = pytest.mark.integration


def fresh(tag: str) -> str:
    return f"topics-{tag}-{uuid.uuid4().hex[:8]}"


def topics(kafka: KafkaHandle, *args: str) -> int:
    return main(["topics", *args, "-b", kafka.bootstrap])


def existing(kafka: KafkaHandle) -> set[str]:
    return set(kafka.admin().list_topics(timeout=10).topics)


def test_a_dev_loop_from_nothing_creates_then_produces_at_once(kafka: KafkaHandle) -> None:
    name = fresh("loop")
    base = [sys.executable, "-m", "streamcar"]
    created = subprocess.run(
        [*base, "topics", "create", name, "--partitions", "3", "-b", kafka.bootstrap],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert created.returncode == 0, created.stderr
    assert (
        created.stdout
        == f"created topic {name}: 3 partitions, replication factor 1 (the broker's default.replication.factor)\n"
    )
    # the very next command finds it: create returned only once every partition had a leader
    produced = subprocess.run(
        [*base, "produce", "--topic", name, "-b", kafka.bootstrap],
        input="a\nb\nc\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert produced.returncode == 0, produced.stderr
    assert produced.stderr.strip() == f"produced 3 records to {name}"


def test_create_with_the_brokers_defaults_says_so_and_describe_shows_partitions_and_watermarks(
    kafka: KafkaHandle, capsys: pytest.CaptureFixture[str]
) -> None:
    name = fresh("defaults")
    assert topics(kafka, "create", name) == 0
    assert capsys.readouterr().out == (
        f"created topic {name}: 1 partition, replication factor 1"
        " (the broker's num.partitions and default.replication.factor)\n"
    )
    produce_records(kafka, name, [(None, b"v%d" % i) for i in range(7)])
    admin = kafka.admin()  # kept referenced until the future resolves
    for future in admin.delete_records([TopicPartition(name, 0, 2)], request_timeout=30).values():
        future.result(timeout=30)

    assert topics(kafka, "describe", name, "--json") == 0
    document = json.loads(capsys.readouterr().out)
    assert (document["name"], document["internal"], document["replication_factor"]) == (name, False, 1)
    assert document["partitions"] == [
        {"partition": 0, "leader": 1, "replicas": [1], "isr": [1], "low": 2, "high": 7, "records": 5}
    ]
    assert re.fullmatch(r"[A-Za-z0-9_+/=-]{20,}", document["id"]), document["id"]
    assert "retention.ms" not in {c["name"] for c in document["configs"]}  # Kafka's default: not shown

    assert topics(kafka, "describe", name) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"topic {name} (1 partition, replication factor 1; id {document['id']})\n")
    assert re.search(r"\W0\W+1\W+1\W+1\W+2\W+7\W+5\W", out), out
    assert "5 records between the watermarks" in out


def test_create_with_partitions_and_configs_then_describe_shows_the_configs_and_their_source(
    kafka: KafkaHandle, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = fresh("cfg-a"), fresh("cfg-b")
    args = ["create", a, b, "--partitions", "4", "--replication-factor", "1"]
    assert topics(kafka, *args, "--config", "retention.ms=3600000", "--config", "cleanup.policy=compact") == 0
    assert capsys.readouterr().out == "".join(
        f"created topic {n}: 4 partitions, replication factor 1\n" for n in (a, b)
    )
    assert topics(kafka, "describe", b, "--json") == 0
    document = json.loads(capsys.readouterr().out)
    assert [p["partition"] for p in document["partitions"]] == [0, 1, 2, 3]
    configs = {c["name"]: (c["value"], c["source"]) for c in document["configs"]}
    assert configs["retention.ms"] == ("3600000", "topic")
    assert configs["cleanup.policy"] == ("compact", "topic")
    assert all(source != "default" for _, source in configs.values())

    assert topics(kafka, "describe", a) == 0
    out = capsys.readouterr().out
    assert "configs that are not Kafka's defaults:" in out
    assert re.search(r"retention\.ms\W+3600000\W+topic\W", out), out


def test_an_existing_topic_fails_unless_if_not_exists(kafka: KafkaHandle, capsys: pytest.CaptureFixture[str]) -> None:
    name, other = fresh("exists"), fresh("new")
    assert topics(kafka, "create", name, "--partitions", "2") == 0
    capsys.readouterr()

    assert topics(kafka, "create", name) == 1
    captured = capsys.readouterr()
    assert (
        captured.err == f"streamcar: cannot create topic {name!r}: it exists already (--if-not-exists accepts that)\n"
    )
    assert captured.out == ""

    assert topics(kafka, "create", name, other, "--partitions", "3", "--if-not-exists") == 0
    assert capsys.readouterr().out == (
        f"topic {name} exists already (2 partitions, replication factor 1): left as it is;"
        " not the 3 partitions asked for\n"
        f"created topic {other}: 3 partitions, replication factor 1 (the broker's default.replication.factor)\n"
    )


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["bad name!"], "Topic name is invalid: 'bad name!' contains one or more characters other than"),
        (["{name}", "--config", "no.such.config=1"], "Unknown topic config name: no.such.config"),
        (["{name}", "--config", "retention.ms=soon"], "Invalid value soon for configuration retention.ms"),
        (["{name}", "--replication-factor", "3"], "Unable to replicate the partition 3 time(s)"),
    ],
)
def test_what_the_broker_refuses_as_invalid_is_its_words_in_one_line_and_exit_2(
    kafka: KafkaHandle, capsys: pytest.CaptureFixture[str], args: list[str], words: str
) -> None:
    name = fresh("invalid")
    argv = [a.replace("{name}", name) for a in args]
    assert topics(kafka, "create", *argv) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"streamcar: cannot create topic {argv[0]!r}: {words}"), err
    assert argv[0] not in existing(kafka)


def test_our_own_usage_checks_come_before_the_broker(kafka: KafkaHandle, capsys: pytest.CaptureFixture[str]) -> None:
    name = fresh("usage")
    for args, message in [
        (["--partitions", "0"], "--partitions: 0 is not a partition count (1 or more)"),
        (["--replication-factor", "-1"], "--replication-factor: -1 is not a replication factor (1 or more)"),
        (["--config", "retention.ms"], "--config 'retention.ms': expected a topic config KEY=VALUE"),
        ([name], f"topics create: {name!r} named twice"),
        # issue 30: both were created, two names Kafka's metrics confuse; the last of two values silently won
        ([f"{name}_x", f"{name}.x"], f"topics create: '{name}_x' and '{name}.x' collide: Kafka's metrics name both"),
        (["--config", "retention.ms=1", "--config", "retention.ms=2"], "--config retention.ms is given twice"),
    ]:
        assert topics(kafka, "create", name, *args) == 2, args
        assert capsys.readouterr().err.startswith(f"streamcar: {message}"), args
    assert not {name, f"{name}_x", f"{name}.x"} & set(existing(kafka))


def test_a_partial_failure_keeps_what_was_created_and_names_what_was_not(
    kafka: KafkaHandle, capsys: pytest.CaptureFixture[str]
) -> None:
    good, taken = fresh("good"), fresh("taken")
    assert topics(kafka, "create", taken) == 0
    capsys.readouterr()
    assert topics(kafka, "create", good, "bad name", taken) == 1  # one refusal is not invalid input: exit 1
    captured = capsys.readouterr()
    assert captured.out.startswith(f"created topic {good}:")
    assert captured.err.startswith("streamcar: cannot create 2 of 3 topics: 'bad name': Topic name is invalid")
    assert captured.err.rstrip().endswith(f"{taken!r}: it exists already (--if-not-exists accepts that)")
    assert good in existing(kafka)


def test_list_shows_partitions_and_replication_and_internal_topics_only_with_all(
    kafka: KafkaHandle, group_factory: Callable[[], str], capsys: pytest.CaptureFixture[str]
) -> None:
    name = fresh("listed")
    assert topics(kafka, "create", name, "--partitions", "2") == 0
    consumer = kafka.consumer(group_factory())  # a commit: __consumer_offsets exists for sure
    consumer.commit(offsets=[TopicPartition(name, 0, 0)], asynchronous=False)
    capsys.readouterr()

    assert topics(kafka, "list", "--json") == 0
    listed = {t["name"]: t for t in json.loads(capsys.readouterr().out)["topics"]}
    assert listed[name] == {"name": name, "partitions": 2, "replication_factor": 1, "internal": False}
    assert "__consumer_offsets" not in listed

    assert topics(kafka, "list", "--all", "--json") == 0
    everything = {t["name"]: t for t in json.loads(capsys.readouterr().out)["topics"]}
    assert everything["__consumer_offsets"]["internal"] is True
    assert set(everything) - set(listed) == {t for t, v in everything.items() if v["internal"]}

    assert topics(kafka, "list") == 0
    out = capsys.readouterr().out
    assert re.search(rf"{re.escape(name)}\W+2\W+1\W", out), out
    hidden = len(everything) - len(listed)
    assert out.rstrip().endswith(
        f"{len(listed)} topics; {hidden} internal one{'' if hidden == 1 else 's'} not shown (--all shows them)"
    )


def test_describing_a_missing_topic_is_one_line_and_does_not_create_it(
    kafka: KafkaHandle, capsys: pytest.CaptureFixture[str]
) -> None:
    name = fresh("missing")
    assert topics(kafka, "describe", name) == 1
    assert capsys.readouterr().err == f"streamcar: topic {name!r} does not exist\n"
    assert topics(kafka, "list") == 0
    assert name not in capsys.readouterr().out
    assert name not in existing(kafka)  # the broker auto-creates topics on a metadata request naming them
