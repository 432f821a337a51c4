"""Replies that would exhaust the sidecar's memory or hold its loop, among normal traffic (rows 4, 5 and 6 of the
hostile-input issue), against ``streamcar run`` as its own process:

| row | the reply | before | now |
|---|---|---|---|
| 4 | a chunked body that never ends, sent fast | 2.78 GB RSS within the 2 s call timeout | ``bad-reply`` at 16 MiB |
| 5 | a gzip bomb (2 MB that inflate to 2 GiB) | 3.3 GB RSS, /status timed out | ``bad-reply`` at 16 MiB |
| 6 | a 300 KB head in one read | passed the head limit | ``bad-reply`` |
| - | bytes that are not HTTP | (already handled) | ``http-client`` |

Each hostile reply fails its call; the message is retried and dead-lettered (``exhausted``) while every other
message is replied. /status answers promptly throughout, and the peak RSS stays bounded.
"""

from __future__ import annotations

import threading
import time

import pytest

from hostile import HostileService, Script, bomb, endless, garbage, huge_head, reply_with_id
from invariants import read_all
from scenario import ScenarioFactory
from service import Seen
from sidecar import SidecarFactory, make_config
from support import KafkaHandle, produce_records
from threaded import ServiceFactory

pytestmark = [pytest.mark.integration, pytest.mark.faults]

RSS_BOUND_MIB = 300
STATUS_WITHIN = 1.5  # seconds /status may take while the hostile replies arrive
SCRIPTS: dict[bytes, Script] = {b"endless": endless, b"bomb": bomb, b"head": huge_head, b"garbage": garbage}


def choose(seen: Seen) -> Script:
    return SCRIPTS.get(seen.body.split(b" ")[0], reply_with_id)


def test_endless_bodies_bombs_and_huge_heads_are_bounded(
    kafka: KafkaHandle,
    scenario_factory: ScenarioFactory,
    sidecar_factory: SidecarFactory,
    service_factory: ServiceFactory,
) -> None:
    scenario = scenario_factory(3)
    source, dlq = scenario.source, scenario.dlq
    service = service_factory(HostileService(choose))
    records: list[tuple[bytes | None, bytes | None]] = []
    for i in range(300):
        records.append((f"k{i % 11}".encode(), b"normal %d" % i))
        if i % 60 == 13:
            records += [(f"k{i % 11}".encode(), name + b" %d" % i) for name in SCRIPTS]
    produce_records(kafka, source, records)
    inputs = read_all(kafka, source)
    hostile = {r.id for r in inputs if (r.value or b"").split(b" ")[0] in SCRIPTS}
    spec = scenario.spec(
        service.url,
        max_in_flight=16,
        call={"timeout": "3s"},
        retry={"attempts": 2, "initial_backoff": "50ms", "max_backoff": "100ms"},
    )
    process = sidecar_factory(make_config(kafka.bootstrap, {"p": spec}))
    slowest: list[float] = []
    done = threading.Event()

    def watch() -> None:  # the loop must stay free for the admin server while the replies are refused
        assert process is not None
        while not done.is_set():
            started = time.monotonic()
            process.status(timeout=10)
            slowest.append(time.monotonic() - started)
            done.wait(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    process.admin_url()
    watcher.start()
    try:
        scenario.check(service.requests, dead_letters=dict.fromkeys(hostile, "exhausted"))
    finally:
        done.set()
        watcher.join(15)
    assert process.alive, process.log_tail()
    peak = process.peak_rss_mib()
    errors = {(letter.header("streamcar-error") or b"").decode() for letter in read_all(kafka, dlq)}
    assert any("exceeds 16 MiB decompressed" in e for e in errors), errors  # the bomb
    assert any("exceeds 16 MiB (call.max_response_bytes)" in e for e in errors), errors  # the endless body
    assert any("headers exceed 256 KiB" in e for e in errors), errors
    print(f"peak RSS {peak:.0f} MiB; slowest /status {max(slowest):.3f}s of {len(slowest)}")
    assert peak < RSS_BOUND_MIB
    assert max(slowest) < STATUS_WITHIN
