"""Retry timing: exponential backoff with jitter, honouring the service's ``Retry-After``.

A retry never blocks other keys: the engine parks the message on a timer and only its own lane waits.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

# A service may ask for a long pause, but a typo'd Retry-After of days must not park a key that long.
MAX_RETRY_AFTER = 15 * 60.0


@dataclass(frozen=True, slots=True)
class Backoff:
    initial: float
    maximum: float

    def delay(
        self, failures: int, retry_after: float | None = None, rand: Callable[[], float] = random.random
    ) -> float:
        """Seconds to wait after the ``failures``-th failed attempt (1-based).

        "Equal jitter": half the exponential step is fixed, half random, so retries of many messages that
        failed together spread out without any of them retrying almost at once.
        """
        step = min(self.maximum, self.initial * 2.0 ** max(0, failures - 1))
        delay = step / 2 + rand() * step / 2
        if retry_after is not None:
            delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
        return delay
