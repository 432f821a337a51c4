"""A share group's own settings (group configs, KIP-932), read and, where streamcar depends on them, set.

* ``share.auto.offset.reset``: where a new share group starts. Kafka's default is ``latest``; the pipeline's
  ``consume.from`` is written to the group unless the group has a value of its own.
* ``share.delivery.count.limit``: how many times the broker delivers a record before it archives it, with no
  outcome at all. The sidecar dead-letters a record at its last ``retry.attempts``; the limit is raised to one
  more than that (never lowered), so that a record whose last attempt was cut short by a crash is delivered once
  more, and dead-lettered, rather than dropped by the broker.
* ``share.record.lock.duration.ms``: how long a member holds a record before the broker hands it to another.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import AlterConfigOpType, ConfigEntry, ConfigResource
from confluent_kafka.admin._resource import ResourceType

from streamcar.config import KafkaConfig
from streamcar.config._queue import DEFAULT_LOCK, MAX_DELIVERIES

log = logging.getLogger("streamcar.kafka.share")

TIMEOUT = 10.0
DEFAULT_DELIVERIES = 5


@dataclass(frozen=True)
class ShareGroupSettings:
    lock: float = DEFAULT_LOCK
    """Seconds a record stays acquired by one member."""
    deliveries: int = DEFAULT_DELIVERIES
    """Deliveries of a record before the broker archives it."""


def prepare_share_group(kafka: KafkaConfig, group: str, *, start_from: str, attempts: int) -> ShareGroupSettings:
    """Read ``group``'s settings and set those streamcar needs (see the module docstring). Raises KafkaException
    when the cluster does not answer; a refused change is logged, and the group's own value is what applies."""
    admin = AdminClient(kafka.client_config())
    resource = ConfigResource(ResourceType.GROUP, group)
    found = admin.describe_configs([resource], request_timeout=TIMEOUT)[resource].result(TIMEOUT)
    lock_entry, limit_entry = found.get("share.record.lock.duration.ms"), found.get("share.delivery.count.limit")
    lock = int(lock_entry.value) / 1000 if lock_entry is not None and lock_entry.value else DEFAULT_LOCK
    deliveries = int(limit_entry.value) if limit_entry is not None and limit_entry.value else DEFAULT_DELIVERIES
    changes: dict[str, str] = {}
    reset = found.get("share.auto.offset.reset")
    if reset is None or reset.is_default:
        changes["share.auto.offset.reset"] = start_from
    wanted = min(attempts + 1, MAX_DELIVERIES)
    if deliveries < wanted:
        changes["share.delivery.count.limit"] = str(wanted)
    if changes:
        entries = [ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in changes.items()]
        change = ConfigResource(ResourceType.GROUP, group, incremental_configs=entries)
        try:
            admin.incremental_alter_configs([change], request_timeout=TIMEOUT)[change].result(TIMEOUT)
        except Exception as exc:
            log.warning(
                "share group %s: could not set %s (%s); the group's own settings apply",
                group,
                ", ".join(f"{k}={v}" for k, v in changes.items()),
                exc,
                extra={"event": "share-group-config", "group": group},
            )
        else:
            log.info(
                "share group %s: set %s",
                group,
                ", ".join(f"{k}={v}" for k, v in changes.items()),
                extra={"event": "share-group-config", "group": group},
            )
            deliveries = max(deliveries, wanted)
    return ShareGroupSettings(lock=lock, deliveries=deliveries)
