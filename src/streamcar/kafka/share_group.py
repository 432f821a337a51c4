"""A share group's own settings (group configs, KIP-932), read and, where streamcar depends on them, set.

* ``share.auto.offset.reset``: where a new share group starts. Kafka's default is ``latest``; the pipeline's
  ``consume.from`` is written to the group unless the group has a value of its own.
* ``share.delivery.count.limit``: how many times the broker delivers a record before it archives it, with no
  outcome at all. The sidecar counts attempts in calls and dead-letters a record at its last ``retry.attempts``;
  deliveries are also spent by records a member gives back unstarted (the broker hands a producer's batch out
  whole, so a member may be given more than it can start within the lock) and by crashes. The broker hands a
  record delivered more than half the limit out in ever smaller bites, and one by one on its last two
  deliveries, which would leave a member with one call at a time. So a group with no limit of its own gets the
  most Kafka allows by default (10); one with a limit of its own has it raised to ``retry.attempts + 1`` if lower
  (never lowered), so that a record whose last attempt was cut short is delivered once more, and dead-lettered,
  rather than dropped by the broker.
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
    least = min(attempts + 1, MAX_DELIVERIES)
    wanted = MAX_DELIVERIES if limit_entry is None or limit_entry.is_default else least
    if deliveries < wanted:
        changes["share.delivery.count.limit"] = str(wanted)
    if not changes:
        return ShareGroupSettings(lock=lock, deliveries=deliveries)
    if _alter(admin, group, changes, quiet=wanted > least):
        return ShareGroupSettings(lock=lock, deliveries=max(deliveries, wanted))
    if wanted > least:  # the broker allows fewer deliveries than Kafka's default maximum: what streamcar needs
        if deliveries < least:
            changes["share.delivery.count.limit"] = str(least)
        else:
            del changes["share.delivery.count.limit"]
        if changes and _alter(admin, group, changes):
            return ShareGroupSettings(lock=lock, deliveries=max(deliveries, least))
    return ShareGroupSettings(lock=lock, deliveries=deliveries)


def _alter(admin: AdminClient, group: str, changes: dict[str, str], *, quiet: bool = False) -> bool:
    """Set ``changes`` on ``group``; whether the broker took them (a refusal is logged, unless ``quiet``: then
    the caller tries something else)."""
    text = ", ".join(f"{k}={v}" for k, v in changes.items())
    entries = [ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in changes.items()]
    change = ConfigResource(ResourceType.GROUP, group, incremental_configs=entries)
    try:
        admin.incremental_alter_configs([change], request_timeout=TIMEOUT)[change].result(TIMEOUT)
    except Exception as exc:
        if not quiet:
            log.warning(
                "share group %s: could not set %s (%s); the group's own settings apply",
                group,
                text,
                exc,
                extra={"event": "share-group-config", "group": group},
            )
        return False
    log.info("share group %s: set %s", group, text, extra={"event": "share-group-config", "group": group})
    return True
