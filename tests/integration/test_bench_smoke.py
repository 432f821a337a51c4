"""``make bench`` cannot rot: each of its three benches runs in its smallest form (``--smoke``: every scenario, a few
thousand records, short phases) on the session's broker and ends with its results; a sidecar that exits fails the
bench at once, with its output. (Issue 29: ``make bench`` hung forever on an echo service that died at import.)

This module runs ``python -m bench``; test_bench_pacing.py and test_bench_queues.py run the other two. The
figures are not checked: a smoke run on a busy machine measures nothing."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from benchrun import bench, run_bench
from support import KafkaHandle

pytestmark = pytest.mark.integration

BENCH_SCENARIOS = {
    *("kafka-producer-perf", "kafka-consumer-perf", "ceiling"),
    *("http-single", "http-batch", "grpc", "python", "python-batch"),
    *("http-single-seen", "exactly-once", "exactly-once-100ms", "slow-keyed", "slow-partition"),
    *("replay-ceiling", "replay", "http-round-trip", "aiohttp-round-trip", "grpc-round-trip"),
}


@pytest.mark.timeout(300)  # about 60 s; 150 s on two cores loaded tenfold
def test_the_bench_runs_every_scenario(repo_root: Path, kafka: KafkaHandle, tmp_path: Path) -> None:
    results = tmp_path / "bench.json"
    bench(repo_root, kafka, "bench", "--json", str(results), timeout=280)
    found = {r["scenario"]: r for r in json.loads(results.read_text())["results"]}
    assert found.keys() == BENCH_SCENARIOS
    assert all(r["msgs_per_s"] > 0 for r in found.values())
    assert found["http-single"]["p99_ms"] is not None
    assert found["http-single"]["peak_rss_mib"] is not None


def test_a_sidecar_that_exits_fails_the_bench_at_once_with_its_output(
    repo_root: Path, kafka: KafkaHandle, tmp_path: Path
) -> None:
    began = time.monotonic()
    # max_in_flight 0 is a configuration streamcar refuses at start
    args = ("--only", "python", "--max-in-flight", "0", "--json", str(tmp_path / "bench.json"))
    done = run_bench(repo_root, kafka, "bench", *args, timeout=120)
    assert done.returncode == 1, done.stdout[-4000:] + done.stderr[-4000:]
    assert time.monotonic() - began < 60
    assert "bench failed: sidecar (pid" in done.stderr
    assert "max_in_flight" in done.stderr.split("bench failed:")[1]  # the sidecar's own message
    assert not (tmp_path / "bench.json").exists()
