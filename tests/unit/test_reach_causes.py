"""Why a tool cannot reach Kafka, from what librdkafka reported per broker: one cause in words per condition."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError as RdKafkaError

from streamcar.tools._reach import NO_ANSWER, REFUSED, ReachWatch, cause, servers_of


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        ("Connect to ipv4#127.0.0.1:9999 failed: Connection refused", REFUSED),
        (
            "Failed to resolve 'no-such-host.invalid:9092': Name or service not known",
            "cannot resolve the host name 'no-such-host.invalid': Name or service not known (is the address right?)",
        ),
        (
            "SSL handshake failed: Disconnected: SSL connection closed by peer: connecting to a PLAINTEXT broker"
            " listener?",
            "the TLS handshake found a listener that does not speak TLS (this client speaks SSL; is the port a"
            " PLAINTEXT listener?)",
        ),
        (  # the same, on a busy machine (a CI run): the listener closed before librdkafka read its answer
            "Disconnected: SSL connection closed by peer",
            "the TLS handshake found a listener that does not speak TLS (this client speaks SSL; is the port a"
            " PLAINTEXT listener?)",
        ),
        (
            "Disconnected while requesting ApiVersion: might be caused by incorrect security.protocol configuration"
            " (connecting to a SSL listener?) or broker version is < 0.10",
            "the broker expects TLS (this client speaks SSL; set kafka.security.protocol, or use its PLAINTEXT port)",
        ),
        ("Connection setup timed out in state CONNECT", NO_ANSWER),
        ("Connect to ipv4#10.0.0.1:9092 failed: Network is unreachable", "Network is unreachable"),
    ],
)
def test_each_connection_error_has_its_cause(error: str, expected: str) -> None:
    assert cause(error, "ssl") == expected


def test_a_broker_that_hung_up_without_a_word_suggests_the_security_protocol() -> None:
    assert "this client speaks PLAINTEXT: see kafka.security" in cause(None, "plaintext")


def test_the_watch_keeps_the_first_error_per_broker_without_librdkafkas_decorations() -> None:
    watch = ReachWatch({"bootstrap.servers": "a:1,b:2", "sasl.password": "s3cret"})
    watch(
        RdKafkaError(
            RdKafkaError._TRANSPORT,
            "a:1/bootstrap: Connect to ipv4#1.2.3.4:1 failed: Connection refused (after 0ms in state CONNECT)",
        )
    )
    watch(RdKafkaError(RdKafkaError._TRANSPORT, "a:1/bootstrap: something later (after 3ms in state UP)"))
    watch(
        RdKafkaError(
            RdKafkaError._RESOLVE,
            "sasl_ssl://b:2/bootstrap: Failed to resolve 'b:2': Temporary failure in name resolution"
            " (after 1ms in state CONNECT)",
        )
    )
    watch(RdKafkaError(RdKafkaError._ALL_BROKERS_DOWN, "2/2 brokers are down"))
    assert watch.errors() == {
        "a:1": "Connect to ipv4#1.2.3.4:1 failed: Connection refused",
        "b:2": "Failed to resolve 'b:2': Temporary failure in name resolution",
    }
    assert watch.all_down
    assert watch.failure is None
    assert "s3cret" not in repr(vars(watch))


def test_bootstrap_addresses_in_every_form() -> None:
    config = {"bootstrap.servers": "127.0.0.1:9092, [::1]:9093,SSL://kafka.example:9094,junk"}
    assert servers_of(config) == [("127.0.0.1", 9092), ("::1", 9093), ("kafka.example", 9094)]
