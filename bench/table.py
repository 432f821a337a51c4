"""The bench's results: one :class:`Result` per scenario, the table on the terminal and the JSON file."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass

from rich.console import Console
from rich.table import Table

console = Console(stderr=True)


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
