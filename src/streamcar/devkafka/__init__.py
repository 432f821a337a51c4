"""A local Apache Kafka for development and tests: fetched through Maven, run as real JVMs on loopback."""

from streamcar.devkafka.cluster import DEFAULT_PORT, Layout, LocalKafka, Node, NodeStatus, free_ports
from streamcar.devkafka.fetch import KAFKA_VERSION, cache_root, ensure_jars, jars_dir

__all__ = [
    "DEFAULT_PORT",
    "KAFKA_VERSION",
    "Layout",
    "LocalKafka",
    "Node",
    "NodeStatus",
    "cache_root",
    "ensure_jars",
    "free_ports",
    "jars_dir",
]
