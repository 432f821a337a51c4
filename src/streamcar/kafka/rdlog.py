"""librdkafka's own log, one line per condition per interval.

librdkafka logs every failed attempt. A broker that refuses connections (a wrong port, a broker down) is a line
per reconnect per client, and each pipeline has a consumer and a producer: one pipeline wrote 365 ERROR lines in
16 s, burying the one line that said what was wrong. :class:`KafkaLog` is the ``logger`` every client gets. It
passes each line to the ``streamcar.librdkafka`` logger once per condition per interval, with the count of the
lines held back since, so the condition is still visible and its rate with it.

A condition is the line without what changes from one attempt to the next: the client's name (the consumer and
the producer failing alike are one condition) and librdkafka's ``(after 0ms in state CONNECT, 3 identical
error(s) suppressed)`` tail. Different brokers, or different errors, are different conditions.

What the operator acts on is elsewhere: the consumer's error callback marks the pipeline's Kafka condition on
``/readyz`` and ``/status``.
"""

from __future__ import annotations

import logging
import re

from confluent_kafka import KafkaError as RdKafkaError

from streamcar.logs import Throttle, held_back

INTERVAL = 10.0  # seconds: one line per condition per interval, as the engine's own conditions
_THREAD = re.compile(r"^\[thrd:[^\]]*\]:\s*")
_ATTEMPT = re.compile(r"\s*\(after \d+ms[^)]*\)")
_SUPPRESSED = re.compile(r",?\s*\d+ identical error\(s\) suppressed")

_shared = Throttle(INTERVAL)  # every client of the process: one line for a condition they all meet


def condition(text: str) -> str:
    """The part of a librdkafka log line that names the condition, not the attempt."""
    return _ATTEMPT.sub("", _SUPPRESSED.sub("", _THREAD.sub("", text))).strip()


class KafkaLog:
    """A ``logger`` for confluent-kafka clients: librdkafka calls ``log(level, "%s [%s] %s", facility, client,
    text)`` from the client's poll."""

    def __init__(self, logger: logging.Logger | None = None, throttle: Throttle | None = None) -> None:
        self._logger = logger or logging.getLogger("streamcar.librdkafka")
        self._throttle = throttle or _shared

    def log(self, level: int, fmt: str, *args: object) -> None:
        if not self._logger.isEnabledFor(level):
            return
        if len(args) != 3:  # not the shape librdkafka uses: pass it on as it is
            self._logger.log(level, fmt, *args)
            return
        facility, client, text = (str(arg) for arg in args)
        held = self._throttle.allow((level, facility, condition(text)))
        if held is None:
            return
        self._logger.log(level, "%s [%s] %s%s", facility, client, text, held_back(held, self._throttle.interval))


class Reachability:
    """Why a client cannot reach the cluster, in words an operator acts on.

    A failed metadata request says only ``Local: Broker transport failure``; the client's error callback heard
    before it which broker failed and how (``127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed:
    Connection refused``). Called on the client's thread: its error callback and its probes share it.
    """

    CODES = frozenset({RdKafkaError._TRANSPORT, RdKafkaError._RESOLVE})

    def __init__(self) -> None:
        self._last: str | None = None

    def note(self, error: RdKafkaError) -> None:
        """From the error callback: remember a connection failure."""
        if error.code() in self.CODES:
            self._last = condition(error.str())

    def explain(self, failure: str | None) -> str | None:
        """A probe's outcome: None when it answered (the failure is forgotten), else the failure with its cause."""
        if failure is None:
            self._last = None
            return None
        return failure if self._last is None else f"{failure}: {self._last}"
