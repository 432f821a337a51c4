"""A real Apache Kafka (KRaft, combined broker+controller nodes) on 127.0.0.1 for development and tests.

A cluster lives in one data directory::

    <data-dir>/layout.json          cluster id, node ids and ports (fixed at the first start); with security,
                                    the dev user's name and password too (so the file is the owner's only)
    <data-dir>/log4j2.yaml
    <data-dir>/tls/                 with security: the self-made CA (ca.pem) and the brokers' PEM keystore
    <data-dir>/node-<id>/server.properties, data/, kafka.log, pid

Listeners: every node has a PLAINTEXT client listener (``port``) and a PLAINTEXT controller listener, and the
brokers talk to each other over PLAINTEXT. ``security="sasl-ssl"`` adds a SASL_SSL client listener
(``secure_port``: SCRAM-SHA-512 over TLS) for one dev user, created when the storage is formatted.

``pid`` files record the JVMs we launched; every JVM carries ``-Dstreamcar.node=<node dir>`` on its
command line, and ``stop`` signals a pid only while its command line still holds that marker, so it ends
exactly its own processes even after a pid was reused.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from dataclasses import asdict
from pathlib import Path

from streamcar import tether
from streamcar.devkafka import processes
from streamcar.devkafka.fetch import KAFKA_VERSION, ensure_jars, java_binary
from streamcar.devkafka.layout import (
    DEFAULT_PORT,
    LOG4J2,
    Layout,
    Node,
    NodeStatus,
    default_data_dir,
    free_ports,
    port_is_free,
)
from streamcar.devkafka.security import MODES, Security, ensure_broker_pki
from streamcar.errors import StreamcarError, ToolingError

__all__ = ["DEFAULT_PORT", "Layout", "LocalKafka", "Node", "NodeStatus", "free_ports", "port_is_free"]


class LocalKafka:
    """One local cluster in ``data_dir``: 1 node, or 3 nodes with replication 3 and min.insync.replicas 2."""

    def __init__(self, data_dir: Path | None = None) -> None:
        self.data_dir = (data_dir or default_data_dir()).expanduser().resolve()

    # -- layout -----------------------------------------------------------------------------------------
    @property
    def _layout_file(self) -> Path:
        return self.data_dir / "layout.json"

    def layout(self) -> Layout | None:
        try:
            raw = json.loads(self._layout_file.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ToolingError(f"{self._layout_file} is unreadable ({exc}); remove {self.data_dir}") from exc
        security = raw.get("security")
        return Layout(
            cluster_id=raw["cluster_id"],
            nodes=[Node(**n) for n in raw["nodes"]],
            kafka_version=raw.get("kafka_version", KAFKA_VERSION),
            extra_properties=raw.get("extra_properties", {}),
            security=Security(**security) if security else None,
        )

    def _save_layout(self, layout: Layout) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        tmp = self._layout_file.with_suffix(".tmp")
        # it may hold the dev user's password: readable by its owner only, from the moment it exists
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(json.dumps(asdict(layout), indent=2))
        tmp.replace(self._layout_file)

    def _plan(self, nodes: int, port: int | None, security: str = "plaintext") -> Layout:
        """Ports for a new cluster: the client ports from ``port`` (9092) up, then (with security) the SASL_SSL
        ports right after them (9093 for one node), and controller ports wherever the kernel finds room."""
        base = port if port is not None else DEFAULT_PORT
        secure = security == "sasl-ssl"
        listeners = 2 if secure else 1
        if port == 0:  # any free ports
            ports = free_ports(nodes * (listeners + 1))
            client, controller = ports[: nodes * listeners], ports[nodes * listeners :]
        else:
            client = [base + i for i in range(nodes * listeners)]
            controller = [p for p in free_ports(nodes * 4) if p not in client][:nodes]
        return Layout(
            cluster_id=processes.cluster_id(),
            nodes=[Node(i + 1, client[i], controller[i], client[nodes + i] if secure else None) for i in range(nodes)],
            security=Security.new(self._tls_dir) if secure else None,
        )

    def check_security(self, layout: Layout | None, security: str | None) -> None:
        """ToolingError unless ``security`` (None: whatever the data dir has) suits ``layout``."""
        if security is not None and security not in MODES:
            raise ToolingError(f"--security must be one of {', '.join(MODES)}, not {security!r}")
        if layout is not None and security is not None and security != layout.mode:
            # SCRAM users are created when the storage is formatted: a formatted cluster cannot gain them later
            raise ToolingError(
                f"{self.data_dir} was created with --security {layout.mode}; stop it and remove that folder, "
                f"or pass another --data-dir to use --security {security}"
            )

    @property
    def _tls_dir(self) -> Path:
        return self.data_dir / "tls"

    def node_dir(self, node_id: int) -> Path:
        return self.data_dir / f"node-{node_id}"

    # -- processes --------------------------------------------------------------------------------------
    def _marker(self, node_id: int) -> str:
        return f"-Dstreamcar.node={self.node_dir(node_id)}"

    def pid(self, node_id: int) -> int | None:
        """The pid of the node's JVM if it is running, else None."""
        try:
            pid = int((self.node_dir(node_id) / "pid").read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if processes.is_ours(pid, self._marker(node_id)) else None

    def status(self) -> list[NodeStatus]:
        layout = self.layout()
        if layout is None:
            return []
        result = []
        for node in layout.nodes:
            pid = self.pid(node.node_id)
            result.append(NodeStatus(node.node_id, node.port, pid, pid is not None))
        return result

    def is_running(self) -> bool:
        statuses = self.status()
        return bool(statuses) and all(s.running for s in statuses)

    def start(
        self,
        *,
        nodes: int = 1,
        port: int | None = None,
        heap: str = "512m",
        timeout: float = 120.0,
        extra_properties: dict[str, str] | None = None,
        die_with_parent: bool = False,
        security: str | None = None,
    ) -> Layout:
        """Start every node that is not running (formatting storage on first use) and wait until all answer.

        Idempotent: an already running cluster is left alone. ``port=0`` picks free ports. ``die_with_parent``
        (Linux) has the kernel kill the JVMs when this process dies, however it dies: for test sessions.
        ``security="sasl-ssl"`` adds a SASL_SSL listener (SCRAM-SHA-512, a self-made CA) for a dev user whose
        name, password and CA file the layout records; None keeps what the data dir was created with.
        """
        if nodes not in (1, 3):
            raise ToolingError(f"--nodes must be 1 or 3, not {nodes}")
        layout = self.layout()
        self.check_security(layout, security)
        if layout is None:
            layout = self._plan(nodes, port, security or "plaintext")
            if extra_properties:
                layout.extra_properties.update(extra_properties)
        elif len(layout.nodes) != nodes:
            raise ToolingError(
                f"{self.data_dir} holds a {len(layout.nodes)}-node cluster; stop it and remove that folder, "
                "or pass another --data-dir"
            )
        elif port not in (None, 0) and port != layout.nodes[0].port:
            raise ToolingError(
                f"{self.data_dir} was created with port {layout.nodes[0].port}; remove that folder "
                f"or pass another --data-dir to use port {port}"
            )
        to_start = [n for n in layout.nodes if self.pid(n.node_id) is None]
        if not to_start:
            return layout
        for node in to_start:
            for p in (node.port, node.controller_port, node.secure_port):
                if p is not None and not port_is_free(p):
                    raise ToolingError(
                        f"port {p} on 127.0.0.1 is in use (node {node.node_id}); stop whatever holds it "
                        "or choose another --port"
                    )
        libs = ensure_jars()
        java = java_binary()
        self._save_layout(layout)
        (self.data_dir / "log4j2.yaml").write_text(LOG4J2)
        if layout.security is not None:
            ensure_broker_pki(self._tls_dir)  # made at the first start, remade when near expiry
        for node in to_start:
            self._write_properties(layout, node)
            self._format(java, libs, layout, node)
        for node in to_start:
            self._launch(java, libs, node, heap, die_with_parent)
        self.wait_ready(layout, timeout=timeout)
        return layout

    def _write_properties(self, layout: Layout, node: Node) -> None:
        size = len(layout.nodes)
        rf, min_isr = (3, 2) if size == 3 else (1, 1)
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in layout.nodes)
        props = {
            "process.roles": "broker,controller",
            "node.id": str(node.node_id),
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.node_dir(node.node_id) / "data"),
            "num.partitions": "1",
            "default.replication.factor": str(rf),
            "min.insync.replicas": str(min_isr),
            "offsets.topic.replication.factor": str(rf),
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": str(rf),
            "transaction.state.log.min.isr": str(min_isr),
            "share.coordinator.state.topic.replication.factor": str(rf),
            "share.coordinator.state.topic.min.isr": str(min_isr),
            "unclean.leader.election.enable": "false",
            # a dev broker: the first consumer group should not wait 3 s for more members
            "group.initial.rebalance.delay.ms": "0",
            # share groups: a new member's records within a second, not five; group locks down to 1 s (not 15)
            "group.share.heartbeat.interval.ms": "1000",
            "group.share.min.heartbeat.interval.ms": "500",
            "group.share.min.record.lock.duration.ms": "1000",
        }
        if layout.security is not None:
            secure = f"SASL_SSL://127.0.0.1:{node.secure_port}"
            props["listeners"] += f",{secure}"
            props["advertised.listeners"] += f",{secure}"
            props["listener.security.protocol.map"] += ",SASL_SSL:SASL_SSL"
            props.update(layout.security.listener_properties(self._tls_dir))
        props.update(layout.extra_properties)
        node_dir = self.node_dir(node.node_id)
        node_dir.mkdir(parents=True, exist_ok=True)
        (node_dir / "server.properties").write_text("".join(f"{k}={v}\n" for k, v in props.items()))

    def _format(self, java: str, libs: Path, layout: Layout, node: Node) -> None:
        node_dir = self.node_dir(node.node_id)
        if (node_dir / "data" / "meta.properties").exists():
            return
        cmd = [
            java,
            "-Xmx256m",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.yaml'}",
            "-cp",
            f"{libs}/*",
            "kafka.tools.StorageTool",
            "format",
            "-t",
            layout.cluster_id,
            "-c",
            str(node_dir / "server.properties"),
        ]
        if layout.security is not None:
            cmd += layout.security.format_args()
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            tail = " | ".join((result.stdout + result.stderr).strip().splitlines()[-3:])
            raise ToolingError(f"formatting storage of node {node.node_id} failed: {tail}")

    def _launch(self, java: str, libs: Path, node: Node, heap: str, die_with_parent: bool) -> None:
        node_dir = self.node_dir(node.node_id)
        tmp = node_dir / "tmp"
        tmp.mkdir(exist_ok=True)
        cmd = [
            java,
            f"-Xmx{heap}",
            f"-Xms{heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            # The JVM's own temporary files stay in the node's directory (removed with it), not in /tmp, where
            # lz4-java left a copy of its native library at every start and a killed node left its perf data.
            f"-Djava.io.tmpdir={tmp}",
            "-XX:-UsePerfData",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.yaml'}",
            f"-Dkafka.logs.dir={node_dir}",
            self._marker(node.node_id),
            "-cp",
            f"{libs}/*",
            "kafka.Kafka",
            str(node_dir / "server.properties"),
        ]
        with (node_dir / "kafka.log").open("ab") as log:
            proc = (tether.popen if die_with_parent else subprocess.Popen)(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=node_dir,
                start_new_session=True,  # survives the CLI that started it, and its Ctrl-C
            )
        processes.children[proc.pid] = proc
        (node_dir / "pid").write_text(f"{proc.pid}\n")

    def wait_ready(self, layout: Layout | None = None, *, timeout: float = 120.0) -> None:
        """Wait until every node's JVM runs, the cluster's metadata lists every broker and (with security) the
        SASL_SSL listener accepts the dev user."""
        layout = layout or self.layout()
        if layout is None:
            raise ToolingError(f"no cluster in {self.data_dir}")
        deadline = time.monotonic() + timeout
        expected = {n.node_id for n in layout.nodes}
        secure_problem = None
        while True:
            for node in layout.nodes:
                if self.pid(node.node_id) is None:
                    tail = self.log_tail(node.node_id)
                    self.stop(timeout=10)
                    raise ToolingError(f"Kafka node {node.node_id} exited during start-up; log tail: {tail}")
            if expected <= self.brokers_answering(layout, timeout=2):
                secure_problem = self.secure_problem(layout)
                if secure_problem is None:
                    return
            if time.monotonic() > deadline:
                tails = "; ".join(f"node {n.node_id}: {self.log_tail(n.node_id)}" for n in layout.nodes)
                self.stop(timeout=10)
                if secure_problem is not None:
                    raise ToolingError(
                        f"the SASL_SSL listener did not accept the dev user within {timeout:.0f}s: "
                        f"{secure_problem}; {tails}"
                    )
                raise ToolingError(f"Kafka did not answer within {timeout:.0f}s; {tails}")
            time.sleep(0.25)

    def secure_problem(self, layout: Layout | None = None, *, timeout: float = 2.0) -> str | None:
        """None when the SASL_SSL listener accepts the dev user (or the cluster has none), else why it did not."""
        from streamcar.kafka.security import check_access

        layout = layout or self.layout()
        if layout is None or layout.security is None:
            return None
        config = {"bootstrap.servers": layout.secure_bootstrap, **layout.security.client_config()}
        try:
            answered = check_access(config, timeout)
        except StreamcarError as exc:
            return str(exc)
        return None if answered else f"nothing answered on {layout.secure_bootstrap}"

    def brokers_answering(self, layout: Layout | None = None, *, timeout: float = 2.0) -> set[int]:
        """Node ids that the cluster's metadata lists as live brokers (empty when nothing answers)."""
        from confluent_kafka.admin import AdminClient

        layout = layout or self.layout()
        if layout is None:
            return set()
        admin = AdminClient({"bootstrap.servers": layout.bootstrap, "log_level": 0})
        try:
            return set(admin.list_topics(timeout=timeout).brokers)
        except Exception:  # KafkaException while nothing answers: that is the answer
            return set()

    def log_tail(self, node_id: int, lines: int = 5) -> str:
        try:
            text = (self.node_dir(node_id) / "kafka.log").read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return " | ".join(text.strip().splitlines()[-lines:]) or "(empty log)"

    def kill_node(self, node_id: int, sig: signal.Signals = signal.SIGKILL, *, timeout: float = 30.0) -> None:
        """Send ``sig`` to one node's JVM and wait until it is gone (fault-injection tests)."""
        pid = self.pid(node_id)
        if pid is None:
            return
        processes.send(pid, sig)
        if not processes.wait_gone({node_id: pid}, self.pid, timeout):
            processes.send(pid, signal.SIGKILL)
            processes.wait_gone({node_id: pid}, self.pid, 10)

    def stop(self, *, timeout: float = 30.0) -> list[int]:
        """SIGTERM every running node, SIGKILL those still alive after ``timeout``; returns the node ids ended."""
        layout = self.layout()
        if layout is None:
            return []
        running = {n.node_id: pid for n in layout.nodes if (pid := self.pid(n.node_id)) is not None}
        for pid in running.values():
            processes.send(pid, signal.SIGTERM)
        if not processes.wait_gone(running, self.pid, timeout):
            for node_id, pid in running.items():
                if self.pid(node_id) == pid:
                    processes.send(pid, signal.SIGKILL)
            processes.wait_gone(running, self.pid, 10)
        for node in layout.nodes:
            with contextlib.suppress(FileNotFoundError):
                (self.node_dir(node.node_id) / "pid").unlink()
        return sorted(running)
