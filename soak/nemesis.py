"""The nemesis: the plan's faults done to the cluster, the members and the service, each healed after its hold.

It runs on the main thread: the processes it starts again must die with the soak, and PR_SET_PDEATHSIG follows
the thread that forked them. Its loop sleeps at most half a second at a time, so a fault or a heal is late by no
more than that. A node is started again by :class:`Nodes`, on a thread of its own that lives as long as the run:
on a busy machine a node takes up to a minute to answer, and the faults go on meanwhile.

What it counts: ``faults`` per kind as done (a fault with no target at its time, such as a broker fault while a
node is still down, is skipped and said so); ``crashes`` for the duplicate bound (soak.check): a member
SIGKILLed, frozen past its session timeout, killed because it did not leave within its bound, or exited on its
own; ``problems``: what went wrong that the topics cannot show (a member that exited on its own, a leave that did
not exit 0 in time, a node that did not come back).
"""

from __future__ import annotations

import heapq
import queue
import signal
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from soak import plan, topics
from soak.plan import Fault
from soak.processes import Member, Service, tail
from streamcar.devkafka import LocalKafka
from streamcar.errors import StreamcarError

Latency = tuple[float, float]
TICK = 0.5
"""The longest sleep of the nemesis's loop."""
CATCH_UP = 300.0
"""Seconds a node started again has to answer and to have its replicas in sync."""


@dataclass(order=True)
class _Later:
    at: float
    seq: int
    label: str = field(compare=False)
    action: Callable[[], None] = field(compare=False)


class Nodes(threading.Thread):
    """Starts the cluster's stopped nodes again, one request at a time, off the nemesis's loop, and waits until
    they caught up (every replica of ``topic`` in sync again). The JVMs it starts die with this thread, so it ends
    only with the run (:meth:`close`, once the cluster is stopped). While it works nobody else touches the
    cluster's processes (:attr:`idle`)."""

    def __init__(self, cluster: LocalKafka, heap: str, topic: str, say: Callable[[str], None]) -> None:
        super().__init__(name="soak-nodes", daemon=True)
        self._cluster, self._heap, self._topic, self._say = cluster, heap, topic, say
        self._asks: queue.SimpleQueue[bool] = queue.SimpleQueue()
        self._idle = threading.Event()
        self._idle.set()
        self.problems: list[str] = []

    @property
    def idle(self) -> bool:
        return self._idle.is_set()

    def restart(self) -> None:
        self._idle.clear()
        self._asks.put(True)

    def wait(self, timeout: float) -> bool:
        """Whether every restart asked for is over within ``timeout``."""
        return self._idle.wait(timeout)

    def run(self) -> None:
        while self._asks.get():
            started = time.monotonic()
            try:
                layout = self._cluster.start(nodes=3, heap=self._heap, timeout=180, die_with_parent=True)
                # the cluster's metadata lists a dead node until its broker session ends: ask each node itself
                nodes = [f"127.0.0.1:{node.port}" for node in layout.nodes]
                while not (all(map(topics.answers, nodes)) and topics.in_sync(layout.bootstrap, self._topic)):
                    if time.monotonic() - started > CATCH_UP:
                        raise StreamcarError(f"the nodes not all back and in sync {CATCH_UP:.0f}s after the start")
                    time.sleep(1.0)
                self._say(f"every node is back and in sync ({time.monotonic() - started:.0f}s)")
            except StreamcarError as exc:
                self.problems.append(f"a node did not come back: {exc}")
                self._say(f"PROBLEM: a node did not come back: {exc}")
            if self._asks.empty():
                self._idle.set()

    def close(self) -> None:
        """Stop the cluster, then end the thread (the nodes it started again die with it): a restart under way
        then fails at once."""
        self._cluster.stop(timeout=20)
        self._asks.put(False)
        if self.is_alive():
            self.join(30)


@dataclass(frozen=True)
class Setting:
    """What the nemesis acts on and how."""

    cluster: LocalKafka
    bootstrap: str
    topic: str
    partitions: int
    normal: Latency
    slow: Latency
    leave_within: float
    """Seconds a member leaving on SIGTERM has to exit (shutdown_timeout + 5 s, and some slack)."""


