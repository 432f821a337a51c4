"""The tracing set-up: the provider the config asks for, and a one-line config error without the SDK."""

from __future__ import annotations

import sys

import pytest

from streamcar.config import TracingConfig, parse_config
from streamcar.errors import ConfigError
from streamcar.telemetry import tracer_provider


def test_the_provider_names_the_service_and_samples_by_ratio() -> None:
    provider = tracer_provider(TracingConfig(enabled=True, service_name="orders-sidecar", sample_ratio=0.25))
    try:
        assert provider.resource.attributes["service.name"] == "orders-sidecar"
        assert "0.25" in provider.sampler.get_description()
    finally:
        provider.shutdown()


def test_without_the_sdk_enabling_tracing_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)  # as if streamcar[tracing] was not installed
    with pytest.raises(ConfigError, match=r"^tracing\.enabled: .*pip install 'streamcar\[tracing\]'$") as caught:
        tracer_provider(TracingConfig(enabled=True))
    assert caught.value.exit_code == 2


def test_tracing_is_off_by_default_and_its_endpoint_is_checked() -> None:
    base = "kafka: {bootstrap_servers: '127.0.0.1:9092'}\npipelines: {p: {consume: {topics: [a], group: g}, call: {url: 'http://127.0.0.1:1/x'}}}\n"
    assert parse_config(base).tracing.enabled is False
    with pytest.raises(ConfigError) as caught:
        parse_config(base + "tracing: {enabled: true, endpoint: 'localhost:4318'}\n")
    assert caught.value.problems[0].startswith("tracing.endpoint: ")
