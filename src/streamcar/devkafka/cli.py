"""``streamcar kafka start|stop|status|fetch``.

With ``start --security sasl-ssl`` the cluster also listens for SASL_SSL clients; ``start`` and ``status`` print
what such a client needs (bootstrap, mechanism, user, password, CA file): a local dev broker's password, kept in
``<data-dir>/layout.json``, readable by its owner only.

``$STREAMCAR_KAFKA_DIR`` and ``$STREAMCAR_KAFKA_PORT`` stand in for ``--data-dir`` and ``--port`` when those are not
given: one environment for a whole dev loop elsewhere than ``~/.cache/streamcar/kafka/local`` and 9092 (the tools
then need ``$KAFKA_BOOTSTRAP``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from streamcar.devkafka.cluster import Layout, LocalKafka
from streamcar.devkafka.fetch import KAFKA_VERSION, ensure_jars
from streamcar.errors import UsageError

DIR_ENV, PORT_ENV = "STREAMCAR_KAFKA_DIR", "STREAMCAR_KAFKA_PORT"


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr)


def _cluster(args: argparse.Namespace) -> LocalKafka:
    if args.data_dir is None and os.environ.get(DIR_ENV):
        return LocalKafka(Path(os.environ[DIR_ENV]).expanduser())
    return LocalKafka(args.data_dir)


def _port(args: argparse.Namespace) -> int | None:
    if args.port is not None or not os.environ.get(PORT_ENV):
        return args.port  # type: ignore[no-any-return]
    text = os.environ[PORT_ENV]
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise UsageError(f"${PORT_ENV} must be a port number (0 for a free one), not {text!r}")
    return int(text)


def fetch(args: argparse.Namespace) -> int:
    print(f"Kafka {KAFKA_VERSION} jars in {ensure_jars(announce=_to_stderr)}")
    return 0


def _secure_lines(cluster: LocalKafka, layout: Layout) -> list[str]:
    """What a SASL_SSL client needs, as a streamcar.yaml ``kafka:`` section (empty without security)."""
    if layout.security is None:
        return []
    sec = layout.security
    return [
        f"SASL_SSL bootstrap {layout.secure_bootstrap} ({sec.mechanism}, user {sec.username!r}, CA {sec.ca_file};"
        f" the password is kept in {cluster.data_dir / 'layout.json'}). In a streamcar.yaml:",
        "  kafka:",
        f"    bootstrap_servers: {layout.secure_bootstrap}",
        f"    security: {{protocol: {sec.protocol}, sasl_mechanism: {sec.mechanism}, username: {sec.username},",
        f"               password: {json.dumps(sec.password)}, ca_file: {json.dumps(sec.ca_file)}}}",
    ]


def start(args: argparse.Namespace) -> int:
    cluster = _cluster(args)
    if cluster.is_running():
        layout = cluster.layout()
        assert layout is not None
        cluster.check_security(layout, args.security)
        print(f"Kafka already running: bootstrap {layout.bootstrap} (data in {cluster.data_dir})")
        for line in _secure_lines(cluster, layout):
            print(line)
        return 0
    ensure_jars(announce=_to_stderr)
    layout = cluster.start(
        nodes=args.nodes, port=_port(args), heap=args.heap, timeout=args.timeout, security=args.security
    )
    nodes = f"{len(layout.nodes)} nodes" if len(layout.nodes) > 1 else "1 node"
    print(f"Kafka {KAFKA_VERSION} running ({nodes}): bootstrap {layout.bootstrap} (data in {cluster.data_dir})")
    for line in _secure_lines(cluster, layout):
        print(line)
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
    secure = layout.security if layout else None
    # with security, one SCRAM login on the SASL_SSL listener says whether it lets the dev user in
    secure_problem = cluster.secure_problem(layout) if secure is not None and answering else None
    if args.json:
        secure_ports = {n.node_id: n.secure_port for n in layout.nodes} if layout else {}
        print(
            json.dumps(
                {
                    "data_dir": str(cluster.data_dir),
                    "bootstrap": layout.bootstrap if layout else None,
                    "secure_bootstrap": layout.secure_bootstrap if layout else None,
                    "security": None
                    if secure is None
                    else {
                        **secure.kafka_security(),
                        "stored_in": str(cluster.data_dir / "layout.json"),
                        "answering": bool(answering) and secure_problem is None,
                        "problem": secure_problem,
                    },
                    "running": running,
                    "nodes": [
                        {
                            "node_id": s.node_id,
                            "port": s.port,
                            "secure_port": secure_ports.get(s.node_id),
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
    columns = ("node", "address", "SASL_SSL address", "pid", "state") if secure else ("node", "address", "pid", "state")
    for column in columns:
        table.add_column(column)
    for s, node in zip(statuses, layout.nodes, strict=True):
        if not s.running:
            state = "[red]stopped[/red]"
        elif s.node_id in answering:
            state = "[green]running[/green]"
        else:
            state = "[yellow]running, not answering[/yellow]"
        addresses = [f"127.0.0.1:{s.port}"] + ([f"127.0.0.1:{node.secure_port}"] if secure else [])
        table.add_row(str(s.node_id), *addresses, str(s.pid or "-"), state)
    Console().print(table)
    print(f"bootstrap: {layout.bootstrap}")
    for line in _secure_lines(cluster, layout):
        print(line)
    if secure_problem is not None:
        print(f"the SASL_SSL listener does not let the dev user in: {secure_problem}")
    return 0 if running else 1
