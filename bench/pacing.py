"""Pacing benchmarks: ``max_in_flight: auto`` and ``rate_limit`` against a service with a capacity knee
(bench/knee_service.py: 16 requests served at once, 10 ms each, the rest queued inside it), in one run on one
broker. ``python -m bench.pacing [--messages N]`` (``make bench`` runs it after ``python -m bench``).

* ``knee``: fixed max_in_flight 4 (below the knee: the no-load latency), 16, 32, 64, 256, and auto. Throughput
  from the replies' timestamps; latency is the service's own (arrival to answer, its queue included), p50 / p99
  over the middle 80% of the run.
* ``slowdown``: the service goes from 10 to 40 ms a call 8 s into the run; auto against the best fixed setting:
  how long the limit takes to settle (within 25% of where it ends) and how many calls failed (none should).
* ``reject``: 30% of calls get a quick 429 from the start; auto against fixed 64: calls the service got per
  reply published (the amplification) and the limit.
* ``rate``: ``rate_limit: 500/s`` over 30 s: the rate the service saw, against 500.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from bench.kafka_io import THROUGHPUT, OutputReader, create_topic, percentile, produce_input
from bench.runners import _pythonpath, _stop, _wait_listening
from streamcar.devkafka import LocalKafka, free_ports

HERE = Path(__file__).resolve().parent
console = Console()


def _http(url: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=10) as response:
        return json.loads(response.read())


class Run:
    """One sidecar and one knee service on fresh topics."""

    def __init__(self, bootstrap: str, workdir: Path, name: str, n: int, **pipeline: Any) -> None:
        self.bootstrap, self.workdir, self.name, self.n, self.pipeline = bootstrap, workdir, name, n, pipeline

    @contextmanager
    def running(self) -> Iterator[Run]:
        source, out = f"in-{self.name}-{uuid.uuid4().hex[:6]}", f"out-{self.name}-{uuid.uuid4().hex[:6]}"
        create_topic(self.bootstrap, source, 6)
        create_topic(self.bootstrap, out, 6)
        produce_input(self.bootstrap, source, self.n, 64, keys=2000)
        port, admin = free_ports(2)
        self.service_url = f"http://127.0.0.1:{port}"
        self.admin_url = f"http://127.0.0.1:{admin}"
        service = subprocess.Popen([sys.executable, str(HERE / "knee_service.py"), str(port)])
        _wait_listening(port)
        config = {
            "kafka": {"bootstrap_servers": self.bootstrap},
            "admin": {"listen": f"127.0.0.1:{admin}"},
            "pipelines": {
                "bench": {
                    "consume": {"topics": [source], "group": f"bench-{uuid.uuid4().hex[:8]}"},
                    "call": {"url": f"{self.service_url}/echo", "timeout": "1s"},
                    "retry": {"attempts": 50, "initial_backoff": "100ms", "max_backoff": "1s"},
                    "circuit_breaker": {"enabled": False},
                    "publish": {"topic": out},
                    **self.pipeline,
                }
            },
        }
        path = self.workdir / f"{self.name}.yaml"
        path.write_text(yaml.safe_dump(config))
        env = {**os.environ, "STREAMCAR_LOG_LEVEL": "WARNING", "PYTHONPATH": _pythonpath()}
        process = subprocess.Popen([sys.executable, "-m", "streamcar", "run", "-c", str(path)], env=env)
        self.reader = OutputReader(self.bootstrap, out)
        try:
            _wait_listening(admin)
            yield self
        finally:
            self.reader.close()
            _stop(process)
            _stop(service)

    def control(self, **change: Any) -> None:
        _http(f"{self.service_url}/control", change)

    def status(self) -> dict[str, Any]:
        (pipeline,) = _http(f"{self.admin_url}/status")["pipelines"]
        return dict(pipeline)

    def wait(self, timeout: float = 600) -> float:
        """Seconds from the first reply to the last (their own timestamps)."""
        return self.reader.wait(THROUGHPUT, self.n, timeout=timeout).span(THROUGHPUT)

    def served(self) -> list[tuple[float, float, int]]:
        return [tuple(row) for row in _http(f"{self.service_url}/stats")]


def _middle(rows: list[tuple[float, float, int]]) -> list[tuple[float, float, int]]:
    rows = sorted(rows)
    return rows[len(rows) // 10 : len(rows) * 9 // 10]


def knee(bootstrap: str, workdir: Path, n: int) -> list[dict[str, Any]]:
    found = []
    for label, limit in (("4", 4), ("16", 16), ("32", 32), ("64", 64), ("256", 256), ("auto", "auto")):
        count = n // 3 if limit == 4 else n
        with Run(bootstrap, workdir, f"knee-{label}", count, max_in_flight=limit).running() as run:
            seconds = run.wait()
            served = [row[1] for row in _middle(run.served()) if row[2] == 200]
            limit_now = run.status().get("concurrency_limit")
        row = {
            "max_in_flight": label,
            "msgs_per_s": round(count / seconds, 1),
            "p50_ms": round(percentile(served, 0.5) * 1000, 1),
            "p99_ms": round(percentile(served, 0.99) * 1000, 1),
            "limit": limit_now,
        }
        console.log(f"knee {row}")
        found.append(row)
    return found


def slowdown(bootstrap: str, workdir: Path, n: int, best: int) -> list[dict[str, Any]]:
    found = []
    for label, limit in ((str(best), best), ("auto", "auto")):
        with Run(bootstrap, workdir, f"slow-{label}", n, max_in_flight=limit).running() as run:
            while run.status().get("consumed", 0) == 0:
                time.sleep(0.2)
            time.sleep(8)
            run.control(delay=0.040)
            switched = time.monotonic()
            limits: list[tuple[float, int | None]] = []
            while run.status().get("consumed", 0) < n and time.monotonic() - switched < 120:
                limits.append((time.monotonic() - switched, run.status().get("concurrency_limit")))
                time.sleep(0.25)
            run.wait()
            status = run.status()
        settled = None
        values = [v for _, v in limits if v is not None]
        if values:
            final = statistics.median(values[-20:])
            outside = [t for t, v in limits if v is not None and abs(v - final) > 0.25 * final]
            settled = round(max(outside, default=0.0), 1)
        row = {
            "max_in_flight": label,
            "settled_s": settled,
            "final_limit": values[-1] if values else None,
            "retries": status.get("retries"),
            "call_errors": status.get("call_errors"),
        }
        console.log(f"slowdown {row}")
        found.append(row)
    return found


def reject(bootstrap: str, workdir: Path, n: int) -> list[dict[str, Any]]:
    found = []
    for label, limit in (("64", 64), ("auto", "auto")):
        with Run(bootstrap, workdir, f"reject-{label}", n, max_in_flight=limit).running() as run:
            run.control(reject=0.3)
            seconds = run.wait()
            served = run.served()
            limit_now = run.status().get("concurrency_limit")
        calls = len(served)
        row = {
            "max_in_flight": label,
            "msgs_per_s": round(n / seconds, 1),
            "calls_per_reply": round(calls / n, 2),
            "calls_per_s": round(calls / seconds, 1),
            "limit": limit_now,
        }
        console.log(f"reject {row}")
        found.append(row)
    return found


def rate(bootstrap: str, workdir: Path) -> dict[str, Any]:
    n = 500 * 32
    with Run(bootstrap, workdir, "rate", n, max_in_flight=64, rate_limit="500/s").running() as run:
        run.wait()
        arrivals = sorted(row[0] for row in run.served())
    inner = [t for t in arrivals if arrivals[0] + 1 <= t <= arrivals[0] + 31]
    seen = len(inner) / 30
    row = {"rate_limit": "500/s", "seen_per_s": round(seen, 1), "ratio": round(seen / 500, 3)}
    console.log(f"rate {row}")
    return row


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pacing", description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=16_000)
    parser.add_argument("--only", nargs="+", choices=["knee", "slowdown", "reject", "rate"])
    parser.add_argument("--json", type=Path, default=HERE / "results" / "pacing.json")
    args = parser.parse_args()
    wanted = set(args.only or ["knee", "slowdown", "reject", "rate"])
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="streamcar-pacing-") as tmp:
        workdir = Path(tmp)
        cluster = LocalKafka(workdir / "kafka")
        try:
            bootstrap = cluster.start(nodes=1, port=0, heap="1g", die_with_parent=True).bootstrap
            if "knee" in wanted:
                results["knee"] = knee(bootstrap, workdir, args.messages)
            if "slowdown" in wanted:
                fixed = [r for r in results.get("knee", []) if r["max_in_flight"] != "auto"]
                best = int(max(fixed, key=lambda r: r["msgs_per_s"])["max_in_flight"]) if fixed else 32
                results["slowdown"] = slowdown(bootstrap, workdir, args.messages, best)
            if "reject" in wanted:
                results["reject"] = reject(bootstrap, workdir, args.messages // 2)
            if "rate" in wanted:
                results["rate"] = rate(bootstrap, workdir)
        finally:
            cluster.stop(timeout=30)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    for name, rows in results.items():
        rows = rows if isinstance(rows, list) else [rows]
        table = Table(title=name)
        for column in rows[0]:
            table.add_column(column)
        for row in rows:
            table.add_row(*(str(v) for v in row.values()))
        console.print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
