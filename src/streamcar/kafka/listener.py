"""What the consumer thread (:class:`~streamcar.kafka.consumer.ConsumerBridge`) tells the pipeline that it feeds:
records, partitions coming and going, a rewind it was asked for, errors."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from streamcar.kafka.errors import Said
from streamcar.kafka.records import TP, CommitPoint, Incoming


class ConsumerListener(Protocol):
    """What the bridge tells the pipeline; every method runs on the asyncio loop."""

    def on_records(self, records: list[Incoming | Said]) -> None:
        """A fetch's records, in order, and what the consumer said in their place (an end of partition...)."""
        ...

    async def on_assigned(self, partitions: list[TP], committed: Mapping[TP, CommitPoint]) -> None:
        """``partitions`` are ours now; ``committed``: what the group committed for those that carry metadata."""
        ...

    async def on_revoked(self, partitions: list[TP]) -> dict[TP, CommitPoint]:
        """Drain ``partitions`` (bounded) and return the offsets to commit for them before release."""
        ...

    async def on_lost(self, partitions: list[TP]) -> None: ...

    def on_rewound(self, partitions: list[TP], committed: Mapping[TP, CommitPoint]) -> None:
        """The consumer went back to the committed offsets of ``partitions`` (:meth:`ConsumerBridge.rewind`);
        ``committed``: those offsets, with their metadata."""
        ...

    def on_error(self, said: Said) -> None:
        """The consumer reported trouble that is not about one record."""
        ...
