"""The README's demo: local Kafka, the example orders service, the sidecar between them, events flowing.

It starts a real Apache Kafka, the example service (examples/orders_service.py) and `streamcar run` with
examples/streamcar.yaml, produces sample orders (two of them bad) with ``streamcar produce``, shows the enriched
replies the sidecar published (the big orders routed to orders-review too, an order's items fanned out to
orders-items) and, with ``streamcar dlq show``, the dead letters it routed, then stops
everything (the sidecar with SIGTERM: drain, commit, exit 0) and removes its temporary files.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from confluent_kafka import Consumer, Message, TopicPartition
from rich.console import Console
from rich.table import Table

from streamcar.devkafka import LocalKafka, ensure_jars, free_ports
from streamcar.errors import StreamcarError

HERE = Path(__file__).resolve().parent
console = Console()

ITEMS = {"o-2": [{"sku": "tea", "qty": 2}, {"sku": "cup", "qty": 1}, {"sku": "pot", "qty": 1}]}
ORDERS: list[bytes] = [
    json.dumps(
        {"order_id": f"o-{i}", "customer": f"c-{i % 3}", "amount": amount, "currency": currency}
        | ({"items": ITEMS[f"o-{i}"]} if f"o-{i}" in ITEMS else {})
    ).encode()
    for i, (amount, currency) in enumerate(
        [(12.5, "EUR"), (120.0, "USD"), (42.0, "GBP"), (7.99, "EUR"), (250.0, "EUR"), (19.0, "USD")]
    )
] + [
    b"this is not json",
    json.dumps({"order_id": "o-bad", "customer": "c-0", "amount": -5}).encode(),
]


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind through the cleanup below
    workdir = Path(tempfile.mkdtemp(prefix="streamcar-demo-"))
    cluster = LocalKafka(workdir / "kafka")
    children: list[subprocess.Popen[bytes]] = []
    try:
        with console.status("fetching Kafka through Maven (first run only) ..."):
            ensure_jars()
        with console.status("starting a local Apache Kafka ..."):
            bootstrap = cluster.start(nodes=1, port=0, die_with_parent=True).bootstrap
        console.print(f"[green]Kafka[/green] running at {bootstrap}")
        create_topics(bootstrap)

        port = free_ports(1)[0]
        service_log = (workdir / "service.log").open("wb")
        children.append(
            subprocess.Popen(
                [sys.executable, str(HERE / "orders_service.py"), "--port", str(port)],
                stdout=service_log,
                stderr=subprocess.STDOUT,
            )
        )
        wait_http(f"http://127.0.0.1:{port}/healthz")
        console.print(f"[green]example service[/green] answering at http://127.0.0.1:{port}/orders")

        env = {**os.environ, "KAFKA_BOOTSTRAP": bootstrap, "SERVICE_URL": f"http://127.0.0.1:{port}/orders"}
        sidecar_log = workdir / "sidecar.log"
        with sidecar_log.open("wb") as log:
            sidecar = subprocess.Popen(
                [sys.executable, "-m", "streamcar", "run", "-c", str(HERE / "streamcar.yaml")],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        children.append(sidecar)
        console.print("[green]sidecar[/green] started: streamcar run -c examples/streamcar.yaml")

        produce(bootstrap)
        console.print(f"produced {len(ORDERS)} orders to [bold]orders[/bold] (2 of them bad)")
        with console.status("waiting for the sidecar's replies and dead letters ..."):
            enriched = read(bootstrap, "orders-enriched", 6)
            review = read(bootstrap, "orders-review", 2)
            items = read(bootstrap, "orders-items", 3)
            dead = read(bootstrap, "orders-dlq", 2)
        show(enriched)
        console.print(
            "[bold]orders-review[/bold] (routed: the reply sent big orders here too): "
            + ", ".join(sorted(json.loads(m.value() or b"{}")["order_id"] for m in review))
        )
        console.print(
            "[bold]orders-items[/bold] (fanned out: one record per item of o-2): "
            + ", ".join(sorted(json.loads(m.value() or b"{}")["sku"] for m in items))
        )
        console.print(
            "[bold]orders-dlq[/bold]: dead letters, as [bold]streamcar dlq show --topic orders-dlq[/bold] lists them"
        )
        print(streamcar("dlq", "show", "--topic", "orders-dlq", "-b", bootstrap), end="", flush=True)

        sidecar.send_signal(signal.SIGTERM)
        code = sidecar.wait(30)
        console.print(f"sidecar stopped on SIGTERM with exit code {code} (drained and committed)")
        if len(enriched) != 6 or len(review) != 2 or len(items) != 3 or len(dead) != 2 or code != 0:
            console.print(f"[red]unexpected result[/red]; sidecar log:\n{sidecar_log.read_text()[-3000:]}")
            return 1
        console.print("[green]demo done[/green]")
        return 0
    except (StreamcarError, TimeoutError) as exc:
        console.print(f"[red]demo failed:[/red] {exc}")
        return 1
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()
                try:
                    child.wait(10)
                except subprocess.TimeoutExpired:
                    child.kill()
        with console.status("stopping Kafka ..."):
            cluster.stop(timeout=20)
        shutil.rmtree(workdir, ignore_errors=True)


def create_topics(bootstrap: str) -> None:
    """As a user would: ``streamcar topics create`` (it returns once every partition has a leader)."""
    streamcar("topics", "create", "orders", "orders-enriched", "orders-items", "--partitions", "3", "-b", bootstrap)
    streamcar("topics", "create", "orders-review", "orders-dlq", "--partitions", "1", "-b", bootstrap)


def wait_http(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not answer within {timeout:.0f}s") from None
            time.sleep(0.1)


def streamcar(*args: str, stdin: bytes | None = None) -> str:
    """Run a ``streamcar`` command; its stdout, or StreamcarError with its one-line error."""
    done = subprocess.run(
        [sys.executable, "-m", "streamcar", *args], input=stdin, capture_output=True, timeout=60, check=False
    )
    if done.returncode != 0:
        lines = done.stderr.decode(errors="replace").strip().splitlines()
        raise StreamcarError(f"streamcar {args[0]} failed: {lines[-1] if lines else done.returncode}")
    return done.stdout.decode(errors="replace")


def produce(bootstrap: str) -> None:
    """The orders, keyed by customer, through ``streamcar produce`` (lines of key<TAB>value on stdin)."""
    lines = b"".join(f"c-{i % 3}\t".encode() + value + b"\n" for i, value in enumerate(ORDERS))
    streamcar(
        "produce", "--topic", "orders", "--keyed", "-H", "content-type=application/json", "-b", bootstrap, stdin=lines
    )


def read(bootstrap: str, topic: str, expect: int, timeout: float = 60.0) -> list[Message]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "demo-reader", "enable.auto.commit": False})
    partitions = consumer.list_topics(topic=topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    got: list[Message] = []
    deadline = time.monotonic() + timeout
    while len(got) < expect and time.monotonic() < deadline:
        got += [m for m in consumer.consume(num_messages=100, timeout=0.5) if m.error() is None]
    consumer.close()
    return got


def show(enriched: list[Message]) -> None:
    table = Table(title="orders-enriched: what the service replied, published by the sidecar")
    for column in ("key", "order", "total", "tier"):
        table.add_column(column)
    for msg in sorted(enriched, key=lambda m: m.value() or b""):
        order = json.loads(msg.value() or b"{}")
        table.add_row(
            (msg.key() or b"").decode(), order["order_id"], f"{order['total']} {order['currency']}", order["tier"]
        )
    console.print(table)


if __name__ == "__main__":
    sys.exit(main())
