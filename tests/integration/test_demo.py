"""The README's demo command works end to end, and the example service behaves as documented."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_demo_runs_end_to_end(repo_root: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(repo_root / "examples" / "demo.py")],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "demo done" in out
    assert "exit code 0" in out
    assert out.count("gold") == 2  # the enriched replies really came back through Kafka
    assert "orders-review (routed: the reply sent big orders here too): o-1, o-4" in out
    assert "orders-items (fanned out: one record per item of o-2): cup, pot, tea" in out
    assert "HTTP 422" in out


def test_example_service_enriches_and_rejects(repo_root: Path) -> None:
    sys.path.insert(0, str(repo_root / "examples"))
    try:
        import orders_service
    finally:
        sys.path.pop(0)
    enriched = orders_service.enrich({"order_id": "o", "amount": 100.0, "currency": "EUR"}, "now")
    assert enriched["tax"] == 21.0
    assert enriched["total"] == 121.0
    assert enriched["tier"] == "gold"
    assert json.loads(json.dumps(enriched)) == enriched
    big = orders_service.route({**enriched, "items": [{"sku": "a"}, {"sku": "b"}]})
    assert big.fanout is not None
    assert [r.topic for r in big.fanout] == [None, "orders-review", "orders-items", "orders-items"]
    small = orders_service.route({**enriched, "amount": 5.0})
    assert small.fanout is None
