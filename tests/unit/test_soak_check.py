"""The soak's verdict (soak/check.py) on hand-made read-backs: a clean run, a lost input, a duplicate, an order
violation, an unexpected dead letter, outcomes naming no input, and the figures and exit status they make."""

from __future__ import annotations

from typing import Any

from soak.check import Input, Outcome, after_faults, duplicate_bound, examine, held, summary

KEY_A, KEY_B = b"a", b"b"


def inputs(*refused: int) -> list[Input]:
    """Partition 0: offsets 0-3 of key a, 4-5 of key b; partition 1: offset 0 of key a (another lane)."""
    keys = [KEY_A, KEY_A, KEY_A, KEY_A, KEY_B, KEY_B]
    return [Input(0, offset, key, offset in refused) for offset, key in enumerate(keys)] + [Input(1, 0, KEY_A, False)]


def replies(*sources: tuple[int, int], at: int = 0) -> list[Outcome]:
    """Replies in this order in output partition 0."""
    return [Outcome(0, offset, source, at + offset) for offset, source in enumerate(sources)]


EVERY = [(0, 0), (0, 1), (0, 2), (0, 3), (0, 4), (0, 5), (1, 0)]


def test_a_clean_run_holds() -> None:
    found = examine(inputs(), replies(*EVERY), [])
    assert (found.inputs, found.lost, found.duplicates, found.order_violations) == (7, 0, 0, 0)
    assert (found.unexpected_dead_letters, found.anomalies) == (0, 0)


def test_a_refused_input_is_dead_lettered_once() -> None:
    letters = [Outcome(0, 0, (0, 2))]
    found = examine(inputs(2), replies(*(s for s in EVERY if s != (0, 2))), letters)
    assert (found.lost, found.duplicates, found.unexpected_dead_letters, found.anomalies) == (0, 0, 0, 0)


def test_a_lost_input() -> None:
    found = examine(inputs(), replies(*(s for s in EVERY if s != (0, 3))), [])
    assert found.lost == 1
    assert found.lost_inputs == [(0, 3)]


def test_a_refused_input_without_its_dead_letter_is_lost() -> None:
    found = examine(inputs(2), replies(*(s for s in EVERY if s != (0, 2))), [])
    assert found.lost == 1


def test_duplicates_count_every_outcome_beyond_the_first() -> None:
    # (0, 1) published three times (a crash redid it twice), (0, 4) twice
    found = examine(inputs(), replies(*EVERY, (0, 1), (0, 1), (0, 4), at=1000), [])
    assert found.duplicates == 3
    assert found.order_violations == 0  # a redelivery repeats what was published: first replies still in order
    assert found.duplicate_times == [1007, 1008, 1009]
    source, outcomes = found.duplicated[0]
    assert source == (0, 1)
    assert [o.at for o in outcomes] == [1001, 1007, 1008]


def test_a_reply_and_a_dead_letter_for_one_input_are_a_duplicate() -> None:
    found = examine(inputs(2), replies(*EVERY), [Outcome(0, 0, (0, 2))])
    assert found.duplicates == 1
    assert found.anomalies == 1  # the service always refuses it: a reply cannot be
    assert found.examples["reply to a refused input"] == ["0:2"]


def test_an_order_violation_is_a_first_reply_after_a_later_offset_of_its_key() -> None:
    order = [(0, 0), (0, 2), (0, 1), (0, 3), (0, 4), (0, 5), (1, 0)]
    found = examine(inputs(), replies(*order), [])
    assert found.order_violations == 1
    assert found.examples["order"] == ["key b'a' of partition 0: offset 1 after 2"]


def test_order_is_per_key_and_partition() -> None:
    # key b before key a, and partition 1's key a before partition 0's: other lanes, no violation
    order = [(1, 0), (0, 4), (0, 0), (0, 5), (0, 1), (0, 2), (0, 3)]
    assert examine(inputs(), replies(*order), []).order_violations == 0


