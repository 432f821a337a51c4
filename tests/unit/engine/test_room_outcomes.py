"""The outcomes room on its own (engine/outcomes.py): what a reply means, as a decision, with the twin producer
for the records handed over. No pipeline, no settle loop."""

from __future__ import annotations

from typing import Any

from twin import TOPIC, TwinProducer, pipeline_config

from streamcar.engine.outcomes import RETRY, UNDELIVERABLE, Decision, Handed, Outcomes
from streamcar.engine.work import Outcome, PipelineStats, Work
from streamcar.event import Event, Record, Reply

TP = (TOPIC, 0)


def decide(reply: Reply, *, attempts: int = 1, **config: Any) -> tuple[Decision, Work, TwinProducer]:
    producer = TwinProducer()
    outcomes = Outcomes("p", pipeline_config(**config), producer, PipelineStats())  # type: ignore[arg-type]
    work = Work(Event(TOPIC, 0, 7, 0, b"k", b"in", ()), TP, None, 1)
    work.attempts, work.reply = attempts, reply
    return outcomes.act(work), work, producer


async def test_a_success_hands_its_reply_to_the_publish_topic() -> None:
    decision, _, producer = decide(Reply.success(b"out"))
    assert isinstance(decision, Handed)
    assert decision.result == "success"
    assert decision.ack is not None
    assert [value for _, value, _ in producer.sent["out"]] == [b"out"]


async def test_a_drop_and_a_success_with_nothing_to_publish_are_done_with_nothing_to_wait_for() -> None:
    assert decide(Reply.drop())[0] == Handed(Outcome.DROP, None)
    assert decide(Reply.success(None))[0] == Handed(Outcome.SUCCESS, None)


async def test_a_retry_waits_until_its_attempts_are_spent_then_is_dead_lettered() -> None:
    assert decide(Reply.retry(error="503"), attempts=2)[0] is RETRY  # retry.attempts: 3
    decision, work, producer = decide(Reply.retry(error="503"), attempts=3)
    assert isinstance(decision, Handed)
    assert decision.result == "dead-letter"
    assert work.reply is not None
    assert work.reply.error_kind == "exhausted"
    [(_, value, headers)] = producer.sent["dlq"]
    assert value == b"in"
    assert dict(headers)["streamcar-error-kind"] == b"exhausted"


async def test_without_a_dead_letter_topic_an_undeliverable_message_is_kept() -> None:
    decision, work, producer = decide(Reply.dead_letter("no"), dead_letter=None)
    assert decision is UNDELIVERABLE
    assert work.blocked
    assert not producer.sent


async def test_a_reply_for_a_topic_not_allowed_is_dead_lettered_before_anything_is_sent() -> None:
    decision, _, producer = decide(Reply.records([Record(b"a"), Record(b"b", topic="elsewhere")]))
    assert isinstance(decision, Handed)
    assert decision.result == "dead-letter"
    assert list(producer.sent) == ["dlq"]
    [(_, _, headers)] = producer.sent["dlq"]
    assert dict(headers)["streamcar-error-kind"] == b"route"
