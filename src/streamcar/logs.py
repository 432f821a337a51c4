"""Logging: one line per notable event, as text for a terminal or one JSON object per line for a log pipeline.

Notable events carry an ``event`` name and their subject as fields (``pipeline``, ``topic``, ``partition``,
``offset``, ``kind``...), passed as ``extra=``; the JSON format writes them as keys, the console format appends
nothing (the message already says it). librdkafka's own log lines (``%4|...|FAIL|...`` on stderr otherwise) are
routed through the ``streamcar.librdkafka`` logger, so they take the same format.

Secrets never reach the output: :class:`Redactor` sits on the handler and runs :mod:`streamcar.redact` over every
message, field and traceback.

Two set-ups: ``streamcar run`` (and :func:`streamcar.run`) owns the process and puts one handler on the root logger
(:func:`configure_logging`); an embedded :func:`streamcar.serve` is a guest in its host program's logging
(:func:`embedded_logging`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any, Literal

from streamcar.redact import Redactor as Scrubber

LogFormat = Literal["console", "json"]
LEVELS = ("debug", "info", "warning", "error")

# Attributes every LogRecord has; anything else on a record came through ``extra=`` and is a field.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class Redactor(logging.Filter):
    """Replaces secrets in every record that passes the handler it is attached to (see :mod:`streamcar.redact`)."""

    def __init__(self, secrets: Iterable[str] | Scrubber = ()) -> None:
        super().__init__()
        self._scrubber = secrets if isinstance(secrets, Scrubber) else Scrubber(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        self._scrubber.add(secrets)

    def scrub(self, text: str) -> str:
        return self._scrubber.scrub(text)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        record.msg, record.args = self.scrub(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.scrub(record.exc_text)
        for name, value in vars(record).items():
            if name not in _STANDARD and isinstance(value, str):
                setattr(record, name, self.scrub(value))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ms), level, logger, message, the record's fields, error."""

    def format(self, record: logging.LogRecord) -> str:
        seconds = int(record.created)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        entry: dict[str, Any] = {
            "time": f"{stamp}.{int((record.created - seconds) * 1000):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in vars(record).items():
            if name not in _STANDARD and not name.startswith("_") and name not in entry:
                entry[name] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["error"] = record.exc_text
        return json.dumps(entry, default=str, ensure_ascii=False)


def resolve(
    format: str | None, level: str | None, *, configured: tuple[str, str] | None = None
) -> tuple[LogFormat, str]:
    """The format and level in force: the arguments (the command line), else $STREAMCAR_LOG_FORMAT and
    $STREAMCAR_LOG_LEVEL, else ``configured`` (the config file's ``log``), else console and info."""
    default_format, default_level = configured or ("console", "info")
    chosen = (format or os.environ.get("STREAMCAR_LOG_FORMAT") or default_format).lower()
    named = (level or os.environ.get("STREAMCAR_LOG_LEVEL") or default_level).lower()
    return ("json" if chosen == "json" else "console"), (named if named in LEVELS else "info")


def configure_logging(
    format: str | None = None,
    level: str | None = None,
    *,
    configured: tuple[str, str] | None = None,
    secrets: Iterable[str] | Scrubber = (),
) -> None:
    """Send every logger's records to stderr in the format and at the level :func:`resolve` picks, with
    ``secrets`` (a :class:`streamcar.redact.Redactor`, or the config's secret values) and anything shaped like a
    credential redacted."""
    chosen, named = resolve(format, level, configured=configured)
    handler = _stderr_handler(chosen, secrets)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(named.upper())
    logging.captureWarnings(True)
    for noisy in ("aiohttp.access", "grpc._cython"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _stderr_handler(chosen: LogFormat, secrets: Iterable[str] | Scrubber) -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if chosen == "json" else logging.Formatter(CONSOLE_FORMAT))
    handler.addFilter(Redactor(secrets))
    return handler


CONSOLE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class Throttle:
    """One log line per condition per ``interval``: a condition that hits every record (a topic that refuses
    everything, a service that drops every connection) must cost one line, not one per record.

    :meth:`allow` says whether a line for ``key`` may go out now and how many were held back since the last one
    (for the line to say so). Keys are conditions, not records: few, but capped anyway.
    """

    MAX_KEYS = 1000

    def __init__(self, interval: float = 10.0, clock: Any = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._last: dict[object, list[float | int]] = {}  # key -> [time of the last line, lines held back]

    def allow(self, key: object) -> int | None:
        """None: hold this line back; else the number held back since the last line for ``key``."""
        now = self._clock()
        entry = self._last.get(key)
        if entry is not None and now - entry[0] < self.interval:
            entry[1] += 1
            return None
        if entry is None and len(self._last) >= self.MAX_KEYS:
            self._last.clear()
        held = 0 if entry is None else int(entry[1])
        self._last[key] = [now, 0]
        return held


def held_back(count: int, interval: float) -> str:
    """The tail of a throttled line: ``" (and 41 more like it in the last 10s)"``, or nothing."""
    return f" (and {count:,} more like it in the last {interval:g}s)" if count else ""


LOGGER = "streamcar"
"""Every streamcar logger is this one or below it (``streamcar.pipeline``, ``streamcar.librdkafka``...)."""


class _Scrubbing(logging.Handler):
    """Writes nothing: redacts each record of the streamcar loggers in place, on its way up to the handlers of the
    host program (the root logger's), which streamcar does not own and so cannot put a filter on. A filter on the
    ``streamcar`` logger itself would not do: a logger's filters see only what is logged on that very logger, not
    the records of ``streamcar.pipeline`` and the others passing through it."""

    def emit(self, record: logging.LogRecord) -> None:
        pass


class _Guest:
    """What the embedded sidecars of this process share: one scrubbing handler, with every sidecar's secrets (a
    secret redacted after its sidecar stopped costs nothing), and the default handler, when there is one."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0
        self.scrubber = Scrubber()
        self.scrubbing = _Scrubbing()
        self.scrubbing.addFilter(Redactor(self.scrubber))
        self.default: logging.Handler | None = None
        self.saved = (logging.NOTSET, True)  # the streamcar logger's level and propagate before the default


_GUEST = _Guest()


@contextlib.contextmanager
def embedded_logging(configured: tuple[str, str], secrets: Iterable[str]) -> Iterator[None]:
    """streamcar's logging while an embedded sidecar runs (:func:`streamcar.serve`), undone when the last one
    stops.

    Records go to the ``streamcar`` logger hierarchy, with secrets redacted before any handler sees them. If the
    host program set logging up (the root logger has a handler), they reach its handlers and take its levels and
    formats: streamcar adds no output of its own. Otherwise streamcar writes them to stderr as ``streamcar run``
    would (``configured``: the config's ``log`` format and level, under $STREAMCAR_LOG_FORMAT/_LEVEL), from the
    ``streamcar`` logger only: the host's own loggers stay as they are. Which of the two is decided when the
    first embedded sidecar of the process starts.
    """
    guest = _GUEST
    logger = logging.getLogger(LOGGER)
    with guest.lock:
        guest.scrubber.add(secrets)
        if guest.users == 0:
            logger.addHandler(guest.scrubbing)  # first: the default handler below sees scrubbed records
            if not logging.getLogger().handlers:
                chosen, named = resolve(None, None, configured=configured)
                guest.default = _stderr_handler(chosen, guest.scrubber)
                guest.saved = (logger.level, logger.propagate)
                logger.addHandler(guest.default)
                logger.setLevel(named.upper())
                # the host may set logging up later: streamcar's lines must not then come out twice
                logger.propagate = False
        guest.users += 1
    try:
        yield
    finally:
        with guest.lock:
            guest.users -= 1
            if guest.users == 0:
                logger.removeHandler(guest.scrubbing)
                if guest.default is not None:
                    logger.removeHandler(guest.default)
                    guest.default = None
                    logger.setLevel(guest.saved[0])
                    logger.propagate = guest.saved[1]
