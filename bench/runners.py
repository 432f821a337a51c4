"""What the benchmarks run: the librdkafka ceiling loop, ``streamcar run`` beside an echo service, ``streamcar
replay``, the bare transport round trips, and Apache Kafka's own perf tools."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import yaml
from confluent_kafka import Consumer, Producer

from bench.processes import BenchFailed, Child, listening, python_env, run_tool, started
from streamcar.devkafka import free_ports
from streamcar.devkafka.fetch import ensure_jars

T = TypeVar("T")
SERVICES = {
    "http": [sys.executable, "-m", "bench.echo_service"],
    "grpc": [sys.executable, "-m", "bench.echo_grpc"],
}
"""Started as modules of the checkout (from its root), never as scripts: a script's own directory goes first on
sys.path, where a module of ours could shadow a standard one."""


class CeilingLoop(threading.Thread):
    """A plain confluent-kafka consume -> produce loop (acks=all, idempotent, committing as it goes): what
    librdkafka alone does on this machine with the sidecar's job minus the call."""

    def __init__(self, bootstrap: str, topics: list[str], out: str) -> None:
        super().__init__(name="ceiling", daemon=True)
        self._servers, self._topics, self._out = bootstrap, topics, out
        self._halt = threading.Event()
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # reported by stop()
            self.failure = exc

    def _loop(self) -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": self._servers,
                "group.id": f"ceiling-{uuid.uuid4().hex}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 50,
            }
        )
        producer = Producer(
            {"bootstrap.servers": self._servers, "acks": "all", "enable.idempotence": True, "linger.ms": 5}
        )
        consumer.subscribe(self._topics)
        committed = time.monotonic()
        while not self._halt.is_set():
            batch = consumer.consume(num_messages=1000, timeout=0.005)  # returns at once when records wait
            for msg in batch:
                if msg.error() is None:
                    while True:
                        try:
                            producer.produce(self._out, key=msg.key(), value=msg.value())
                            break
                        except BufferError:
                            producer.poll(0.01)
            producer.poll(0)
            if batch and time.monotonic() - committed >= 1.0:  # like the sidecar's commit_interval
                consumer.commit(asynchronous=True)
                committed = time.monotonic()
        producer.flush(60)
        consumer.close()

    def check(self) -> None:
        """Fails once the loop has ended (it runs until :meth:`stop`)."""
        if self.failure is not None:
            raise BenchFailed(f"the ceiling loop failed: {self.failure!r}") from self.failure
        if not self.is_alive():
            raise BenchFailed("the ceiling loop ended")

    def stop(self) -> None:
        self._halt.set()
        self.join(60)
        if self.is_alive():
            raise BenchFailed("the ceiling loop did not stop within 60 s")
        if self.failure is not None:
            raise BenchFailed(f"the ceiling loop failed: {self.failure!r}") from self.failure


def cpu_seconds(pid: int, *, skip: tuple[str, ...] = ()) -> float | None:
    """CPU time (user + system, every thread) the process used so far, but for threads whose name starts with one
    of ``skip``; None where /proc does not say."""
    if not skip:
        return _ticks(Path(f"/proc/{pid}/stat"))
    total = 0.0
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return None
    for task in tasks:
        try:
            if (task / "comm").read_text().startswith(skip):
                continue
        except OSError:
            continue  # the thread ended meanwhile
        total += _ticks(task / "stat") or 0.0
    return total


def _ticks(stat: Path) -> float | None:
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


JIT_THREADS = ("C1 CompilerThre", "C2 CompilerThre")
"""The JVM's just-in-time compilers: a young broker spends whole cores on them for a while, which says nothing
about the work a scenario asks of it."""


