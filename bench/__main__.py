"""Benchmarks: the sidecar against the ceiling, measured in one run on one broker.

    python -m bench [--messages N] [--ceiling-messages C] [--partitions P] [--replay-messages M] [--only ...]
    python -m bench --smoke [--bootstrap HOST:PORT]   # every scenario, a few thousand records: does it run?

Scenarios (fresh output topics on the same broker):
* ``kafka-producer-perf`` / ``kafka-consumer-perf``: Apache Kafka's own perf tools (acks=all): the broker's limit;
* ``ceiling``: a plain confluent-kafka consume -> produce loop: what librdkafka alone does on this machine;
* sidecar scenarios, ``streamcar run`` (a separate process) publishing every reply of a trivial echo service:
  ``http-single`` (one HTTP call per message), ``http-batch`` (100 per call, the JSON envelope), ``grpc``,
  ``python`` and ``python-batch`` (in-process handlers, no network hop);
* ``slow-keyed``: a service taking 20 ms per call, ONE partition, 1,000 keys, ``ordering: key``, against the
  ideal ``max_in_flight / 20 ms``; ``slow-partition``: the same with ``ordering: partition``, the one-at-a-time
  baseline of the peers (ideal 50 msg/s);
* ``exactly-once``: http-single with ``publish.exactly_once``, beside ``http-single-seen`` (the same at least
  once), and ``exactly-once-100ms`` with a ``commit_interval`` of 100 ms (a transaction's records are visible
  when it commits: the interval is most of the added latency at a low rate); all time each reply when a
  read_committed reader gets it, so the transactions' cost shows in both throughput and latency;
* ``replay`` of ``--replay-messages`` records into a topic, against a ceiling loop copying the same records;
* ``http-round-trip`` / ``grpc-round-trip``: the client the sidecar calls with (streamcar's HTTP/1.1 client,
  grpc.aio) calling the same echo service, no Kafka, no engine; ``aiohttp-round-trip``: the same with an aiohttp
  client, for comparison.

Throughput counts the output records' own timestamps (first to last), so start-up and the group join are not
part of it. Latency: after the throughput phase, records are produced at a steady ``--latency-rate`` into a
second input topic the same runner consumes; each reply's LogAppendTime minus its input's gives p50 / p99,
and the ceiling's figures are what Kafka itself adds (the +p50 / +p99 columns are the difference).

CPU µs/msg: the CPU time (all threads) the sidecar, or a round trip's client, spent per message between 10% and
90% of the outputs; beside it the service's and the broker's (leaving out its JIT compiler threads). The three
share the machine's cores; "busy" is how busy all of them were meanwhile. Peak RSS is the sidecar process's
VmHWM. Figures are only comparable as ratios within one run.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from bench import cli
from bench.kafka_io import (
    LATENCY,
    THROUGHPUT,
    OutputReader,
    broker,
    create_topic,
    percentile,
    produce_input,
    produce_paced,
)
from bench.processes import Watched
from bench.runners import (
    CeilingLoop,
    CpuMeter,
    RoundTrip,
    grpc_round_trip,
    http_round_trip,
    kafka_perf,
    peak_rss_mib,
    replay,
    sidecar,
)
from bench.table import Result, report

HERE = Path(__file__).resolve().parent
console = Console(stderr=True)

BATCH = {"max_messages": 100, "max_wait": "5ms"}
# Call settings per sidecar scenario, and the service each needs.
SIDECAR_SCENARIOS: dict[str, tuple[dict[str, object], str | None]] = {
    "http-single": ({"url": "http://127.0.0.1:{port}/echo"}, "http"),
    "http-batch": ({"url": "http://127.0.0.1:{port}/batch", "batch": BATCH}, "http"),
    "grpc": ({"url": "grpc://127.0.0.1:{port}/bench.Echo/Echo"}, "grpc"),
    "python": ({"url": "python:bench.echo_handlers:echo"}, None),
    "python-batch": ({"url": "python:bench.echo_handlers:echo_batch", "batch": BATCH}, None),
}
SLOW_MS = 20
SMOKE = {
    "messages": 2000,
    "ceiling_messages": 5000,
    "perf_messages": 5000,
    "replay_messages": 5000,
    "slow_messages": 100,
    "latency_rate": 200,
    "latency_seconds": 1,
    "json": HERE / "results" / "smoke.json",
}
"""``--smoke``: every scenario on a few thousand records (the slow service's on 100: 2 s at 50/s one at a time)."""


@dataclass
class Running:
    """What a runner started: the processes to measure by role (``sidecar``, ``service``; none for a loop in this
    process), and what the outputs depend on (a wait for them fails as soon as one is gone)."""

    pids: dict[str, int]
    watch: Sequence[Watched]


Runner = Callable[[list[str], str], AbstractContextManager[Running]]
"""Starts consuming the given topics into the output topic for the duration of a ``with``."""


class Bench:
    def __init__(self, args: argparse.Namespace, bootstrap: str, workdir: Path, broker: int | None) -> None:
        self.args = args
        self.bootstrap = bootstrap
        self.broker = broker  # the broker JVM's pid, when the bench started it
        self.workdir = workdir
        self.results: list[Result] = []
        self._tag = uuid.uuid4().hex[:6]  # a broker given with --bootstrap may have seen another run

    def topic(self, name: str, partitions: int | None = None) -> str:
        topic = f"{name}-{self._tag}"
        create_topic(self.bootstrap, topic, partitions or self.args.partitions)
        return topic

    def measure(self, name: str, source: str, n: int, runner: Runner, *, seen: bool = False) -> Result:
        """Run ``runner`` (consuming ``source`` and a latency topic, publishing to a fresh topic): throughput
        over ``source``'s ``n`` records, then latency over paced records, then its peak memory. ``seen``: the
        outputs' times are when a read_committed reader got them (for exactly-once), not their write times."""
        args = self.args
        out, lat = self.topic(f"out-{name}"), self.topic(f"lat-{name}")
        reader, inputs = OutputReader(self.bootstrap, out, seen=seen), OutputReader(self.bootstrap, lat)
        try:
            with console.status(f"{name}: throughput ..."), runner([source, lat], out) as running:
                meter = self.meter(running.pids, n)
                outputs = reader.wait(THROUGHPUT, n, progress=meter.progress, watch=running.watch)
                seconds = outputs.span(THROUGHPUT)
                count = args.latency_rate * args.latency_seconds
                console.log(f"{name}: {n / seconds:,.0f} msg/s; latency at {args.latency_rate}/s ...")
                if seen:  # the reader's own clock times the replies: it must read while they come
                    with ThreadPoolExecutor(1) as pool:
                        reading = pool.submit(reader.wait, LATENCY, count, 120, watch=running.watch)
                        produce_paced(self.bootstrap, lat, count, args.latency_rate, args.size)
                        stamps = reading.result().stamps[LATENCY]
                else:
                    produce_paced(self.bootstrap, lat, count, args.latency_rate, args.size)
                    stamps = reader.wait(LATENCY, count, timeout=120, watch=running.watch).stamps[LATENCY]
                rss = peak_rss_mib(running.pids["sidecar"]) if "sidecar" in running.pids else None
            sent = inputs.wait(LATENCY, count, timeout=60).stamps[LATENCY]
        finally:
            reader.close()
            inputs.close()
        latencies = [stamps[i] - sent[i] for i in sent]
        result = Result(name, n, round(seconds, 3), round(n / seconds, 1), peak_rss_mib=rss)
        result.p50_ms, result.p99_ms = round(percentile(latencies, 0.5), 1), round(percentile(latencies, 0.99), 1)
        return self.add(result, meter)

    def meter(self, pids: dict[str, int], n: int) -> CpuMeter:
        return CpuMeter(pids if self.broker is None else {**pids, "broker": self.broker}, n)

    def add(self, result: Result, meter: CpuMeter | None = None) -> Result:
        if meter is not None:
            result.cpu_us, result.service_us = meter.micros_per_message("sidecar"), meter.micros_per_message("service")
            result.broker_us, result.busy = meter.micros_per_message("broker"), meter.machine_busy()
        self.results.append(result)
        console.log(f"{result.scenario}: {result.msgs_per_s:,.0f} msg/s")
        return result

    def through_sidecar(
        self,
        call: dict[str, object],
        service: str | None,
        profile: Path | None,
        *,
        max_in_flight: int | None = None,
        service_args: tuple[str, ...] = (),
        ordering: str = "key",
        exactly_once: bool = False,
        commit_interval: str = "1s",
    ) -> Runner:
        @contextmanager
        def run(topics: list[str], out: str) -> Iterator[Running]:
            with sidecar(
                self.bootstrap,
                topics,
                out,
                self.workdir,
                call=call,
                service=service,
                service_args=service_args,
                max_in_flight=max_in_flight or self.args.max_in_flight,
                ordering=ordering,
                profile=profile,
                exactly_once=exactly_once,
                commit_interval=commit_interval,
            ) as running:
                pids = {"sidecar": running.process.pid}
                if running.service is not None:
                    pids["service"] = running.service.pid
                yield Running(pids, running.watch)

        return run

    def ceiling(self) -> Runner:
        @contextmanager
        def run(topics: list[str], out: str) -> Iterator[Running]:
            loop = CeilingLoop(self.bootstrap, topics, out)
            loop.start()
            try:
                yield Running({}, [loop])
            finally:
                loop.stop()

        return run

    def throughput_only(self, name: str, source: str, n: int, runner: Runner) -> Result:
        out = self.topic(f"out-{name}", 1)
        reader = OutputReader(self.bootstrap, out)
        try:
            with console.status(f"{name} ..."), runner([source], out) as running:
                meter = self.meter(running.pids, n)
                outputs = reader.wait(THROUGHPUT, n, progress=meter.progress, watch=running.watch)
                seconds = outputs.span(THROUGHPUT)
                rss = peak_rss_mib(running.pids["sidecar"]) if "sidecar" in running.pids else None
        finally:
            reader.close()
        return self.add(Result(name, n, round(seconds, 3), round(n / seconds, 1), peak_rss_mib=rss), meter)


def perf_tools(bench: Bench) -> None:
    """Apache Kafka's own perf tools: the broker's limit."""
    n, size = bench.args.perf_messages, bench.args.size
    with console.status("kafka-producer-perf-test / kafka-consumer-perf-test ..."):
        produced, consumed = kafka_perf(bench.bootstrap, bench.topic("perf"), n, size, bench.workdir)
    for name, rate in (("kafka-producer-perf", produced), ("kafka-consumer-perf", consumed)):
        bench.add(Result(name, n, round(n / rate, 3), round(rate, 1)))


def exactly_once(bench: Bench, source: str) -> None:
    """Exactly-once against at-least-once, both timed as a read_committed reader sees the replies."""
    http = SIDECAR_SCENARIOS["http-single"][0]
    pairs = (("http-single-seen", False, "1s"), ("exactly-once", True, "1s"), ("exactly-once-100ms", True, "100ms"))
    for name, exactly, interval in pairs:
        runner = bench.through_sidecar(http, "http", None, exactly_once=exactly, commit_interval=interval)
        bench.measure(name, source, bench.args.messages, runner, seen=True)


def slow_service(bench: Bench, wanted: Callable[[str], bool]) -> None:
    """``slow-keyed`` and ``slow-partition``: a service taking ``SLOW_MS`` per call, against their ideals."""
    args = bench.args
    slow_call: dict[str, object] = {"url": "http://127.0.0.1:{port}/echo", "timeout": "10s"}
    delay = (str(SLOW_MS),)
    if wanted("slow-keyed"):
        slow = bench.topic("slow-input", 1)
        with console.status("producing the slow-service input ..."):
            produce_input(bench.bootstrap, slow, args.slow_messages, args.size, keys=1000)
        keyed = bench.through_sidecar(slow_call, "http", None, service_args=delay, max_in_flight=args.slow_in_flight)
        result = bench.throughput_only("slow-keyed", slow, args.slow_messages, keyed)
        ideal = args.slow_in_flight / (SLOW_MS / 1000)
        result.ratio, result.reference = round(result.msgs_per_s / ideal, 3), f"ideal {ideal:,.0f}/s"
    if wanted("slow-partition"):
        few = min(args.slow_messages, 300)  # one at a time: 50 a second at best
        one = bench.topic("slow-one", 1)
        produce_input(bench.bootstrap, one, few, args.size, keys=1000)
        partition = bench.through_sidecar(
            slow_call, "http", None, service_args=delay, max_in_flight=args.slow_in_flight, ordering="partition"
        )
        result = bench.throughput_only("slow-partition", one, few, partition)
        ideal = 1000 / SLOW_MS
        result.ratio, result.reference = round(result.msgs_per_s / ideal, 3), f"ideal {ideal:,.0f}/s"


def replay_scenario(bench: Bench) -> None:
    """``streamcar replay`` against a ceiling loop copying the same records."""
    m = bench.args.replay_messages
    big = bench.topic("replay-input")
    with console.status(f"producing {m:,} records for the replay ..."):
        produce_input(bench.bootstrap, big, m, bench.args.size)
    copy = bench.throughput_only("replay-ceiling", big, m, bench.ceiling())
    with console.status(f"replaying {m:,} records ..."):
        seconds = replay(bench.bootstrap, big, bench.topic("out-replay"), m, bench.workdir)
    result = bench.add(Result("replay", m, round(seconds, 3), round(m / seconds, 1)))
    result.ratio, result.reference = round(result.msgs_per_s / copy.msgs_per_s, 3), "replay-ceiling"


def round_trips(bench: Bench, wanted: Callable[[str], bool]) -> None:
    """The bare round trip of each transport: no Kafka, no engine."""
    args, n = bench.args, bench.args.messages
    trips: dict[str, Callable[[], RoundTrip]] = {
        "http-round-trip": lambda: http_round_trip(n, args.max_in_flight, args.size, bench.workdir),
        "aiohttp-round-trip": lambda: http_round_trip(
            n, args.max_in_flight, args.size, bench.workdir, client="aiohttp"
        ),
        "grpc-round-trip": lambda: grpc_round_trip(n, args.max_in_flight, args.size, bench.workdir),
    }
    for name, trip in trips.items():
        transport = "grpc" if name.startswith("grpc") else "http"
        if wanted(name) or wanted(transport) or wanted(f"{transport}-single"):
            with console.status(f"{name} ..."):
                done = trip()
            result = Result(name, n, round(done.seconds, 3), round(n / done.seconds, 1))
            result.cpu_us, result.service_us, result.busy = done.client_us, done.service_us, done.busy
            bench.add(result)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument(
        "--ceiling-messages", type=int, default=300_000, help="records for the ceiling (fast: few would time noise)"
    )
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--size", type=int, default=256, help="value bytes")
    parser.add_argument("--max-in-flight", type=int, default=256)
    parser.add_argument("--latency-rate", type=int, default=500, help="records/s of the latency phase")
    parser.add_argument("--latency-seconds", type=int, default=4)
    parser.add_argument("--slow-messages", type=int, default=6000)
    parser.add_argument("--slow-in-flight", type=int, default=64, help="max_in_flight of the slow-service runs")
    parser.add_argument("--replay-messages", type=int, default=1_000_000)
    parser.add_argument("--perf-messages", type=int, default=500_000, help="records for Kafka's own perf tools")
    parser.add_argument("--json", type=Path, default=HERE / "results" / "latest.json")
    parser.add_argument("--profile", type=Path, help="record the sidecar with py-spy into FILE.<scenario>.txt")
    parser.add_argument("--only", nargs="+", help="scenarios to run (the ceiling always runs)")
    return cli.arguments(parser, SMOKE, argv)


def main(args: argparse.Namespace) -> int:
    n = args.messages

    def wanted(name: str) -> bool:
        return not args.only or name in args.only

    workdir = Path(tempfile.mkdtemp(prefix="streamcar-bench-"))
    started = time.monotonic()
    try:
        with ExitStack() as stack:
            with console.status("starting Kafka ..."):
                kafka = stack.enter_context(broker(workdir, args.bootstrap))
            bench = Bench(args, kafka.bootstrap, workdir, kafka.pid)
            source = bench.topic("input")
            with console.status(f"producing {n} input records ..."):
                produce_input(bench.bootstrap, source, n, args.size)
            if wanted("kafka-perf"):
                perf_tools(bench)
            ceiling_source = bench.topic("ceiling-input")
            with console.status(f"producing {args.ceiling_messages} ceiling input records ..."):
                produce_input(bench.bootstrap, ceiling_source, args.ceiling_messages, args.size)
            ceiling = bench.measure("ceiling", ceiling_source, args.ceiling_messages, bench.ceiling())
            for name, (call, service) in SIDECAR_SCENARIOS.items():
                if wanted(name):
                    profile = args.profile.with_suffix(f".{name}.txt") if args.profile else None
                    bench.measure(name, source, n, bench.through_sidecar(call, service, profile))
            if wanted("exactly-once"):
                exactly_once(bench, source)
            if wanted("slow-keyed") or wanted("slow-partition"):
                slow_service(bench, wanted)
            if wanted("replay"):
                replay_scenario(bench)
            round_trips(bench, wanted)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    report(bench.results, ceiling, args, time.monotonic() - started)
    return 0


if __name__ == "__main__":
    arguments = parse()
    sys.exit(cli.run(lambda: main(arguments)))
