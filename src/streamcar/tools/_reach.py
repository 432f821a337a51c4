"""Reaching Kafka from a tool: an answer within seconds, or one line naming the address tried and the likely cause.

librdkafka treats a cluster it cannot reach as a condition to outlast: it reconnects forever, and a blocking call
(``list_topics``, a group's offsets) returns ``Local: Timed out`` once its own timeout (15 s here) has passed. The
sidecar is right to wait (Kafka may come back; :mod:`streamcar.kafka.security` leaves "every broker is down" to
it), but a tool has a person waiting for it, and what librdkafka saw in its first round of connections already
says why it failed. So :func:`await_reach` watches a new client's first answer, as
:func:`~streamcar.kafka.security.await_access` does, and ends the wait early:

* metadata came: Kafka answers, the tool goes on;
* an authentication or TLS failure (:class:`~streamcar.kafka.security.AccessWatch`): its line, as before;
* every broker is down, twice in a row: the line says why, per bootstrap address, from the errors librdkafka
  reported for it (:func:`cause`): *connection refused*, *cannot resolve the host name*, a TLS client at a
  listener that does not speak TLS; and when librdkafka said nothing but that the broker went down (a plaintext
  client at a TLS listener: the broker closes the connection on the first request), a TCP connection of our own
  tells "nothing listens there" from "a listener that hung up on us";
* no word at all within :data:`REACH` seconds: if not even a TCP connection to a bootstrap address opens within
  :data:`PROBE` seconds, the address does not answer (a firewall dropping packets, a host that is down);
  otherwise something listens there but does not answer as Kafka does (another service on that port, or a
  listener waiting for a TLS handshake this client does not start). A broker answers its first metadata
  request in milliseconds, even a busy one, so a longer wait would mostly wait for librdkafka's own 10 s
  ``api.version.request.timeout.ms`` to say the same.

A refused or unresolvable address is told in a fraction of a second; the slowest verdict comes after
``REACH + PROBE`` seconds.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka import KafkaError as RdKafkaError
from confluent_kafka import KafkaException

from streamcar.kafka.security import AccessWatch

REACH = 2.5
"""Seconds a client may take for its first answer."""
PROBE = 0.5
"""Seconds a TCP connection of our own may take to open."""

REFUSED = "connection refused (is a broker running there? 'streamcar kafka status' shows the local one)"
NO_ANSWER = "no answer: connecting timed out (is the host up, and does a firewall let the port through?)"
_BROKER = re.compile(r"^(?:[a-z_]+://)?(?P<broker>[^/\s]+)/(?:bootstrap|\d+): ")
_ELAPSED = re.compile(r"\s*\(after \d+ms in state [A-Z_]+\)\s*$")
_CONNECT_FAILED = re.compile(r"^Connect to \S+ failed: ")


class ReachWatch(AccessWatch):
    """An :class:`AccessWatch` that also keeps, per broker address, the first connection error librdkafka
    reported for it (the errors of a broker that is down; they name no secret)."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        self._errors: dict[str, str] = {}
        self._errors_lock = threading.Lock()

    def __call__(self, error: RdKafkaError) -> None:
        super().__call__(error)
        if error.code() in (RdKafkaError._TRANSPORT, RdKafkaError._RESOLVE):
            text = _ELAPSED.sub("", error.str())
            broker = match["broker"] if (match := _BROKER.match(text)) else ""
            with self._errors_lock:
                self._errors.setdefault(broker, text[match.end() :] if match else text)

    def errors(self) -> dict[str, str]:
        """broker address -> the first connection error reported for it."""
        with self._errors_lock:
            return dict(self._errors)


def servers_of(config: Mapping[str, Any]) -> list[tuple[str, int]]:
    """The (host, port) of each bootstrap address of a client ``config`` (``[::1]:9092`` and ``SSL://h:9093``
    forms included); an address that is none of these is left out."""
    found = []
    for server in str(config.get("bootstrap.servers", "")).split(","):
        host, _, port = server.strip().rpartition("://")[2].rpartition(":")
        if host and port.isdigit():
            found.append((host.removeprefix("[").removesuffix("]"), int(port)))
    return found


