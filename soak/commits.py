"""What the groups committed over the run, watched from outside: every change of a committed offset (and its
done-ahead metadata) with when it was seen, so that a lost input or a duplicate can be told by the commits around
it. A thread of its own asks the coordinator every quarter of a second (an exactly-once group's offsets show once
their transaction committed); a question the cluster does not answer (a node just died) is asked again next time.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaException, TopicPartition

from streamcar.kafka.doneahead import DoneAheadError, decode

EVERY = 0.25


@dataclass(frozen=True)
class Commit:
    at: float
    """When it was first seen (wall clock, s)."""
    group: str
    partition: int
    offset: int
    metadata: str

    def covers(self, offset: int) -> bool:
        """Whether this commit says ``offset`` is done: below the committed offset, or done ahead of it."""
        if offset < self.offset:
            return True
        try:
            base, runs = decode(self.metadata)
        except DoneAheadError:
            return False
        return base == self.offset and any(first <= offset <= last for first, last in runs)


class Commits(threading.Thread):
    def __init__(self, bootstrap: str, groups: Sequence[str], topic: str, partitions: int) -> None:
        super().__init__(name="soak-commits", daemon=True)
        self._readers = {
            group: Consumer({"bootstrap.servers": bootstrap, "group.id": group, "log_level": 0}) for group in groups
        }
        self._asked = [TopicPartition(topic, p) for p in range(partitions)]
        self._halt = threading.Event()
        self.seen: list[Commit] = []
        self._last: dict[tuple[str, int], tuple[int, str]] = {}

    def run(self) -> None:
        while not self._halt.wait(EVERY):
            for group, reader in self._readers.items():
                try:
                    found = reader.committed(self._asked, timeout=5)
                except KafkaException:
                    continue
                now = time.time()
                for tp in found:
                    state = (tp.offset, tp.metadata or "")
                    if tp.error is None and tp.offset >= 0 and self._last.get((group, tp.partition)) != state:
                        self._last[(group, tp.partition)] = state
                        self.seen.append(Commit(now, group, tp.partition, *state))

    def stop(self) -> None:
        """Stop watching (again: nothing)."""
        self._halt.set()
        if self.is_alive():
            self.join(15)
        readers, self._readers = self._readers, {}
        for reader in readers.values():
            reader.close()

    def history(self, group: str, partition: int) -> list[Commit]:
        return [c for c in self.seen if c.group == group and c.partition == partition]

    def backwards(self, group: str) -> list[tuple[Commit, Commit]]:
        """The commits of ``group`` that moved a partition's offset back, each with the one before it."""
        found = []
        for partition in range(len(self._asked)):
            history = self.history(group, partition)
            found += [(a, b) for a, b in itertools.pairwise(history) if b.offset < a.offset]
        return sorted(found, key=lambda pair: pair[1].at)
