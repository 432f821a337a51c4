"""One soak run: set up, soak under the nemesis, heal, drain, read every topic back and judge.

1. A 3-node cluster (LocalKafka: replication 3, ``min.insync.replicas`` 2) in a temporary directory, on free
   loopback ports; the input topic and each pipeline's output and dead-letter topics.
2. The service (soak/service.py) and two members, ``streamcar run`` processes of both groups: ``keyed`` (at least
   once, ``ordering: key``) and ``exactly`` (``publish.exactly_once``), both reading the input topic. A third
   member joins and leaves by turns under the nemesis.
3. The input (soak.load) and the nemesis (soak.nemesis) for ``seconds``; then every fault healed, the input
   stopped, both groups drained (each has committed the input's end), the members stopped by SIGTERM (exit 0).
4. Every topic read back (``read_committed``) and judged (soak.check).

Everything it starts stops on every way out (an error, Ctrl-C, SIGTERM): a second signal waits for that.
"""

from __future__ import annotations

import contextlib
import json
import random
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from soak import check, topics
from soak.check import Findings, Input, Outcome
from soak.commits import Commits
from soak.load import Load
from soak.nemesis import Nemesis, Nodes, Setting
from soak.plan import Fault, plan
from soak.processes import Member, Service
from streamcar.config import Config
from streamcar.devkafka import LocalKafka
from streamcar.errors import ToolingError

SOURCE = "soak-in"
PIPELINES = {"keyed": ("soak-keyed", False), "exactly": ("soak-exactly", True)}
"""Pipeline name -> its group (also the stem of its output and dead-letter topics), and whether exactly once."""
PARTITIONS = 6
KEYS = 1000
MAX_IN_FLIGHT = 64
SESSION_TIMEOUT = 15.0
"""Above the 9 s a dead node takes to be noticed (its broker session), so that a group coordinator's death does
not end its members' sessions; a SIGSTOP of a member outlasts it."""
SHUTDOWN_TIMEOUT = 10.0
LEAVE_WITHIN = SHUTDOWN_TIMEOUT + 5 + 10
"""docs/delivery.md: stopping takes at most shutdown_timeout + 5 s; and 10 s for a loaded machine."""
FAIL_RATE = 0.03
"""Calls answered 503. With 10 attempts, a record dead-lettered for them alone is a 1e-15 chance."""
NORMAL, SLOW = (0.001, 0.005), (0.2, 1.5)
"""The service's latency in seconds (uniform in the range), and in a slow phase: below call.timeout (10 s), so a
slow phase costs no attempt."""
HEAP = "512m"
BROKER = {"transaction.state.log.num.partitions": "10"}
"""Ten transaction-log partitions rather than fifty (as the local cluster has for the offsets): a node killed by
the nemesis loads and catches up on fewer logs when it starts again (up to a minute on a busy machine)."""
MEMBERS = ("a", "b", "c")
JOIN_WITHIN = 120.0
DRAIN_WITHIN = 300.0
READ_WITHIN = 600.0


@dataclass(frozen=True)
class Settings:
    seconds: float
    seed: int
    rate: float = 300.0
    logs: Path | None = None
    """Where the members', the service's and the nodes' logs are copied at the end (None: nowhere)."""


