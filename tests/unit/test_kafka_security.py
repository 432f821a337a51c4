"""Authentication and TLS failures in one line: what librdkafka says, and what streamcar says instead."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from confluent_kafka import KafkaError as RdKafkaError
from confluent_kafka import KafkaException

from streamcar.devkafka import free_ports
from streamcar.errors import KafkaError
from streamcar.kafka.security import AccessWatch, check_access, creation_failure, explain

SCRAM = {"sasl.username": "orders", "sasl.mechanism": "SCRAM-SHA-512", "ssl.ca.location": "/etc/kafka/ca.pem"}
BAD_PASSWORD = (
    "sasl_ssl://10.0.0.7:9093/bootstrap: SASL authentication error: Authentication failed during authentication "
    "due to invalid credentials with SASL mechanism SCRAM-SHA-512 (after 312ms in state AUTH_REQ)"
)
UNTRUSTED = (
    "sasl_ssl://10.0.0.7:9093/bootstrap: SSL handshake failed: error:0A000086:SSL routines::certificate verify "
    "failed: broker certificate could not be verified, verify that ssl.ca.location is correctly configured or "
    "root CA certificates are installed (install ca-certificates package) (after 5ms in state SSL_HANDSHAKE)"
)


def test_a_rejected_password_names_the_user_the_mechanism_and_the_broker() -> None:
    error = RdKafkaError(RdKafkaError._AUTHENTICATION, BAD_PASSWORD)
    assert explain(error, {**SCRAM, "sasl.password": "s3cret"}) == (
        "kafka: authentication failed for user 'orders' (SCRAM-SHA-512) at 10.0.0.7:9093: invalid credentials"
    )


def test_other_sasl_failures_keep_the_brokers_words() -> None:
    error = RdKafkaError(
        RdKafkaError._AUTHENTICATION,
        "sasl_ssl://b-2:9093/2: SASL handshake failed: "
        "Unsupported SASL mechanism: broker's supported mechanisms: PLAIN",
    )
    assert explain(error, SCRAM) == (
        "kafka: authentication failed for user 'orders' (SCRAM-SHA-512) at b-2:9093: "
        "SASL handshake failed: Unsupported SASL mechanism: broker's supported mechanisms: PLAIN"
    )


def test_an_untrusted_certificate_names_the_ca_file_the_user_configured() -> None:
    error = RdKafkaError(RdKafkaError._SSL, UNTRUSTED)
    assert explain(error, SCRAM) == (
        "kafka: TLS handshake with 10.0.0.7:9093 failed: certificate verify failed "
        "(not signed by a CA in ca_file /etc/kafka/ca.pem)"
    )
    assert explain(error, {}) == (
        "kafka: TLS handshake with 10.0.0.7:9093 failed: certificate verify failed "
        "(not signed by a CA in the system's CA certificates (set kafka.security.ca_file))"
    )
    other = RdKafkaError(RdKafkaError._SSL, "ssl://h:9093/bootstrap: SSL handshake failed: unexpected eof")
    assert explain(other, SCRAM) == "kafka: TLS handshake with h:9093 failed: unexpected eof"


@pytest.mark.parametrize(
    "code", [RdKafkaError._TRANSPORT, RdKafkaError._ALL_BROKERS_DOWN, RdKafkaError.UNKNOWN_TOPIC_OR_PART]
)
def test_anything_else_is_not_a_security_failure(code: int) -> None:
    assert explain(RdKafkaError(code, "127.0.0.1:9092/bootstrap: Connection refused"), SCRAM) is None


def test_the_watch_keeps_the_first_failure_and_no_password() -> None:
    watch = AccessWatch({**SCRAM, "sasl.password": "s3cret"})
    watch(RdKafkaError(RdKafkaError._TRANSPORT, "Connection refused"))
    watch.raise_failure()  # nothing to raise yet
    watch(RdKafkaError(RdKafkaError._AUTHENTICATION, BAD_PASSWORD))
    watch(RdKafkaError(RdKafkaError._SSL, UNTRUSTED))
    watch(RdKafkaError(RdKafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
    assert watch.all_down
    with pytest.raises(KafkaError, match="authentication failed for user 'orders'"):
        watch.raise_failure()
    assert "s3cret" not in repr(vars(watch))


def test_a_ca_file_librdkafka_cannot_read_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    with pytest.raises(KafkaError, match=f"^kafka: cannot read ca_file {missing}: it does not exist"):
        check_access({"bootstrap.servers": "127.0.0.1:9", "security.protocol": "SSL", "ssl.ca.location": str(missing)})
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(KafkaError, match=f"^kafka: cannot use ca_file {garbage}: "):
        check_access({"bootstrap.servers": "127.0.0.1:9", "security.protocol": "SSL", "ssl.ca.location": str(garbage)})


def test_other_refusals_to_create_a_client_keep_librdkafkas_words() -> None:
    exc = KafkaException(RdKafkaError(RdKafkaError._INVALID_ARG, "Failed to create consumer: No such setting"))
    assert creation_failure(exc, {}) == "kafka: No such setting"


def test_nobody_listening_is_not_a_failure_but_no_answer_and_said_at_once() -> None:
    (port,) = free_ports(1)
    started = time.monotonic()
    assert check_access({"bootstrap.servers": f"127.0.0.1:{port}"}, timeout=20) is False
    assert time.monotonic() - started < 10  # every broker down: no need to wait out the timeout
