"""The README's demo: a real local Kafka, events flowing, everything stopped at the end.

Until the sidecar lands (issue #3) this round-trips a few JSON orders through the broker; it becomes the full
demo (example service + sidecar + dead letters) with it.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from rich.console import Console
from rich.table import Table

from streamcar.devkafka import LocalKafka, ensure_jars
from streamcar.errors import StreamcarError

console = Console()


def main() -> int:
    data_dir = Path(tempfile.mkdtemp(prefix="streamcar-demo-"))
    cluster = LocalKafka(data_dir)
    try:
        with console.status("fetching Kafka through Maven (first run only) ..."):
            ensure_jars()
        with console.status("starting a local Apache Kafka ..."):
            layout = cluster.start(nodes=1, port=0)
        console.print(f"[green]Kafka running[/green] at {layout.bootstrap}")
        round_trip(layout.bootstrap)
        console.print("[green]demo done[/green]: the sidecar itself joins this demo with issue #3")
        return 0
    except StreamcarError as exc:
        console.print(f"[red]demo failed:[/red] {exc}")
        return 1
    finally:
        with console.status("stopping Kafka ..."):
            cluster.stop(timeout=20)
        shutil.rmtree(data_dir, ignore_errors=True)


def round_trip(bootstrap: str) -> None:
    """Produce a few orders and read them back; the clients are gone when this returns, before Kafka stops."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic("orders", num_partitions=3, replication_factor=1)])["orders"].result(30)

    orders = [{"order_id": f"o-{i}", "customer": f"c-{i % 3}", "amount": round(9.99 * (i + 1), 2)} for i in range(6)]
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
    for order in orders:
        producer.produce("orders", key=str(order["customer"]).encode(), value=json.dumps(order).encode())
    if producer.flush(30) != 0:
        raise StreamcarError("the demo events were not acknowledged within 30 s")
    console.print(f"produced {len(orders)} orders to [bold]orders[/bold]")

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "demo", "enable.auto.commit": False})
    consumer.assign([TopicPartition("orders", p, 0) for p in range(3)])
    table = Table(title="orders read back from Kafka")
    for column in ("partition", "offset", "key", "value"):
        table.add_column(column)
    seen = 0
    deadline = time.monotonic() + 30
    while seen < len(orders) and time.monotonic() < deadline:
        for msg in consumer.consume(num_messages=100, timeout=0.5):
            if msg.error():
                raise StreamcarError(str(msg.error()))
            key = (msg.key() or b"").decode()
            table.add_row(str(msg.partition()), str(msg.offset()), key, (msg.value() or b"").decode())
            seen += 1
    consumer.close()
    console.print(table)
    if seen != len(orders):
        raise StreamcarError(f"read back {seen} of {len(orders)} orders")


if __name__ == "__main__":
    sys.exit(main())
