"""Pacing benchmarks: ``max_in_flight: auto`` and ``rate_limit`` against a service with a capacity knee
(bench/knee_service.py: 16 requests served at once, 10 ms each, the rest queued inside it), in one run on one
broker. ``python -m bench.pacing [--messages N] [--smoke]`` (``make bench`` runs it after ``python -m bench``).

* ``knee``: fixed max_in_flight 4 (below the knee: the no-load latency), 16, 32, 64, 256, and auto (``--knee``).
  Throughput from the replies' timestamps; latency is the service's own (arrival to answer, its queue included),
  p50 / p99 over the middle 80% of the run.
* ``slowdown``: the service goes from 10 to 40 ms a call 8 s into the run (``--slowdown-after``); auto against the
  best fixed setting: how long the limit takes to settle (within 25% of where it ends) and how many calls failed
  (none should).
* ``reject``: 30% of calls get a quick 429 from the start; auto against fixed 64: calls the service got per
  reply published (the amplification) and the limit.
* ``rate``: ``rate_limit: 500/s`` over 30 s (``--rate-seconds``): the rate the service saw, against 500.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from bench import cli
from bench.kafka_io import THROUGHPUT, OutputReader, broker, create_topic, percentile, produce_input
from bench.processes import Child, check_all, http_json, listening, started, wait_until
from bench.runners import streamcar_run
from streamcar.devkafka import free_ports

HERE = Path(__file__).resolve().parent
console = Console()
KNEE = ["4", "16", "32", "64", "256", "auto"]
SMOKE = {
    "messages": 2000,
    "knee": ["4", "64", "auto"],
    "slowdown_after": 0.0,
    "rate_seconds": 3,
    "json": HERE / "results" / "pacing-smoke.json",
}
"""``--smoke``: every scenario on a few thousand records, the knee at three settings, the slowdown at once (the
records would be done in 8 s), the rate over 3 s."""


@dataclass
class Running:
    """A sidecar and its knee service, running."""

    n: int
    service_url: str
    admin_url: str
    reader: OutputReader
    watch: list[Child]

    def control(self, **change: Any) -> None:
        http_json(f"{self.service_url}/control", change, watch=self.watch)

    def status(self) -> dict[str, Any]:
        (pipeline,) = http_json(f"{self.admin_url}/status", watch=self.watch)["pipelines"]
        return dict(pipeline)

    def consuming(self) -> bool:
        return int(self.status().get("consumed", 0)) > 0

    def wait(self, timeout: float = 600) -> float:
        """Seconds from the first reply to the last (their own timestamps)."""
        return self.reader.wait(THROUGHPUT, self.n, timeout=timeout, watch=self.watch).span(THROUGHPUT)

    def served(self) -> list[tuple[float, float, int]]:
        return [tuple(row) for row in http_json(f"{self.service_url}/stats", watch=self.watch)]


@contextmanager
def running(bootstrap: str, workdir: Path, name: str, n: int, **pipeline: Any) -> Iterator[Running]:
    """One sidecar and one knee service on fresh topics, the input's ``n`` records produced."""
    source, out = f"in-{name}-{uuid.uuid4().hex[:6]}", f"out-{name}-{uuid.uuid4().hex[:6]}"
    create_topic(bootstrap, source, 6)
    create_topic(bootstrap, out, 6)
    produce_input(bootstrap, source, n, 64, keys=2000)
    port, admin = free_ports(2)
    service_url = f"http://127.0.0.1:{port}"
    with ExitStack() as stack:
        cmd = [sys.executable, "-m", "bench.knee_service", str(port)]
        service = stack.enter_context(started("knee service", cmd, workdir))
        listening(service, port)
        config = {
            "kafka": {"bootstrap_servers": bootstrap},
            "admin": {"listen": f"127.0.0.1:{admin}"},
            "pipelines": {
                "bench": {
                    "consume": {"topics": [source], "group": f"bench-{uuid.uuid4().hex[:8]}"},
                    "call": {"url": f"{service_url}/echo", "timeout": "1s"},
                    "retry": {"attempts": 50, "initial_backoff": "100ms", "max_backoff": "1s"},
                    "circuit_breaker": {"enabled": False},
                    "publish": {"topic": out},
                    **pipeline,
                }
            },
        }
        path = workdir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        sidecar = stack.enter_context(streamcar_run(path, workdir))
        listening(sidecar, admin)
        reader = stack.enter_context(closing(OutputReader(bootstrap, out)))
        yield Running(n, service_url, f"http://127.0.0.1:{admin}", reader, [service, sidecar])


