"""Hostile input records and reply headers, against ``streamcar run`` as its own process (rows 1, 2, 3, 7 and 14
of the hostile-input issue). Before, each of these crashed the sidecar or retried a message to exhaustion:

| row | what | before | now |
|---|---|---|---|
| 1 | an input header *name* that is not UTF-8 | exit 1, crash loop | dead-lettered at once, ``rejected`` |
| 2 | a reply ``Content-Type`` with a byte that is not UTF-8 | exit 1, crash loop | published, bytes kept |
| 3 | keys and header values of any bytes | ``internal`` retries | carried, percent-encoded |
| 7 | a reply ``Content-Type`` in UTF-8 beyond ASCII | mojibake | published, bytes kept |
| 14 | a batch reply header name with a lone surrogate | SIGSEGV in produce | published, name escaped |

The process must stay up throughout, with a bounded peak RSS, and the invariant check must hold for every input.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from typing import Any

import pytest

from hostile import HostileService, Script, batch, content_type, echo_id, reply_with_id
from invariants import Id, read_all
from scenario import ScenarioFactory
from service import Seen
from sidecar import SidecarFactory, make_config, pipeline
from support import KafkaHandle, TopicFactory, produce_records
from threaded import ServiceFactory

pytestmark = [pytest.mark.integration, pytest.mark.faults]

RSS_BOUND_MIB = 250
NOT_UTF8_TYPE = b"text/plain; name=\xff\xfe"
UTF8_TYPE = "text/plain; name=ünïcødé ✓".encode()
ODD_BYTES = [b"\x00\xff\r\n", b"\xc3\x28", "ü".encode(), b"%41 +", b""]


def kcat_produce(kafka: KafkaHandle, topic: str, key: bytes, value: bytes, header: bytes) -> None:
    """One record whose header name is ``header``'s raw bytes: confluent-kafka only writes UTF-8 names."""
    kcat = shutil.which("kcat")
    assert kcat is not None, "kcat must be installed (scripts/ensure-test-tools.sh installs it)"
    subprocess.run(
        [
            kcat.encode(),
            b"-P",
            b"-b",
            kafka.bootstrap.encode(),
            b"-t",
            topic.encode(),
            b"-p",
            b"0",
            b"-k",
            key,
            b"-H",
            header + b"=x",
        ],
        input=value + b"\n",
        check=True,
        timeout=30,
    )


def choose(seen: Seen) -> Script:
    if seen.body.startswith(b"type-bin"):
        return content_type(NOT_UTF8_TYPE)
    if seen.body.startswith(b"type-utf8"):
        return content_type(UTF8_TYPE)
    if not seen.topic:  # a batch: one result has a header name no encoder writes
        return batch(surrogate_header)
    return reply_with_id


def surrogate_header(message: dict[str, Any]) -> dict[str, Any]:
    result = echo_id(message)
    if message["value"] == "surrogate":
        result["headers"] = {"\ud800bad": "x", "fine": "y"}
    return result


