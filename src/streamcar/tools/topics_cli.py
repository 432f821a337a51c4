"""The ``streamcar topics`` commands: parse, call :mod:`streamcar.tools.topics`, print a line, a table or JSON."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.table import Table

from streamcar.errors import UsageError
from streamcar.tools._common import kafka_settings, plain_console
from streamcar.tools.topics import Created, TopicDetails, create_topics, describe_topic, list_topics

# --- the commands --------------------------------------------------------------------------------------------------


def parse_config(text: str) -> tuple[str, str]:
    key, equals, value = text.partition("=")
    if not equals or not key.strip():
        raise UsageError(
            f"--config {text!r}: expected a topic config KEY=VALUE, e.g. retention.ms=86400000"
            " (a streamcar.yaml is -c FILE here)"
        )
    return key.strip(), value


def parse_configs(texts: list[str]) -> dict[str, str]:
    """The ``--config`` entries; a key given twice is refused (the last one silently won)."""
    configs: dict[str, str] = {}
    for text in texts:
        key, value = parse_config(text)
        if key in configs and configs[key] != value:
            raise UsageError(f"--config {key} is given twice ({configs[key]!r} and {value!r}): which one is meant?")
        configs[key] = value
    return configs


def create_command(args: argparse.Namespace) -> int:
    configs = parse_configs(args.config_entries)
    kafka = kafka_settings(args.config, args.bootstrap_servers)
    out = plain_console()

    def tell(created: Created) -> None:
        topic = created.topic
        shape = f"{_count(topic.partitions, 'partition')}, replication factor {topic.replication}"
        if created.existed:
            asked = args.partitions is not None and args.partitions != topic.partitions
            note = f"; not the {_count(args.partitions, 'partition')} asked for" if asked else ""
            out.print(f"topic {topic.name} exists already ({shape}): left as it is{note}")
            return
        defaults = f" (the broker's {' and '.join(created.defaults)})" if created.defaults else ""
        out.print(f"created topic {topic.name}: {shape}{defaults}")

    create_topics(
        kafka,
        args.names,
        partitions=args.partitions,
        replication=args.replication_factor,
        configs=configs,
        if_not_exists=args.if_not_exists,
        on_done=tell,
    )
    return 0


def list_command(args: argparse.Namespace) -> int:
    kafka = kafka_settings(args.config, args.bootstrap_servers)
    topics = list_topics(kafka, internal=True)
    shown = [t for t in topics if args.all or not t.internal]
    if args.json:
        rows = [
            {"name": t.name, "partitions": t.partitions, "replication_factor": t.replication, "internal": t.internal}
            for t in shown
        ]
        print(json.dumps({"topics": rows}, indent=2))
        return 0
    table = Table()
    table.add_column("topic")
    table.add_column("partitions", justify="right")
    table.add_column("replication factor", justify="right")
    for t in shown:
        table.add_row(t.name + (" (internal)" if t.internal else ""), str(t.partitions), str(t.replication))
    out = plain_console()
    if shown:
        out.print(table)
    hidden = len(topics) - len(shown)
    more = f"; {hidden} internal one{'' if hidden == 1 else 's'} not shown (--all shows them)" if hidden else ""
    out.print(f"{_count(len(shown), 'topic')}{more}")
    return 0


def describe_command(args: argparse.Namespace) -> int:
    kafka = kafka_settings(args.config, args.bootstrap_servers)
    details = describe_topic(kafka, args.name)
    if args.json:
        print(json.dumps(_document(details), indent=2))
        return 0
    out = plain_console()
    kind = ", internal" if details.internal else ""
    out.print(
        f"topic {details.name} ({_count(len(details.partitions), 'partition')}, replication factor"
        f" {details.replication}{kind}; id {details.topic_id})"
    )
    states = [
        "no leader" if p.leader is None else "under-replicated" if p.under_replicated else ""
        for p in details.partitions
    ]
    table = Table()
    for column in ("partition", "leader", "replicas", "in sync", "low", "high", "records"):
        table.add_column(column, justify="left" if column in ("replicas", "in sync") else "right")
    if any(states):
        table.add_column("state")
    for p, state in zip(details.partitions, states, strict=True):
        row = [str(p.partition), _dash(p.leader), ",".join(map(str, p.replicas)), ",".join(map(str, p.isr))]
        row += [_dash(p.low), _dash(p.high), _dash(p.records)]
        table.add_row(*row, *([state] if any(states) else []))
    out.print(table)
    total = sum(p.records or 0 for p in details.partitions)
    out.print(f"{total:,} records between the watermarks")
    if not details.configs:
        out.print("configs: Kafka's defaults")
        return 0
    configs = Table(title=None)
    for column in ("config", "value", "source"):
        configs.add_column(column)
    for c in details.configs:
        configs.add_row(c.name, "(sensitive)" if c.value is None else c.value, c.source)
    out.print("configs that are not Kafka's defaults:")
    out.print(configs)
    return 0


def _document(details: TopicDetails) -> dict[str, Any]:
    return {
        "name": details.name,
        "id": details.topic_id,
        "internal": details.internal,
        "replication_factor": details.replication,
        "partitions": [
            {
                "partition": p.partition,
                "leader": p.leader,
                "replicas": list(p.replicas),
                "isr": list(p.isr),
                "low": p.low,
                "high": p.high,
                "records": p.records,
            }
            for p in details.partitions
        ],
        "configs": [{"name": c.name, "value": c.value, "source": c.source} for c in details.configs],
    }


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _dash(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"
