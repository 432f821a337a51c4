"""The overview across sidecars: the graph topic → pipeline → topic, from every sidecar's ``/status``.

A system of services is a graph: topics feed pipelines, pipelines publish to topics. Each sidecar knows its own
pipelines only; the overview asks each one for its /status (concurrently, :data:`PEER_TIMEOUT` at most, so one
that hangs costs two seconds, not the page) and joins them on topic names. What it draws:

* **a pipeline per consumer group**: sidecars of one service scaled out consume in one group, so they are one
  pipeline of several instances, with their rates and lags added up and the worst of their states
  (:mod:`streamcar.admin.states`);
* **rates** are of messages done (whatever their result) over the last 10 s: a pipeline that consumes and
  never finishes has none;
* **edges**: input topic → pipeline (that topic's lag), pipeline → publish topic and every topic replies were
  routed to in the last minute (their rate), pipeline → dead-letter topic (its rate over the last minute);
* **layers**: a pipeline sits one layer right of the rightmost pipeline that writes one of its inputs, a topic
  right of its writers, so a chain of services reads left to right (cycles, e.g. a redrive loop, are cut);
* **chains**: every path from a topic nobody here writes to one nobody here reads, for the terminal.

A sidecar that did not answer is listed as unreachable with the reason; its pipelines cannot be known. What the
peers send is untrusted: it is only ever shown escaped.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from streamcar.admin.states import LEVELS, RANK

PEER_TIMEOUT = 2.0
"""Seconds a sidecar has to answer its /status."""
MAX_STATUS_BYTES = 8 * 1024 * 1024
MAX_CHAINS = 100


@dataclass(frozen=True, slots=True)
class Peer:
    url: str
    """The admin base URL, ending in ``/``."""
    token: str | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    """One sidecar's /status, or why there is none."""

    url: str
    document: Mapping[str, Any] | None
    error: str | None = None
    own: bool = False


async def fetch(session: aiohttp.ClientSession, peer: Peer, within: float = PEER_TIMEOUT) -> Answer:
    headers = {"Accept": "application/json"}
    if peer.token:
        headers["Authorization"] = f"Bearer {peer.token}"
    try:
        async with asyncio.timeout(within):
            async with session.get(f"{peer.url}status", headers=headers, allow_redirects=False) as response:
                if response.status == 401:
                    return Answer(peer.url, None, "HTTP 401: its admin token is missing or wrong")
                if response.status != 200:
                    return Answer(peer.url, None, f"HTTP {response.status}")
                body = await _body(response)
    except TimeoutError:
        return Answer(peer.url, None, f"no answer within {within:g}s")
    except aiohttp.ClientConnectorError as exc:
        if isinstance(exc.os_error, ConnectionRefusedError):
            return Answer(peer.url, None, "cannot connect: connection refused (nothing listens there)")
        return Answer(peer.url, None, f"cannot connect: {exc.os_error.strerror or exc.os_error}")
    except aiohttp.ClientError as exc:
        return Answer(peer.url, None, f"{type(exc).__name__}: {exc}")
    if body is None:
        return Answer(peer.url, None, f"its /status is larger than {MAX_STATUS_BYTES // 1024 // 1024} MiB")
    try:
        document = json.loads(body, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return Answer(peer.url, None, "its /status is not JSON: not a streamcar admin URL?")
    if not isinstance(document, dict) or not isinstance(document.get("pipelines"), list):
        return Answer(peer.url, None, "its /status has no pipelines: not a streamcar admin URL?")
    return _readable(Answer(peer.url, document))


async def _body(response: aiohttp.ClientResponse) -> bytes | None:
    """The whole body, to its Content-Length or end, however many writes it came in; None past the size cap
    (one read took what had arrived: a /status in two writes was "not JSON")."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > MAX_STATUS_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def _readable(answer: Answer) -> Answer:
    """``answer`` if the overview can be drawn from it, else the peer as unreadable: one peer's odd /status (a
    field of another type, deep nesting) made /overview answer 500 for everyone."""
    try:
        json.dumps(build([answer]), allow_nan=False)
    except Exception as exc:  # what a peer sends is untrusted: whatever it breaks, only that peer is left out
        return Answer(answer.url, None, f"its /status is not readable here ({type(exc).__name__}): another version?")
    return answer


async def gather(peers: Sequence[Peer], within: float = PEER_TIMEOUT) -> list[Answer]:
    """Every peer's /status, asked at the same time; in the order of ``peers``."""
    if not peers:
        return []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=within + 1)) as session:
        return list(await asyncio.gather(*(fetch(session, peer, within) for peer in peers)))