@dataclass(frozen=True)
class Reading:
    """CPU seconds used so far by each named process, and the machine's (busy, all) core ticks."""

    cpu: dict[str, float]
    machine: tuple[float, float] | None

    @classmethod
    def take(cls, pids: dict[str, int]) -> Reading:
        """The broker's JIT compiler threads are left out of its CPU."""
        readings = {name: cpu_seconds(pid, skip=JIT_THREADS if name == "broker" else ()) for name, pid in pids.items()}
        return cls({name: cpu for name, cpu in readings.items() if cpu is not None}, _machine_ticks())

    def micros_per_message(self, later: Reading, name: str, messages: int) -> float | None:
        """CPU µs per message of ``name`` from this reading to ``later``, over ``messages``."""
        before, after = self.cpu.get(name), later.cpu.get(name)
        if before is None or after is None or messages <= 0:
            return None
        return round(1e6 * (after - before) / messages, 1)

    def busy(self, later: Reading) -> float | None:
        """How busy the machine's cores were from this reading to ``later`` (1.0: every core all the time)."""
        if self.machine is None or later.machine is None or later.machine[1] <= self.machine[1]:
            return None
        return round((later.machine[0] - self.machine[0]) / (later.machine[1] - self.machine[1]), 3)


@dataclass
class CpuMeter:
    """CPU per message of some processes while outputs arrive: a reading once 10% of the ``n`` outputs are in and
    one once 90% are, so start-up (imports, the group join) and the tail are not counted."""

    pids: dict[str, int]
    n: int
    first: tuple[int, Reading] | None = None
    last: tuple[int, Reading] | None = None

    def progress(self, count: int) -> None:
        if self.first is None and count >= self.n // 10:
            self.first = (count, Reading.take(self.pids))
        elif self.first is not None and self.last is None and count >= self.n * 9 // 10:
            self.last = (count, Reading.take(self.pids))

    def micros_per_message(self, name: str) -> float | None:
        if self.first is None or self.last is None:
            return None
        (counted, before), (later_count, after) = self.first, self.last
        return before.micros_per_message(after, name, later_count - counted)

    def machine_busy(self) -> float | None:
        if self.first is None or self.last is None:
            return None
        return self.first[1].busy(self.last[1])


def _machine_ticks() -> tuple[float, float] | None:
    """Ticks of all cores so far: (busy, all); None where /proc does not say."""
    try:
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle and iowait
    return float(sum(ticks) - idle), float(sum(ticks))


