"""What preflight checks on the machine: librdkafka settings, certificate files, python handlers."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamcar.config import parse_config
from streamcar.errors import ConfigError
from streamcar.preflight import preflight

BASE = """
kafka:
  bootstrap_servers: 127.0.0.1:9092
  librdkafka: {LIBRDKAFKA}
pipelines:
  orders:
    consume: {topics: [orders], group: g}
    call: {url: "URL"}
"""


def config(librdkafka: str = "{}", url: str = "http://127.0.0.1:9/x") -> str:
    return BASE.replace("{LIBRDKAFKA}", librdkafka).replace("URL", url)


def test_a_sound_config_passes() -> None:
    preflight(parse_config(config("{linger.ms: 5, session.timeout.ms: 45000, fetch.wait.max.ms: 50}")))
    preflight(parse_config(config(url="python:json:dumps")))


def test_every_problem_is_reported_with_its_full_path(tmp_path: Path) -> None:
    not_pem = tmp_path / "ca.txt"
    not_pem.write_text("hello")
    text = config("{fetch.wait.max.msx: 50, acks: maybe}", url="python:json:missing")
    text += (
        "  other:\n    consume: {topics: [b], group: h}\n"
        f"    call: {{url: 'grpcs://127.0.0.1:1/a.B/C', tls: {{ca_file: {not_pem}}}}}\n"
    )
    with pytest.raises(ConfigError) as caught:
        preflight(parse_config(text))
    problems = caught.value.problems
    assert len(problems) == 4
    assert problems[0].startswith("kafka.librdkafka.fetch.wait.max.msx: No such configuration property")
    assert problems[1].startswith("kafka.librdkafka.acks: ")
    assert problems[2].startswith("pipelines.orders.call.url: python:json:missing: ")
    assert problems[3] == f"pipelines.other.call.tls.ca_file: {not_pem} holds no PEM data"
