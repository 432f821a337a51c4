"""Benchmarks: the sidecar against the ceiling, measured in one run on one broker.

    python -m bench [--messages N] [--partitions P] [--json FILE]

Scenarios (each on fresh topics of the same broker, with the same pre-produced input):
* ``ceiling``: a plain confluent-kafka consume -> produce loop (what librdkafka alone does on this machine);
* sidecar scenarios, ``streamcar run`` (a separate process) publishing every reply of a trivial echo service:
  ``http-single`` (one HTTP call per message), ``http-batch`` (100 messages per call, the JSON envelope),
  ``grpc`` (one unary call per message), ``python`` and ``python-batch`` (in-process handlers, no network hop);
* ``replay``: ``streamcar replay --to-topic`` copying the whole input (a separate process);
* ``http-ceiling`` / ``grpc-ceiling``: the round trip alone (an aiohttp / grpc.aio client calling the same echo
  service, no Kafka): what one Python process can get out of that transport on this machine.

Throughput is counted from the output records' own timestamps (first to last reply), so process start-up and
the group join are not part of it. Figures are only comparable as ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from rich.console import Console
from rich.table import Table

from streamcar.devkafka import LocalKafka, free_ports

HERE = Path(__file__).resolve().parent
console = Console(stderr=True)


@dataclass
class Result:
    scenario: str
    messages: int
    seconds: float
    msgs_per_s: float
    ratio_to_ceiling: float | None = None
    ratio_to_round_trip: float | None = None  # http-* to http-ceiling, grpc to grpc-ceiling


def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(30)


def produce_input(bootstrap: str, topic: str, n: int, size: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "enable.idempotence": True})
    value = b"x" * size
    for i in range(n):
        while True:
            try:
                producer.produce(topic, key=f"key-{i % 1000}".encode(), value=value)
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(120) == 0


def output_span(bootstrap: str, topic: str, n: int, timeout: float = 600.0) -> tuple[int, float]:
    """Wait for ``n`` records in ``topic``; return the count and the seconds between first and last timestamp."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex}"})
    partitions = consumer.list_topics(topic=topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    first, last, count = float("inf"), 0.0, 0
    deadline = time.monotonic() + timeout
    while count < n and time.monotonic() < deadline:
        for msg in consumer.consume(num_messages=10_000, timeout=0.5):
            if msg.error() is None:
                ts = msg.timestamp()[1] / 1000
                first, last, count = min(first, ts), max(last, ts), count + 1
    consumer.close()
    if count < n:
        raise TimeoutError(f"only {count} of {n} records reached {topic} within {timeout:.0f}s")
    return count, max(last - first, 1e-3)


def ceiling(bootstrap: str, source: str, out: str, n: int) -> float:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"ceiling-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 5})
    consumer.subscribe([source])
    done = 0
    while done < n:
        batch = consumer.consume(num_messages=1000, timeout=1.0)
        for msg in batch:
            if msg.error() is None:
                while True:
                    try:
                        producer.produce(out, key=msg.key(), value=msg.value())
                        break
                    except BufferError:
                        producer.poll(0.01)
                done += 1
        producer.poll(0)
        if batch:
            consumer.commit(asynchronous=True)
    producer.flush(60)
    consumer.close()
    return output_span(bootstrap, out, n)[1]


SERVICES = {
    "http": [sys.executable, str(HERE / "echo_service.py")],
    "grpc": [sys.executable, str(HERE / "echo_grpc.py")],
}


def through_sidecar(
    bootstrap: str,
    source: str,
    out: str,
    n: int,
    workdir: Path,
    max_in_flight: int,
    call: dict[str, object],
    service: str | None,
    profile: Path | None,
) -> float:
    """``streamcar run`` (a separate process) with ``call``; ``service`` (http, grpc) is started beside it and
    ``{port}`` in the call URL is its port. In-process handlers are imported from this repository (PYTHONPATH)."""
    port = free_ports(1)[0]
    server = None
    if service is not None:
        cmd = [*SERVICES[service], str(port)]
        server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    config = {
        "kafka": {"bootstrap_servers": bootstrap},
        "admin": {"listen": "127.0.0.1:0"},
        "pipelines": {
            "bench": {
                "consume": {"topics": [source], "group": f"bench-{uuid.uuid4().hex[:8]}"},
                "call": {**call, "url": str(call["url"]).format(port=port)},
                "max_in_flight": max_in_flight,
                "publish": {"topic": out},
            }
        },
    }
    config_file = workdir / f"{out}.yaml"
    config_file.write_text(yaml.safe_dump(config))
    env = {**os.environ, "STREAMCAR_LOG_LEVEL": "WARNING", "PYTHONPATH": str(HERE.parent)}
    sidecar = subprocess.Popen([sys.executable, "-m", "streamcar", "run", "-c", str(config_file)], env=env)
    spy = None
    try:
        if profile is not None:  # py-spy samples the sidecar; the folded stacks feed any flamegraph tool
            profile.parent.mkdir(parents=True, exist_ok=True)
            py_spy = shutil.which("py-spy", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
            if py_spy is None:
                raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
            cmd = [py_spy, "record", "--format", "raw", "-r", "100", "--nonblocking", "-o", str(profile)]
            spy = subprocess.Popen([*cmd, "--pid", str(sidecar.pid)], stdout=subprocess.DEVNULL)
        return output_span(bootstrap, out, n)[1]
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
        for process in (sidecar, server):
            if process is None:
                continue
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


# Call settings per sidecar scenario, and the service each needs.
SIDECAR_SCENARIOS: dict[str, tuple[dict[str, object], str | None]] = {
    "http-single": ({"url": "http://127.0.0.1:{port}/echo"}, "http"),
    "http-batch": ({"url": "http://127.0.0.1:{port}/batch", "batch": {"max_messages": 100, "max_wait": "5ms"}}, "http"),
    "grpc": ({"url": "grpc://127.0.0.1:{port}/bench.Echo/Echo"}, "grpc"),
    "python": ({"url": "python:bench.echo_handlers:echo"}, None),
    "python-batch": (
        {"url": "python:bench.echo_handlers:echo_batch", "batch": {"max_messages": 100, "max_wait": "5ms"}},
        None,
    ),
}


def http_ceiling(n: int, concurrency: int, size: int) -> float:
    """The HTTP round trip alone: an aiohttp client posting to the same echo service, no Kafka, no engine."""
    import asyncio

    import aiohttp

    port = free_ports(1)[0]
    service = subprocess.Popen(
        [sys.executable, str(HERE / "echo_service.py"), str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )

    async def run() -> float:
        url = f"http://127.0.0.1:{port}/echo"
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
            for _ in range(100):  # wait for the service to listen
                try:
                    async with session.post(url, data=b"up") as response:
                        await response.read()
                    break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.1)
            body = b"x" * size
            todo = iter(range(n))

            async def worker() -> None:
                for i in todo:
                    headers = {"Kafka-Offset": str(i), "Idempotency-Key": f"t-0-{i}"}
                    async with session.post(url, data=body, headers=headers) as response:
                        await response.read()

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return time.perf_counter() - started

    try:
        import uvloop

        return uvloop.run(run())
    finally:
        service.terminate()
        service.wait(10)


def replay(bootstrap: str, source: str, out: str, n: int) -> float:
    """``streamcar replay --to-topic`` (a separate process) copying the whole input.

    Its own summary gives the time from the first fetch to the last acknowledgement: the copies keep the input's
    timestamps, so they cannot time the run the way the other scenarios are timed.
    """
    cmd = [sys.executable, "-m", "streamcar", "replay", "--topic", source, "--from", "earliest", "--to-topic", out]
    done = subprocess.run([*cmd, "-b", bootstrap, "--quiet"], check=True, capture_output=True, text=True, timeout=600)
    match = re.search(r"copied ([\d,]+) records to \S+ in ([\d.]+)s", done.stdout)
    if match is None or int(match[1].replace(",", "")) != n:
        raise RuntimeError(f"unexpected replay summary: {done.stdout.strip()!r}")
    return float(match[2])


def grpc_ceiling(n: int, concurrency: int, size: int) -> float:
    """The gRPC round trip alone: a grpc.aio client calling the same echo service, no Kafka, no engine."""
    import asyncio

    import grpc

    port = free_ports(1)[0]
    server = subprocess.Popen([*SERVICES["grpc"], str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

    async def run() -> float:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await asyncio.wait_for(channel.channel_ready(), 30)
            call = channel.unary_unary("/bench.Echo/Echo")
            body = b"x" * size
            todo = iter(range(n))

            async def worker() -> None:
                for i in todo:
                    await call(body, metadata=(("kafka-offset", str(i)), ("idempotency-key", f"t-0-{i}")))

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(min(concurrency, 100))))  # one connection's streams
            return time.perf_counter() - started

    try:
        return asyncio.run(run())
    finally:
        server.terminate()
        server.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--size", type=int, default=256, help="value bytes")
    parser.add_argument("--max-in-flight", type=int, default=256)
    parser.add_argument("--json", type=Path, default=HERE / "results" / "latest.json")
    parser.add_argument("--profile", type=Path, help="record the sidecar with py-spy into FILE.<scenario>.txt")
    parser.add_argument("--only", nargs="+", choices=sorted(SIDECAR_SCENARIOS), help="sidecar scenarios to run")
    args = parser.parse_args()
    n = args.messages

    # SIGTERM (a timeout, a CI cancel) unwinds like Ctrl-C, so the finally below stops Kafka and removes files
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = Path(tempfile.mkdtemp(prefix="streamcar-bench-"))
    cluster = LocalKafka(workdir / "kafka")
    results: list[Result] = []
    try:
        with console.status("starting Kafka ..."):
            bootstrap = cluster.start(nodes=1, port=0, heap="1g", die_with_parent=True).bootstrap
        source = "bench-input"
        create_topic(bootstrap, source, args.partitions)
        with console.status(f"producing {n} input records ..."):
            produce_input(bootstrap, source, n, args.size)
        scenarios: dict[str, Callable[[str], float]] = {"ceiling": lambda out: ceiling(bootstrap, source, out, n)}
        for name, (call, service) in SIDECAR_SCENARIOS.items():
            if args.only and name not in args.only:
                continue
            profile = args.profile.with_suffix(f".{name}.txt") if args.profile else None
            scenarios[name] = lambda out, call=call, service=service, profile=profile: through_sidecar(  # type: ignore[misc]
                bootstrap, source, out, n, workdir, args.max_in_flight, call, service, profile
            )
        scenarios["replay"] = lambda out: replay(bootstrap, source, out, n)
        scenarios["http-ceiling"] = lambda out: http_ceiling(n, args.max_in_flight, args.size)
        scenarios["grpc-ceiling"] = lambda out: grpc_ceiling(n, args.max_in_flight, args.size)
        for name, run in scenarios.items():
            out = f"bench-out-{name}"
            create_topic(bootstrap, out, args.partitions)
            with console.status(f"running {name} ..."):
                seconds = run(out)
            results.append(Result(name, n, round(seconds, 3), round(n / seconds, 1)))
    finally:
        cluster.stop(timeout=20)
        shutil.rmtree(workdir, ignore_errors=True)

    top = results[0].msgs_per_s
    by_name = {r.scenario: r for r in results}
    for r in results:
        r.ratio_to_ceiling = round(r.msgs_per_s / top, 3)
        transport = by_name.get(f"{r.scenario.split('-')[0]}-ceiling")
        if transport is not None and r.scenario != "ceiling":
            r.ratio_to_round_trip = round(r.msgs_per_s / transport.msgs_per_s, 3)
    table = Table(title=f"streamcar bench: {n} messages, {args.partitions} partitions, {args.size} B values")
    for column in ("scenario", "msgs/s", "ratio to ceiling", "ratio to its transport's round trip"):
        table.add_column(column, justify="right")
    for r in results:
        trip = "-" if r.ratio_to_round_trip is None else f"{r.ratio_to_round_trip:.3f}"
        table.add_row(r.scenario, f"{r.msgs_per_s:,.0f}", f"{r.ratio_to_ceiling:.3f}", trip)
    Console().print(table)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {"args": {k: str(v) for k, v in vars(args).items()}, "results": [asdict(r) for r in results]}, indent=2
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
