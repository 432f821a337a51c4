"""A fault scenario's topics and group, and its closing invariant check, in one object.

``scenario_factory`` (tests/conftest.py) makes the input, output and dead-letter topics and the group; a
scenario builds the pipeline spec on them (:meth:`Scenario.spec`) and ends with :meth:`Scenario.check`, which is
:func:`invariants.check` with the scenario's own topics filled in and the usual expectations as defaults: no
crash, no duplicate, nothing dead-lettered.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from invariants import Call, Id, Verdict, check
from sidecar import pipeline
from support import KafkaHandle


@dataclass
class Scenario:
    kafka: KafkaHandle
    source: str
    out: str
    dlq: str
    """The dead-letter topic; "" for a scenario without one."""
    group: str

    def spec(self, url: str, **overrides: Any) -> dict[str, Any]:
        """A pipeline from the source to the output (and dead-letter) topic in the scenario's group."""
        return pipeline(self.source, self.group, url, publish=self.out, dead_letter=self.dlq or None, **overrides)

    def check(
        self,
        calls: Callable[[], Sequence[Call]],
        *,
        max_duplicates: int = 0,
        crashes: bool = False,
        dead_letters: Mapping[Id, str | tuple[str, ...]] | None = None,
        timeout: float = 120.0,
    ) -> Verdict:
        """The invariant check over the scenario's topics once the group committed everything (see invariants)."""
        return check(
            self.kafka,
            group=self.group,
            source=self.source,
            out=self.out,
            dlq=self.dlq or None,
            calls=calls,
            max_duplicates=max_duplicates,
            crashes=crashes,
            dead_letters={} if dead_letters is None else dead_letters,
            timeout=timeout,
        )


class ScenarioFactory(Protocol):
    def __call__(
        self,
        partitions: int = 3,
        *,
        out_partitions: int | None = None,
        dead_letters: bool = True,
        source_config: dict[str, str] | None = None,
        out_config: dict[str, str] | None = None,
        on: KafkaHandle | None = None,
        replication: int = 1,
    ) -> Scenario: ...
