"""Stopping a pipeline takes bounded steps: each gets what is left of the time, and past it the next one goes on."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

log = logging.getLogger("streamcar.pipeline")

STOP_GRACE = 5.0
"""Seconds beyond ``shutdown_timeout`` that stopping takes at most: the final commit, leaving the consumer group
and handing the producer's last records to the broker."""
COMMIT_GRACE = 2.0
PRODUCER_GRACE = 1.0


async def within(step: Awaitable[None], seconds: float, what: str) -> None:
    """Run one step of stopping for at most ``seconds``: past it, say so and go on with the next."""
    try:
        await asyncio.wait_for(step, max(seconds, 0.0))
    except TimeoutError:
        log.warning("%s took too long; going on without it", what)
