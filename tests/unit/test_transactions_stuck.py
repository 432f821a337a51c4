"""A transaction call that never returns is taken for stuck: the producer is abandoned and replaced, and closed only
once the call has returned. Found by the soak (seed 16): after the group coordinator's node was killed, librdkafka
2.16 blocked ``send_offsets_to_transaction`` for over 6 minutes (confluentinc/librdkafka#5456); the pipeline's
64 messages waited at the transaction and every revoke timed out behind it. Before: ``commit`` waited forever."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping
from typing import Any

import pytest

from streamcar.kafka import transactions
from streamcar.kafka.records import TP, CommitPoint
from streamcar.kafka.transactions import Aborted, TransactionalProducer


class Client:
    """The transaction calls of a librdkafka producer; ``send_offsets_to_transaction`` blocks while ``hang`` is
    not set."""

    def __init__(self, hang: threading.Event | None) -> None:
        self.hang = hang
        self.calls: list[str] = []

    def init_transactions(self, timeout: float) -> None:
        self.calls.append("init")

    def begin_transaction(self) -> None:
        self.calls.append("begin")

    def send_offsets_to_transaction(self, offsets: object, metadata: object, timeout: float) -> None:
        self.calls.append("offsets")
        if self.hang is not None:
            self.hang.wait(30)

    def commit_transaction(self, timeout: float) -> None:
        self.calls.append("commit")

    def abort_transaction(self, timeout: float) -> None:
        self.calls.append("abort")


class Producer:
    """What TransactionalProducer uses of an AsyncProducer."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.closed = False

    async def close(self, grace: float = 10.0) -> None:
        self.closed = True


async def test_a_stuck_call_aborts_the_transaction_and_replaces_the_producer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transactions, "TIMEOUT", 0.1)
    monkeypatch.setattr(transactions, "STUCK_AFTER", 0.2)
    released = threading.Event()
    made: list[Producer] = []

    def make(settings: Mapping[str, Any], loop: asyncio.AbstractEventLoop) -> Any:
        made.append(Producer(Client(released if not made else None)))
        return made[-1]

    producer = TransactionalProducer({}, asyncio.get_running_loop(), "streamcar-g-p-host", make=make)
    points: dict[TP, CommitPoint] = {("t", 0): CommitPoint(5)}
    try:
        await producer.start()
        began = time.monotonic()
        with pytest.raises(Aborted, match=r"sending offsets did not return within 0\.3s") as raised:
            await producer.commit(points, group_metadata=object())
        assert time.monotonic() - began < 5  # before: forever
        await producer.abort(raised.value)

        first, second = made
        [stuck] = [thread for thread in threading.enumerate() if thread.name.endswith(": sending offsets")]
        assert stuck.daemon  # a call stuck for good does not hold the process at its exit
        assert first.client.calls == ["init", "begin", "offsets"]  # still in its call: neither aborted nor closed
        assert not first.closed
        assert second.client.calls == ["init", "begin"]  # its init fences the first (same transactional.id)
        await producer.commit(points, group_metadata=object())  # the next transaction goes through the new one
        assert second.client.calls == ["init", "begin", "offsets", "commit", "begin"]
        assert producer.aborted == 1
        assert producer.committed == 1

        released.set()  # the stuck call returns at last: the abandoned producer is closed then
        await asyncio.wait_for(asyncio.gather(*producer.abandoned), 5)
        assert first.closed
    finally:
        released.set()
        await producer.close()
