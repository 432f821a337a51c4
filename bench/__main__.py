"""Benchmarks: the sidecar against the ceiling, measured in one run on one broker.

    python -m bench [--messages N] [--ceiling-messages C] [--partitions P] [--replay-messages M] [--only ...]

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
import json
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.kafka_io import LATENCY, THROUGHPUT, OutputReader, create_topic, percentile, produce_input, produce_paced
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
from streamcar.devkafka import LocalKafka

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
Runner = Callable[[list[str], str], AbstractContextManager[dict[str, int]]]
"""Starts consuming the given topics into the output topic for the duration of a ``with``; yields the processes
to measure by role (``sidecar``, ``service``), none for a loop in this process."""


@dataclass
class Result:
    scenario: str
    messages: int
    seconds: float
    msgs_per_s: float
    ratio_to_ceiling: float | None = None
    ratio: float | None = None  # to its own reference (see `reference`)
    reference: str | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    cpu_us: float | None = None  # CPU per message: the sidecar's, or a round trip's client's
    service_us: float | None = None  # the service's CPU per message
    broker_us: float | None = None  # the broker's CPU per message
    busy: float | None = None  # how busy the machine's cores were meanwhile (1.0: all, all the time)
    peak_rss_mib: float | None = None


class Bench:
    def __init__(self, args: argparse.Namespace, bootstrap: str, workdir: Path, broker: int | None) -> None:
        self.args = args
        self.bootstrap = bootstrap
        self.broker = broker  # the broker JVM's pid
        self.workdir = workdir
        self.results: list[Result] = []

    def topic(self, name: str, partitions: int | None = None) -> str:
        create_topic(self.bootstrap, name, partitions or self.args.partitions)
        return name

    def measure(self, name: str, source: str, n: int, runner: Runner, *, seen: bool = False) -> Result:
        """Run ``runner`` (consuming ``source`` and a latency topic, publishing to a fresh topic): throughput
        over ``source``'s ``n`` records, then latency over paced records, then its peak memory. ``seen``: the
        outputs' times are when a read_committed reader got them (for exactly-once), not their write times."""
        args = self.args
        out, lat = self.topic(f"out-{name}"), self.topic(f"lat-{name}")
        reader, inputs = OutputReader(self.bootstrap, out, seen=seen), OutputReader(self.bootstrap, lat)
        try:
            with console.status(f"{name}: throughput ..."), runner([source, lat], out) as pids:
                meter = self.meter(pids, n)
                seconds = reader.wait(THROUGHPUT, n, progress=meter.progress).span(THROUGHPUT)
                count = args.latency_rate * args.latency_seconds
                console.log(f"{name}: {n / seconds:,.0f} msg/s; latency at {args.latency_rate}/s ...")
                if seen:  # the reader's own clock times the replies: it must read while they come
                    with ThreadPoolExecutor(1) as pool:
                        reading = pool.submit(reader.wait, LATENCY, count, 120)
                        produce_paced(self.bootstrap, lat, count, args.latency_rate, args.size)
                        stamps = reading.result().stamps[LATENCY]
                else:
                    produce_paced(self.bootstrap, lat, count, args.latency_rate, args.size)
                    stamps = reader.wait(LATENCY, count, timeout=120).stamps[LATENCY]
                rss = peak_rss_mib(pids["sidecar"]) if "sidecar" in pids else None
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
        def run(topics: list[str], out: str) -> Iterator[dict[str, int]]:
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
                yield pids

        return run

    def ceiling(self) -> Runner:
        @contextmanager
        def run(topics: list[str], out: str) -> Iterator[dict[str, int]]:
            loop = CeilingLoop(self.bootstrap, topics, out)
            loop.start()
            try:
                yield {}
            finally:
                loop.stop()

        return run

    def throughput_only(self, name: str, source: str, n: int, runner: Runner) -> Result:
        out = self.topic(f"out-{name}", 1)
        reader = OutputReader(self.bootstrap, out)
        try:
            with console.status(f"{name} ..."), runner([source], out) as pids:
                meter = self.meter(pids, n)
                seconds = reader.wait(THROUGHPUT, n, progress=meter.progress).span(THROUGHPUT)
                rss = peak_rss_mib(pids["sidecar"]) if "sidecar" in pids else None
        finally:
            reader.close()
        return self.add(Result(name, n, round(seconds, 3), round(n / seconds, 1), peak_rss_mib=rss), meter)


