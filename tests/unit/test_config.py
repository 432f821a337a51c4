from __future__ import annotations

import copy
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from streamcar.cli import main
from streamcar.config import (
    CallConfig,
    Config,
    ConsumeConfig,
    GrpcTarget,
    HttpTarget,
    PythonTarget,
    format_duration,
    json_schema,
    load_config,
    parse_config,
    parse_duration,
)
from streamcar.config._exactly import transaction_timeout_ms
from streamcar.errors import ConfigError
from streamcar.kafka.settings import for_producer, group_consumer

DESIGN_EXAMPLE = """\
kafka:
  bootstrap_servers: ${KAFKA_BOOTSTRAP:-127.0.0.1:9092}
  client_id: orders-sidecar
  security:                      # optional: PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL
    protocol: SASL_SSL
    sasl_mechanism: SCRAM-SHA-512  # PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512
    username: ${KAFKA_USER}
    password: ${KAFKA_PASSWORD}  # secret: never logged, never in /status
    ca_file: /etc/kafka/ca.pem
  librdkafka: {}                 # raw client overrides, passed through
admin:
  listen: 127.0.0.1:8095
pipelines:
  orders:                        # pipeline name
    consume: {topics: [orders], group: orders-service, from: earliest}
    call:
      url: http://127.0.0.1:8080/orders   # or grpc://host:port/pkg.Service/Method, or python:pkg.module:function
      timeout: 5s
      headers: {Authorization: "Bearer ${TOKEN}"}
      batch: {max_messages: 1, max_wait: 5ms}   # >1 = bulk delivery (envelope format)
    ordering: key                # key (default) | partition | none
    max_in_flight: 256           # per pipeline; backpressure pauses partitions beyond it
    retry: {attempts: 5, initial_backoff: 200ms, max_backoff: 30s}
    publish: {topic: orders-enriched}   # optional: where reply payloads go
    dead_letter: {topic: orders-dlq}    # optional: without it, exhausted messages block their key, never dropped
    shutdown_timeout: 30s
"""
SECRET = "s3cr3t: with # yaml-special chars"
DESIGN_ENV = {"KAFKA_USER": "orders", "KAFKA_PASSWORD": SECRET, "TOKEN": "t0ken-value"}

MINIMAL: dict[str, Any] = {
    "kafka": {"bootstrap_servers": "localhost:9092"},
    "pipelines": {"p": {"consume": {"topics": ["in"], "group": "g"}, "call": {"url": "http://svc:8080/x"}}},
}


def build(changes: dict[str, Any] | None = None) -> str:
    """MINIMAL as YAML with ``{"dotted.path": value}`` changes applied (value ``...`` deletes the key)."""
    tree = copy.deepcopy(MINIMAL)
    for dotted, value in (changes or {}).items():
        *parents, last = dotted.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        if value is ...:
            del node[last]
        else:
            node[last] = value
    return yaml.safe_dump(tree)


def problems_of(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, env=env or {})
    return info.value.problems


