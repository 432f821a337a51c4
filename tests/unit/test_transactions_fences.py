"""Who shares a transactional id: one per process without configuration, and repeated fencing named
(streamcar.kafka.transactions.Fences and transactional_id)."""

from __future__ import annotations

from streamcar.config import PipelineConfig
from streamcar.kafka.transactions import CLASH_FENCES, CLASH_WINDOW, Fences, transactional_id


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def pipeline(instance_id: str | None = None) -> PipelineConfig:
    consume: dict[str, object] = {"topics": ["in"], "group": "g"}
    if instance_id is not None:
        consume["instance_id"] = instance_id
    return PipelineConfig.model_validate({"consume": consume, "call": {"url": "http://127.0.0.1:9/x"}})


def test_two_processes_on_one_host_with_one_client_id_have_two_ids() -> None:
    assert transactional_id("streamcar", "p", pipeline(), pid=10) != transactional_id(
        "streamcar", "p", pipeline(), pid=11
    )
    # an instance id names the instance across restarts, whatever the process
    same = {transactional_id("streamcar", "p", pipeline("pod-0"), pid=pid) for pid in (1, 7, 12345)}
    assert same == {"streamcar-g-p-pod-0"}


def test_a_restarted_predecessor_fencing_once_is_no_clash() -> None:
    clock = Clock()
    fences = Fences(clock)
    assert not fences.fenced()
    assert not fences.clashing()
    clock.now += 5
    assert not fences.fenced()  # twice: a zombie and its successor, once each
    assert not fences.clashing()


def test_fences_again_and_again_are_a_clash_named_once_until_they_stop() -> None:
    clock = Clock()
    fences = Fences(clock)
    began = []
    for _ in range(CLASH_FENCES + 3):
        began.append(fences.fenced())
        clock.now += 2
    assert began.count(True) == 1
    assert began.index(True) == CLASH_FENCES - 1
    assert fences.clashing()
    clock.now += CLASH_WINDOW
    assert not fences.clashing()  # no fence for a whole window: over


def test_fences_spread_wider_than_the_window_are_no_clash() -> None:
    clock = Clock()
    fences = Fences(clock)
    for _ in range(CLASH_FENCES * 2):
        assert not fences.fenced()
        clock.now += CLASH_WINDOW / (CLASH_FENCES - 1) + 1