def main() -> int:
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
    args = parser.parse_args()
    n = args.messages

    def wanted(name: str) -> bool:
        return not args.only or name in args.only

    # SIGTERM (a timeout, a CI cancel) unwinds like Ctrl-C, so the finally below stops Kafka and removes files
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = Path(tempfile.mkdtemp(prefix="streamcar-bench-"))
    cluster = LocalKafka(workdir / "kafka")
    started = time.monotonic()
    try:
        with console.status("starting Kafka ..."):
            started_kafka = cluster.start(nodes=1, port=0, heap="1g", die_with_parent=True)
            broker = next((node.pid for node in cluster.status() if node.pid is not None), None)
            bench = Bench(args, started_kafka.bootstrap, workdir, broker)
        source = bench.topic("input")
        with console.status(f"producing {n} input records ..."):
            produce_input(bench.bootstrap, source, n, args.size)
        if wanted("kafka-perf"):
            with console.status("kafka-producer-perf-test / kafka-consumer-perf-test ..."):
                produced, consumed = kafka_perf(bench.bootstrap, bench.topic("perf"), args.perf_messages, args.size)
            for name, rate in (("kafka-producer-perf", produced), ("kafka-consumer-perf", consumed)):
                bench.add(Result(name, args.perf_messages, round(args.perf_messages / rate, 3), round(rate, 1)))
        ceiling_source = bench.topic("ceiling-input")
        with console.status(f"producing {args.ceiling_messages} ceiling input records ..."):
            produce_input(bench.bootstrap, ceiling_source, args.ceiling_messages, args.size)
        ceiling = bench.measure("ceiling", ceiling_source, args.ceiling_messages, bench.ceiling())
        for name, (call, service) in SIDECAR_SCENARIOS.items():
            if wanted(name):
                profile = args.profile.with_suffix(f".{name}.txt") if args.profile else None
                bench.measure(name, source, n, bench.through_sidecar(call, service, profile))

        # exactly-once against at-least-once, both timed as a read_committed reader sees the replies
        if wanted("exactly-once"):
            http = SIDECAR_SCENARIOS["http-single"][0]
            pairs = (
                ("http-single-seen", False, "1s"),
                ("exactly-once", True, "1s"),
                ("exactly-once-100ms", True, "100ms"),
            )
            for name, exactly, interval in pairs:
                runner = bench.through_sidecar(http, "http", None, exactly_once=exactly, commit_interval=interval)
                bench.measure(name, source, n, runner, seen=True)

        slow_call: dict[str, object] = {"url": "http://127.0.0.1:{port}/echo", "timeout": "10s"}
        if wanted("slow-keyed") or wanted("slow-partition"):
            slow = bench.topic("slow-input", 1)
            with console.status("producing the slow-service input ..."):
                produce_input(bench.bootstrap, slow, args.slow_messages, args.size, keys=1000)
            delay = (str(SLOW_MS),)
            if wanted("slow-keyed"):
                keyed = bench.through_sidecar(
                    slow_call, "http", None, service_args=delay, max_in_flight=args.slow_in_flight
                )
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

        if wanted("replay"):
            m = args.replay_messages
            big = bench.topic("replay-input")
            with console.status(f"producing {m:,} records for the replay ..."):
                produce_input(bench.bootstrap, big, m, args.size)
            copy = bench.throughput_only("replay-ceiling", big, m, bench.ceiling())
            with console.status(f"replaying {m:,} records ..."):
                seconds = replay(bench.bootstrap, big, bench.topic("out-replay"), m)
            result = bench.add(Result("replay", m, round(seconds, 3), round(m / seconds, 1)))
            result.ratio, result.reference = round(result.msgs_per_s / copy.msgs_per_s, 3), "replay-ceiling"

        trips: dict[str, Callable[[], RoundTrip]] = {
            "http-round-trip": lambda: http_round_trip(n, args.max_in_flight, args.size),
            "aiohttp-round-trip": lambda: http_round_trip(n, args.max_in_flight, args.size, client="aiohttp"),
            "grpc-round-trip": lambda: grpc_round_trip(n, args.max_in_flight, args.size),
        }
        for name, trip in trips.items():
            transport = "grpc" if name.startswith("grpc") else "http"
            if wanted(name) or wanted(transport) or wanted(f"{transport}-single"):
                with console.status(f"{name} ..."):
                    done = trip()
                result = Result(name, n, round(done.seconds, 3), round(n / done.seconds, 1))
                result.cpu_us, result.service_us, result.busy = done.client_us, done.service_us, done.busy
                bench.add(result)
    finally:
        cluster.stop(timeout=20)
        shutil.rmtree(workdir, ignore_errors=True)

    report(bench.results, ceiling, args, time.monotonic() - started)
    return 0


def report(results: list[Result], ceiling: Result, args: argparse.Namespace, elapsed: float) -> None:
    by_name = {r.scenario: r for r in results}
    for r in results:
        r.ratio_to_ceiling = round(r.msgs_per_s / ceiling.msgs_per_s, 3)
        transport = {"http-single": "http-round-trip", "http-batch": "http-round-trip", "grpc": "grpc-round-trip"}
        reference = by_name.get(transport.get(r.scenario, ""))
        if reference is not None:
            r.ratio, r.reference = round(r.msgs_per_s / reference.msgs_per_s, 3), reference.scenario
    title = f"streamcar bench: {args.messages} messages, {args.partitions} partitions, {args.size} B values"
    table = Table(title=title)
    columns = (
        *("scenario", "msgs/s", "/ ceiling", "ratio", "to", "p50 ms", "p99 ms", "+p50 ms", "+p99 ms"),
        *("CPU µs/msg", "service µs", "broker µs", "busy", "RSS MiB"),
    )
    for column in columns:
        table.add_column(column, justify="left" if column in ("scenario", "to") else "right")

    def number(value: float | None, digits: int = 1) -> str:
        return "-" if value is None else f"{value:,.{digits}f}"

    for r in results:
        added = [
            None if v is None or c is None else v - c
            for v, c in ((r.p50_ms, ceiling.p50_ms), (r.p99_ms, ceiling.p99_ms))
        ]
        table.add_row(
            r.scenario,
            f"{r.msgs_per_s:,.0f}",
            number(r.ratio_to_ceiling, 3),
            number(r.ratio, 3),
            r.reference or "",
            number(r.p50_ms),
            number(r.p99_ms),
            number(added[0]) if r is not ceiling else "",
            number(added[1]) if r is not ceiling else "",
            number(r.cpu_us),
            number(r.service_us),
            number(r.broker_us),
            "-" if r.busy is None else f"{r.busy:.0%}",
            number(r.peak_rss_mib),
        )
    Console(width=max(190, Console().width)).print(table)
    console.log(f"bench took {elapsed:.0f}s")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    document = {"args": {k: str(v) for k, v in vars(args).items()}, "results": [asdict(r) for r in results]}
    args.json.write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
