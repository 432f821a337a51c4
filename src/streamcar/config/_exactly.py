"""What ``publish.exactly_once`` needs of the Kafka settings, and the transaction timeout it uses.

A transaction's records and offsets count only if every record was written by one idempotent producer with
acks=all, and the inputs were read as committed: settings that break one of these are refused by ``check``, each
with what it breaks, rather than silently weakening the guarantee.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

TRANSACTION_TIMEOUT_MS = 10_000
"""librdkafka's default is 60 s: how long a crashed member's open transaction (without consume.instance_id to
fence it at once) holds read_committed readers and its group's offsets back. A commit every ``commit_interval``
needs far less."""

BROKER_MAX_TIMEOUT_MS = 900_000
"""The brokers' default ``transaction.max.timeout.ms`` (15 min): they refuse a producer that asks for a longer
transaction timeout at its start (INVALID_TRANSACTION_TIMEOUT)."""

_BROKEN: dict[str, tuple[frozenset[str], str]] = {
    "acks": (frozenset({"all", "-1"}), "a transaction needs acks=all"),
    "request.required.acks": (frozenset({"all", "-1"}), "a transaction needs acks=all"),
    "enable.idempotence": (frozenset({"true"}), "a transaction needs the idempotent producer"),
    "isolation.level": (
        frozenset({"read_committed"}),
        "inputs would include records of aborted transactions upstream, which then reach the output",
    ),
    "enable.auto.commit": (frozenset({"false"}), "the offsets are committed in the transaction, never on their own"),
}
_OURS = ("transactional.id", "transactional.id is streamcar's: one per pipeline instance (see consume.instance_id)")


def transaction_timeout_ms(librdkafka: Mapping[str, Any], commit_interval: float) -> int:
    """The producer's ``transaction.timeout.ms``: the user's, else :data:`TRANSACTION_TIMEOUT_MS`, but at least
    four commit intervals, and no more than the brokers allow by default (:data:`BROKER_MAX_TIMEOUT_MS`)."""
    if "transaction.timeout.ms" in librdkafka:
        return int(librdkafka["transaction.timeout.ms"])
    return min(max(TRANSACTION_TIMEOUT_MS, int(4 * commit_interval * 1000)), BROKER_MAX_TIMEOUT_MS)


def exactly_once_problems(
    librdkafka: Mapping[str, Any], pipelines: Mapping[str, Any]
) -> Iterator[tuple[tuple[str, ...], str]]:
    """(path, problem) for every setting that breaks ``publish.exactly_once`` in a pipeline that asks for it."""
    for name, value in librdkafka.items():
        if name in _BROKEN:
            allowed, why = _BROKEN[name]
            if str(value).lower() not in allowed:
                yield ("kafka", "librdkafka", name), f"{value!r} breaks publish.exactly_once: {why}"
        elif name == _OURS[0]:
            yield ("kafka", "librdkafka", name), f"cannot be set with publish.exactly_once: {_OURS[1]}"
    timeout = librdkafka.get("transaction.timeout.ms")
    for pipeline_name, pipeline in pipelines.items():
        publish = pipeline.publish
        if publish is None or not publish.exactly_once:
            continue
        interval_ms = pipeline.commit_interval * 1000
        if timeout is None and 2 * interval_ms > BROKER_MAX_TIMEOUT_MS:
            yield (
                ("pipelines", pipeline_name, "commit_interval"),
                f"{interval_ms:g} ms is too long for publish.exactly_once: a transaction stays open up to a "
                "commit_interval and needs as long again to commit, more than the brokers' default "
                f"transaction.max.timeout.ms ({BROKER_MAX_TIMEOUT_MS} ms) allows (they would refuse the producer at "
                f"its start): at most {BROKER_MAX_TIMEOUT_MS // 2} ms, or set kafka.librdkafka.transaction.timeout.ms "
                "to what your brokers allow",
            )
        elif timeout is not None and int(timeout) < 2 * interval_ms:
            yield (
                ("kafka", "librdkafka", "transaction.timeout.ms"),
                f"{timeout} ms is under twice pipeline {pipeline_name!r}'s commit_interval ({interval_ms:g} ms): a "
                "transaction stays open for up to a commit_interval and then needs time to commit; the broker "
                "aborts one open longer than transaction.timeout.ms, so its work would be redone again and again",
            )


def exactly_once_warnings(librdkafka: Mapping[str, Any], pipelines: Mapping[str, Any]) -> Iterator[str]:
    """What ``check`` warns of: a transaction timeout the brokers refuse unless set up to allow it."""
    timeout = librdkafka.get("transaction.timeout.ms")
    wanted = any(p.publish is not None and p.publish.exactly_once for p in pipelines.values())
    if wanted and timeout is not None and int(timeout) > BROKER_MAX_TIMEOUT_MS:
        yield (
            f"kafka.librdkafka.transaction.timeout.ms: {timeout} ms is above the brokers' default "
            f"transaction.max.timeout.ms ({BROKER_MAX_TIMEOUT_MS} ms): the pipeline cannot start unless your brokers "
            "allow it"
        )
