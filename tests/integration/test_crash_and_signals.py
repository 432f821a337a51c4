"""`streamcar run` as a process: SIGTERM/SIGINT drain and exit 0 (repeated SIGKILL: tests/faults/test_sigkill.py).

Every check reads the output topic and the group's committed offsets; nothing trusts the sidecar's counters.
"""

from __future__ import annotations

import signal
import time
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
    produce_records,
    read_topic,
    wait_for,
)

pytestmark = pytest.mark.integration


async def reply_with_id(seen: Seen) -> web.StreamResponse:
    return web.Response(body=seen.headers["Idempotency-Key"].encode())


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
