"""``streamcar run`` pointed at a port where no broker listens: librdkafka retries every few hundred ms from each
client, and used to write a line per attempt (365 ERROR lines in 16 s). Now each condition is one line per
interval with a count, and /readyz names the broker and the refused connection."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path
from typing import Any

import pytest

from streamcar.config import LogConfig
from streamcar.devkafka.layout import free_ports
from streamcar.kafka.rdlog import INTERVAL

from sidecar import SidecarProcess, make_config, pipeline
from support import wait_for

pytestmark = pytest.mark.integration


def test_a_refused_broker_port_is_one_line_per_interval_and_named_on_readyz(tmp_path: Path) -> None:
    (port,) = free_ports(1)  # nothing listens there
    config = make_config(f"127.0.0.1:{port}", {"p": pipeline("in", "g", "http://127.0.0.1:9/never")})
    config = config.model_copy(update={"log": LogConfig(format="json")})
    sidecar = SidecarProcess(config, tmp_path).start()
    readyz: dict[str, Any] = {}
    try:

        def not_ready_because_refused() -> bool:
            code, body = sidecar.get("/readyz")
            readyz.update(json.loads(body))
            return code == 503 and any(f"127.0.0.1:{port}" in p and "refused" in p for p in readyz["problems"])

        wait_for(not_ready_because_refused, timeout=20, what="/readyz naming the refused port")
        wait_for(
            lambda: "more like it" in sidecar.log_file.read_text(errors="replace"),
            timeout=INTERVAL + 15,
            what="a librdkafka line with the count of those held back",
        )
        sidecar.signal(signal.SIGTERM)
        code = sidecar.wait(30)
    finally:
        sidecar.kill()

    entries = [json.loads(line) for line in sidecar.log_lines()]
    librdkafka = [e["message"] for e in entries if e["logger"] == "streamcar.librdkafka"]
    assert code == 0, sidecar.log_tail()
    # one interval and a bit: the first line of the condition, then one with the count held back since
    assert 2 <= len(librdkafka) <= 3, librdkafka
    assert "Connection refused" in librdkafka[0]
    assert "more like it" not in librdkafka[0]
    held = [int(m[1]) for m in map(re.compile(r"\(and (\d+) more like it").search, librdkafka) if m]
    assert held, librdkafka
    assert held[0] >= 10, librdkafka  # the flood was there: librdkafka retried many times meanwhile