class Nemesis:
    def __init__(
        self,
        setting: Setting,
        members: Mapping[str, Member],
        service: Service,
        nodes: Nodes,
        say: Callable[[str], None],
    ) -> None:
        self.setting = setting
        self.nodes = nodes
        self.members = members
        self.service = service
        self.say = say
        self.faults: Counter[str] = Counter()
        self.crashes = 0
        self.problems: list[str] = []
        self.done: list[tuple[float, str]] = []
        """The faults done: when (wall clock, s) and what."""
        self._later: list[_Later] = []
        self._seq = 0
        self._away = {name for name, member in members.items() if member.proc is None}
        """Members out of the group: not started yet, or left."""
        self._down: set[str] = set()
        """Members SIGKILLed that come back at their heal."""
        self._leaving: dict[str, float] = {}
        """Members sent SIGTERM, and when they must have exited by (monotonic)."""
        self._slow = 0
        self._actions: dict[str, Callable[[Fault], str | None]] = {
            plan.SIGKILL_SIDECAR: self._sigkill_sidecar,
            plan.SIGSTOP_SIDECAR: self._sigstop_sidecar,
            plan.SIGSTOP_SERVICE: self._sigstop_service,
            plan.KILL_LEADER: self._kill_leader,
            plan.MEMBER_JOIN: self._join,
            plan.MEMBER_LEAVE: self._leave,
            plan.SLOW_SERVICE: self._slow_service,
        }

    # -- the loop -------------------------------------------------------------------------------------------------
    def run(self, faults: Sequence[Fault], start: float, until: float) -> None:
        """Do ``faults`` (``at`` seconds after ``start``) and their heals until ``until`` (monotonic)."""
        todo = deque(faults)
        while (now := time.monotonic()) < until:
            while todo and start + todo[0].at <= now:
                self._begin(todo.popleft())
            while self._later and self._later[0].at <= now:
                self._run(heapq.heappop(self._later))
            self.watch()
            wake = min([until, *([start + todo[0].at] if todo else []), *([self._later[0].at] if self._later else [])])
            time.sleep(min(TICK, max(0.0, wake - time.monotonic())))

    def heal(self) -> None:
        """Every fault healed now, then everything up: the service thawed at its normal latency, every node, every
        member that did not leave; and the members leaving have left (each within its bound)."""
        while self._later:
            self._run(heapq.heappop(self._later))
        self.service.thaw()
        if self._slow:
            self._slow = 0
            self._latency(self.setting.normal)
        self._restart_nodes()
        if not self.nodes.wait(CATCH_UP + 30):
            self.problems.append(f"the nodes did not all come back within {CATCH_UP + 30:.0f}s")
        for name in sorted(self._down):
            self._come_back(self.members[name])
        while self._leaving:
            self.watch()
            time.sleep(TICK)
        self.watch()

    def watch(self) -> None:
        """A member leaving has exited 0 within its bound, or it is a problem (and killed: a crash); a member that
        should be running and is not exited on its own: a problem, a crash, and it starts again."""
        for name, deadline in list(self._leaving.items()):
            self._left(self.members[name], deadline)
        for name, member in self.members.items():
            if name in self._away or name in self._down or member.alive:
                continue
            self.problems.append(f"member {name} exited on its own ({member.exit_code}): {tail(member.log)}")
            self.say(f"PROBLEM: member {name} exited on its own with {member.exit_code}; starting it again")
            self.crashes += 1
            member.start()

    def up(self) -> list[Member]:
        """The members in the group and running (frozen or not)."""
        return [m for n, m in sorted(self.members.items()) if n not in self._away and n not in self._down and m.alive]

    def _begin(self, fault: Fault) -> None:
        done = self._actions[fault.kind](fault)
        if done is None:
            self.say(f"{fault.kind}: skipped, no target")
            return
        self.faults[fault.kind] += 1
        self.done.append((time.time(), f"{fault.kind}: {done}"))
        self.say(f"{fault.kind}: {done}")

    def _after(self, seconds: float, label: str, action: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._later, _Later(time.monotonic() + seconds, self._seq, label, action))

    def _run(self, later: _Later) -> None:
        self.say(f"heal: {later.label}")
        later.action()

    # -- the faults: each says what it did, or None when it had no target -------------------------------------------
    def _sigkill_sidecar(self, fault: Fault) -> str | None:
        member = fault.target(self.up())
        if member is None:
            return None
        member.kill()
        self.crashes += 1
        self._down.add(member.name)
        self._after(fault.hold, f"member {member.name} starts again", lambda: self._come_back(member))
        return f"member {member.name} killed, back in {fault.hold:.1f}s"

    def _come_back(self, member: Member) -> None:
        if member.name in self._down:
            self._down.discard(member.name)
            member.start()

    def _sigstop_sidecar(self, fault: Fault) -> str | None:
        member = fault.target([m for m in self.up() if not m.frozen])
        if member is None:
            return None
        member.freeze()
        self.crashes += 1  # past its session timeout: to the group, a crash
        self._after(fault.hold, f"member {member.name} thawed", member.thaw)
        return f"member {member.name} frozen for {fault.hold:.1f}s"

    def _sigstop_service(self, fault: Fault) -> str | None:
        if self.service.frozen:
            return None
        self.service.freeze()
        self._after(fault.hold, "service thawed", self.service.thaw)
        return f"service frozen for {fault.hold:.1f}s"

    def _kill_leader(self, fault: Fault) -> str | None:
        if not self.nodes.idle or not self.setting.cluster.is_running():
            return None  # a node is still down: a second would take the controllers' quorum
        partition = fault.target(range(self.setting.partitions))
        assert partition is not None
        node = topics.leader(self.setting.bootstrap, self.setting.topic, partition)
        if node is None:
            return None
        self.setting.cluster.kill_node(node, signal.SIGKILL)
        self._after(fault.hold, f"node {node} starts again", self._restart_nodes)
        return f"node {node}, leader of {self.setting.topic}-{partition}, killed for {fault.hold:.1f}s"

    def _restart_nodes(self) -> None:
        if self.nodes.idle and not self.setting.cluster.is_running():
            self.nodes.restart()

    def _join(self, fault: Fault) -> str | None:
        away = [m for n, m in sorted(self.members.items()) if n in self._away and n not in self._leaving]
        member = fault.target(away)
        if member is None:
            return None
        self._away.discard(member.name)
        member.start()
        return f"member {member.name} joins"

    def _leave(self, fault: Fault) -> str | None:
        member = fault.target([m for m in self.up() if not m.frozen])
        if member is None:
            return None
        self._away.add(member.name)
        self._leaving[member.name] = time.monotonic() + self.setting.leave_within
        member.terminate()
        return f"member {member.name} leaves (SIGTERM)"

    def _left(self, member: Member, deadline: float) -> None:
        code = member.exit_code
        if code is None and time.monotonic() < deadline:
            return
        del self._leaving[member.name]
        if code is None:
            member.kill()
            self.crashes += 1
            within = self.setting.leave_within
            self.problems.append(f"member {member.name} did not exit within {within:.0f}s of SIGTERM")
        elif code != 0:
            self.problems.append(f"member {member.name} left with exit code {code}: {tail(member.log)}")
        else:
            self.say(f"member {member.name} has left")
            return
        self.say(f"PROBLEM: member {member.name} did not leave cleanly ({code})")

    def _slow_service(self, fault: Fault) -> str | None:
        self._slow += 1
        self._latency(self.setting.slow)
        self._after(fault.hold, "service back to its pace", self._pace)
        low, high = self.setting.slow
        return f"service answers in {low:.1f}-{high:.1f}s for {fault.hold:.1f}s"

    def _pace(self) -> None:
        self._slow = max(0, self._slow - 1)
        if self._slow == 0:
            self._latency(self.setting.normal)

    def _latency(self, latency: Latency) -> None:
        if not self.service.set_latency(*latency):
            self.problems.append(f"the service did not take the latency {latency}")