def peak_rss_mib(pid: int) -> float | None:
    """The process's peak resident memory (VmHWM), MiB; None where /proc does not say."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)
    return round(int(match[1]) / 1024, 1) if match else None


@dataclass
class Sidecar:
    process: Child
    service: Child | None
    spy: Child | None

    @property
    def watch(self) -> list[Child]:
        """What the outputs depend on: a wait on them fails as soon as one of these exits."""
        return [child for child in (self.service, self.process, self.spy) if child is not None]


@contextlib.contextmanager
def sidecar(
    bootstrap: str,
    topics: list[str],
    out: str,
    workdir: Path,
    *,
    call: dict[str, object],
    service: str | None,
    service_args: tuple[str, ...] = (),
    max_in_flight: int,
    ordering: str = "key",
    profile: Path | None = None,
    exactly_once: bool = False,
    commit_interval: str = "1s",
) -> Iterator[Sidecar]:
    """``streamcar run`` (a separate process) with ``call`` until the block ends; ``service`` (http, grpc) runs
    beside it, listening before the sidecar starts, and ``{port}`` in the call URL is its port. In-process
    handlers come from this repository."""
    port = free_ports(1)[0]
    with contextlib.ExitStack() as stack:
        server = None
        if service is not None:
            cmd = [*SERVICES[service], str(port), *service_args]
            server = stack.enter_context(started(f"{service} echo service", cmd, workdir))
            listening(server, port)
        config = {
            "kafka": {"bootstrap_servers": bootstrap},
            "admin": {"listen": "127.0.0.1:0"},
            "pipelines": {
                "bench": {
                    "consume": {"topics": topics, "group": f"bench-{uuid.uuid4().hex[:8]}"},
                    "call": {**call, "url": str(call["url"]).format(port=port)},
                    "max_in_flight": max_in_flight,
                    "ordering": ordering,
                    "publish": {"topic": out, "exactly_once": exactly_once},
                    "commit_interval": commit_interval,
                }
            },
        }
        config_file = workdir / f"{out}.yaml"
        config_file.write_text(yaml.safe_dump(config))
        process = stack.enter_context(streamcar_run(config_file, workdir))
        spy = None if profile is None else stack.enter_context(py_spy(process, profile, workdir))
        yield Sidecar(process, server, spy)


def streamcar_run(config_file: Path, workdir: Path) -> contextlib.AbstractContextManager[Child]:
    """``streamcar run -c config_file`` until the block ends."""
    cmd = [sys.executable, "-m", "streamcar", "run", "-c", str(config_file)]
    return started("sidecar", cmd, workdir, env=python_env(STREAMCAR_LOG_LEVEL="WARNING"))


def py_spy(target: Child, profile: Path, workdir: Path) -> contextlib.AbstractContextManager[Child]:
    """py-spy sampling ``target`` into ``profile`` (folded stacks, for any flamegraph tool) until the block ends
    (SIGINT: py-spy then writes what it has)."""
    profile.parent.mkdir(parents=True, exist_ok=True)
    found = shutil.which("py-spy", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    if found is None:
        raise BenchFailed("--profile needs py-spy: .venv/bin/pip install py-spy")
    rate = os.environ.get("PYSPY_RATE", "100")  # samples a second
    cmd = [found, "record", "--format", "raw", "-r", rate, "--nonblocking", "-o", str(profile)]
    return started("py-spy", [*cmd, "--pid", str(target.pid)], workdir, stop=signal.SIGINT)


def replay(bootstrap: str, source: str, out: str, n: int, workdir: Path) -> float:
    """``streamcar replay --to-topic`` (a separate process) copying all of ``source``: its own summary gives the
    seconds from the first fetch to the last acknowledgement (the copies keep the input's timestamps)."""
    cmd = [sys.executable, "-m", "streamcar", "replay", "--topic", source, "--from", "earliest", "--to-topic", out]
    output = run_tool("streamcar replay", [*cmd, "-b", bootstrap, "--quiet"], workdir, timeout=900)
    match = re.search(r"copied ([\d,]+) records to \S+ in ([\d.]+)s", output)
    if match is None or int(match[1].replace(",", "")) != n:
        raise BenchFailed(f"unexpected replay summary: {output.strip()[-500:]!r}")
    return float(match[2])


def kafka_perf(bootstrap: str, topic: str, n: int, size: int, workdir: Path) -> tuple[float, float]:
    """The broker's own limit: ``kafka-producer-perf-test`` (acks=all) then ``kafka-consumer-perf-test`` from
    the fetched kafka-tools, on ``topic``; their records per second."""
    java = shutil.which("java") or "java"
    classpath = f"{ensure_jars()}/*"
    produced = run_tool(
        "kafka-producer-perf-test",
        [
            *(java, "-Xmx512m", "-cp", classpath, "org.apache.kafka.tools.ProducerPerformance"),
            *("--topic", topic, "--num-records", str(n), "--record-size", str(size), "--throughput", "-1"),
            *("--producer-props", f"bootstrap.servers={bootstrap}", "acks=all", "linger.ms=5"),
        ],
        workdir,
        timeout=600,
    )
    match = re.search(r"^\d+ records sent, ([\d.]+) records/sec", produced, re.M)
    if match is None:
        raise BenchFailed(f"unexpected producer perf output: {produced[-500:]!r}")
    consumed = run_tool(
        "kafka-consumer-perf-test",
        [
            *(java, "-Xmx512m", "-cp", classpath, "org.apache.kafka.tools.ConsumerPerformance"),
            *("--bootstrap-server", bootstrap, "--topic", topic, "--messages", str(n), "--timeout", "60000"),
        ],
        workdir,
        timeout=600,
    )
    # start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, ... (the tool's log
    # lines share its output: a row is the line of ten fields that starts with a date)
    rows = [line.split(",") for line in consumed.splitlines() if line[:1].isdigit() and line.count(",") >= 9]
    if not rows:
        raise BenchFailed(f"unexpected consumer perf output: {consumed[-500:]!r}")
    return float(match[1]), float(rows[-1][5].strip())


@dataclass
class RoundTrip:
    seconds: float
    client_us: float
    """CPU of the client per call (this process)."""
    service_us: float | None
    """CPU of the service per call."""
    busy: float | None
    """How busy the machine's cores were meanwhile."""


class _TripMeter:
    """A reading at the start of a round trip run: this process (the client), the service, the machine."""

    def __init__(self, service: int) -> None:
        self._pids = {"client": os.getpid(), "service": service}
        self._before = Reading.take(self._pids)

    def done(self, seconds: float, n: int) -> RoundTrip:
        """``n`` calls took ``seconds``."""
        after = Reading.take(self._pids)
        client_us = self._before.micros_per_message(after, "client", n)
        assert client_us is not None  # this process's own /proc entry is always there
        service_us = self._before.micros_per_message(after, "service", n)
        return RoundTrip(seconds, client_us, service_us, self._before.busy(after))


TRIP_TIMEOUT = 600.0
"""Seconds a round trip run may take (50,000 calls take a few)."""


def http_round_trip(n: int, concurrency: int, size: int, workdir: Path, *, client: str = "streamcar") -> RoundTrip:
    """The HTTP round trip alone, no Kafka, no engine: ``streamcar``'s own client (what the sidecar calls with)
    or an ``aiohttp`` client, ``concurrency`` calls at a time to the same echo service."""
    import asyncio

    import aiohttp
    import uvloop

    from streamcar.call.http1 import Http1Pool

    port = free_ports(1)[0]
    url = f"http://127.0.0.1:{port}/echo"
    body = b"x" * size
    todo = iter(range(n))

    async def with_streamcar() -> None:
        pool = Http1Pool(url, limit=concurrency, timeout=30)

        async def worker() -> None:
            for i in todo:
                headers = [("Kafka-Offset", str(i)), ("Idempotency-Key", f"t-0-{i}")]
                await pool.post(headers, body)

        try:
            await asyncio.gather(*(worker() for _ in range(concurrency)))
        finally:
            await pool.close()

    async def with_aiohttp() -> None:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

            async def worker() -> None:
                for i in todo:
                    headers = {"Kafka-Offset": str(i), "Idempotency-Key": f"t-0-{i}"}
                    async with session.post(url, data=body, headers=headers) as response:
                        await response.read()

            await asyncio.gather(*(worker() for _ in range(concurrency)))

    with started("http echo service", [*SERVICES["http"], str(port)], workdir) as service:
        listening(service, port)
        meter = _TripMeter(service.pid)
        started_at = time.perf_counter()
        calls = with_streamcar() if client == "streamcar" else with_aiohttp()
        _trip(service, f"{n} HTTP calls ({client})", lambda: uvloop.run(asyncio.wait_for(calls, TRIP_TIMEOUT)))
        return meter.done(time.perf_counter() - started_at, n)


def grpc_round_trip(n: int, concurrency: int, size: int, workdir: Path) -> RoundTrip:
    """The gRPC round trip alone: a grpc.aio client calling the same echo service, no Kafka, no engine."""
    import asyncio

    import grpc

    port = free_ports(1)[0]

    async def run() -> float:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await asyncio.wait_for(channel.channel_ready(), 30)
            call = channel.unary_unary("/bench.Echo/Echo")
            body = b"x" * size
            todo = iter(range(n))

            async def worker() -> None:
                for i in todo:
                    await call(body, metadata=(("kafka-offset", str(i)), ("idempotency-key", f"t-0-{i}")))

            started_at = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(min(concurrency, 100))))  # one connection's streams
            return time.perf_counter() - started_at

    with started("grpc echo service", [*SERVICES["grpc"], str(port)], workdir) as server:
        listening(server, port)
        meter = _TripMeter(server.pid)
        seconds = _trip(server, f"{n} gRPC calls", lambda: asyncio.run(asyncio.wait_for(run(), TRIP_TIMEOUT)))
        return meter.done(seconds, n)


def _trip(service: Child, what: str, run: Callable[[], T]) -> T:
    """``run()``; where it fails, a service that exited is the cause to tell, with its output."""
    try:
        return run()
    except TimeoutError:
        service.check()
        raise BenchFailed(f"{what} did not finish within {TRIP_TIMEOUT:.0f} s") from None
    except Exception:
        service.check()
        raise
