"""An in-memory twin of a Kafka share group (KIP-932) and of its members' consumers, for queue mode's engine tests.

* :class:`TwinShareGroup` -- the broker's side: each record is available, acquired by one member until its lock
  ends, or done (accepted, rejected, or archived after ``deliveries`` deliveries, as the broker does). It counts
  deliveries per record and the locks that ran out.
* :class:`TwinShareMember` -- what :class:`streamcar.kafka.share.ShareBridge` is to the pipeline: it fetches up
  to ``fetch`` available records, hands them over (real ``confluent_kafka.Message`` objects carrying their
  delivery count), and fetches again only once every one of them is acknowledged, as the client insists.

Locks run on the loop's clock, so a test can make them short.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Message
from twin import TOPIC

from streamcar.kafka.bridging import handed
from streamcar.kafka.listener import ConsumerListener
from streamcar.kafka.records import TP, CommitPoint


@dataclass
class TwinShareGroup:
    records: list[Message]
    lock: float = 30.0
    deliveries: int = 5
    state: dict[int, str] = field(default_factory=dict)
    """Offset -> "accept", "reject" or "archived" once done; absent while available or acquired."""
    owner: dict[int, tuple[object, float]] = field(default_factory=dict)
    """Offset -> (member, time its lock ends) while acquired."""
    delivered: Counter[int] = field(default_factory=Counter)
    expired: int = 0
    """Locks that ran out before the member acknowledged."""

    def acquire(self, member: object, most: int) -> list[Message]:
        self._expire()
        taken = []
        for msg in self.records:
            offset = msg.offset() or 0
            if offset in self.state or offset in self.owner:
                continue
            self.delivered[offset] += 1
            self.owner[offset] = (member, time.monotonic() + self.lock)
            value = msg.value()
            count = self.delivered[offset]
            taken.append(
                Message(
                    topic=msg.topic(),
                    partition=msg.partition(),
                    offset=offset,
                    key=msg.key(),
                    value=value,
                    timestamp=(1, offset),
                    delivery_count=count,
                )
            )
            if len(taken) == most:
                break
        return taken

    def acknowledge(self, member: object, offset: int, how: str) -> bool:
        """Whether the broker took it: only the member that holds the record's lock may acknowledge it."""
        self._expire()
        held = self.owner.get(offset)
        if held is None or held[0] is not member:
            return False
        del self.owner[offset]
        if how != "release":
            self.state[offset] = how
        elif self.delivered[offset] >= self.deliveries:
            self.state[offset] = "archived"
        return True

    def leave(self, member: object) -> None:
        """A member closed: what it still holds is available again at once."""
        for offset in [o for o, (m, _) in self.owner.items() if m is member]:
            self.acknowledge(member, offset, "release")

    def _expire(self) -> None:
        now = time.monotonic()
        for offset in [o for o, (_, until) in self.owner.items() if until <= now]:
            del self.owner[offset]
            self.expired += 1
            if self.delivered[offset] >= self.deliveries:
                self.state[offset] = "archived"

    @property
    def done(self) -> int:
        return len(self.state)


class TwinShareMember:
    def __init__(
        self, group: TwinShareGroup, listener: ConsumerListener, loop: asyncio.AbstractEventLoop, *, fetch: int = 100
    ) -> None:
        self._group = group
        self._listener = listener
        self._loop = loop
        self._fetch = fetch
        self._held: set[int] = set()
        self._known = False
        self._paused = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.acquired_at: float | None = None
        self.refused = 0
        self.high_watermarks: dict[TP, int] = {}
        self.kafka_error: str | None = None

    def acknowledge(self, tp: TP, offset: int, how: str) -> None:
        if offset in self._held:
            self._held.discard(offset)
            self.refused += not self._group.acknowledge(self, offset, how)
            if not self._held:
                self.acquired_at = None
                self._wake.set()

    def start(self) -> None:
        self._task = self._loop.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._group.leave(self)

    def batch_done(self) -> None:
        pass

    def pause_all(self) -> None:
        self._paused = True

    def resume_all(self) -> None:
        self._paused = False
        self._wake.set()

    @property
    def paused(self) -> bool:
        return self._paused

    def pause_partition(self, tp: TP) -> None:
        pass

    def hold_partition(self, tp: TP) -> None:
        pass

    def resume_partition(self, tp: TP) -> None:
        pass

    def reset_offset(self, tp: TP, *, read_before: bool) -> None:
        pass

    async def commit(self, offsets: Mapping[TP, CommitPoint]) -> None:
        pass

    def rewind(self, tps: list[TP]) -> None:
        pass

    async def group_metadata(self) -> object:
        raise NotImplementedError

    async def _run(self) -> None:
        while True:
            batch = [] if self._held or self._paused else self._group.acquire(self, self._fetch)
            if not batch:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 0.005)  # a poll's timeout: locks may have ended
                continue
            if not self._known:
                self._known = True
                await self._listener.on_assigned([(TOPIC, 0)], {})
            self._held = {msg.offset() or 0 for msg in batch}
            self.acquired_at = time.monotonic()
            self.high_watermarks = {(TOPIC, 0): len(self._group.records)}
            self._listener.on_records(handed(batch, shared=True))


def member_factory(group: TwinShareGroup, members: list[TwinShareMember], fetch: int = 100) -> Any:
    """A consumer factory for the pipeline that makes members of ``group`` (listed in ``members``)."""

    def make(settings: Any, topics: Any, listener: ConsumerListener, loop: Any, **kw: Any) -> TwinShareMember:
        members.append(TwinShareMember(group, listener, loop, fetch=fetch))
        return members[-1]

    return make
