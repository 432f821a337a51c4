"""``python -m bench.pacing --smoke`` (the second part of ``make bench``) runs every scenario and ends with its
results (test_bench_smoke.py says why)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchrun import bench
from support import KafkaHandle

pytestmark = pytest.mark.integration


@pytest.mark.timeout(240)
def test_the_pacing_bench_runs_every_scenario(repo_root: Path, kafka: KafkaHandle, tmp_path: Path) -> None:
    results = tmp_path / "pacing.json"
    bench(repo_root, kafka, "bench.pacing", "--json", str(results), timeout=220)
    found = json.loads(results.read_text())
    assert [row["max_in_flight"] for row in found["knee"]] == ["4", "64", "auto"]
    assert len(found["slowdown"]) == 2
    assert [row["max_in_flight"] for row in found["reject"]] == ["64", "auto"]
    assert found["rate"]["seen_per_s"] > 0
