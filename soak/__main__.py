"""``python -m soak [--seconds S] [--seed N] [--rate R] [--logs DIR]`` (``make soak``): see soak/__init__.py.

$SOAK_S, $SOAK_SEED and $SOAK_LOGS are the defaults of --seconds, --seed and --logs. The last line printed is the
run's figures as one JSON object; the exit status is 0 iff every invariant held, 1 otherwise, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import sys
from pathlib import Path
from types import FrameType

from soak.check import held
from soak.run import Settings, run


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def parse(argv: list[str] | None = None) -> Settings:
    env = os.environ
    parser = argparse.ArgumentParser(prog="python -m soak", description="streamcar under a nemesis, then checked")
    parser.add_argument("--seconds", type=float, default=float(env.get("SOAK_S", "600")), help="$SOAK_S, 600")
    parser.add_argument("--seed", type=int, default=int(env.get("SOAK_SEED") or secrets.randbelow(10**9)))
    parser.add_argument("--rate", type=float, default=300.0, help="input records a second (300)")
    parser.add_argument("--logs", type=Path, default=env.get("SOAK_LOGS") or None, help="copy the logs here")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.rate <= 0:
        parser.error("--seconds and --rate must be positive")
    return Settings(seconds=args.seconds, seed=args.seed, rate=args.rate, logs=args.logs)


def main(argv: list[str] | None = None) -> int:
    settings = parse(argv)
    # a background job starts with SIGINT ignored; SIGTERM ends a run as Ctrl-C does, cleaning up
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        figures = run(settings)
    except KeyboardInterrupt:
        print(f"soak: interrupted (seed {settings.seed}); everything it started is stopped", file=sys.stderr)
        return 130
    print(json.dumps(figures), flush=True)
    return 0 if held(figures) else 1


if __name__ == "__main__":
    raise SystemExit(main())