@dataclass(frozen=True)
class Draws:
    """Everything random in a run, drawn in this order from one ``random.Random(seed)``: the faults, the records
    the service always refuses, then the seeds of the service's and the input's own random sources (each lives on
    in another thread or process, where the order of their draws is theirs alone)."""

    faults: list[Fault]
    refused: list[int]
    service_seed: int
    load_seed: int

    @classmethod
    def of(cls, settings: Settings) -> Draws:
        rng = random.Random(settings.seed)
        faults = plan(rng, settings.seconds, session_timeout=SESSION_TIMEOUT)
        expected = max(100, int(settings.rate * settings.seconds * 0.9))
        refused = sorted(rng.sample(range(expected), 3 + int(settings.seconds // 120)))
        return cls(faults, refused, rng.getrandbits(63), rng.getrandbits(63))


class Clock:
    """Seconds since the run started, on every line it prints."""

    def __init__(self) -> None:
        self.start, self.wall = time.monotonic(), time.time()

    def since(self, wall: float) -> float:
        return wall - self.wall

    def say(self, text: str) -> None:
        print(f"soak [{time.monotonic() - self.start:7.1f}s] {text}", flush=True)


def run(settings: Settings) -> dict[str, Any]:
    """The run's figures (soak.check.summary)."""
    stack = ExitStack()
    try:
        return _soak(settings, stack)
    finally:
        with _shielded():
            stack.close()


@contextlib.contextmanager
def _shielded() -> Iterator[None]:
    """A second Ctrl-C (or SIGTERM) waits for the clean-up rather than cutting it short."""
    before = signal.signal(signal.SIGINT, signal.SIG_IGN), signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before[0])
        signal.signal(signal.SIGTERM, before[1])


@dataclass
class Rig:
    """What a run set up, each piece stopped by the run's exit stack."""

    bootstrap: str
    nodes: Nodes
    nemesis: Nemesis
    service: Service
    commits: Commits
    load: Load


def _soak(settings: Settings, stack: ExitStack) -> dict[str, Any]:
    clock, draws = Clock(), Draws.of(settings)
    clock.say(
        f"seed {settings.seed} (SOAK_SEED={settings.seed} repeats it), {settings.seconds:.0f}s, "
        f"{len(draws.faults)} faults planned, records {draws.refused} always refused"
    )
    rig = _set_up(settings, draws, stack, clock)
    nemesis = rig.nemesis
    start = time.monotonic()
    nemesis.run(draws.faults, start, start + settings.seconds)
    seconds = time.monotonic() - start
    clock.say(f"healing after {sum(nemesis.faults.values())} faults of {len(draws.faults)}: {dict(nemesis.faults)}")
    nemesis.heal()
    rig.load.stop()
    load = rig.load
    clock.say(f"input stopped: {load.produced} produced, {load.acknowledged} acknowledged, failures {load.failed}")
    problems = [*_drain(rig.bootstrap, nemesis, clock), *_stop(nemesis, clock)]
    clock.say(f"service: {rig.service.stats()}")
    rig.commits.stop()
    keyed, exactly = (_judge(rig.bootstrap, name, set(draws.refused), rig.commits, clock) for name in PIPELINES)
    for name, found in (("keyed", keyed), ("exactly", exactly)):
        if found.duplicate_times:
            after = check.after_faults(found.duplicate_times, nemesis.done)
            clock.say(f"{name}: duplicates by the last fault before them: {after}")
    if keyed.inputs < load.acknowledged:
        problems.append(f"the input topic holds {keyed.inputs} records of {load.acknowledged} acknowledged")
    return check.summary(
        seconds=seconds,
        seed=settings.seed,
        faults=nemesis.faults,
        crashes=nemesis.crashes,
        max_in_flight=MAX_IN_FLIGHT,
        keyed=keyed,
        exactly=exactly,
        problems=[*nemesis.problems, *rig.nodes.problems, *problems],
    )


def _set_up(settings: Settings, draws: Draws, stack: ExitStack, clock: Clock) -> Rig:
    """The cluster, the topics, the service and two members holding every partition; the input flowing."""
    workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="streamcar-soak-")))
    cluster, bootstrap = _start_cluster(workdir, stack, clock)
    nodes = Nodes(cluster, HEAP, SOURCE, clock.say)
    nodes.start()
    stack.callback(nodes.close)
    topics.create(bootstrap, {SOURCE: PARTITIONS} | _outputs())
    settings_of_service = {"seed": draws.service_seed, "fail_rate": FAIL_RATE, "refused": draws.refused}
    service = Service(workdir, {**settings_of_service, "latency": NORMAL})
    stack.callback(service.kill)
    service.start()
    members = {name: Member(name, member_config(name, bootstrap, service.url), workdir) for name in MEMBERS}
    for member in members.values():
        stack.callback(member.kill)
    if settings.logs is not None:
        stack.callback(_keep_logs, workdir, settings.logs)
    commits = Commits(bootstrap, [group for group, _ in PIPELINES.values()], SOURCE, PARTITIONS)
    stack.callback(commits.stop)
    commits.start()
    for name in MEMBERS[:2]:
        members[name].start()
    _wait_held(bootstrap, members, clock)
    load = Load(bootstrap, SOURCE, rate=settings.rate, keys=KEYS, seed=draws.load_seed)
    stack.callback(load.stop)
    load.start()
    clock.say(f"input at {settings.rate:.0f}/s, members {', '.join(MEMBERS[:2])}; the nemesis starts")
    setting = Setting(cluster, bootstrap, SOURCE, PARTITIONS, NORMAL, SLOW, LEAVE_WITHIN)
    nemesis = Nemesis(setting, members, service, nodes, clock.say)
    return Rig(bootstrap, nodes, nemesis, service, commits, load)


def _start_cluster(workdir: Path, stack: ExitStack, clock: Clock) -> tuple[LocalKafka, str]:
    """A 3-node cluster on free ports, and its bootstrap servers. Started once more, in a fresh directory, if a
    node dies starting: another process may take a port between the kernel naming it free and the node binding it."""
    for attempt in (1, 2):
        cluster = LocalKafka(workdir / f"kafka-{attempt}")
        stack.callback(cluster.stop, timeout=20)
        try:
            layout = cluster.start(
                nodes=3, port=0, heap=HEAP, timeout=180, die_with_parent=True, extra_properties=BROKER
            )
        except ToolingError as exc:
            if attempt == 2:
                raise
            clock.say(f"the cluster did not start ({exc}); once more, on other ports")
            continue
        return cluster, layout.bootstrap
    raise AssertionError("unreachable")