# -- the graph ------------------------------------------------------------------------------------------------
def _num(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _per_s(p: Mapping[str, Any], window: str, counter: str) -> float | None:
    return _num((((p.get("rates") or {}).get(window) or {}).get("per_s") or {}).get(counter))


def _add(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else a + b


def _key(answer: Answer, p: Mapping[str, Any]) -> str:
    group = p.get("group")
    return f"group:{group}" if isinstance(group, str) and group else f"{answer.url}#{p.get('name')}"


def _pipeline_node(answer: Answer, p: Mapping[str, Any]) -> dict[str, Any]:
    state = str(p.get("state") or "running")
    return {
        "id": _key(answer, p),
        "name": str(p.get("name") or "?"),
        "group": p.get("group"),
        "service": str((p.get("call") or {}).get("url") or ""),
        "state": state,
        "state_reason": str(p.get("state_reason") or ""),
        "instances": [],
        "inputs": [],
        "outputs": {},
        "dead_letter": None,
        "rate": None,
        "consumed_rate": None,
        "error_rate": None,
        "dead_letter_rate": None,
        "p99": None,
        "lag": 0,
        "lag_by_topic": {},
    }


def _merge(node: dict[str, Any], answer: Answer, p: Mapping[str, Any]) -> None:
    """One instance (a sidecar's entry for the group) into the group's node."""
    state = str(p.get("state") or "running")
    node["instances"].append({"sidecar": answer.url, "name": p.get("name"), "state": state})
    if RANK.get(state, len(RANK)) < RANK.get(node["state"], len(RANK)):
        node["state"], node["state_reason"] = state, str(p.get("state_reason") or "")
    for topic in p.get("topics") or []:
        if topic not in node["inputs"]:
            node["inputs"].append(str(topic))
    outputs: dict[str, float | None] = node["outputs"]
    if p.get("publish_topic"):
        outputs.setdefault(str(p["publish_topic"]), None)
    for routed in p.get("routed") or []:
        topic = str(routed.get("topic"))
        outputs[topic] = _add(outputs.get(topic), _num(routed.get("per_s")))
    if p.get("dead_letter_topic"):
        node["dead_letter"] = str(p["dead_letter_topic"])
    node["rate"] = _add(node["rate"], _per_s(p, "10s", "done"))  # progress: what a stuck pipeline lacks
    node["consumed_rate"] = _add(node["consumed_rate"], _per_s(p, "10s", "consumed"))
    errors = _add(_per_s(p, "10s", "call_errors"), _per_s(p, "10s", "dead_lettered"))
    node["error_rate"] = _add(node["error_rate"], errors)
    node["dead_letter_rate"] = _add(node["dead_letter_rate"], _per_s(p, "1m", "dead_lettered"))
    p99 = _num(((p.get("latency") or {}).get("10s") or {}).get("p99"))
    if p99 is not None and (node["p99"] is None or p99 > node["p99"]):
        node["p99"] = p99
    node["lag"] += int(p.get("lag") or 0)
    for part in p.get("partitions") or []:
        topic, lag = str(part.get("topic")), part.get("lag")
        if isinstance(lag, int):
            node["lag_by_topic"][topic] = node["lag_by_topic"].get(topic, 0) + lag


def _sidecar(answer: Answer) -> dict[str, Any]:
    doc = answer.document or {}
    return {
        "url": answer.url,
        "own": answer.own,
        "reachable": answer.document is not None,
        "error": answer.error,
        "ready": doc.get("ready"),
        "version": doc.get("version"),
        "host": doc.get("host"),
        "uptime_s": doc.get("uptime_s"),
        "pipelines": [str(p.get("name")) for p in doc.get("pipelines") or [] if isinstance(p, Mapping)],
    }


def build(answers: Sequence[Answer], now: float | None = None) -> dict[str, Any]:
    """The overview of ``answers``: sidecars, pipelines, topics (with their layer and row), edges and chains."""
    nodes: dict[str, dict[str, Any]] = {}
    for answer in answers:
        for p in (answer.document or {}).get("pipelines") or []:
            if not isinstance(p, Mapping):
                continue
            key = _key(answer, p)
            node = nodes.setdefault(key, _pipeline_node(answer, p))
            _merge(node, answer, p)
    pipelines = sorted(nodes.values(), key=lambda n: n["name"])
    for node in pipelines:
        node["level"] = LEVELS.get(node["state"], "bad")
    edges: list[dict[str, Any]] = []
    writers: dict[str, list[str]] = {}
    readers: dict[str, list[str]] = {}
    dead_letter_topics = set()
    for node in pipelines:
        for topic in node["inputs"]:
            readers.setdefault(topic, []).append(node["id"])
            edges.append(
                {
                    "from": f"topic:{topic}",
                    "to": node["id"],
                    "kind": "input",
                    "lag": node["lag_by_topic"].get(topic),
                    "rate": node["rate"] if len(node["inputs"]) == 1 else None,
                }
            )
        for topic, rate in sorted(node["outputs"].items()):
            writers.setdefault(topic, []).append(node["id"])
            edges.append({"from": node["id"], "to": f"topic:{topic}", "kind": "output", "rate": rate, "lag": None})
        if node["dead_letter"]:
            topic = node["dead_letter"]
            dead_letter_topics.add(topic)
            writers.setdefault(topic, []).append(node["id"])
            edges.append(
                {"from": node["id"], "to": f"topic:{topic}", "kind": "dead-letter", "rate": node["dead_letter_rate"]}
            )
    rank = _ranks(pipelines, writers)
    names = sorted(set(readers) | set(writers))
    topics = [
        {
            "id": f"topic:{name}",
            "name": name,
            "column": 2 * max(rank[w] for w in writers[name]) + 2 if name in writers else 0,
            "writers": writers.get(name, []),
            "readers": readers.get(name, []),
            "dead_letters": name in dead_letter_topics,
        }
        for name in names
    ]
    for node in pipelines:
        node["column"] = 2 * rank[node["id"]] + 1
    _rows([*topics, *pipelines], edges)
    return {
        "at": time.time() if now is None else now,
        "sidecars": [_sidecar(answer) for answer in answers],
        "pipelines": pipelines,
        "topics": topics,
        "edges": edges,
        "chains": _chains(topics, pipelines, edges),
    }


def _ranks(pipelines: Sequence[Mapping[str, Any]], writers: Mapping[str, list[str]]) -> dict[str, int]:
    """Each pipeline's layer: 0 when no pipeline here writes its inputs, else one more than the highest writer's.
    A writer still being ranked further down the same path closes a cycle (a redrive loop): that edge is cut."""
    by_id = {node["id"]: node for node in pipelines}
    outputs = {node["id"]: set(node["outputs"]) for node in pipelines}  # not the dead-letter topic: a side exit
    rank: dict[str, int] = {}
    ranking: set[str] = set()

    def of(key: str) -> int:
        if key in rank:
            return rank[key]
        if key in ranking:
            return -1
        ranking.add(key)
        inputs = by_id[key]["inputs"]
        upstream = [w for topic in inputs for w in writers.get(topic, []) if w != key and topic in outputs[w]]
        rank[key] = max((of(w) + 1 for w in upstream), default=0)
        ranking.discard(key)
        return rank[key]

    for node in pipelines:
        of(node["id"])
    return rank


def _rows(nodes: Sequence[dict[str, Any]], edges: Sequence[Mapping[str, Any]]) -> None:
    """A row for each node within its column, in the order of the rows of what feeds it (the barycenter
    heuristic, left to right), so chains come out as straight lines as far as they can."""
    feeders: dict[str, list[str]] = {}
    for edge in edges:
        feeders.setdefault(edge["to"], []).append(edge["from"])
    row: dict[str, float] = {}
    for column in sorted({node["column"] for node in nodes}):
        here = [node for node in nodes if node["column"] == column]

        def place(node: Mapping[str, Any]) -> tuple[float, bool, str]:
            seen = [row[f] for f in feeders.get(node["id"], []) if f in row]
            side_exit = bool(node.get("dead_letters")) and not node.get("readers")  # below the chain it leaves
            return (sum(seen) / len(seen) if seen else float("inf"), side_exit, node["name"])

        for i, node in enumerate(sorted(here, key=place)):
            node["row"] = i
            row[node["id"]] = i


def _chains(
    topics: Sequence[Mapping[str, Any]], pipelines: Sequence[Mapping[str, Any]], edges: Sequence[Mapping[str, Any]]
) -> list[list[str]]:
    """Every path (topic, pipeline, topic, ...) from a topic no pipeline here writes, along inputs and outputs,
    to where it ends; each node at most once per path, at most :data:`MAX_CHAINS` paths."""
    after: dict[str, list[str]] = {}
    for edge in edges:
        if edge["kind"] != "dead-letter":
            after.setdefault(edge["from"], []).append(edge["to"])
    found: list[list[str]] = []

    def walk(path: list[str]) -> None:
        if len(found) >= MAX_CHAINS:
            return
        following = [n for n in after.get(path[-1], []) if n not in path]
        if not following:
            found.append(path)
        for node in following:
            walk([*path, node])

    for topic in topics:
        if not topic["writers"] and topic["readers"]:
            walk([topic["id"]])
    for node in pipelines:  # a pipeline only on a cycle still shows
        if len(found) < MAX_CHAINS and not any(node["id"] in chain for chain in found):
            walk([node["id"]])
    return found
