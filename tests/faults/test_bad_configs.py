"""A corpus of realistic config mistakes (bad_configs/*.yaml): ``streamcar check`` and ``streamcar run`` each exit 2
with exactly one line on stderr, no traceback, naming the field (or the YAML location) at fault.

Each file starts with ``# expect: <where>`` (the text before the first ``": "`` of the error, after
``streamcar: ``) and ``# says: <text>`` (a part of the message); ``# xfail: <reason>`` marks a known bug.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.faults

CORPUS = Path(__file__).parent / "bad_configs"


def _case(path: Path) -> object:
    notes = dict(
        line[2:].split(": ", 1) for line in path.read_text().splitlines() if line.startswith("# ") and ": " in line
    )
    marks = [pytest.mark.xfail(strict=True, reason=notes["xfail"])] if "xfail" in notes else []
    return pytest.param(path.name, notes["expect"], notes["says"], marks=marks, id=path.stem)


@pytest.mark.parametrize(("name", "expect", "says"), [_case(p) for p in sorted(CORPUS.glob("*.yaml"))])
def test_a_bad_config_is_one_line_naming_the_field_and_exit_2(name: str, expect: str, says: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STREAMCAR_", "SERVICE_URL", "KAFKA_"))}
    # both commands at once: the corpus costs one interpreter start-up per file, not two, on two cores
    procs = {
        command: subprocess.Popen(
            [sys.executable, "-m", "streamcar", command, "-c", name],
            cwd=CORPUS,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for command in ("check", "run")
    }
    results: dict[str, tuple[int, str, str]] = {}
    try:
        for command, proc in procs.items():
            # a config that run accepts would wait for a Kafka on 127.0.0.1:1 forever: bounded
            out, err = proc.communicate(timeout=30)
            results[command] = (proc.returncode, out, err)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    for command, (code, out, err) in results.items():
        lines = err.splitlines()
        where = f"streamcar {command} -c {name}: exit {code}, stderr {err!r}"
        assert code == 2, where
        assert "Traceback" not in err, where
        assert len(lines) == 1, where
        assert out == "", where
        assert lines[0].startswith("streamcar: "), where
        assert lines[0].removeprefix("streamcar: ").split(": ", 1)[0] == expect, where
        assert says in lines[0], where
