"""The bench's processes and waits (bench/processes.py): a process that exits fails a wait on it at once, with its
output; a wait that runs out says what it waited for; what the bench started is stopped however the block ends."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # bench/ is a directory of the checkout, not an installed package

from bench.processes import BenchFailed, Child, listening, run_tool, started, wait_until  # noqa: E402


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_process_that_exits_fails_a_wait_on_it_at_once_with_its_output(tmp_path: Path) -> None:
    with started("echo service", python("print('listening soon'); raise SystemExit('no module')"), tmp_path) as child:
        began = time.monotonic()
        with pytest.raises(BenchFailed) as failed:
            wait_until("answer", lambda: None, timeout=60, watch=[child])
    assert time.monotonic() - began < 10
    message = str(failed.value)
    assert f"echo service (pid {child.pid}) exited with 1" in message
    assert "listening soon" in message
    assert "no module" in message


def test_a_wait_that_runs_out_names_what_it_waited_for(tmp_path: Path) -> None:
    with pytest.raises(BenchFailed, match=r"^no reply from nowhere within 0 s$"):
        wait_until("reply from nowhere", lambda: None, timeout=0.2)


def test_a_wait_returns_the_first_answer(tmp_path: Path) -> None:
    answers = iter([None, False, 7])
    assert wait_until("answer", lambda: next(answers), timeout=5, every=0.01) == 7


def test_listening_fails_on_a_service_that_died_at_import(tmp_path: Path) -> None:
    with (
        started("http echo service", python("import no_such_module"), tmp_path) as service,
        pytest.raises(BenchFailed, match=r"(?s)http echo service .* exited with 1.*No module named 'no_such_module'"),
    ):
        listening(service, 9, timeout=60)


def test_the_process_is_stopped_when_the_block_fails(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), started("sidecar", python("import time; time.sleep(60)"), tmp_path) as child:
        raise RuntimeError("the bench failed meanwhile")
    assert child.process.returncode == -signal.SIGTERM


def test_children_take_sigint_even_from_a_bench_that_ignores_it(tmp_path: Path) -> None:
    # a bench started in the background (`make bench &`) has SIGINT ignored; py-spy must still stop on it
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        child = Child("py-spy", python("import time; time.sleep(60)"), tmp_path / "spy.log")
    finally:
        signal.signal(signal.SIGINT, previous)
    child.stop(signal.SIGINT, timeout=10)
    assert child.process.returncode == -signal.SIGINT


def test_a_tool_that_fails_says_so_with_its_output(tmp_path: Path) -> None:
    assert run_tool("ok", python("print('done')"), tmp_path, timeout=30) == "done\n"
    with pytest.raises(BenchFailed, match=r"(?s)kafka-producer-perf-test exited with 3.*bad topic"):
        run_tool("kafka-producer-perf-test", python("print('bad topic'); raise SystemExit(3)"), tmp_path, timeout=30)
    with pytest.raises(BenchFailed, match=r"streamcar replay did not finish within 0 s"):
        run_tool("streamcar replay", python("import time; time.sleep(60)"), tmp_path, timeout=0.3)
