"""Where a local cluster lives and how it is laid out: its data directory, nodes, ports."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path

from streamcar.devkafka.fetch import KAFKA_VERSION, cache_root
from streamcar.devkafka.security import Security

DEFAULT_PORT = 9092

LOG4J2 = """Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Logger:
      - name: kafka.log.LogCleaner
        level: WARN
      - name: state.change.logger
        level: WARN
      - name: org.apache.kafka.storage
        level: WARN
    Root:
      level: INFO
      AppenderRef:
        - ref: STDOUT
"""
"""The nodes' logging: INFO, with the chattiest loggers at WARN."""


def default_data_dir() -> Path:
    return cache_root() / "kafka" / "local"


@dataclass(frozen=True)
class Node:
    node_id: int
    port: int
    controller_port: int
    secure_port: int | None = None
    """The SASL_SSL client listener's port (a cluster started with security)."""


@dataclass
class Layout:
    cluster_id: str
    nodes: list[Node]
    kafka_version: str = KAFKA_VERSION
    extra_properties: dict[str, str] = field(default_factory=dict)
    security: Security | None = None

    @property
    def bootstrap(self) -> str:
        """The PLAINTEXT client listeners (always there)."""
        return ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    @property
    def secure_bootstrap(self) -> str | None:
        """The SASL_SSL client listeners, or None for a cluster started without security."""
        if self.security is None:
            return None
        return ",".join(f"127.0.0.1:{n.secure_port}" for n in self.nodes)

    @property
    def mode(self) -> str:
        return "plaintext" if self.security is None else "sasl-ssl"


@dataclass(frozen=True)
class NodeStatus:
    node_id: int
    port: int
    pid: int | None
    running: bool


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> list[int]:
    """Ports the kernel says are free right now (all bound at once, so they are distinct)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()
