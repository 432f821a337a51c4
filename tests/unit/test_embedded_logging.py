"""An embedded sidecar's logging (``streamcar.serve``): a guest in the host program's logging when the program set
it up, streamcar's own lines on stderr (from the ``streamcar`` loggers only) when it did not; secrets redacted
either way, and everything as it was once the last sidecar stops."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator

import pytest

from streamcar.logs import embedded_logging

SECRET = "tok-9Qx2-very-secret"


class Collect(logging.Handler):
    """A host program's handler."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def root_with(*handlers: logging.Handler, level: int = logging.WARNING) -> Iterator[None]:
    """The root logger as a program left it: with ``handlers`` only (pytest's own set aside meanwhile)."""
    root = logging.getLogger()
    saved, saved_level = root.handlers[:], root.level
    for handler in saved:
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    try:
        yield
    finally:
        for handler in handlers:
            root.removeHandler(handler)
        for handler in saved:
            root.addHandler(handler)
        root.setLevel(saved_level)


@pytest.fixture(autouse=True)
def no_log_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STREAMCAR_LOG_FORMAT", raising=False)
    monkeypatch.delenv("STREAMCAR_LOG_LEVEL", raising=False)


def streamcar_state() -> tuple[list[logging.Handler], int, bool]:
    logger = logging.getLogger("streamcar")
    return logger.handlers[:], logger.level, logger.propagate


def test_a_host_that_set_logging_up_gets_streamcars_records_redacted_and_no_output_of_ours(
    capsys: pytest.CaptureFixture[str],
) -> None:
    host = Collect()
    before = streamcar_state()
    with root_with(host, level=logging.INFO), embedded_logging(("json", "debug"), [SECRET]):
        logging.getLogger("streamcar.pipeline").warning("the service said %s", f"Bearer {SECRET}")
        logging.getLogger("streamcar").info("streamcar running", extra={"detail": f"token {SECRET}"})
        logging.getLogger("streamcar.pipeline").debug("below the host's level")
        logging.getLogger("app").info("the host's own line")
    assert [(r.name, r.getMessage()) for r in host.records] == [
        ("streamcar.pipeline", "the service said Bearer ***"),
        ("streamcar", "streamcar running"),
        ("app", "the host's own line"),
    ]
    assert host.records[1].detail == "token ***"  # type: ignore[attr-defined]
    assert capsys.readouterr().err == ""  # the host's handlers write, with the host's levels: not streamcar's
    assert streamcar_state() == before


def test_without_host_logging_streamcar_writes_its_own_lines_to_stderr_and_leaves_the_host_loggers_alone(
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = streamcar_state()
    with root_with(), embedded_logging(("console", "info"), [SECRET]):
        logging.getLogger("streamcar.pipeline").info("assigned %s", "orders[0]")
        logging.getLogger("streamcar.kafka.consumer").warning("refused %s", SECRET)
        logging.getLogger("streamcar").debug("not at info")
        logging.getLogger("app").info("the host's own info line")
        assert logging.getLogger("app").getEffectiveLevel() == logging.WARNING
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2, lines
    assert lines[0].endswith(" INFO streamcar.pipeline: assigned orders[0]")
    assert lines[1].endswith(" WARNING streamcar.kafka.consumer: refused ***")
    assert streamcar_state() == before


def test_the_default_takes_the_configs_format_and_level_under_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with root_with(), embedded_logging(("json", "warning"), []):
        logging.getLogger("streamcar.pipeline").info("quiet at warning")
        logging.getLogger("streamcar.pipeline").warning("dead-lettered", extra={"event": "dead-letter"})
    (line,) = capsys.readouterr().err.splitlines()
    entry = json.loads(line)
    assert (entry["level"], entry["logger"], entry["event"]) == ("warning", "streamcar.pipeline", "dead-letter")

    monkeypatch.setenv("STREAMCAR_LOG_LEVEL", "debug")
    with root_with(), embedded_logging(("json", "warning"), []):
        logging.getLogger("streamcar.pipeline").debug("shown at debug")
    assert json.loads(capsys.readouterr().err)["message"] == "shown at debug"


def test_two_embedded_sidecars_share_one_handler_until_the_last_stops(capsys: pytest.CaptureFixture[str]) -> None:
    before = streamcar_state()
    with root_with():
        with embedded_logging(("console", "info"), ["first-secret"]):
            with embedded_logging(("console", "info"), ["second-secret"]):
                logging.getLogger("streamcar").info("both: first-secret second-secret")
            logging.getLogger("streamcar").info("one left")
            assert len(logging.getLogger("streamcar").handlers) == 2  # the scrubbing one and the default
        logging.getLogger("streamcar").warning("none left")  # no handler anywhere: Python's last resort
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" streamcar: ")[-1] for line in lines] == ["both: *** ***", "one left", "none left"]
    assert lines[2] == "none left"
    assert streamcar_state() == before
