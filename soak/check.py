"""The soak's verdict: what was read back from the topics, held to the guarantees of docs/delivery.md.

Pure: the records come in as small tuples (:mod:`soak.topics` reads them), so the rules are tested on hand-made
cases (tests/unit/test_soak_check.py). Per pipeline, over every input record and every reply and dead letter:

* **lost** -- an input with neither a reply nor a dead letter.
* **duplicates** -- outcomes beyond one per input (replies and dead letters together).
* **order** -- per key (an input partition and key), the inputs in the order of their *first* reply in the output
  partition's log must have increasing offsets: a redelivery may repeat what was published, nothing may overtake.
  Dead letters go to a topic of their own, so no order between them and the replies can be read back.
* **unexpected dead letters** -- inputs dead-lettered that the service does not always refuse.
* **anomalies** -- an outcome that names no input, a reply to an input the service always refuses.

The duplicate bound. docs/delivery.md, "What a crash redoes": what was in a call or being published, plus what
completed since the last commit the broker took; "the two together never exceed 3 x ``max_in_flight``: while
they would, no new message is taken until a commit lands". A member SIGKILLed is a crash; so is one frozen past
its session timeout (the group hands its partitions on without its last commit, and what it does once thawed
commits nothing), and one that did not leave within its bound and had to be killed. Graceful leaves and joins
drain and commit before a partition moves, and the idempotent producer rides out a broker's death without
writing twice: neither adds to the bound. So ``duplicate_bound = 3 x max_in_flight x crashes``, for the
at-least-once pipeline; the exactly-once pipeline's bound is 0, read ``read_committed``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

Source = tuple[int, int]
"""An input record: (partition, offset)."""

CRASH_WINDOW = 3
"""A crash redoes at most this many times ``max_in_flight`` (docs/delivery.md)."""
SHOWN = 5
"""Examples kept per kind of violation."""
KEPT = 10_000
"""Lost inputs kept by name."""
APART = 5000
"""ms between the duplicates shown as examples: one per burst."""


class Input(NamedTuple):
    partition: int
    offset: int
    key: bytes | None
    refused: bool
    """The service always refuses it: its one outcome is a dead letter."""


class Outcome(NamedTuple):
    """A reply or a dead letter, where it was read, and the input it answers (None: it names none)."""

    partition: int
    offset: int
    source: Source | None
    at: int = 0
    """Its timestamp (ms): when the member produced it."""
    by: str = ""
    """The member that published it, where the record says (a reply's ``soak-member`` header)."""


@dataclass
class Findings:
    """One pipeline's outcome held to the rules (module docstring); the lists keep the first few examples."""

    inputs: int = 0
    lost: int = 0
    duplicates: int = 0
    order_violations: int = 0
    unexpected_dead_letters: int = 0
    anomalies: int = 0
    examples: dict[str, list[str]] = field(default_factory=dict)
    duplicate_times: list[int] = field(default_factory=list)
    """The timestamps (ms) of the outcomes beyond an input's first, to tell which fault they followed."""
    lost_inputs: list[Source] = field(default_factory=list)
    """The inputs lost (the first thousands), to look for what became of them."""
    duplicated: list[tuple[Source, list[Outcome]]] = field(default_factory=list)
    """A few inputs with more than one outcome (the first of each burst), and their outcomes in the order they were
    made."""

    def note(self, kind: str, text: str) -> None:
        shown = self.examples.setdefault(kind, [])
        if len(shown) < SHOWN:
            shown.append(text)


def examine(inputs: Iterable[Input], replies: Sequence[Outcome], letters: Sequence[Outcome]) -> Findings:
    """One pipeline's findings from its input records, its replies and its dead letters (each in any order)."""
    by_source = {(record.partition, record.offset): record for record in inputs}
    found = Findings(inputs=len(by_source))
    replied = _count(found, "reply", replies, by_source)
    lettered = _count(found, "dead letter", letters, by_source)
    for source, record in by_source.items():
        answers, letters_of = replied.get(source, 0), lettered.get(source, 0)
        if answers + letters_of == 0:
            found.lost += 1
            if len(found.lost_inputs) < KEPT:
                found.lost_inputs.append(source)
        found.duplicates += max(0, answers + letters_of - 1)
        if letters_of and not record.refused:
            found.unexpected_dead_letters += 1
            found.note("unexpected dead letter", _name(source))
        if answers and record.refused:
            found.anomalies += 1
            found.note("reply to a refused input", _name(source))
    _order(found, by_source, sorted(replies))
    _duplicates(found, (*replies, *letters), replied + lettered)
    return found


def _duplicates(found: Findings, outcomes: Iterable[Outcome], counts: Counter[Source]) -> None:
    twice: dict[Source, list[Outcome]] = {}
    for outcome in outcomes:
        if outcome.source is not None and counts[outcome.source] > 1:
            twice.setdefault(outcome.source, []).append(outcome)
    made = {source: sorted(each, key=lambda o: o.at) for source, each in twice.items()}
    found.duplicate_times = sorted(o.at for each in made.values() for o in each[1:])
    for source, each in sorted(made.items(), key=lambda item: item[1][1].at):
        if len(found.duplicated) < 2 * SHOWN and (
            not found.duplicated or each[1].at - found.duplicated[-1][1][1].at > APART
        ):
            found.duplicated.append((source, each))


def after_faults(times: Sequence[int], faults: Sequence[tuple[float, str]]) -> dict[str, int]:
    """How many of ``times`` (ms) fell after each fault (``(when, what)``, wall-clock seconds, in order) and
    before the next one; those before the first are counted under ``"before any fault"``."""
    counts: Counter[str] = Counter()
    for at in times:
        seconds = at / 1000
        label = "before any fault"
        for when, what in faults:
            if when > seconds:
                break
            label = what
        counts[label] += 1
    return dict(counts)


def _count(
    found: Findings, what: str, outcomes: Iterable[Outcome], by_source: Mapping[Source, Input]
) -> Counter[Source]:
    counts: Counter[Source] = Counter()
    for outcome in outcomes:
        if outcome.source is None or outcome.source not in by_source:
            found.anomalies += 1
            found.note(f"{what} for no input", f"{outcome.source} at {outcome.partition}:{outcome.offset}")
        else:
            counts[outcome.source] += 1
    return counts


def _order(found: Findings, by_source: Mapping[Source, Input], replies: Sequence[Outcome]) -> None:
    """Replies in log order (``replies`` sorted by partition and offset): per key, each input's first reply
    must come after the first replies of every earlier input of the key and before those of every later one."""
    latest: dict[tuple[int, bytes], int] = {}
    first: set[Source] = set()
    for reply in replies:
        source = reply.source
        if source is None or source in first or source not in by_source:
            continue
        first.add(source)
        key = by_source[source].key
        if key is None:  # null keys are unordered
            continue
        lane = (source[0], key)
        before = latest.get(lane, -1)
        if source[1] < before:
            found.order_violations += 1
            found.note("order", f"key {key!r:.30} of partition {source[0]}: offset {source[1]} after {before}")
        else:
            latest[lane] = source[1]


def spans(sources: Iterable[Source]) -> list[str]:
    """``sources`` as runs of consecutive offsets per partition: ``0:57``, ``0:95-96``."""
    runs: list[list[int]] = []
    for partition, offset in sorted(sources):
        if runs and runs[-1][0] == partition and runs[-1][2] == offset - 1:
            runs[-1][2] = offset
        else:
            runs.append([partition, offset, offset])
    return [f"{p}:{a}" if a == b else f"{p}:{a}-{b}" for p, a, b in runs]


def _name(source: Source) -> str:
    return f"{source[0]}:{source[1]}"


def duplicate_bound(crashes: int, max_in_flight: int) -> int:
    """The duplicates the at-least-once pipeline may show after ``crashes`` crashes (module docstring)."""
    return CRASH_WINDOW * max_in_flight * crashes


def summary(
    *,
    seconds: float,
    seed: int,
    faults: Mapping[str, int],
    crashes: int,
    max_in_flight: int,
    keyed: Findings,
    exactly: Findings,
    problems: Sequence[str] = (),
) -> dict[str, Any]:
    """The soak's last line: the issue's figures, both pipelines together but for the duplicates, which are the
    at-least-once pipeline's (``duplicates``, against ``duplicate_bound``) and the exactly-once one's
    (``eos_duplicates``). ``problems``: what went wrong beside the topics (a member that exited on its own, a
    drain that did not end, an outcome naming no input), one line each."""
    anomalies = [
        f"{name}: {n} outcome(s) naming no input or replying to a refused one"
        for name, n in (("keyed", keyed.anomalies), ("exactly", exactly.anomalies))
        if n
    ]
    return {
        "seconds": round(seconds),
        "seed": seed,
        "faults": dict(faults),
        "inputs": max(keyed.inputs, exactly.inputs),
        "lost": keyed.lost + exactly.lost,
        "duplicates": keyed.duplicates,
        "duplicate_bound": duplicate_bound(crashes, max_in_flight),
        "order_violations": keyed.order_violations + exactly.order_violations,
        "eos_duplicates": exactly.duplicates,
        "unexpected_dead_letters": keyed.unexpected_dead_letters + exactly.unexpected_dead_letters,
        "problems": [*problems, *anomalies],
    }


def held(figures: Mapping[str, Any]) -> bool:
    """Whether every invariant held (the exit status: 0 iff so)."""
    return (
        figures["lost"] == 0
        and figures["duplicates"] <= figures["duplicate_bound"]
        and figures["order_violations"] == 0
        and figures["eos_duplicates"] == 0
        and figures["unexpected_dead_letters"] == 0
        and not figures["problems"]
        and figures["inputs"] > 0
    )