def test_hostile_records_and_reply_headers_never_crash_the_sidecar(
    kafka: KafkaHandle,
    scenario_factory: ScenarioFactory,
    sidecar_factory: SidecarFactory,
    service_factory: ServiceFactory,
) -> None:
    scenario = scenario_factory(3)
    source, out, dlq = scenario.source, scenario.out, scenario.dlq
    batches = scenario_factory(1, dead_letters=False)  # a pipeline in batch delivery, beside the single one
    batch_source, batch_out, batch_group = batches.source, batches.out, batches.group
    service = service_factory(HostileService(choose))
    records: list[tuple[bytes | None, bytes | None, list[tuple[str, str | bytes | None]]]] = []
    for i in range(200):
        records.append((f"k{i % 13}".encode(), f"normal {i}".encode(), []))
        if i % 40 == 5:  # row 3: any bytes in keys and header values, and in a content-type and traceparent
            odd = ODD_BYTES[(i // 40) % len(ODD_BYTES)]
            headers: list[tuple[str, str | bytes | None]] = [("bin", odd), ("ünï", odd), ("none", None)]
            headers += [("content-type", b"text/\xff\xfe"), ("traceparent", b"00-\xff")]
            records.append((odd + b"key", b"odd " + odd, headers))
        if i % 50 == 7:
            records.append((f"k{i % 13}".encode(), b"type-bin %d" % i, []))  # row 2
            records.append((f"k{i % 13}".encode(), b"type-utf8 %d" % i, []))  # row 7
    produce_records(kafka, source, records)
    for n in range(3):  # row 1, between normal records of the same key
        kcat_produce(kafka, source, b"k1", b"bad header name %d" % n, b"\xff\xfebad")
        produce_records(kafka, source, [(b"k1", b"after bad %d" % n)], partition=0)
    produce_records(
        kafka,
        batch_source,
        [(f"b{i % 5}".encode(), b"surrogate" if i % 25 == 3 else b"%d" % i) for i in range(100)],
    )
    inputs = read_all(kafka, source)
    bad = {r.id for r in inputs if (r.value or b"").startswith(b"bad header name")}
    assert len(bad) == 3
    assert all(r.headers == () for r in inputs if r.id in bad)

    spec = scenario.spec(service.url, max_in_flight=32)
    batch_spec = pipeline(
        batch_source, batch_group, service.url, publish=batch_out, call={"batch": {"max_messages": 10}}
    )
    config = make_config(kafka.bootstrap, {"single": spec, "batch": batch_spec})
    process = sidecar_factory(config)
    scenario.check(
        lambda: [c for c in service.requests() if c.topic == source],
        dead_letters=dict.fromkeys(bad, "rejected"),
    )
    batches.check(lambda: [c for c in service.requests() if c.topic == batch_source])
    assert process.alive, process.log_tail()
    peak = process.peak_rss_mib()

    by_input = {r.id: r for r in inputs}
    replies = {_source(r.value): r for r in read_all(kafka, out)}
    for ident, reply in replies.items():
        value = by_input[ident].value or b""
        if value.startswith(b"type-bin"):
            assert reply.header("content-type") == NOT_UTF8_TYPE
        elif value.startswith(b"type-utf8"):
            assert reply.header("content-type") == UTF8_TYPE
    calls = {c.id: c for c in service.requests() if c.topic == source}
    for record in inputs:
        if (record.value or b"").startswith(b"odd "):  # the service got the exact bytes
            call = calls[record.id]
            assert call.key == record.key
            assert call.headers["Kafka-Header-Bin"] == _percent(record.header("bin"))
            assert call.headers["Content-Type"].encode("latin-1") == b"text/\xff\xfe"
    letters = read_all(kafka, dlq)
    for letter in letters:
        assert b"not valid UTF-8" in (letter.header("streamcar-error") or b"")
    surrogates = [r for r in read_all(kafka, batch_out) if any(k.startswith("\\ud800") for k, _ in r.headers)]
    assert len(surrogates) == 4, "the lone surrogate is written as an escape"

    process.signal(signal.SIGTERM)
    assert process.wait(30) == 0, process.log_tail()
    print(f"peak RSS {peak:.0f} MiB")
    assert peak < RSS_BOUND_MIB


def _source(value: bytes | None) -> Id:
    topic, partition, offset = (value or b"").decode().rsplit("-", 2)
    return (topic, int(partition), int(offset))


def _percent(value: bytes | None) -> str:
    from urllib.parse import quote_from_bytes

    return quote_from_bytes(value or b"", safe="")


def test_dlq_show_lists_a_record_whose_headers_cannot_be_read(kafka: KafkaHandle, topic_factory: TopicFactory) -> None:
    topic = topic_factory(1)
    kcat_produce(kafka, topic, b"k", b"v", b"\xff\xfebad")
    shown = subprocess.run(
        [sys.executable, "-m", "streamcar", "dlq", "show", "--topic", topic, "-b", kafka.bootstrap, "--json"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr[-500:]  # it segfaulted (rc 139) reading the headers twice
    assert b"not valid UTF-8" in shown.stdout
