"""Log formats, the level and format in force, and the redaction of secrets."""

from __future__ import annotations

import base64
import json
import logging

import pytest

from streamcar.config import parse_config
from streamcar.logs import JsonFormatter, Redactor, resolve
from streamcar.redact import Redactor as Scrubber


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("streamcar.pipeline", logging.WARNING, __file__, 1, message, args, None)
    for name, value in extra.items():
        setattr(rec, name, value)
    return rec


def test_json_lines_carry_the_fields_of_the_event() -> None:
    rec = record("%s: dead-lettered %s", "orders", "t-0-5", event="dead-letter", pipeline="orders", offset=5)
    entry = json.loads(JsonFormatter().format(rec))
    assert entry["level"] == "warning"
    assert entry["logger"] == "streamcar.pipeline"
    assert entry["message"] == "orders: dead-lettered t-0-5"
    assert (entry["event"], entry["pipeline"], entry["offset"]) == ("dead-letter", "orders", 5)
    assert entry["time"].endswith("Z")
    assert len(entry["time"]) == len("2026-11-25T12:00:00.000Z")


def test_a_traceback_stays_inside_one_json_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        rec = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, __import__("sys").exc_info())
    line = JsonFormatter().format(rec)
    assert "\n" not in line
    assert "ValueError: boom" in json.loads(line)["error"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Bearer eyJhbGciOi.J9x-y_z", "Authorization: Bearer ***"),
        ("sasl.password=hunter22 next", "sasl.password=*** next"),
        ('{"password": "hunter22"}', '{"password": "***"}'),
        ("calling http://svc:pa55word@10.0.0.1/x", "calling http://svc:***@10.0.0.1/x"),
        ("token: abc123, then", "token: ***, then"),
        ("nothing secret here", "nothing secret here"),
    ],
)
def test_credential_shapes_are_redacted(text: str, expected: str) -> None:
    assert Redactor().scrub(text) == expected


def test_known_secrets_are_redacted_in_messages_fields_and_tracebacks() -> None:
    redactor = Redactor(["s3cr3t-value", "ab"])  # too short to redact safely: left to the shape rules
    try:
        raise RuntimeError("server said s3cr3t-value is wrong")
    except RuntimeError:
        rec = logging.LogRecord(
            "x", logging.ERROR, __file__, 1, "got %s", ("s3cr3t-value!",), __import__("sys").exc_info()
        )
    rec.detail = "also s3cr3t-value"
    assert redactor.filter(rec)
    line = JsonFormatter().format(rec)
    assert "s3cr3t-value" not in line
    assert json.loads(line)["message"] == "got ***!"
    assert json.loads(line)["detail"] == "also ***"
    assert "about" in redactor.scrub("about")


def test_the_command_line_beats_the_environment_which_beats_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STREAMCAR_LOG_FORMAT", raising=False)
    monkeypatch.delenv("STREAMCAR_LOG_LEVEL", raising=False)
    assert resolve(None, None) == ("console", "info")
    assert resolve(None, None, configured=("json", "warning")) == ("json", "warning")
    monkeypatch.setenv("STREAMCAR_LOG_FORMAT", "console")
    monkeypatch.setenv("STREAMCAR_LOG_LEVEL", "DEBUG")
    assert resolve(None, None, configured=("json", "warning")) == ("console", "debug")
    assert resolve("json", "error", configured=("console", "info")) == ("json", "error")
    monkeypatch.setenv("STREAMCAR_LOG_LEVEL", "chatty")
    assert resolve(None, None)[1] == "info"


def test_the_config_names_its_secrets() -> None:
    config = parse_config(
        """
kafka:
  bootstrap_servers: 127.0.0.1:9092
  security: {protocol: SASL_PLAINTEXT, sasl_mechanism: SCRAM-SHA-512, username: u, password: kafka-pass-1}
  librdkafka: {sasl.oauthbearer.config: "principal=x secret=oauth-secret", linger.ms: 5}
log: {format: json, level: warning}
pipelines:
  p:
    consume: {topics: [a], group: g}
    call:
      url: http://user:url-pass-9@127.0.0.1:8080/x
      headers: {Authorization: "Bearer the-token-7", X-Request-Source: streamcar}
"""
    )
    secrets = config.secrets()
    assert {
        "kafka-pass-1",
        "principal=x secret=oauth-secret",
        "Bearer the-token-7",
        "the-token-7",
        "url-pass-9",
    } <= set(secrets)
    assert "streamcar" not in secrets
    assert (config.log.format, config.log.level) == ("json", "warning")


def test_a_secret_is_redacted_in_every_form_it_travels_in() -> None:
    redactor = Redactor(["p@ss word/+1", "svc:p@ss word/+1"])
    for form in (
        "p@ss word/+1",
        "p%40ss%20word%2F%2B1",  # URL-encoded
        "p%40ss+word%2F%2B1",  # as a form value
        base64.b64encode(b"svc:p@ss word/+1").decode(),  # Basic auth's user:password
    ):
        assert redactor.scrub(f"the service said: {form}!") == "the service said: ***!"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("GET /x?token=abc123&page=2", "GET /x?token=***&page=2"),
        ("https://h/p?api_key=k1;x=1", "https://h/p?api_key=***;x=1"),
        ("https://h/p?sig=Zx9&access_token=T7#f", "https://h/p?sig=***&access_token=***#f"),
        ("X-Api-Key: k-123 and Authorization: Basic dXNlcjpwYXNz", "X-Api-Key: *** and Authorization: Basic ***"),
    ],
)
def test_credentials_in_queries_and_headers_are_redacted(text: str, expected: str) -> None:
    assert Redactor().scrub(text) == expected


def test_a_whole_document_is_scrubbed_keys_and_all() -> None:
    scrubber = Scrubber(["tok-123456"])
    document = {"error": "tok-123456 rejected", "list": ["a tok-123456", 3, None], "tok-123456": True}
    assert scrubber.scrub_all(document) == {"error": "*** rejected", "list": ["a ***", 3, None], "***": True}