def _outputs() -> dict[str, int]:
    outputs: dict[str, int] = {}
    for group, _ in PIPELINES.values():
        outputs |= {f"{group}-out": PARTITIONS, f"{group}-dlq": 3}
    return outputs


def member_config(name: str, bootstrap: str, service: str) -> dict[str, Any]:
    """A member's config: both pipelines, its name as ``client_id`` (its transactional ids hang on it), a short
    session timeout so that a frozen or killed member's partitions move within seconds."""
    pipelines: dict[str, Any] = {}
    for pipeline, (group, exactly) in PIPELINES.items():
        pipelines[pipeline] = {
            "consume": {"topics": [SOURCE], "group": group},
            "call": {"url": f"{service}/handle", "timeout": "10s", "headers": {"Soak-Member": name}},
            "ordering": "key",
            "max_in_flight": MAX_IN_FLIGHT,
            "retry": {"attempts": 10, "initial_backoff": "100ms", "max_backoff": "2s"},
            "commit_interval": "1s",
            "shutdown_timeout": f"{SHUTDOWN_TIMEOUT:.0f}s",
            "publish": {"topic": f"{group}-out", "exactly_once": exactly},
            "dead_letter": {"topic": f"{group}-dlq"},
        }
    config = {
        "kafka": {
            "bootstrap_servers": bootstrap,
            "client_id": f"soak-{name}",
            "librdkafka": {"session.timeout.ms": int(SESSION_TIMEOUT * 1000), "heartbeat.interval.ms": 1000},
        },
        "admin": {"listen": "127.0.0.1:0"},
        "pipelines": pipelines,
    }
    Config.model_validate(config)  # a mistake here fails the soak at once, not as members dying one by one
    return config


def _wait_held(bootstrap: str, members: dict[str, Member], clock: Clock) -> None:
    deadline = time.monotonic() + JOIN_WITHIN
    for group, _ in PIPELINES.values():
        while topics.held(bootstrap, group) != set(range(PARTITIONS)):
            dead = [m.name for m in members.values() if m.proc is not None and not m.alive]
            if dead or time.monotonic() > deadline:
                logs = "; ".join(f"{m.name}: {m.log.read_text(errors='replace')[-400:]}" for m in members.values())
                raise RuntimeError(f"the members did not take {group}'s partitions (exited: {dead}): {logs}")
            time.sleep(0.5)
    clock.say("both groups hold every partition")


def _drain(bootstrap: str, nemesis: Nemesis, clock: Clock) -> list[str]:
    """Wait (bounded) until both groups committed the input's end; the problems if not."""
    ends = topics.ends(bootstrap, SOURCE)
    deadline = time.monotonic() + DRAIN_WITHIN
    while True:
        behind = {
            group: lag
            for group, _ in PIPELINES.values()
            if (lag := sum(end - topics.committed(bootstrap, group, SOURCE).get(p, 0) for p, end in ends.items()))
        }
        if not behind:
            clock.say("drained: both groups committed the input's end")
            return []
        if time.monotonic() > deadline:
            return [f"not drained within {DRAIN_WITHIN:.0f}s: uncommitted records per group {behind}"]
        nemesis.watch()
        time.sleep(1.0)


def _stop(nemesis: Nemesis, clock: Clock) -> list[str]:
    """SIGTERM the members up; each must exit 0 within its bound."""
    problems = []
    running = nemesis.up()
    for member in running:
        member.terminate()
    for member in running:
        code = member.wait(LEAVE_WITHIN)
        if code != 0:
            member.kill()
            problems.append(f"member {member.name} stopped with {code} after SIGTERM")
    clock.say(f"members {', '.join(m.name for m in running)} stopped")
    return problems


