"""What the three benches share on the command line: ``--bootstrap`` (a running Kafka rather than a broker of
their own), ``--smoke`` (the smallest form: a few thousand records and short phases, to show that every scenario
runs, not to measure), and how a run ends."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable
from typing import Any

from bench.processes import BenchFailed


def arguments(
    parser: argparse.ArgumentParser, smoke: dict[str, Any], argv: list[str] | None = None
) -> argparse.Namespace:
    """``parser``'s arguments, with ``smoke``'s defaults under ``--smoke`` (an option given still wins)."""
    parser.add_argument("--bootstrap", metavar="HOST:PORT", help="use this Kafka rather than starting one")
    parser.add_argument("--smoke", action="store_true", help="the smallest form: checks that the bench runs")
    if parser.parse_known_args(argv)[0].smoke:
        parser.set_defaults(**smoke)
    return parser.parse_args(argv)


def run(bench: Callable[[], int]) -> int:
    """Runs a bench to its exit code. SIGTERM (a timeout, a CI cancel) unwinds like Ctrl-C, so the with-blocks
    stop what the bench started and remove its files; a failure ends it with its message (the output of a process
    that exited included) and 1, Ctrl-C with 130."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return bench()
    except BenchFailed as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench interrupted", file=sys.stderr)
        return 130
