"""`streamcar run` as a process: SIGKILL loses nothing, SIGTERM/SIGINT drain and exit 0.

Every check reads the output topic and the group's committed offsets; nothing trusts the sidecar's counters.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from aiohttp import web

from service import Seen, TestService
from sidecar import SidecarProcess, make_config, pipeline
from support import (
    KafkaHandle,
    TopicFactory,
    committed,
    committed_total,
    produce_records,
    read_topic,
    topic_offsets,
    wait_for,
)

pytestmark = pytest.mark.integration


async def reply_with_id(seen: Seen) -> web.StreamResponse:
    return web.Response(body=seen.headers["Idempotency-Key"].encode())


def test_sigkill_loses_nothing(
    kafka: KafkaHandle, topic_factory: TopicFactory, group_factory: Callable[[], str], tmp_path: Path
) -> None:
    source, out = topic_factory(3), topic_factory(3)
    group = group_factory()
    n, max_in_flight, kills = 20_000, 128, 3
    service = TestService(reply_with_id).start()
    process: SidecarProcess | None = None
    try:
        produce_records(kafka, source, [(f"k{i % 97}".encode(), str(i).encode()) for i in range(n)])
        spec = pipeline(source, group, service.url, publish=out, max_in_flight=max_in_flight, commit_interval="1s")
        # a killed member stays in the group until its session times out: keep that short so restarts are quick
        config = make_config(
            kafka.bootstrap, {"p": spec}, librdkafka={"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000}
        )
        for round_ in range(kills):
            process = SidecarProcess(config, tmp_path).start()
            target = service.count() + 2500
            wait_for(
                lambda target=target: service.count() >= target,  # type: ignore[misc]
                timeout=120,
                what=f"progress before kill {round_ + 1}",
            )
            process.kill()  # SIGKILL: no drain, no commit, buffered replies gone
        process = SidecarProcess(config, tmp_path).start()
        expected = {f"{source}-{p}-{o}" for p, o in topic_offsets(kafka, source)}
        assert len(expected) == n
        replies = read_topic(kafka, out, expect=n, timeout=180)
        ids = Counter((m.value() or b"").decode() for m in replies)
        missing = expected - set(ids)
        assert not missing, f"{len(missing)} inputs have no reply, e.g. {sorted(missing)[:5]}"
        duplicates = sum(ids.values()) - n
        print(f"duplicates after {kills} SIGKILLs: {duplicates}")
        # A crash redoes what was in flight (<= max_in_flight), what completed since the last commit was
        # triggered (max_in_flight / 2) and what completed while that commit travelled to the broker.
        assert duplicates <= kills * 3 * max_in_flight, duplicates
        process.signal(signal.SIGTERM)
        assert process.wait(30) == 0, process.log_tail()
        assert committed_total(kafka, group) == n
    finally:
        if process is not None:
            process.kill()
        service.stop()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_drains_commits_and_exits_zero(
    sig: signal.Signals,
    kafka: KafkaHandle,
    topic_factory: TopicFactory,
    group_factory: Callable[[], str],
    tmp_path: Path,
) -> None:
    source, out = topic_factory(3), topic_factory(3)
    group = group_factory()

    async def slow(seen: Seen) -> web.StreamResponse:
        import asyncio

        await asyncio.sleep(0.2)  # long enough that the signal lands with calls in flight
        return await reply_with_id(seen)

    service = TestService(slow).start()
    process = None
    try:
        produce_records(kafka, source, [(f"k{i}".encode(), b"v") for i in range(3000)])
        spec = pipeline(source, group, service.url, publish=out, max_in_flight=64, shutdown_timeout="10s")
        process = SidecarProcess(make_config(kafka.bootstrap, {"p": spec}), tmp_path).start()
        wait_for(lambda: service.count() >= 200, timeout=60, what="calls under way")
        process.signal(sig)
        started = time.monotonic()
        assert process.wait(15) == 0, process.log_tail()
        assert time.monotonic() - started < 10
        calls = service.count()
        assert calls < 3000, "the run should have been stopped part-way"
        commits = {p: o for (_, p), o in committed(kafka, group).items()}
        # everything below the committed offsets has its reply in the output topic: the drain lost nothing
        replies = {(m.value() or b"").decode() for m in read_topic(kafka, out, expect=sum(commits.values()))}
        for partition, offset in commits.items():
            for o in range(offset):
                assert f"{source}-{partition}-{o}" in replies
        # the drain let the calls in flight finish: what the service saw is (nearly all) committed
        assert sum(commits.values()) >= calls - 64
        assert "draining" in process.log_tail(50)
    finally:
        if process is not None:
            process.kill()
        service.stop()