def test_the_config_example_in_the_docs_is_a_valid_config() -> None:
    """docs/config.md is what users read: its example must be what streamcar accepts."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "config.md").read_text(encoding="utf-8")
    example = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    config = parse_config(example, env={**DESIGN_ENV, "SERVICE_TOKEN": "t"})
    assert list(config.pipelines) == ["orders"]
    assert config.pipelines["orders"].publish is not None
    assert config.log.format == "json"


def test_design_example_parses() -> None:
    config = parse_config(DESIGN_EXAMPLE, env=DESIGN_ENV)
    orders = config.pipelines["orders"]
    assert config.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert orders.consume.topics == ["orders"]
    assert orders.consume.from_ == "earliest"
    assert orders.call.timeout == 5.0
    assert orders.call.headers == {"Authorization": "Bearer t0ken-value"}
    assert orders.call.batch.max_wait == 0.005
    assert (orders.retry.attempts, orders.retry.initial_backoff, orders.retry.max_backoff) == (5, 0.2, 30.0)
    assert orders.publish is not None
    assert orders.publish.topic == "orders-enriched"
    assert orders.dead_letter is not None
    assert orders.dead_letter.topic == "orders-dlq"
    assert orders.call.target == HttpTarget(url="http://127.0.0.1:8080/orders", tls=False)
    assert config.kafka.client_config() == {
        "bootstrap.servers": "127.0.0.1:9092",
        "client.id": "orders-sidecar",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "orders",
        "sasl.password": SECRET,
        "ssl.ca.location": "/etc/kafka/ca.pem",
    }
    assert config.summary() == ["orders: orders -> http://127.0.0.1:8080/orders (group orders-service, ordering key)"]


def test_defaults() -> None:
    config = parse_config(build())
    pipeline = config.pipelines["p"]
    assert (config.admin.listen, config.admin.host, config.admin.port) == ("127.0.0.1:8095", "127.0.0.1", 8095)
    assert config.kafka.client_id == "streamcar"
    assert config.kafka.security is None
    assert config.kafka.client_config() == {"bootstrap.servers": "localhost:9092", "client.id": "streamcar"}
    assert (pipeline.ordering, pipeline.max_in_flight, pipeline.consume.from_) == ("key", 256, "earliest")
    assert (pipeline.retry.attempts, pipeline.retry.initial_backoff, pipeline.retry.max_backoff) == (5, 0.2, 30.0)
    assert (pipeline.call.timeout, pipeline.call.headers) == (5.0, {})
    assert (pipeline.call.batch.max_messages, pipeline.call.batch.max_wait) == (1, 0.005)
    assert (pipeline.shutdown_timeout, pipeline.commit_interval) == (30.0, 1.0)
    assert pipeline.publish is None
    assert pipeline.dead_letter is None


def test_call_status_takes_codes_as_numbers_or_text_and_results_as_people_write_them() -> None:
    config = parse_config(build({"pipelines.p.call.status": {404: "drop", "409": "Success", 422: "dead_letter"}}))
    assert config.pipelines["p"].call.status == {"404": "drop", "409": "success", "422": "dead-letter"}


def test_publish_allows_its_topic_by_default_and_globs_when_listed() -> None:
    default = parse_config(build({"pipelines.p.publish": {"topic": "out"}})).pipelines["p"].publish
    assert default is not None
    assert default.allows("out")
    assert not default.allows("out-review")
    assert default.headers == "forward"
    listed = parse_config(build({"pipelines.p.publish": {"topic": "out", "allow": ["orders-*", "audit"]}}))
    publish = listed.pipelines["p"].publish
    assert publish is not None
    assert publish.allows("orders-review")
    assert publish.allows("audit")
    assert publish.allows("out")  # the publish topic always
    assert not publish.allows("orders")


def test_config_is_frozen() -> None:
    config = parse_config(build())
    with pytest.raises(ValidationError):
        config.admin.listen = "0.0.0.0:1"


def test_an_instance_id_means_static_membership_and_an_empty_one_none() -> None:
    config = parse_config(build({"pipelines.p.consume.instance_id": "orders-7f9c-0"}))
    settings = group_consumer(
        config.kafka, group="g", client_id="c", instance_id=config.pipelines["p"].consume.instance_id
    )
    assert settings["group.instance.id"] == "orders-7f9c-0"
    assert parse_config(build({"pipelines.p.consume.instance_id": ""})).pipelines["p"].consume.instance_id is None
    assert "group.instance.id" not in group_consumer(config.kafka, group="g", client_id="c")


def test_librdkafka_settings_of_one_kind_of_client_go_to_that_kind_only() -> None:
    overrides = {"session.timeout.ms": 6000, "linger.ms": 20, "socket.keepalive.enable": True}
    config = parse_config(build({"kafka.librdkafka": overrides}))
    consumer = group_consumer(config.kafka, group="g", client_id="c")
    producer = for_producer(config.kafka.client_config())
    assert (consumer["session.timeout.ms"], "linger.ms" in consumer) == (6000, False)
    assert (producer["linger.ms"], "session.timeout.ms" in producer) == (20, False)
    assert consumer["socket.keepalive.enable"] is producer["socket.keepalive.enable"] is True


def test_librdkafka_overrides_are_applied_last() -> None:
    config = parse_config(build({"kafka.librdkafka": {"client.id": "override", "linger.ms": 5, "acks": "all"}}))
    assert config.kafka.client_config() == {
        "bootstrap.servers": "localhost:9092",
        "client.id": "override",
        "linger.ms": 5,
        "acks": "all",
    }


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"kafka": "localhost:9092"}, "kafka: expected a mapping, got a string"),
        ({"kafka.bootstrap_servers": ""}, "kafka.bootstrap_servers: at least one broker"),
        ({"kafka.bootstrap_servers": "kafka1"}, "kafka.bootstrap_servers: 'kafka1' is not host:port"),
        ({"kafka.bootstrap_servers": "a:9092, b:99999"}, "kafka.bootstrap_servers: 'b:99999' has an invalid port"),
        ({"kafka.client_id": 123}, "kafka.client_id: expected a string, got a number (quote it)"),
        ({"kafka.client_id": " "}, "kafka.client_id: String should have at least 1 character"),
        ({"kafka.librdkafka": {"acks": [1]}}, "kafka.librdkafka.acks: a librdkafka setting must be"),
        ({"kafka.security": {"protocol": "TLS"}}, "kafka.security.protocol: must be 'PLAINTEXT', "),
        ({"admin.listen": "localhost"}, "admin.listen: 'localhost' is not host:port"),
        ({"admin.listen": "1.2.3.999:80"}, "admin.listen: '1.2.3.999:80' has an invalid IPv4 address"),
        ({"admin.listen": "::1:80"}, "admin.listen: '::1:80': write an IPv6 host in brackets"),
        ({"admin.listen": "bad_host!:80"}, "admin.listen: 'bad_host!:80' has an invalid host name"),
        ({"pipelines": {}}, "pipelines: Dictionary should have at least 1 item"),
        ({"pipelines.-bad": MINIMAL["pipelines"]["p"]}, "pipelines.-bad: invalid pipeline name '-bad'"),
        ({"pipelines.p.call": ...}, "pipelines.p.call: required, but missing"),
        ({"pipelines.p.consume.topics": []}, "pipelines.p.consume.topics: List should have at least 1 item"),
        ({"pipelines.p.consume.topics": "in"}, "pipelines.p.consume.topics: expected a list, got a string"),
        ({"pipelines.p.consume.topics": ["in", "bad topic"]}, "pipelines.p.consume.topics.1: invalid topic name"),
        ({"pipelines.p.consume.topics": [".."]}, "pipelines.p.consume.topics.0: invalid topic name '..'"),
        ({"pipelines.p.consume.topics": ["a", "b", "a"]}, "pipelines.p.consume.topics.2: duplicate topic 'a'"),
        ({"pipelines.p.consume.group": ""}, "pipelines.p.consume.group: String should have at least 1"),
        ({"pipelines.p.consume.from": "middle"}, "pipelines.p.consume.from: must be 'earliest' or 'latest' (got"),
        ({"pipelines.p.consume.instance_id": "pod 1"}, "pipelines.p.consume.instance_id: invalid consumer group"),
        ({"pipelines.p.call.url": "ftp://x/y"}, "pipelines.p.call.url: unsupported call url 'ftp://x/y'"),
        ({"pipelines.p.call.timeout": "0s"}, "pipelines.p.call.timeout: must be greater than 0"),
        ({"pipelines.p.call.timeout": "5"}, "pipelines.p.call.timeout: a duration needs a unit: ms, s or m"),
        ({"pipelines.p.call.timeout": 5}, "pipelines.p.call.timeout: a duration needs a unit: ms, s or m"),
        ({"pipelines.p.call.timeout": "5h"}, "pipelines.p.call.timeout: invalid duration '5h'"),
        ({"pipelines.p.call.headers": {"Bad Name": "x"}}, "pipelines.p.call.headers.Bad Name: invalid header"),
        ({"pipelines.p.call.headers": {"X-A": "a\r\nb"}}, "pipelines.p.call.headers.X-A: line breaks are not"),
        (
            {"pipelines.p.call.headers": {"Content-Length": "3"}},
            "pipelines.p.call.headers.Content-Length: set by streamcar on each request",
        ),
        ({"pipelines.p.call.status": {"40": "drop"}}, "pipelines.p.call.status.40: an HTTP status code (100-599)"),
        ({"pipelines.p.call.status": {404: "ignore"}}, "pipelines.p.call.status.404: must be 'success', 'drop',"),
        (
            {"pipelines.p.call": {"url": "grpc://svc:50051/pkg.S/M", "status": {"404": "drop"}}},
            "pipelines.p.call.status.404: a gRPC status name is expected",
        ),
        (
            {"pipelines.p.call": {"url": "python:pkg.mod:handle", "status": {"404": "drop"}}},
            "pipelines.p.call.status.404: applies to http and grpc services only",
        ),
        (
            {"pipelines.p.publish": {"topic": "out", "allow": ["out", "i*"]}},
            "pipelines.p.publish.allow.1: 'i*' matches the input topic 'in'",
        ),
        (
            {"pipelines.p.publish": {"topic": "out", "allow": ["*"]}, "pipelines.p.consume.topics": ["x.in"]},
            "pipelines.p.publish.allow.0: '*' matches the input topic 'x.in'",
        ),
        (
            {
                "pipelines.p.publish": {"topic": "out", "allow": ["out-*"]},
                "pipelines.p.dead_letter": {"topic": "out-dlq"},
            },
            "pipelines.p.publish.allow.0: 'out-*' matches the dead-letter topic 'out-dlq'",
        ),
        (
            {"pipelines.p.publish": {"topic": "out", "allow": ["a b"]}},
            "pipelines.p.publish.allow.0: 'a b' is not a topic",
        ),
        ({"pipelines.p.publish": {"topic": "out", "headers": "all"}}, "pipelines.p.publish.headers: must be 'forward'"),
        ({"pipelines.p.call.batch.max_messages": 0}, "pipelines.p.call.batch.max_messages: must be greater"),
        ({"pipelines.p.call.batch.max_messages": 10_001}, "pipelines.p.call.batch.max_messages: must be less"),
        (
            {"pipelines.p.call": {"url": "grpc://svc:50051/pkg.S/M", "batch": {"max_messages": 10}}},
            "pipelines.p.call.batch.max_messages: gRPC takes one record per call; batch needs http or python",
        ),
        ({"pipelines.p.call.tls": {"ca_file": "/ca.pem"}}, "pipelines.p.call.tls: applies to https:// and grpcs://"),
        (
            {"pipelines.p.call": {"url": "grpcs://svc:443/pkg.S/M", "tls": {"cert_file": "/c.pem"}}},
            "pipelines.p.call.tls.key_file: cert_file and key_file go together",
        ),
        ({"pipelines.p.ordering": "keys"}, "pipelines.p.ordering: must be 'key', 'partition' or 'none' (got 'keys')"),
        (
            {"pipelines.p.max_in_flight": 0},
            "pipelines.p.max_in_flight: must be a whole number from 1 to 100,000, or auto",
        ),
        (
            {"pipelines.p.max_in_flight": {"auto": {"min": 9, "max": 4}}},
            "pipelines.p.max_in_flight.auto.min: must be at most max (4)",
        ),
        ({"pipelines.p.rate_limit": "fast"}, "pipelines.p.rate_limit.rate: invalid rate"),
        (
            {"pipelines.p.rate_limit": {"rate": "9/s", "burst": 2}, "pipelines.p.call.batch.max_messages": 5},
            "pipelines.p.rate_limit.burst: must be at least call.batch.max_messages (5)",
        ),
        ({"pipelines.p.max_in_flight": 100_001}, "pipelines.p.max_in_flight: must be a whole number from 1 to 100,000"),
        ({"pipelines.p.max_in_flight": "lots"}, "pipelines.p.max_in_flight: must be a whole number from 1 to 100,000"),
        ({"pipelines.p.retry.attempts": 0}, "pipelines.p.retry.attempts: must be greater than or equal to 1"),
        (
            {"pipelines.p.retry": {"initial_backoff": "1s", "max_backoff": "500ms"}},
            "pipelines.p.retry.max_backoff: must be at least initial_backoff (1s)",
        ),
        ({"pipelines.p.shutdown_timeout": "-1s"}, "pipelines.p.shutdown_timeout: a duration cannot be negative"),
        ({"pipelines.p.commit_interval": "0ms"}, "pipelines.p.commit_interval: must be greater than 0"),
        ({"pipelines.p.publish": {"topic": "a/b"}}, "pipelines.p.publish.topic: invalid topic name 'a/b'"),
        ({"pipelines.p.dead_letter": "dlq"}, "pipelines.p.dead_letter: expected a mapping, got a string"),
    ],
)
def test_invalid_field_is_reported_at_its_path(changes: dict[str, Any], expected: str) -> None:
    problems = problems_of(build(changes))
    assert len(problems) == 1, problems
    assert problems[0].startswith(expected), problems


def test_every_invalid_field_is_reported_at_once() -> None:
    text = build(
        {
            "admin.listen": "nowhere",
            "pipelines.p.call.timeout": "soon",
            "pipelines.p.ordering": "random",
            "pipelines.q": {"consume": {"topics": ["in2"], "group": "g2"}, "call": {"url": "gopher://x"}},
        }
    )
    paths = [line.partition(": ")[0] for line in problems_of(text)]
    assert paths == ["admin.listen", "pipelines.p.call.timeout", "pipelines.p.ordering", "pipelines.q.call.url"]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"pipeline": {}}, "pipeline: unknown key 'pipeline' (did you mean 'pipelines'?)"),
        ({"pipelines.p.call.timout": "1s"}, "pipelines.p.call.timout: unknown key 'timout' (did you mean 'timeout'?)"),
        (
            {"pipelines.p.consume.form": "latest"},
            "pipelines.p.consume.form: unknown key 'form' (did you mean 'from'?)",
        ),
        (
            {"kafka.security": {"protocol": "SSL", "cafile": "x"}},
            "kafka.security.cafile: unknown key 'cafile' (did you mean 'ca_file'?)",
        ),
        ({"admin.zzz": 1}, "admin.zzz: unknown key 'zzz' (expected one of: listen, allowed_hosts, token, peers)"),
    ],
)
def test_unknown_key_is_rejected_with_a_suggestion(changes: dict[str, Any], expected: str) -> None:
    problems = problems_of(build(changes))
    assert any(line.startswith(expected) for line in problems), problems


def test_env_interpolation() -> None:
    text = build(
        {
            "kafka.bootstrap_servers": "${BROKER:-localhost:9092}",
            "kafka.client_id": "id-${NAME}-$$HOME-$${NOT_A_VAR}-a$b",
            "pipelines.p.consume.group": "${EMPTY:-fallback}",
            "pipelines.p.max_in_flight": "${MAX:-256}",
            "pipelines.p.call.headers": {"X-Value": "${VALUE}"},
            "kafka.librdkafka": {"enable.idempotence": "${IDEMPOTENT:-true}"},
        }
    )
    config = parse_config(text, env={"NAME": "n", "EMPTY": "", "VALUE": "a: b # not a comment"})
    assert config.kafka.bootstrap_servers == "localhost:9092"
    assert config.kafka.client_id == "id-n-$HOME-${NOT_A_VAR}-a$b"
    assert config.pipelines["p"].consume.group == "fallback"
    assert config.pipelines["p"].max_in_flight == 256
    assert config.pipelines["p"].call.headers == {"X-Value": "a: b # not a comment"}
    assert config.kafka.librdkafka == {"enable.idempotence": "true"}
    assert parse_config(text, env={"MAX": "12", "NAME": "n", "VALUE": ""}).pipelines["p"].max_in_flight == 12


def test_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMCAR_TEST_GROUP", "from-environ")
    config = parse_config(build({"pipelines.p.consume.group": "${STREAMCAR_TEST_GROUP}"}))
    assert config.pipelines["p"].consume.group == "from-environ"


def test_unset_env_var_is_a_problem_at_its_path() -> None:
    text = build({"kafka.bootstrap_servers": "${KAFKA_BOOTSTRAP}", "pipelines.p.call.headers": {"A": "${A} ${B}"}})
    assert problems_of(text) == [
        "kafka.bootstrap_servers: environment variable KAFKA_BOOTSTRAP is not set",
        "pipelines.p.call.headers.A: environment variable A is not set; environment variable B is not set",
    ]


def test_malformed_reference_is_a_problem() -> None:
    problems = problems_of(build({"kafka.client_id": "${oops"}))
    assert problems == [
        "kafka.client_id: invalid reference '${oops': use ${VAR} or ${VAR:-default} ($$ is a literal $)"
    ]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("250ms", 0.25), ("5s", 5.0), ("1.5s", 1.5), ("2m", 120.0), (" 5ms ", 0.005), ("0s", 0.0), (".5s", 0.5)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (5, "a duration needs a unit: ms, s or m (e.g. 5s)"),
        (1.5, "a duration needs a unit"),
        ("30", "a duration needs a unit"),
        ("-1s", "a duration cannot be negative"),
        ("-5", "a duration cannot be negative"),
        ("5 s", "invalid duration '5 s'"),
        ("1h", "invalid duration '1h'"),
        ("", "invalid duration ''"),
        (None, "a duration must be a string"),
        (True, "a duration must be a string"),
    ],
)
def test_parse_duration_rejects(value: object, message: str) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        parse_duration(value)


def test_parse_duration_accepts_timedelta() -> None:
    assert parse_duration(timedelta(milliseconds=1500)) == 1.5


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.0, "0s"), (0.005, "5ms"), (0.25, "250ms"), (1.5, "1.5s"), (30.0, "30s"), (90.0, "90s"), (120.0, "2m")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@given(st.floats(min_value=0, max_value=1e12, allow_nan=False, allow_infinity=False))
def test_format_then_parse_round_trips(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("http://127.0.0.1:8080/orders", HttpTarget(url="http://127.0.0.1:8080/orders", tls=False)),
        ("https://svc.internal/x?y=1", HttpTarget(url="https://svc.internal/x?y=1", tls=True)),
        ("grpc://localhost:50051/pkg.Service/Method", GrpcTarget("localhost", 50051, "/pkg.Service/Method", False)),
        ("grpcs://[::1]:443/a.b.Svc/Do", GrpcTarget("::1", 443, "/a.b.Svc/Do", True)),
        ("python:my_pkg.handlers:handle", PythonTarget(module="my_pkg.handlers", function="handle")),
    ],
)
def test_call_url_forms(url: str, target: object) -> None:
    config = parse_config(build({"pipelines.p.call.url": url}))
    assert config.pipelines["p"].call.target == target


@pytest.mark.parametrize(
    "url",
    [
        "http://",
        "http:///path",
        "http://host:99999/x",
        "http://host/a b",
        "grpc://localhost/pkg.Service/Method",
        "grpc://localhost:50051/pkg.Service",
        "grpc://localhost:0/pkg.Service/Method",
        "python:pkg.module",
        "python:pkg..module:fn",
        "python:pkg:fn()",
        "localhost:8080",
        "",
    ],
)
def test_invalid_call_urls(url: str) -> None:
    problems = problems_of(build({"pipelines.p.call.url": url}))
    assert len(problems) == 1, problems
    assert problems[0].startswith("pipelines.p.call.url: "), problems


def test_admin_listen_forms() -> None:
    admin = parse_config(build({"admin.listen": "[::1]:0"})).admin
    assert (admin.host, admin.port) == ("::1", 0)
    admin = parse_config(build({"admin.listen": "0.0.0.0:9000"})).admin
    assert (admin.host, admin.port) == ("0.0.0.0", 9000)


def test_sasl_requires_mechanism_username_and_password() -> None:
    problems = problems_of(build({"kafka.security": {"protocol": "SASL_SSL", "username": "u"}}))
    assert problems == [
        "kafka.security.sasl_mechanism: required when protocol is SASL_SSL",
        "kafka.security.password: required when protocol is SASL_SSL",
    ]


def test_security_settings_must_match_the_protocol() -> None:
    security = {"protocol": "PLAINTEXT", "username": "u", "ca_file": "/ca.pem"}
    assert problems_of(build({"kafka.security": security})) == [
        "kafka.security.username: only used with SASL_PLAINTEXT or SASL_SSL, not PLAINTEXT",
        "kafka.security.ca_file: only used with SSL or SASL_SSL, not PLAINTEXT",
    ]
    assert problems_of(build({"kafka.security": {"protocol": "SSL", "cert_file": "/c.pem"}})) == [
        "kafka.security.key_file: cert_file and key_file go together (a client certificate needs its key)"
    ]


def test_ssl_client_config() -> None:
    security = {"protocol": "SSL", "ca_file": "/ca.pem", "cert_file": "/c.pem", "key_file": "/k.pem"}
    client = parse_config(build({"kafka.security": security})).kafka.client_config()
    assert client["security.protocol"] == "SSL"
    assert (client["ssl.ca.location"], client["ssl.certificate.location"], client["ssl.key.location"]) == (
        "/ca.pem",
        "/c.pem",
        "/k.pem",
    )


def test_secrets_never_appear_in_repr_str_or_redacted() -> None:
    text = DESIGN_EXAMPLE.replace("librdkafka: {}", 'librdkafka: {sasl.oauthbearer.client.secret: "${TOKEN}"}')
    text = text.replace("http://127.0.0.1:8080/orders", "https://user:${KAFKA_PASSWORD}@svc/orders")
    config = parse_config(text, env={**DESIGN_ENV, "KAFKA_PASSWORD": "pw-secret"})
    redacted = json.dumps(config.redacted())
    for secret in ("pw-secret", "t0ken-value"):
        assert secret not in repr(config)
        assert secret not in str(config)
        assert secret not in redacted
        assert secret not in "\n".join(config.summary())
    security = config.redacted()["kafka"]["security"]
    assert security["password"] == "***"
    assert security["username"] == "orders"
    assert config.redacted()["pipelines"]["orders"]["call"]["url"] == "https://user:***@svc/orders"
    assert config.kafka.client_config()["sasl.password"] == "pw-secret"


def test_redacted_is_json_ready_and_reparses() -> None:
    config = parse_config(build({"pipelines.p.call.timeout": "1.5s"}))
    dump = json.loads(json.dumps(config.redacted()))
    assert dump["pipelines"]["p"]["call"]["timeout"] == "1.5s"
    assert dump["pipelines"]["p"]["consume"]["from"] == "earliest"
    assert Config.model_validate(dump) == config


@pytest.mark.parametrize("output", ["publish", "dead_letter"])
def test_output_topic_consumed_by_the_same_pipeline_is_a_loop(output: str) -> None:
    problems = problems_of(build({f"pipelines.p.{output}": {"topic": "in"}}))
    assert problems == [f"pipelines.p.{output}.topic: 'in' is also consumed by this pipeline (an endless loop)"]


def test_consumer_group_shared_by_two_pipelines() -> None:
    second = {"consume": {"topics": ["other"], "group": "g"}, "call": {"url": "python:m:f"}}
    problems = problems_of(build({"pipelines.q": second}))
    assert problems == [
        "pipelines.q.consume.group: consumer group 'g' is also used by pipeline 'p'; "
        "they would steal each other's partitions"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("kafka: {bootstrap_servers: [x\n", "cfg.yaml:2:1: invalid YAML: "),
        ("kafka:\n  a: 1\n  a: 2\n", "cfg.yaml:3:3: invalid YAML: duplicate key 'a' (first at line 2)"),
        ("a: {b: ${X}}\n", "cfg.yaml:1:9: invalid YAML: expected ',' or '}', but got '{' (quote values with ${...}"),
        ("- kafka\n", "cfg.yaml: the config must be a mapping with kafka and pipelines, not a list"),
        ("", "cfg.yaml: the config must be a mapping with kafka and pipelines, not empty"),
    ],
)
def test_document_level_errors_are_one_line(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, env={}, source="cfg.yaml")
    assert len(info.value.problems) == 1
    assert info.value.problems[0].startswith(expected), info.value.problems


def test_load_config(tmp_path: Path) -> None:
    path = tmp_path / "streamcar.yaml"
    path.write_text(build(), encoding="utf-8")
    assert load_config(path, env={}).pipelines["p"].consume.group == "g"
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="cannot read the config"):
        load_config(tmp_path)
    path.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path)


def test_load_config_takes_a_path_as_text_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lib.yaml").write_text(build(), encoding="utf-8")
    assert load_config("lib.yaml", env={}) == load_config(tmp_path / "lib.yaml", env={})
    with pytest.raises(ConfigError, match=r"^nope\.yaml: no such config file$"):
        load_config("nope.yaml")


def test_load_config_takes_a_mapping_interpolated_and_reported_as_a_file_would_be(tmp_path: Path) -> None:
    tree = yaml.safe_load(DESIGN_EXAMPLE)
    path = tmp_path / "streamcar.yaml"
    path.write_text(DESIGN_EXAMPLE, encoding="utf-8")
    assert load_config(tree, env=DESIGN_ENV) == load_config(path, env=DESIGN_ENV)
    assert load_config(tree, env=DESIGN_ENV).kafka.security.password.get_secret_value() == SECRET  # type: ignore[union-attr]
    assert tree["kafka"]["security"]["password"] == "${KAFKA_PASSWORD}"  # the caller's mapping is left alone

    bad = build({"pipelines.p.call.timeout": 5, "pipelines.p.ordering": "random", "kafka.client_id": "${NOPE}"})
    path.write_text(bad, encoding="utf-8")
    with pytest.raises(ConfigError) as from_file:
        load_config(path, env={})
    with pytest.raises(ConfigError) as from_mapping:
        load_config(yaml.safe_load(bad), env={})
    assert from_mapping.value.problems == from_file.value.problems
    assert len(from_mapping.value.problems) == 3
    assert str(from_mapping.value) == "the config mapping: invalid config (3 problems)"


def test_load_config_refuses_what_is_neither_a_path_nor_a_mapping() -> None:
    with pytest.raises(TypeError, match="a file path \\(str or Path\\) or a mapping, not list"):
        load_config([MINIMAL])  # type: ignore[arg-type]


def test_durations_from_code_are_seconds_or_timedeltas_and_need_a_unit_in_a_document() -> None:
    assert CallConfig(url="http://svc/x", timeout=2.5).timeout == 2.5
    assert CallConfig(url="http://svc/x", timeout=timedelta(milliseconds=250)).timeout == 0.25  # type: ignore[arg-type]
    assert CallConfig.model_validate({"url": "http://svc/x", "timeout": "250ms"}).timeout == 0.25
    with pytest.raises(ValidationError, match="finite number of seconds"):
        CallConfig(url="http://svc/x", timeout=-1)
    with pytest.raises(ConfigError) as info:
        load_config(yaml.safe_load(build({"pipelines.p.call.timeout": 2.5})), env={})
    assert info.value.problems == ["pipelines.p.call.timeout: a duration needs a unit: ms, s or m (e.g. 5s)"]


def test_consume_from_is_from_in_yaml_and_from_underscore_in_python() -> None:
    consume = ConsumeConfig(topics=["orders"], group="g", from_="latest")
    assert consume.from_ == "latest"
    assert consume.model_dump()["from"] == "latest"
    assert ConsumeConfig.model_validate({"topics": ["orders"], "group": "g", "from": "latest"}) == consume


def test_json_schema() -> None:
    schema = json_schema()
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert schema["title"] == "streamcar configuration"
    defs = schema["$defs"]
    assert "from" in defs["ConsumeConfig"]["properties"]
    assert "from_" not in defs["ConsumeConfig"]["properties"]
    shutdown = defs["PipelineConfig"]["properties"]["shutdown_timeout"]
    assert (shutdown["type"], shutdown["default"]) == ("string", "30s")
    assert "pattern" in shutdown
    assert set(schema["required"]) == {"kafka", "pipelines"}


def test_cli_check_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in DESIGN_ENV.items():
        monkeypatch.setenv(name, value)
    path = tmp_path / "streamcar.yaml"
    path.write_text(DESIGN_EXAMPLE, encoding="utf-8")
    # the example's CA file is on the machine it was written for, not here: only --static accepts it
    assert main(["check", "-c", str(path)]) == 2
    assert (
        capsys.readouterr().err
        == "streamcar: kafka.security.ca_file: cannot read /etc/kafka/ca.pem: No such file or directory\n"
    )
    assert main(["check", "--static", "-c", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out == "orders: orders -> http://127.0.0.1:8080/orders (group orders-service, ordering key)\n"
    assert err == ""


@pytest.mark.parametrize(
    ("text", "count"),
    [
        (build({"pipelines.p.call.timeout": "5", "pipelines.p.ordering": "x", "admin.listen": "y"}), 3),
        ("kafka: [\n", 1),
    ],
)
def test_cli_check_reports_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, count: int) -> None:
    path = tmp_path / "streamcar.yaml"
    path.write_text(text, encoding="utf-8")
    assert main(["check", "-c", str(path)]) == 2
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert out == ""
    assert len(lines) == count
    assert all(line.startswith("streamcar: ") for line in lines)
    assert "Traceback" not in err


def test_cli_check_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "-c", str(tmp_path / "nope.yaml")]) == 2
    assert capsys.readouterr().err == f"streamcar: {tmp_path / 'nope.yaml'}: no such config file\n"


def test_cli_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out) == json_schema()


def test_exactly_once_refuses_settings_that_break_it_each_by_its_path_and_what_it_breaks() -> None:
    exactly = {"pipelines.p.publish": {"topic": "out", "exactly_once": True}, "pipelines.p.commit_interval": "2s"}
    text = build(
        {
            **exactly,
            "kafka.librdkafka": {
                "acks": "1",
                "enable.idempotence": False,
                "isolation.level": "read_uncommitted",
                "transactional.id": "mine",
                "transaction.timeout.ms": 3000,
            },
        }
    )
    found = problems_of(text)
    assert any(p.startswith("kafka.librdkafka.acks:") and "acks=all" in p for p in found), found
    assert any(p.startswith("kafka.librdkafka.enable.idempotence:") for p in found), found
    assert any(p.startswith("kafka.librdkafka.isolation.level:") and "aborted" in p for p in found), found
    assert any(p.startswith("kafka.librdkafka.transactional.id:") for p in found), found
    timeout = [p for p in found if p.startswith("kafka.librdkafka.transaction.timeout.ms:")]
    assert timeout, found
    assert "commit_interval (2000 ms)" in timeout[0]
    assert "aborts" in timeout[0]


def test_exactly_once_accepts_settings_that_keep_it_and_without_it_they_are_the_user_s_business() -> None:
    keep = {"acks": "all", "enable.idempotence": True, "transaction.timeout.ms": 30000}
    config = parse_config(
        build({"pipelines.p.publish": {"topic": "out", "exactly_once": True}, "kafka.librdkafka": keep})
    )
    publish = config.pipelines["p"].publish
    assert publish is not None
    assert publish.exactly_once
    parse_config(build({"pipelines.p.publish": {"topic": "out"}, "kafka.librdkafka": {"acks": "1"}}))


def test_exactly_once_keeps_its_transactions_within_what_the_brokers_allow_by_default() -> None:
    """Issue 30, finding 4: ``commit_interval: 5m`` passed check, then run died with INVALID_TRANSACTION_TIMEOUT
    (four intervals, 1,200,000 ms, above the brokers' default transaction.max.timeout.ms of 900,000)."""
    exactly = {"pipelines.p.publish": {"topic": "out", "exactly_once": True}}
    config = parse_config(build({**exactly, "pipelines.p.commit_interval": "5m"}))
    assert transaction_timeout_ms({}, config.pipelines["p"].commit_interval) == 900_000
    assert transaction_timeout_ms({}, 1.0) == 10_000
    assert transaction_timeout_ms({}, 10.0) == 40_000
    found = problems_of(build({**exactly, "pipelines.p.commit_interval": "10m"}))
    assert len(found) == 1, found
    assert found[0].startswith("pipelines.p.commit_interval: 600000 ms is too long for publish.exactly_once"), found
    assert "at most 450000 ms" in found[0]
    # the user's own timeout: the brokers may allow more than their default, so it is a warning
    mine = {"transaction.timeout.ms": 1_500_000}
    config = parse_config(build({**exactly, "pipelines.p.commit_interval": "10m", "kafka.librdkafka": mine}))
    (warning,) = config.warnings()
    assert warning.startswith("kafka.librdkafka.transaction.timeout.ms: 1500000 ms is above the brokers' default")


QUEUE = {
    "pipelines.p.consume": {"topics": ["in"], "share_group": "q"},
    "pipelines.p.ordering": "none",
    "pipelines.p.dead_letter": {"topic": "dlq"},
}


def test_queue_mode_takes_a_share_group_instead_of_a_group() -> None:
    config = parse_config(build(QUEUE))
    consume = config.pipelines["p"].consume
    assert (consume.queue, consume.group, consume.group_id) == (True, None, "q")
    assert config.summary() == ["p: in -> http://svc:8080/x (share group q, ordering none)"]
    assert config.warnings() == []


def test_queue_mode_refuses_what_a_share_group_cannot_do_each_by_its_path() -> None:
    text = build(
        {
            "pipelines.p.consume": {"topics": ["in"], "share_group": "q", "instance_id": "pod-1"},
            "pipelines.p.publish": {"topic": "out", "exactly_once": True},
            "pipelines.p.retry": {"attempts": 10},
        }
    )
    assert problems_of(text) == [
        "pipelines.p.ordering: must be none with consume.share_group (got key): a share group keeps no order",
        "pipelines.p.consume.instance_id: applies to a consumer group (consume.group), not to a share group",
        "pipelines.p.publish.exactly_once: is not available with consume.share_group: a share group commits no offsets",
        "pipelines.p.dead_letter: is required with consume.share_group: a record the broker stops redelivering"
        " (share.delivery.count.limit) would otherwise be lost",
        "pipelines.p.retry.attempts: must be at most 9 with consume.share_group: each attempt is a delivery, a"
        " broker delivers a record at most 10 times, and one is kept for a last attempt cut short (got 10)",
    ]


def test_a_group_and_a_share_group_are_one_or_the_other() -> None:
    both = build({"pipelines.p.consume": {"topics": ["in"], "group": "g", "share_group": "q"}})
    assert problems_of(both) == ["pipelines.p.consume.share_group: give group or share_group, not both"]
    neither = build({"pipelines.p.consume": {"topics": ["in"]}})
    assert problems_of(neither) == ["pipelines.p.consume.group: required, but missing (or share_group, for a queue)"]


def test_check_warns_of_a_call_timeout_not_below_the_record_lock() -> None:
    config = parse_config(build({**QUEUE, "pipelines.p.call": {"url": "http://svc:8080/x", "timeout": "45s"}}))
    assert config.warnings() == [
        "pipelines.p.call.timeout (45s) is not below the share group's record lock (30s,"
        " group.share.record.lock.duration.ms): a call that long is redelivered to another member while it runs"
    ]


def test_cli_check_prints_the_warning_on_stderr_and_still_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "streamcar.yaml"
    path.write_text(build({**QUEUE, "pipelines.p.call": {"url": "http://svc:8080/x", "timeout": "1m"}}))
    assert main(["check", "--static", "-c", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out == "p: in -> http://svc:8080/x (share group q, ordering none)\n"
    assert err.startswith("warning: pipelines.p.call.timeout (1m) is not below the share group's record lock (30s,")
