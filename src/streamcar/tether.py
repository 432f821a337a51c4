"""Start a process that dies with the thread that started it, without running Python between fork and exec.

Linux sends a process its parent-death signal (``PR_SET_PDEATHSIG``) when the thread that forked it ends: what
keeps a test's or the bench's brokers and sidecars from outliving a run that crashed. Setting it in
``subprocess``'s ``preexec_fn`` runs Python in the forked copy of a threaded process (librdkafka's threads, gRPC's),
which can deadlock before ``exec``: a CI run's last sidecar, started from a pytest worker that had run gRPC tests,
never reached ``exec``, logged nothing, and the test waited out its 120 s.

So the child is this module instead (``subprocess`` forks and execs it without Python code in between): it sets
the signal on itself, checks that its parent did not end meanwhile, puts SIGINT and SIGTERM back to their
defaults (a background job's ignored SIGINT is inherited otherwise) and execs the command, which keeps all that.
The thread that starts it must live until then (some milliseconds): the tests, the bench and the soak start
their children from their main threads.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Sequence

PR_SET_PDEATHSIG = 1


def tethered(command: Sequence[str]) -> list[str]:
    """``command`` as a command line that dies (SIGKILL) when the calling thread ends."""
    return [sys.executable, "-m", "streamcar.tether", str(os.getpid()), *command]


def main(argv: Sequence[str]) -> None:
    parent, command = int(argv[0]), list(argv[1:])
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent ended before the signal was set: nobody would send it
        os._exit(1)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
