"""Running the sidecar in the test process, against the session broker and a :class:`TestService`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from streamcar.app import Sidecar
from streamcar.config import Config


def make_config(bootstrap: str, pipelines: dict[str, dict[str, Any]], **kafka: Any) -> Config:
    return Config.model_validate(
        {"kafka": {"bootstrap_servers": bootstrap, **kafka}, "admin": {"listen": "127.0.0.1:0"}, "pipelines": pipelines}
    )


def pipeline(
    topic: str | list[str],
    group: str,
    url: str,
    *,
    publish: str | None = None,
    dead_letter: str | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "consume": {"topics": [topic] if isinstance(topic, str) else topic, "group": group},
        "call": {"url": url, "timeout": "5s"},
        "retry": {"attempts": 3, "initial_backoff": "20ms", "max_backoff": "200ms"},
        "commit_interval": "200ms",
        "shutdown_timeout": "10s",
    }
    if publish:
        spec["publish"] = {"topic": publish}
    if dead_letter:
        spec["dead_letter"] = {"topic": dead_letter}
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    return spec


@contextlib.asynccontextmanager
async def running(config: Config, *, assigned_within: float = 30.0) -> AsyncIterator[Sidecar]:
    """Run the sidecar until the block ends (then SIGTERM-like drain); waits until every pipeline has partitions."""
    stop = asyncio.Event()
    sidecar = Sidecar(config)
    task = asyncio.create_task(sidecar.run(stop))
    try:
        async with asyncio.timeout(assigned_within):
            await sidecar.started.wait()
            while not all(p.assigned for p in sidecar.pipelines.values()):
                if task.done():
                    task.result()
                await asyncio.sleep(0.05)
        yield sidecar
    finally:
        stop.set()
        async with asyncio.timeout(60):
            await task