def _judge(bootstrap: str, pipeline: str, refused: set[int], commits: Commits, clock: Clock) -> Findings:
    group = PIPELINES[pipeline][0]

    def source(msg: Any) -> Input:
        try:
            number = int(msg.value())
        except (TypeError, ValueError):
            number = -1
        return Input(msg.partition(), msg.offset(), msg.key(), number in refused)

    inputs = topics.read(bootstrap, SOURCE, source, timeout=READ_WITHIN)
    replies = topics.read(bootstrap, f"{group}-out", _reply, timeout=READ_WITHIN)
    letters = topics.read(bootstrap, f"{group}-dlq", _letter, timeout=READ_WITHIN)
    found = check.examine(inputs, replies, letters)
    clock.say(f"{pipeline}: {len(replies)} replies, {len(letters)} dead letters; {_describe(found, clock)}")
    if found.lost:
        _trace_lost(bootstrap, f"{group}-out", found, clock)
        for partition, offset in found.lost_inputs[:5]:
            _trace_commits(commits, group, partition, offset, clock)
    for partition, offset in (source for source, _ in found.duplicated[:3]):
        _trace_commits(commits, group, partition, offset, clock)
    back = commits.backwards(group)
    if back:
        shown = "; ".join(f"{b.partition}: {a.offset} -> {b.offset} at {clock.since(b.at):.1f}s" for a, b in back[:10])
        clock.say(f"{pipeline}: the committed offset went back {len(back)} times: {shown}")
    return found


def _trace_commits(commits: Commits, group: str, partition: int, offset: int, clock: Clock) -> None:
    """The commits of ``group`` for ``partition`` around the first one that said ``offset`` was done."""
    history = commits.history(group, partition)
    first = next((i for i, c in enumerate(history) if c.covers(offset)), None)
    if first is None:
        clock.say(f"    {partition}:{offset}: no commit seen covers it")
        return
    around = history[max(0, first - 2) : first + 2]
    text = ", ".join(
        f"{'*' if c.covers(offset) else ''}{c.offset}{'+' if c.metadata else ''} at {clock.since(c.at):.1f}s"
        for c in around
    )
    clock.say(f"    {partition}:{offset}: commits around the first covering it (*: covers, +: done-ahead): {text}")


def _trace_lost(bootstrap: str, topic: str, found: Findings, clock: Clock) -> None:
    """Where the lost inputs went: replies to them outside committed transactions (aborted ones, or written
    without a transaction), by whom and when."""
    lost = set(found.lost_inputs)
    shown = " ".join(check.spans(lost)[:40])
    clock.say(f"lost inputs ({found.lost}, by partition:offsets): {shown}")
    every = topics.read(bootstrap, topic, _reply, timeout=READ_WITHIN, committed=False)
    uncommitted = [o for o in every if o.source in lost]
    clock.say(f"{len(uncommitted)} uncommitted replies to lost inputs in {topic}, e.g.:")
    for o in uncommitted[:10]:
        clock.say(
            f"    input {o.source} by {o.by or '?'} at {clock.since(o.at / 1000):.1f}s ({o.partition}:{o.offset})"
        )


def _reply(msg: Any) -> Outcome:
    """A reply names its input by its body, the call's ``Idempotency-Key`` (``{topic}-{partition}-{offset}``)."""
    try:
        topic, partition, offset = bytes(msg.value()).decode().rsplit("-", 2)
        source = (int(partition), int(offset)) if topic == SOURCE else None
    except (TypeError, ValueError):
        source = None
    by = next((bytes(v or b"").decode() for k, v in msg.headers() or () if k == "soak-member"), "")
    return Outcome(msg.partition(), msg.offset(), source, msg.timestamp()[1], sys.intern(by))


def _letter(msg: Any) -> Outcome:
    headers = {name: value for name, value in msg.headers() or ()}
    try:
        topic = headers["streamcar-source-topic"].decode()
        partition, offset = (int(headers[f"streamcar-source-{h}"]) for h in ("partition", "offset"))
        source = (partition, offset) if topic == SOURCE else None
    except (KeyError, AttributeError, ValueError):
        source = None
    return Outcome(msg.partition(), msg.offset(), source, msg.timestamp()[1])


def _describe(found: Findings, clock: Clock) -> str:
    shown = ("inputs", "lost", "duplicates", "order_violations", "unexpected_dead_letters", "anomalies")
    figures = {name: getattr(found, name) for name in shown}
    lines = [json.dumps(figures)]
    lines += [f"{kind}: {'; '.join(shown)}" for kind, shown in found.examples.items()]
    for (partition, offset), outcomes in found.duplicated:
        made = ", ".join(f"{o.by or '?'} {clock.since(o.at / 1000):.1f}s ({o.partition}:{o.offset})" for o in outcomes)
        lines.append(f"input {partition}:{offset} published {len(outcomes)} times: {made}")
    return "\n    ".join(lines)


def _keep_logs(workdir: Path, into: Path) -> None:
    into.mkdir(parents=True, exist_ok=True)
    for log in [*workdir.glob("*.log"), *workdir.glob("*.yaml")]:
        shutil.copy(log, into / log.name)
    for node in sorted(workdir.glob("kafka-*/node-*")):
        if (node / "kafka.log").exists():
            shutil.copy(node / "kafka.log", into / f"{node.name}.log")
