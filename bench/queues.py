"""Queue mode against a consumer group: three sidecars, each beside its own slow service instance, on a topic of
one partition. ``python -m bench.queues [--messages N] [--smoke]`` (``make bench`` runs it too).

Each service instance (bench/knee_service.py) serves 8 requests at once, 20 ms each: 400 a second. Each
sidecar calls its own instance with ``max_in_flight: 8``. In a consumer group only one member can own the one
partition, so two sidecars and their services idle; in a share group all three take records. Throughput is
from the replies' own timestamps (first to last), with the inputs produced once every member is up, in
producer batches of 20 records, as a stream of events arrives; and once more in batches of up to 10,000, as a
bulk load with librdkafka's defaults writes them (the broker hands a batch to one member whole, and what that
member cannot start within the lock goes back to the others, a delivery more each time). The duplicates are
replies beyond one per input.
"""

from __future__ import annotations

import argparse
import json
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
from confluent_kafka import Consumer, TopicPartition
from rich.console import Console
from rich.table import Table

from bench import cli
from bench.kafka_io import THROUGHPUT, OutputReader, broker, create_topic, produce_input
from bench.processes import Child, check_all, http_json, listening, started
from bench.runners import streamcar_run
from streamcar.devkafka import free_ports

HERE = Path(__file__).resolve().parent
MEMBERS, CAPACITY, DELAY, IN_FLIGHT = 3, 8, 0.020, 8
JOIN = 8.0
"""Seconds the members get to join before the inputs are produced (a share group hands out records only to the
members it knows, and a consumer group's one partition has to be assigned)."""
SMOKE = {"messages": 2000, "join": 3.0, "json": HERE / "results" / "queue-smoke.json"}
"""``--smoke``: a few thousand records, 3 s to join."""
console = Console()


@dataclass
class Member:
    """A sidecar and its own knee service instance, running."""

    admin_url: str
    watch: list[Child]

    def consumed(self) -> int:
        return int(http_json(f"{self.admin_url}/status", watch=self.watch)["pipelines"][0]["consumed"])


@contextmanager
def _member(bootstrap: str, workdir: Path, name: str, consume: dict[str, Any], out: str) -> Iterator[Member]:
    """One knee service instance and its sidecar, the sidecar's admin endpoints answering."""
    port, admin = free_ports(2)
    with ExitStack() as stack:
        cmd = [sys.executable, "-m", "bench.knee_service", str(port)]
        service = stack.enter_context(started(f"knee service {name}", cmd, workdir))
        listening(service, port)
        http_json(f"http://127.0.0.1:{port}/control", {"delay": DELAY, "capacity": CAPACITY}, watch=[service])
        config = {
            "kafka": {"bootstrap_servers": bootstrap},
            "admin": {"listen": f"127.0.0.1:{admin}"},
            "pipelines": {
                "bench": {
                    "consume": consume,
                    "call": {"url": f"http://127.0.0.1:{port}/echo", "timeout": "5s"},
                    "ordering": "none",
                    "max_in_flight": IN_FLIGHT,
                    "publish": {"topic": out},
                    "dead_letter": {"topic": f"{out}-dlq"},
                }
            },
        }
        path = workdir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        sidecar = stack.enter_context(streamcar_run(path, workdir))
        listening(sidecar, admin)
        yield Member(f"http://127.0.0.1:{admin}", [service, sidecar])


def _replies(bootstrap: str, topic: str) -> int:
    """Every record of ``topic`` now (duplicates included)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex}"})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        return int(high - low)
    finally:
        consumer.close()


LARGE = 10_000
"""Records per producer batch at most in the bulk-load row (librdkafka's default ``batch.num.messages``)."""


def run(bootstrap: str, workdir: Path, mode: str, n: int, join: float, *, batch: int = 20) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:6]
    source, out = f"in-{mode}-{tag}", f"out-{mode}-{tag}"
    for topic in (source, out, f"{out}-dlq"):
        create_topic(bootstrap, topic, 1)
    group = f"bench-{mode}-{tag}"
    consume = {"topics": [source], "share_group" if mode == "queue" else "group": group}
    with ExitStack() as stack:
        members = [
            stack.enter_context(_member(bootstrap, workdir, f"{mode}-{i}", consume, out)) for i in range(MEMBERS)
        ]
        watch = [child for member in members for child in member.watch]
        time.sleep(join)
        check_all(watch)
        reader = stack.enter_context(closing(OutputReader(bootstrap, out)))
        produce_input(bootstrap, source, n, 64, keys=1000, batch=batch)
        seconds = reader.wait(THROUGHPUT, n, timeout=600, watch=watch).span(THROUGHPUT)
        consumed = [member.consumed() for member in members]
    row = {
        "mode": "share group" if mode == "queue" else "consumer group",
        "producer_batches": f"up to {batch:,}",
        "msgs_per_s": round(n / seconds, 1),
        "busy_members": sum(1 for c in consumed if c),
        "consumed_per_member": consumed,
        "duplicates": _replies(bootstrap, out) - n,
    }
    console.log(f"queue bench {row}")
    return row


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.queues", description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=12_000)
    parser.add_argument("--join", type=float, default=JOIN, help="seconds the members get to join")
    parser.add_argument("--json", type=Path, default=HERE / "results" / "queue.json")
    return cli.arguments(parser, SMOKE, argv)


def main(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="streamcar-queue-") as tmp, broker(Path(tmp), args.bootstrap) as kafka:
        rows = [
            run(kafka.bootstrap, Path(tmp), mode, args.messages, args.join, batch=batch)
            for mode, batch in (("group", 20), ("queue", 20), ("queue", LARGE))
        ]
    ratio = round(rows[1]["msgs_per_s"] / rows[0]["msgs_per_s"], 2)
    bulk = round(rows[2]["msgs_per_s"] / rows[0]["msgs_per_s"], 2)
    results = {"rows": rows, "queue_over_group": ratio, "bulk_queue_over_group": bulk, "ideal": MEMBERS}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    table = Table(title=f"{MEMBERS} sidecars, 1 partition, {CAPACITY} x {DELAY * 1000:.0f} ms per service instance")
    for column in rows[0]:
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    console.print(table)
    console.print(f"queue / group throughput: {ratio}x, {bulk}x with producer batches of thousands (ideal {MEMBERS}x)")
    return 0


if __name__ == "__main__":
    arguments = parse()
    raise SystemExit(cli.run(lambda: main(arguments)))
