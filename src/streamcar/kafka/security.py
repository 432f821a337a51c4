"""Authentication and TLS failures, told once and clearly instead of retried forever.

librdkafka treats a rejected password or an untrusted broker certificate like a broker that is down: it reports
the error through ``error_cb`` (``_AUTHENTICATION``, ``_SSL``) and reconnects, a SASL attempt every few hundred
milliseconds and a TLS handshake every 50 ms, forever. Meanwhile a blocking call (``list_topics``, a commit)
just times out. Neither fixes itself, so streamcar checks access before it consumes anything: a client's first
answer is either metadata (fine), a security failure (stop, with one line naming the user, the mechanism or the
CA file -- never the password), or "every broker is down" (not ours to judge: the caller waits for Kafka as usual).
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError as RdKafkaError
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from streamcar.errors import KafkaError

SECURITY_FAILURES = frozenset(
    {RdKafkaError._AUTHENTICATION, RdKafkaError.SASL_AUTHENTICATION_FAILED, RdKafkaError._SSL}
)
IDENTITY = ("sasl.username", "sasl.mechanism", "sasl.mechanisms", "ssl.ca.location")
"""The client settings :func:`explain` names (a copy of these is all a watcher keeps: no password)."""


def identity(config: Mapping[str, Any]) -> dict[str, Any]:
    """The settings of ``config`` that :func:`explain` names, and nothing else (no password)."""
    return {key: config[key] for key in IDENTITY if key in config}


_BROKER = re.compile(r"^(?:[a-z_]+://)?(?P<broker>[^/\s]+)/(?:bootstrap|\d+): ")
_ELAPSED = re.compile(r"\s*\(after \d+ms in state [A-Z_]+\)\s*$")
_OPENSSL_CODE = re.compile(r"error:[0-9A-Fa-f]+:[^:]*:[^:]*:")
_SASL_REASON = re.compile(r"due to (?P<reason>.+?) with SASL mechanism \S+$")


def explain(error: RdKafkaError, config: Mapping[str, Any]) -> str | None:
    """One line for an authentication or TLS failure (None for any other error).

    ``config`` is the client's librdkafka configuration: the line names its user, mechanism and CA file, never
    its password.
    """
    if error.code() not in SECURITY_FAILURES:
        return None
    text = _ELAPSED.sub("", error.str())
    broker = None
    if match := _BROKER.match(text):
        broker = match["broker"]
        text = text[match.end() :]
    if error.code() == RdKafkaError._SSL:
        handshake = f"kafka: TLS handshake with {broker}" if broker else "kafka: TLS handshake"
        reason = _OPENSSL_CODE.sub("", text.removeprefix("SSL handshake failed: "))
        if "certificate verify failed" in reason:
            # librdkafka's own hint names ssl.ca.location; the user configured ca_file
            ca_file = config.get("ssl.ca.location")
            trusted = f"ca_file {ca_file}" if ca_file else "the system's CA certificates (set kafka.security.ca_file)"
            return f"{handshake} failed: certificate verify failed (not signed by a CA in {trusted})"
        return f"{handshake} failed: {reason}"
    user = config.get("sasl.username")
    mechanism = config.get("sasl.mechanism") or config.get("sasl.mechanisms") or "SASL"
    who = f"for user {user!r} ({mechanism})" if user else f"({mechanism})"
    where = f" at {broker}" if broker else ""
    reason = text.removeprefix("SASL authentication error: ")
    if match := _SASL_REASON.search(reason):
        reason = match["reason"]
    return f"kafka: authentication failed {who}{where}: {reason}"


class AccessWatch:
    """An ``error_cb`` that remembers the first authentication or TLS failure, and whether every broker is down.

    librdkafka calls it from whichever call serves the client's queue (``poll``, ``consume``, ``flush``). It does
    not raise: confluent-kafka re-raises a callback's exception from that call, but then leaks a reference to the
    client, which is never destroyed and whose threads still run when the process exits -- and OpenSSL's exit
    handler, freeing what a TLS handshake on such a thread is using, crashes the process.
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        self._identity = identity(config)
        self._lock = threading.Lock()
        self.failure: str | None = None
        self.all_down = False

    def __call__(self, error: RdKafkaError) -> None:
        explained = explain(error, self._identity)
        with self._lock:
            if explained is not None and self.failure is None:
                self.failure = explained
            elif error.code() == RdKafkaError._ALL_BROKERS_DOWN:
                self.all_down = True

    def raise_failure(self) -> None:
        if self.failure is not None:
            raise KafkaError(self.failure)


