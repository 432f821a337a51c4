"""The invariant checker itself, on synthetic records (no broker): it passes a clean run and catches each kind
of violation, so a green fault scenario means something."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from invariants import Call, Id, Record, Verdict, evaluate
from service import Seen

pytestmark = pytest.mark.faults

SRC, OUT, DLQ = "orders", "orders-out", "orders-dlq"
KEYS = [b"a", b"b", None]


def inputs(n: int = 12) -> list[Record]:
    """One partition; keys a, b and null in turn (so a: 0, 3, 6, 9; b: 1, 4, 7, 10)."""
    return [Record(SRC, 0, i, KEYS[i % 3], b"v%d" % i, (("h", b"x"),)) for i in range(n)]


def reply(position: int, source: Record, partition: int = 0) -> Record:
    return Record(OUT, partition, position, source.key, f"{SRC}-0-{source.offset}".encode())


def replies(sources: Sequence[Record]) -> list[Record]:
    return [reply(i, s) for i, s in enumerate(sources)]


def letter(position: int, source: Record, kind: str = "http-status") -> Record:
    headers = (
        *source.headers,
        ("streamcar-error", b"HTTP 413"),
        ("streamcar-error-kind", kind.encode()),
        ("streamcar-source-topic", source.topic.encode()),
        ("streamcar-source-partition", str(source.partition).encode()),
        ("streamcar-source-offset", str(source.offset).encode()),
    )
    return Record(DLQ, 0, position, source.key, source.value, headers)


def calls(sources: Sequence[Record]) -> list[Call]:
    return [Seen(s.topic, s.partition, s.offset, s.key, s.value or b"", {}, 0.0) for s in sources]


def run(
    given: list[Record],
    out: list[Record],
    letters: Sequence[Record] = (),
    log: Sequence[Record] | None = None,
    *,
    crashes: bool = False,
    max_duplicates: int = 0,
    dead_letters: dict[Id, str | tuple[str, ...]] | None = None,
) -> Verdict:
    return evaluate(
        given,
        out,
        list(letters),
        calls(given if log is None else log),
        max_duplicates=max_duplicates,
        crashes=crashes,
        dead_letters=dead_letters,
    )


def test_a_clean_run_passes_both_strict_and_after_crashes() -> None:
    given = inputs()
    for crashes in (False, True):
        verdict = run(given, replies(given), crashes=crashes)
        assert verdict.violations == {}
        assert verdict.duplicates == 0


def test_a_missing_reply_is_unanswered_and_the_message_names_it() -> None:
    given = inputs()
    verdict = run(given, replies(given[:5] + given[6:]))
    assert list(verdict.violations) == ["unanswered"]
    assert verdict.violations["unanswered"] == ["orders-0-5"]
    assert verdict.describe() == "1 violation(s) of the delivery invariants:\n  unanswered x1: orders-0-5"


def test_a_dead_letter_answers_its_input_but_not_together_with_a_reply() -> None:
    given = inputs()
    rest = [s for s in given if s.offset != 4]
    assert run(given, replies(rest), [letter(0, given[4])]).violations == {}
    both = run(given, replies(given), [letter(0, given[4])])
    assert both.violations == {"replied and dead-lettered": ["orders-0-4"]}


def test_replies_and_dead_letters_must_name_a_real_input() -> None:
    given = inputs()
    stray = Record(OUT, 1, 0, b"a", b"orders-0-99")
    garbage = Record(OUT, 1, 1, b"a", b"\xff not an id")
    orphan = Record(DLQ, 0, 0, b"a", b"v", (("streamcar-error-kind", b"rejected"),))
    verdict = run(given, [*replies(given), stray, garbage], [orphan])
    assert len(verdict.violations["reply for no input"]) == 2
    assert verdict.violations["dead letter for no input"] == ["None at 0:0"]


def test_a_dead_letter_must_keep_the_input_key_value_and_headers() -> None:
    given = inputs()
    rest = [s for s in given if s.offset != 2]
    changed = letter(0, Record(SRC, 0, 2, given[2].key, b"other", given[2].headers))
    assert run(given, replies(rest), [changed]).violations == {
        "dead letter altered": ["orders-0-2: key, value or headers differ from the input's"]
    }
    no_headers = letter(0, Record(SRC, 0, 2, given[2].key, given[2].value))
    assert "dead letter altered" in run(given, replies(rest), [no_headers]).violations


def test_expected_dead_letters_pin_which_inputs_and_which_kind() -> None:
    given = inputs()
    rest = [s for s in given if s.offset != 7]
    dead = [letter(0, given[7], kind="publish")]
    assert run(given, replies(rest), dead, dead_letters={(SRC, 0, 7): "publish"}).violations == {}
    assert run(given, replies(rest), dead, dead_letters={(SRC, 0, 7): ("rejected", "publish")}).violations == {}
    assert run(given, replies(rest), dead, dead_letters={(SRC, 0, 7): "http-status"}).violations == {
        "dead letter kind": ["orders-0-7: 'publish', expected http-status"]
    }
    unexpected = run(given, replies(rest), dead, dead_letters={})
    assert list(unexpected.violations) == ["unexpected dead letter"]
    missing = run(given, replies(given), dead_letters={(SRC, 0, 7): "publish"})
    assert list(missing.violations) == ["expected dead letter"]


def test_duplicates_are_counted_against_the_bound() -> None:
    given = inputs()
    out = replies(given + given[:3])  # inputs 0, 1, 2 answered twice, the repeats at the end of the log
    assert run(given, out, crashes=True, max_duplicates=3).duplicates == 3
    assert run(given, out, crashes=True, max_duplicates=3).violations == {}
    over = run(given, out, crashes=True, max_duplicates=2)
    assert over.violations == {"duplicates": ["3 outcomes beyond one per input, bound 2"]}


def test_call_order_strict_allows_retries_only() -> None:
    given = inputs()
    a = [s for s in given if s.key == b"a"]  # offsets 0, 3, 6, 9
    retried = [a[0], a[1], a[1], a[2], a[3]]
    assert run(given, replies(given), log=retried).violations == {}
    redelivered = [a[0], a[1], a[2], a[1], a[2], a[3]]  # a crash: the calls after the last commit again
    assert run(given, replies(given), log=redelivered).violations == {
        "call order": ["orders-0 key b'a': offset 3 after 6"]
    }
    assert run(given, replies(given), log=redelivered, crashes=True).violations == {}
    swapped = [a[0], a[2], a[1], a[3]]  # a later message of the key called before an earlier one
    assert "call order" in run(given, replies(given), log=swapped, crashes=True).violations


def test_null_keys_are_unordered() -> None:
    given = inputs()
    nulls = [s for s in given if s.key is None]
    assert run(given, replies(given), log=nulls[::-1]).violations == {}


def test_reply_order_per_key_in_each_output_partition() -> None:
    given = inputs()
    order = [given[i] for i in (0, 1, 2, 4, 3, 5, 6, 7, 8, 9, 10, 11)]  # b's 4 before a's 3: different keys
    assert run(given, replies(order)).violations == {}
    inverted = [given[i] for i in (0, 1, 2, 3, 7, 4, 5, 6, 8, 9, 10, 11)]  # b's 7 before b's 4
    assert run(given, replies(inverted)).violations == {"reply order": ["orders-0 key b'b': offset 4 after 7"]}
    assert "reply order" in run(given, replies(inverted), crashes=True).violations
    # a crash may publish a key's replies again from the last commit: repeats are fine, a first reply out of
    # order is not
    again = [given[i] for i in range(12)] + [given[3], given[6]]
    assert run(given, replies(again), crashes=True, max_duplicates=2).violations == {}
    assert "reply order" in run(given, replies(again), max_duplicates=2).violations


def test_the_failure_message_lists_the_first_few_of_each_kind() -> None:
    given = inputs(30)
    verdict = run(given, [])
    text = verdict.describe()
    assert text.splitlines()[0] == "30 violation(s) of the delivery invariants:"
    assert "unanswered x30: orders-0-0; orders-0-1; orders-0-2; orders-0-3; orders-0-4 (+25 more)" in text
