"""One word for where a pipeline is: what /status says in ``state``, the page's badge and the overview's colour.

From worst to best (the first that applies wins):

* ``kafka-unreachable``, ``topic-problem``, ``producer-fenced``, ``circuit-open``, ``service-failing``: what
  /readyz fails on (the last two only while there is work: an idle pipeline whose last calls failed holds
  nothing up, and stayed "not ready" for as long as no message came to close the circuit);
* ``stalled``: it has lag and finished no message over the last :data:`~streamcar.admin.window.STALL_AFTER`
  seconds (a service that hangs without failing, every key blocked...): nothing moves;
* ``aborting``: exactly once, :data:`ABORTING_AFTER` transactions or more in a row were aborted: messages finish,
  but their outcomes are thrown away and redone (a stuck partition was shown ``running``);
* ``circuit-half-open``: probing whether the service is back;
* ``partly-stalled``: messages finish, but some partitions' next offset to commit has not moved for that long
  while they have lag (a blocked key or a message retrying holds them; a crash would redo their done-ahead);
* ``no-partitions``: the group gave it none (yet, or there are more members than partitions);
* ``running``: work to do or done lately; ``idle``: neither.

``unreachable`` is the overview's, for a sidecar whose /status did not answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streamcar.admin.window import STALL_AFTER

LEVELS = {
    "unreachable": "bad",
    "kafka-unreachable": "bad",
    "topic-problem": "bad",
    "producer-fenced": "bad",
    "circuit-open": "bad",
    "service-failing": "bad",
    "stalled": "bad",
    "aborting": "bad",
    "circuit-half-open": "warn",
    "partly-stalled": "warn",
    "no-partitions": "idle",
    "idle": "idle",
    "running": "ok",
}
"""Each state's level: ``bad``, ``warn``, ``idle`` or ``ok`` (its colour)."""
RANK = {state: i for i, state in enumerate(LEVELS)}
"""Worst first: of several instances of one pipeline, the overview shows the worst."""
ABORTING_AFTER = 3
"""Transactions aborted in a row that make an exactly-once pipeline ``aborting``."""


def _window(p: Mapping[str, Any], name: str = "10s") -> Mapping[str, Any]:
    return ((p.get("rates") or {}).get(name)) or {}


def state_of(p: Mapping[str, Any]) -> tuple[str, str]:
    """The state of a pipeline's /status entry, and why in a few words."""
    if p.get("kafka_error"):
        return "kafka-unreachable", f"Kafka does not answer: {p['kafka_error']}"
    if p.get("topic_problems"):
        return "topic-problem", str(p["topic_problems"][0])
    if p.get("producer_problem"):
        return "producer-fenced", str(p["producer_problem"])
    circuit = p.get("circuit") or "closed"
    idle = not p.get("lag") and not p.get("in_flight")
    if circuit == "open" and not idle:
        reason = p.get("circuit_reason")
        return "circuit-open", "the circuit to the service is open" + (f": {reason}" if reason else "")
    if p.get("service_failing") and not idle:
        error = p.get("last_call_error")
        return "service-failing", "calls do not get through" + (f" (last: {error})" if error else "")
    lag = p.get("lag") or 0
    if not p.get("partitions"):
        return "no-partitions", "no partitions assigned"
    window = _window(p)
    done = (window.get("count") or {}).get("done")
    covered = (window.get("span_s") or 0) >= STALL_AFTER
    if lag > 0 and covered and done == 0:
        return "stalled", f"lag {lag:,} and no message finished in the last {int(window['span_s'])} s"
    transactions = p.get("transactions") or {}
    if (aborted := transactions.get("aborted_in_a_row") or 0) >= ABORTING_AFTER:
        return "aborting", f"{aborted} transactions aborted in a row (last: {transactions.get('last_abort')})"
    if circuit != "closed" and idle:
        return "idle", f"nothing to do; the circuit to the service is {circuit} (the next message answered closes it)"
    if circuit != "closed":
        return f"circuit-{circuit}", f"the circuit to the service is {circuit}"
    stuck = p.get("stuck") or []
    if stuck:
        first = stuck[0]
        more = f" and {len(stuck) - 1} more" if len(stuck) > 1 else ""
        return "partly-stalled", (
            f"{first['topic']}[{first['partition']}] stuck at offset {first['next_offset']} for {first['for_s']} s"
            f" (lag {first['lag']:,}){more}"
        )
    if lag > 0 or done:
        return "running", "messages flow" if done else f"lag {lag:,}"
    return "idle", "nothing to do"
