"""Running a bench of ``make bench`` in its smallest form from the tests (``tests/integration/test_bench_*.py``).

The benches run as ``make bench`` runs them, ``python -m ...`` from the checkout, so what their own children
import is tested too. Each bench has a test module of its own, so that the two test workers share them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from support import KafkaHandle


def run_bench(
    repo_root: Path, kafka: KafkaHandle, module: str, *args: str, timeout: float
) -> subprocess.CompletedProcess[str]:
    """``python -m module --smoke`` on the session's broker, from the checkout, as ``make bench`` runs it."""
    return subprocess.run(
        [sys.executable, "-m", module, "--smoke", "--bootstrap", kafka.bootstrap, *args],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def bench(repo_root: Path, kafka: KafkaHandle, module: str, *args: str, timeout: float) -> None:
    done = run_bench(repo_root, kafka, module, *args, timeout=timeout)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