def await_access(client: Any, watch: AccessWatch, timeout: float) -> bool:
    """Wait for ``client``'s first answer: True once it got metadata; False when every broker is down or nothing
    answered within ``timeout``. An authentication or TLS failure ends the wait too: it is in ``watch.failure``,
    and the caller raises it (:meth:`AccessWatch.raise_failure`) once it has let go of ``client``.

    ``client`` is a Consumer (not yet assigned: its ``poll`` must return no record), a Producer or an AdminClient
    whose ``error_cb`` is ``watch``. The metadata timeout starts short and doubles, so a failure is seen after one
    or two attempts rather than after a broker's worth of reconnects, while a slow broker still gets to answer.

    Why not raise here: a traceback holds this frame, and the frame the client. The client would then live as long
    as the exception, perhaps to the interpreter's exit, with its threads still handshaking while OpenSSL's exit
    handler frees what they use: a crash (SIGSEGV) after the one line was printed.
    """
    deadline = time.monotonic() + timeout
    wait = 0.05
    down_rounds = 0
    while True:
        try:
            client.list_topics(timeout=wait)
        except KafkaException:
            pass
        else:
            return True
        client.poll(0)  # serves error_cb
        if watch.failure is not None:
            return False
        # "every broker is down" can be served before the TLS or SASL error that brought the broker down: only a
        # second round (one more metadata wait later) without one makes it an unreachable cluster
        down_rounds = down_rounds + 1 if watch.all_down else 0
        if down_rounds >= 2 or time.monotonic() >= deadline:
            return False
        wait = min(wait * 2, 1.0, max(deadline - time.monotonic(), 0.01))


def check_access(config: Mapping[str, Any], timeout: float = 10.0) -> bool:
    """:func:`await_access` with a short-lived admin client of ``config`` (its librdkafka logs silenced: the one
    line this raises says it all); :class:`~streamcar.errors.KafkaError` when authentication or TLS failed."""
    settings = {key: value for key, value in config.items() if key not in ("error_cb", "logger")}
    settings["log_level"] = 0
    watch = AccessWatch(settings)
    settings["error_cb"] = watch
    try:
        client = AdminClient(settings)
    except KafkaException as exc:
        raise KafkaError(creation_failure(exc, settings)) from None
    answered = await_access(client, watch, timeout)
    del client  # destroyed here, its threads joined, before the failure (if any) is raised
    watch.raise_failure()
    return answered


_FILES = {"ssl.ca.location": "ca_file", "ssl.certificate.location": "cert_file", "ssl.key.location": "key_file"}


def creation_failure(exc: KafkaException, config: Mapping[str, Any]) -> str:
    """One line for a client librdkafka refused to create (most often: a TLS file it cannot read)."""
    error = exc.args[0] if exc.args else None
    text = error.str() if isinstance(error, RdKafkaError) else str(exc)
    text = _OPENSSL_CODE.sub("", re.sub(r"^Failed to create \w+( client)?: ", "", text))
    for setting, field in _FILES.items():
        if text.startswith(f"{setting} failed"):
            path = config.get(setting)
            if path and not os.access(path, os.R_OK):
                return f"kafka: cannot read {field} {path}: it does not exist or is not readable"
            return f"kafka: cannot use {field} {path}: {text.split(': ', 1)[-1]}"
    return f"kafka: {text}"
