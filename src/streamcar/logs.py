"""Logging: one line per notable event, as text for a terminal or one JSON object per line for a log pipeline.

Notable events carry an ``event`` name and their subject as fields (``pipeline``, ``topic``, ``partition``,
``offset``, ``kind``...), passed as ``extra=``; the JSON format writes them as keys, the console format appends
nothing (the message already says it). librdkafka's own log lines (``%4|...|FAIL|...`` on stderr otherwise) are
routed through the ``streamcar.librdkafka`` logger, so they take the same format.

Secrets never reach the output: :class:`Redactor` sits on the handler and runs :mod:`streamcar.redact` over every
message, field and traceback.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Iterable
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
    handler = logging.StreamHandler(sys.stderr)
    if chosen == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(Redactor(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(named.upper())
    logging.captureWarnings(True)
    for noisy in ("aiohttp.access", "grpc._cython"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


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
