"""``streamcar kafka start|stop|status|fetch``."""

from __future__ import annotations

import argparse
import json
import sys

from rich.console import Console
from rich.table import Table

from streamcar.devkafka.cluster import LocalKafka
from streamcar.devkafka.fetch import KAFKA_VERSION, ensure_jars


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr)


def _cluster(args: argparse.Namespace) -> LocalKafka:
    return LocalKafka(args.data_dir)


def fetch(args: argparse.Namespace) -> int:
    print(f"Kafka {KAFKA_VERSION} jars in {ensure_jars(announce=_to_stderr)}")
    return 0


def start(args: argparse.Namespace) -> int:
    cluster = _cluster(args)
    if cluster.is_running():
        layout = cluster.layout()
        assert layout is not None
        print(f"Kafka already running: bootstrap {layout.bootstrap} (data in {cluster.data_dir})")
        return 0
    ensure_jars(announce=_to_stderr)
    layout = cluster.start(nodes=args.nodes, port=args.port, heap=args.heap, timeout=args.timeout)
    nodes = f"{len(layout.nodes)} nodes" if len(layout.nodes) > 1 else "1 node"
    print(f"Kafka {KAFKA_VERSION} running ({nodes}): bootstrap {layout.bootstrap} (data in {cluster.data_dir})")
    return 0


def stop(args: argparse.Namespace) -> int:
    cluster = _cluster(args)
    ended = cluster.stop(timeout=args.timeout)
    if ended:
        print(f"stopped Kafka node(s) {', '.join(map(str, ended))} ({cluster.data_dir})")
    else:
        print(f"Kafka not running ({cluster.data_dir})")
    return 0


def status(args: argparse.Namespace) -> int:
    cluster = _cluster(args)
    layout = cluster.layout()
    statuses = cluster.status()
    answering = cluster.brokers_answering(layout) if any(s.running for s in statuses) else set()
    running = bool(statuses) and all(s.running and s.node_id in answering for s in statuses)
    if args.json:
        print(
            json.dumps(
                {
                    "data_dir": str(cluster.data_dir),
                    "bootstrap": layout.bootstrap if layout else None,
                    "running": running,
                    "nodes": [
                        {
                            "node_id": s.node_id,
                            "port": s.port,
                            "pid": s.pid,
                            "running": s.running,
                            "answering": s.node_id in answering,
                        }
                        for s in statuses
                    ],
                }
            )
        )
        return 0 if running else 1
    if layout is None:
        print(f"no local Kafka in {cluster.data_dir} (start one with 'streamcar kafka start')")
        return 1
    table = Table(title=f"local Kafka {layout.kafka_version} — {cluster.data_dir}")
    for column in ("node", "address", "pid", "state"):
        table.add_column(column)
    for s in statuses:
        if not s.running:
            state = "[red]stopped[/red]"
        elif s.node_id in answering:
            state = "[green]running[/green]"
        else:
            state = "[yellow]running, not answering[/yellow]"
        table.add_row(str(s.node_id), f"127.0.0.1:{s.port}", str(s.pid or "-"), state)
    Console().print(table)
    print(f"bootstrap: {layout.bootstrap}")
    return 0 if running else 1