def test_order_holds_across_output_partitions_read_in_log_order() -> None:
    # key a in output partition 1 (out of order there), key b in partition 0; handed over in any order
    outcomes = [Outcome(1, 0, (0, 1)), Outcome(0, 0, (0, 4)), Outcome(1, 1, (0, 0)), Outcome(0, 1, (0, 5))]
    found = examine(inputs()[:2] + inputs()[4:6], list(reversed(outcomes)), [])
    assert found.order_violations == 1


def test_null_keys_are_unordered() -> None:
    keyless = [Input(0, 0, None, False), Input(0, 1, None, False)]
    assert examine(keyless, replies((0, 1), (0, 0)), []).order_violations == 0


def test_an_unexpected_dead_letter() -> None:
    found = examine(inputs(), replies(*(s for s in EVERY if s != (0, 5))), [Outcome(0, 0, (0, 5))])
    assert (found.lost, found.unexpected_dead_letters) == (0, 1)
    assert found.examples["unexpected dead letter"] == ["0:5"]


def test_outcomes_that_name_no_input_are_anomalies() -> None:
    found = examine(inputs(), [*replies(*EVERY), Outcome(0, 9, None), Outcome(0, 10, (7, 7))], [Outcome(0, 0, None)])
    assert found.anomalies == 3
    assert found.duplicates == 0


def test_the_duplicate_bound_is_three_windows_of_max_in_flight_per_crash() -> None:
    assert duplicate_bound(0, 64) == 0
    assert duplicate_bound(4, 64) == 4 * 3 * 64


def figures(**changes: Any) -> dict[str, Any]:
    keyed = examine(inputs(), replies(*EVERY, (0, 1)), [])
    exactly = examine(inputs(), replies(*EVERY), [])
    base = summary(
        seconds=600.4,
        seed=7,
        faults={"sigkill_sidecar": 1},
        crashes=1,
        max_in_flight=64,
        keyed=keyed,
        exactly=exactly,
    )
    return {**base, **changes}


def test_the_summary_line() -> None:
    line = figures()
    assert list(line) == [
        "seconds",
        "seed",
        "faults",
        "inputs",
        "lost",
        "duplicates",
        "duplicate_bound",
        "order_violations",
        "eos_duplicates",
        "unexpected_dead_letters",
        "problems",
    ]
    assert line["seconds"] == 600
    assert (line["inputs"], line["duplicates"], line["duplicate_bound"], line["eos_duplicates"]) == (7, 1, 192, 0)
    assert held(line)


def test_the_summary_adds_both_pipelines_but_keeps_their_duplicates_apart() -> None:
    keyed = examine(inputs(), replies(*(s for s in EVERY if s != (0, 0))), [Outcome(0, 0, (0, 4))])
    exactly = examine(inputs(), replies(*EVERY, (0, 3)), [Outcome(0, 0, (0, 5))])
    line = summary(seconds=1, seed=1, faults={}, crashes=0, max_in_flight=8, keyed=keyed, exactly=exactly)
    assert (line["lost"], line["unexpected_dead_letters"]) == (1, 2)
    assert (line["duplicates"], line["eos_duplicates"]) == (1, 2)


def test_every_invariant_decides_the_exit_status() -> None:
    assert not held(figures(lost=1))
    assert not held(figures(duplicates=193))
    assert held(figures(duplicates=192))
    assert not held(figures(order_violations=1))
    assert not held(figures(eos_duplicates=1))
    assert not held(figures(unexpected_dead_letters=1))
    assert not held(figures(problems=["member b exited on its own"]))
    assert not held(figures(inputs=0))


def test_anomalies_are_problems() -> None:
    keyed = examine(inputs(), [*replies(*EVERY), Outcome(0, 9, None)], [])
    line = summary(seconds=1, seed=1, faults={}, crashes=0, max_in_flight=8, keyed=keyed, exactly=keyed)
    assert len(line["problems"]) == 2
    assert not held(line)


def test_duplicates_are_told_by_the_last_fault_before_them() -> None:
    faults = [(100.0, "sigkill_sidecar"), (130.0, "kill_leader")]
    times = [99_000, 100_500, 129_999, 130_000, 200_000]
    assert after_faults(times, faults) == {"before any fault": 1, "sigkill_sidecar": 2, "kill_leader": 2}
