"""Start a process that dies with the thread that started it, without running Python between fork and exec.

Linux sends a process its parent-death signal (``PR_SET_PDEATHSIG``) when the thread that forked it ends: what
keeps a test's or the bench's brokers and sidecars from outliving a run that crashed. Setting it in
``subprocess``'s ``preexec_fn`` runs Python in the forked copy of a threaded process (librdkafka's threads, gRPC's),
which can deadlock before ``exec``: a CI run's last sidecar, started from a pytest worker that had run gRPC tests,
never reached ``exec``, logged nothing, and the test waited out its 120 s.

So the child is this module instead (``subprocess`` forks and execs it without Python code in between): it sets
the signal on itself, checks that its parent did not end meanwhile, puts SIGINT and SIGTERM back to their
defaults (a background job's ignored SIGINT is inherited otherwise) and execs the command, which keeps all that.
:func:`popen` returns once the command is executed (a pipe the tether leaves to close on exec says when), as
``Popen`` with ``preexec_fn`` did: a signal sent at once reaches the command, not the tether (a SIGINT sent then
was ignored: the bench's test saw its child killed instead), and the starting thread may end at once.
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

PR_SET_PDEATHSIG = 1
EXEC_WITHIN = 30.0
"""Seconds :func:`popen` waits for the command to be executed (a Python start-up, then exec)."""


def popen(command: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """``subprocess.Popen(command, **kwargs)`` for a command that dies (SIGKILL) when the calling thread ends;
    returns once the command runs (or the tether failed: then the process has ended)."""
    read, write = os.pipe()
    try:
        tether = [sys.executable, "-m", "streamcar.tether", str(os.getpid()), str(write), *command]
        process: subprocess.Popen[bytes] = subprocess.Popen(tether, pass_fds=(write,), **kwargs)
    finally:
        os.close(write)
    try:
        select.select([read], [], [], EXEC_WITHIN)  # EOF: the command is executed, or the tether ended
    finally:
        os.close(read)
    return process


def main(argv: Sequence[str]) -> None:
    parent, done, command = int(argv[0]), int(argv[1]), list(argv[2:])
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent ended before the signal was set: nobody would send it
        os._exit(1)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.set_inheritable(done, False)  # closed by the exec: that is the starter's signal to go on
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