def _middle(rows: list[tuple[float, float, int]]) -> list[tuple[float, float, int]]:
    rows = sorted(rows)
    return rows[len(rows) // 10 : len(rows) * 9 // 10]


def knee(bootstrap: str, workdir: Path, n: int, settings: list[str]) -> list[dict[str, Any]]:
    found = []
    for label in settings:
        limit: int | str = label if label == "auto" else int(label)
        count = n // 3 if limit == 4 else n
        with running(bootstrap, workdir, f"knee-{label}", count, max_in_flight=limit) as run:
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


def slowdown(bootstrap: str, workdir: Path, n: int, best: int, after: float) -> list[dict[str, Any]]:
    found = []
    for label, limit in ((str(best), best), ("auto", "auto")):
        with running(bootstrap, workdir, f"slow-{label}", n, max_in_flight=limit) as run:
            wait_until("record consumed by the sidecar", run.consuming, timeout=60, watch=run.watch, every=0.2)
            time.sleep(after)
            run.control(delay=0.040)
            switched = time.monotonic()
            limits: list[tuple[float, int | None]] = []
            while run.status().get("consumed", 0) < n and time.monotonic() - switched < 120:
                limits.append((time.monotonic() - switched, run.status().get("concurrency_limit")))
                check_all(run.watch)
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
        with running(bootstrap, workdir, f"reject-{label}", n, max_in_flight=limit) as run:
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


def rate(bootstrap: str, workdir: Path, seconds: int) -> dict[str, Any]:
    """The rate over ``seconds``, leaving out the first second and the last."""
    n = 500 * (seconds + 2)
    with running(bootstrap, workdir, "rate", n, max_in_flight=64, rate_limit="500/s") as run:
        run.wait()
        arrivals = sorted(row[0] for row in run.served())
    inner = [t for t in arrivals if arrivals[0] + 1 <= t <= arrivals[0] + 1 + seconds]
    seen = len(inner) / seconds
    row = {"rate_limit": "500/s", "seen_per_s": round(seen, 1), "ratio": round(seen / 500, 3)}
    console.log(f"rate {row}")
    return row


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.pacing", description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=16_000)
    parser.add_argument("--only", nargs="+", choices=["knee", "slowdown", "reject", "rate"])
    parser.add_argument("--knee", nargs="+", default=KNEE, help="the max_in_flight settings of the knee (or auto)")
    parser.add_argument("--slowdown-after", type=float, default=8.0, help="seconds before the service slows down")
    parser.add_argument("--rate-seconds", type=int, default=30, help="how long the rate limit is measured")
    parser.add_argument("--json", type=Path, default=HERE / "results" / "pacing.json")
    return cli.arguments(parser, SMOKE, argv)


def main(args: argparse.Namespace) -> int:
    wanted = set(args.only or ["knee", "slowdown", "reject", "rate"])
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="streamcar-pacing-") as tmp, broker(Path(tmp), args.bootstrap) as kafka:
        workdir = Path(tmp)
        if "knee" in wanted:
            results["knee"] = knee(kafka.bootstrap, workdir, args.messages, args.knee)
        if "slowdown" in wanted:
            fixed = [r for r in results.get("knee", []) if r["max_in_flight"] != "auto"]
            best = int(max(fixed, key=lambda r: r["msgs_per_s"])["max_in_flight"]) if fixed else 32
            results["slowdown"] = slowdown(kafka.bootstrap, workdir, args.messages, best, args.slowdown_after)
        if "reject" in wanted:
            results["reject"] = reject(kafka.bootstrap, workdir, args.messages // 2)
        if "rate" in wanted:
            results["rate"] = rate(kafka.bootstrap, workdir, args.rate_seconds)
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
    arguments = parse()
    raise SystemExit(cli.run(lambda: main(arguments)))
