"""An exactly-once pipeline's rewind whose committed offsets do not come in time is tried again; it does not end
the consumer. Found by the soak (seed 3): a member thawed after a SIGSTOP past its session timeout had its
rewind's committed-offsets request time out (``Failed to get committed offsets: Local: Timed out``), the consumer
thread died of it, and the sidecar exited 1."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException

import streamcar.kafka.consumer as consumer_module
from streamcar.kafka.consumer import ConsumerBridge
from streamcar.kafka.errors import Said, Trouble
from streamcar.kafka.records import TP, CommitPoint, Incoming

TOPIC = "rewound"


class Listener:
    def __init__(self) -> None:
        self.rewound: asyncio.Queue[tuple[list[TP], dict[TP, CommitPoint]]] = asyncio.Queue()
        self.errors: list[Said] = []

    def on_records(self, records: list[Incoming | Said]) -> None:
        pass

    async def on_assigned(self, partitions: list[TP], committed: Mapping[TP, CommitPoint]) -> None:
        pass

    async def on_revoked(self, partitions: list[TP]) -> dict[TP, CommitPoint]:
        return {}

    async def on_lost(self, partitions: list[TP]) -> None:
        pass

    def on_rewound(self, partitions: list[TP], committed: Mapping[TP, CommitPoint]) -> None:
        self.rewound.put_nowait((partitions, dict(committed)))

    def on_error(self, said: Said) -> None:
        if said.trouble is Trouble.FATAL:  # how a consumer thread that died says so (not a refused connection)
            self.errors.append(said)


class Coordinator:
    """``seek_committed`` against a coordinator that times out the first ``silent`` times it is asked."""

    def __init__(self, silent: int) -> None:
        self.silent = silent
        self.asked: list[list[TP]] = []

    def seek_committed(self, consumer: Consumer, tps: list[TP]) -> tuple[list[TP], dict[TP, CommitPoint], list[TP]]:
        self.asked.append(list(tps))
        if len(self.asked) <= self.silent:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "Failed to get committed offsets: Local: Timed out"))
        return tps, {tp: CommitPoint(5, "") for tp in tps}, []


@contextlib.asynccontextmanager
async def bridged(listener: Listener) -> AsyncIterator[ConsumerBridge]:
    # no broker at all: the partitions are assigned by hand and nothing is fetched; the rewind is what is tested
    config = {"bootstrap.servers": "127.0.0.1:9", "group.id": "rewind-test", "log_level": 0}
    partitions = {(TOPIC, 0): 0, (TOPIC, 1): 0}
    bridge = ConsumerBridge(config, [TOPIC], listener, asyncio.get_running_loop(), assignment=partitions)
    bridge.start()
    try:
        yield bridge
    finally:
        await asyncio.wait_for(bridge.stop(), 30)


async def test_a_rewind_the_coordinator_does_not_answer_is_tried_again(monkeypatch: pytest.MonkeyPatch) -> None:
    coordinator = Coordinator(silent=1)
    monkeypatch.setattr(consumer_module, "seek_committed", coordinator.seek_committed)
    listener = Listener()
    async with bridged(listener) as bridge:
        bridge.rewind([(TOPIC, 0)])
        rewound, committed = await asyncio.wait_for(listener.rewound.get(), 15)
    assert (rewound, committed) == ([(TOPIC, 0)], {(TOPIC, 0): CommitPoint(5, "")})
    assert coordinator.asked == [[(TOPIC, 0)]] * 2
    assert listener.errors == []


async def test_a_rewind_asked_while_one_waits_takes_both_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    coordinator = Coordinator(silent=1)
    monkeypatch.setattr(consumer_module, "seek_committed", coordinator.seek_committed)
    listener = Listener()
    async with bridged(listener) as bridge:
        bridge.rewind([(TOPIC, 0)])
        bridge.rewind([(TOPIC, 1)])
        rewound, _ = await asyncio.wait_for(listener.rewound.get(), 15)
        await asyncio.sleep(1.5)  # past the retry's time: nothing is rewound twice
    assert rewound == [(TOPIC, 0), (TOPIC, 1)]
    assert coordinator.asked == [[(TOPIC, 0)], [(TOPIC, 0), (TOPIC, 1)]]
    assert listener.rewound.empty()
    assert listener.errors == []
