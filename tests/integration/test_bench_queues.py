"""``python -m bench.queues --smoke`` (the last part of ``make bench``) runs both modes, the share group also on
producer batches of thousands, and ends with its results
(test_bench_smoke.py says why)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchrun import bench
from support import KafkaHandle

pytestmark = pytest.mark.integration


@pytest.mark.timeout(180)
def test_the_queue_bench_runs_both_modes_and_large_batches(repo_root: Path, kafka: KafkaHandle, tmp_path: Path) -> None:
    results = tmp_path / "queue.json"
    bench(repo_root, kafka, "bench.queues", "--json", str(results), timeout=160)
    rows = json.loads(results.read_text())["rows"]
    assert [row["mode"] for row in rows] == ["consumer group", "share group", "share group"]
    assert all(sum(row["consumed_per_member"]) >= 2000 for row in rows)