def cause(error: str | None, protocol: str) -> str:
    """Why an address is unreachable, from the first connection error librdkafka reported for it (None: it
    reported only that the broker is down, after a connection our own probe could open: see the module)."""
    if error is None:
        return (
            f"the broker closed the connection on the first request (a listener of another security protocol? "
            f"this client speaks {protocol.upper()}: see kafka.security)"
        )
    lowered = error.lower()
    if "connection refused" in lowered:
        return REFUSED
    if lowered.startswith("failed to resolve"):
        host = error.split("'")[1].rpartition(":")[0] if error.count("'") >= 2 else "?"
        reason = error.rpartition(": ")[2]
        return f"cannot resolve the host name {host!r}: {reason} (is the address right?)"
    # librdkafka's hint when it reads the plaintext listener's answer; on a busy machine the listener, having
    # read the ClientHello as a request it cannot parse, closes first, and librdkafka says only that (a TLS
    # listener refusing us would have sent an alert)
    if "connecting to a plaintext broker listener" in lowered or "ssl connection closed by peer" in lowered:
        return (
            f"the TLS handshake found a listener that does not speak TLS (this client speaks {protocol.upper()}; "
            "is the port a PLAINTEXT listener?)"
        )
    if "connecting to a ssl listener" in lowered:
        return (
            f"the broker expects TLS (this client speaks {protocol.upper()}; set kafka.security.protocol, or use "
            "its PLAINTEXT port)"
        )
    if "timed out" in lowered:
        return NO_ANSWER
    return _CONNECT_FAILED.sub("", error)


def opens(servers: Sequence[tuple[str, int]], timeout: float = PROBE) -> list[tuple[str, int]]:
    """The addresses a TCP connection opens to within ``timeout`` seconds (all tried at once). Name resolution
    is part of it and may block past the timeout: each runs on a daemon thread that is left behind if it must."""
    opened: list[tuple[str, int]] = []
    lock = threading.Lock()

    def attempt(address: tuple[str, int]) -> None:
        try:
            with socket.create_connection(address, timeout=timeout), lock:
                opened.append(address)
        except OSError:
            pass

    threads = [threading.Thread(target=attempt, args=(a,), daemon=True, name="reach-probe") for a in servers]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(deadline - time.monotonic(), 0))
    with lock:
        return list(opened)


def await_reach(client: Any, watch: ReachWatch, config: Mapping[str, Any], reach: float = REACH) -> str | None:
    """Wait for ``client``'s first answer (see the module); None once it came, else the line to fail with, within
    ``reach + PROBE`` seconds. The caller raises it after letting go of ``client`` (why: ``await_access``)."""
    deadline = time.monotonic() + reach
    wait = 0.05
    down_rounds = 0
    address = str(config.get("bootstrap.servers", ""))
    while True:
        try:
            client.list_topics(timeout=wait)
        except KafkaException:
            pass
        else:
            return None
        client.poll(0)  # serves error_cb
        if watch.failure is not None:
            return watch.failure
        # "every broker is down" can come before the TLS or SASL error that brought a broker down: only a second
        # round without one makes it an unreachable cluster (as in await_access)
        down_rounds = down_rounds + 1 if watch.all_down else 0
        if down_rounds >= 2:
            return f"cannot reach Kafka at {address}: {_down(watch, config)}"
        if time.monotonic() >= deadline:
            if not opens(servers_of(config)):
                return f"cannot reach Kafka at {address}: {NO_ANSWER}"
            return (
                f"cannot reach Kafka at {address}: a connection opens, but nothing answers as Kafka does within "
                f"{reach:g}s (is it a Kafka listener? one of another security protocol?)"
            )
        wait = min(wait * 2, 1.0, max(deadline - time.monotonic(), 0.01))


def _down(watch: ReachWatch, config: Mapping[str, Any]) -> str:
    """Why every broker is down: one cause, or a cause per address when they differ."""
    protocol = str(config.get("security.protocol", "plaintext"))
    servers = servers_of(config)
    errors = watch.errors()
    silent = [s for s in servers if _key(s) not in errors]
    open_now = set(opens(silent)) if silent else set()
    causes: dict[str, str] = {}
    for server in servers:
        error = errors.get(_key(server))
        if error is None and server not in open_now:
            causes[_key(server)] = REFUSED  # librdkafka named nothing, and nothing takes a connection there now
        else:
            causes[_key(server)] = cause(error, protocol)
    if not causes:  # addresses librdkafka reads but we do not: its own words
        return next(iter(errors.values()), "every broker is down")
    if len(set(causes.values())) == 1:
        return next(iter(causes.values()))
    return "; ".join(f"{where}: {why}" for where, why in causes.items())


def _key(server: tuple[str, int]) -> str:
    host, port = server
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
