"""Ctrl-C for the ``streamcar`` command: one line, exit 130, whenever it comes.

Python turns SIGINT into ``KeyboardInterrupt`` wherever the main thread is, and some of those places turn it into
another exception: an import inside a Rust extension (pydantic-core) panics with ``PanicException``, a C library
may report a failed call. :func:`watch` notes that the signal came, so the command line can say "interrupted"
for whatever exception it caused. :func:`leave` ends the process at once once that is said: the work has been
unwound by then, and interpreter finalization restores SIGINT's default disposition, so a second Ctrl-C (or the
``KeyboardInterrupt`` that Python itself re-raises at exit now and then) would otherwise end the process by the
signal (-2).

This module is imported before anything else of the command, so it imports nothing that Python has not loaded at
start (``_signal``, not ``signal``, which imports ``enum``; no ``typing``): a Ctrl-C that comes while the
interpreter itself starts (site, ``.pth`` files; about 15 ms on a quiet machine) is Python's, not ours.

An inherited ignored SIGINT (a background job's) stays ignored, as for any Unix tool.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing's own would import typing
if TYPE_CHECKING:
    import signal as _signal  # the same functions, with stubs
    from types import FrameType
    from typing import NoReturn
else:
    import _signal

INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a command ended by Ctrl-C

_seen = False


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    global _seen
    _seen = True
    raise KeyboardInterrupt


def watch() -> None:
    """Note SIGINTs from now on (raising ``KeyboardInterrupt`` as before), unless SIGINT is ignored or handled."""
    if _signal.getsignal(_signal.SIGINT) is _signal.default_int_handler:
        _signal.signal(_signal.SIGINT, _on_sigint)


def seen() -> bool:
    """Whether a SIGINT came since :func:`watch`."""
    return _seen


def said() -> int:
    """Say the command was interrupted, in its one line; the exit code that goes with it."""
    print("streamcar: interrupted", file=sys.stderr)
    return INTERRUPTED


def leave(code: int) -> NoReturn:
    """Flush what was written and end the process with ``code`` now, without interpreter finalization."""
    import contextlib  # here, not at the top: see the module's docstring

    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe or stream: nothing more can be said there
            stream.flush()
    os._exit(code)
