"""No module of ours shadows a standard one.

A script run as ``python dir/script.py`` puts ``dir`` first on ``sys.path``, and pytest inserts the test
directories the same way, so a ``dir/queue.py`` is what ``import queue`` finds, in that process and in every
library it imports. ``bench/queue.py`` did that to the echo service of ``make bench`` (streamcar's consumer imports
``queue``): the service died at import and the bench waited on it forever (issue 29).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT_DIRS = ("bench", "examples", "tests")
"""The directories from which scripts may be run (and pytest's rootdir-inserted test directories)."""


def module_names(directory: Path) -> dict[Path, str]:
    """Each module file and package under ``directory``, and the top-level name it would take were its own directory
    first on ``sys.path``."""
    found: dict[Path, str] = {}
    for path in directory.rglob("*"):
        if "__pycache__" in path.parts:
            continue
        if path.suffix == ".py" and path.stem not in ("__init__", "__main__"):
            found[path] = path.stem
        elif path.is_dir() and (path / "__init__.py").exists():
            found[path] = path.name
    return found


def test_no_module_in_a_script_directory_has_a_standard_library_name() -> None:
    shadowing = {
        str(path.relative_to(ROOT)): name
        for directory in SCRIPT_DIRS
        for path, name in module_names(ROOT / directory).items()
        if name in sys.stdlib_module_names
    }
    assert shadowing == {}


def test_the_check_sees_a_shadowing_module(tmp_path: Path) -> None:
    (tmp_path / "queue.py").write_text("")
    (tmp_path / "pkg" / "email").mkdir(parents=True)
    (tmp_path / "pkg" / "email" / "__init__.py").write_text("")
    names = set(module_names(tmp_path).values())
    assert {"queue", "email"} <= names
    assert {"queue", "email"} <= set(sys.stdlib_module_names)


def test_the_top_level_packages_of_the_checkout_have_no_standard_name() -> None:
    # `python -m bench` from the checkout puts the checkout itself first on sys.path
    top = [p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()] + [p.stem for p in ROOT.glob("*.py")]
    assert [name for name in top if name in sys.stdlib_module_names] == []
