"""What the engine hands a service (:class:`Event`) and what it takes back (:class:`Reply`).

Every call mode speaks these two types: the HTTP and gRPC callers translate the wire protocol into them, and an
in-process Python handler receives and returns them directly.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from streamcar.failures import Kind

Headers = tuple[tuple[str, bytes | None], ...]


class Result(StrEnum):
    SUCCESS = "success"
    DROP = "drop"
    RETRY = "retry"
    DEAD_LETTER = "dead-letter"

    @classmethod
    def named(cls, text: object) -> Result | None:
        """The result a service named, in any case (``dead_letter`` and ``deadletter`` too); None for anything else."""
        return _RESULT_NAMES.get(str(text or "").strip().lower())


_RESULT_NAMES = {
    **{result.value: result for result in Result},
    "dead_letter": Result.DEAD_LETTER,
    "deadletter": Result.DEAD_LETTER,
}


class KeepKey:
    """Sentinel: the reply record keeps the input record's key."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "KEEP_KEY"


KEEP_KEY: Final = KeepKey()


@dataclass(frozen=True, slots=True)
class Event:
    """One Kafka record as the service sees it."""

    topic: str
    partition: int
    offset: int
    timestamp: int  # ms since the epoch; -1 when the record has none
    key: bytes | None
    value: bytes | None
    headers: Headers = ()

    @property
    def idempotency_key(self) -> str:
        """``{topic}-{partition}-{offset}``: the same for every redelivery of this record, so services can dedupe."""
        return f"{self.topic}-{self.partition}-{self.offset}"

    def header(self, name: str) -> bytes | None:
        """The last value of header ``name`` (Kafka headers are case-sensitive), or None."""
        for key, value in reversed(self.headers):
            if key == name:
                return value
        return None


@dataclass(frozen=True, slots=True)
class Record:
    """One record a fanned-out reply publishes (:meth:`Reply.records`)."""

    value: bytes | None
    key: bytes | KeepKey | None = KEEP_KEY
    """The input's key unless set (None: a null key)."""
    headers: Headers = ()
    topic: str | None = None
    """``publish.topic`` unless set (another topic must be in ``publish.allow``)."""
    content_type: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.headers, tuple):  # a dict of str or bytes values, as Reply.success takes
            object.__setattr__(self, "headers", _headers(self.headers))


MAX_FANOUT = 10_000
"""The most records one reply may fan out to. A larger fan-out is dead-lettered (kind ``publish``), none of it
published: a record in the sidecar's hands takes about 1 KB, a reply's records stay there until every one is
acknowledged, and a reply of a million small records took 905 MiB."""


def too_many_records(count: int) -> str:
    """Why a reply fanning out to ``count`` records (over :data:`MAX_FANOUT`) is dead-lettered."""
    return f"the reply fans out to {count:,} records, over the {MAX_FANOUT:,} one reply may publish; none was published"


@dataclass(frozen=True, slots=True)
class Reply:
    """The service's answer for one event. Build it with the class methods."""

    result: Result
    value: bytes | None = None
    key: bytes | KeepKey | None = KEEP_KEY
    headers: Headers = ()
    content_type: str | None = None
    retry_after: float | None = None  # seconds the service asked us to wait (Retry-After)
    error: str | None = None
    error_kind: str | None = None  # the dead-letter header streamcar-error-kind: http-status, timeout, ...
    topic: str | None = None
    """Where a success's value goes instead of ``publish.topic`` (it must be in ``publish.allow``)."""
    fanout: tuple[Record, ...] | None = None
    """A success that publishes these records instead of one value (:meth:`records`)."""
    refusal: str | None = None
    """Set by streamcar's HTTP and gRPC callers when the service refused the call the way a wrong setup does (a
    wrong path or method, credentials, a content type: ``HTTP 404 on POST /typo``). One such message is poison;
    nearly every message refused the same way is a setup error, and the pipeline pauses (see
    :mod:`streamcar.engine.breaker`)."""
    overload: bool = False
    """The service said it is overloaded (HTTP 429 or 503, gRPC RESOURCE_EXHAUSTED or UNAVAILABLE, or a handler's
    ``Reply.retry(overload=True)``): an adaptive ``max_in_flight`` backs off (see :mod:`streamcar.engine.limit`)."""

    @classmethod
    def success(
        cls,
        value: bytes | None = None,
        *,
        key: bytes | KeepKey | None = KEEP_KEY,
        headers: Headers | dict[str, bytes | str] | None = None,
        content_type: str | None = None,
        topic: str | None = None,
    ) -> Reply:
        """Done; ``value`` (if any) is published to the pipeline's ``publish.topic``, or to ``topic`` (one that
        ``publish.allow`` lists; any other dead-letters the message, kind ``route``)."""
        return cls(
            Result.SUCCESS, value=value, key=key, headers=_headers(headers), content_type=content_type, topic=topic
        )

    @classmethod
    def records(cls, records: Iterable[Record | bytes]) -> Reply:
        """Done once every one of ``records`` is published (none: done, nothing published), each to its own
        topic, with its own key and headers. A crash before they are all acknowledged calls the service again for
        the input: records may repeat, never go missing. If one is refused for good, the input is dead-lettered
        (kind ``publish`` or ``route``); see docs/delivery.md, "Fan-out", for what is published then. At most
        :data:`MAX_FANOUT` records: a reply with more is dead-lettered, kind ``publish``."""
        made = tuple(r if isinstance(r, Record) else Record(r) for r in records)
        return cls(Result.SUCCESS, fanout=made)

    @classmethod
    def drop(cls) -> Reply:
        """Done, nothing published."""
        return cls(Result.DROP)

    @classmethod
    def retry(
        cls, *, after: float | None = None, error: str | None = None, kind: str = Kind.RETRY, overload: bool = False
    ) -> Reply:
        """Try again later (after at least ``after`` seconds); dead-lettered once the attempts are spent.
        ``overload``: the service is overloaded, so an adaptive ``max_in_flight`` calls it less."""
        error = error or "the service asked for a retry"
        return cls(Result.RETRY, retry_after=after, error=error, error_kind=kind, overload=overload)

    @classmethod
    def dead_letter(cls, reason: str, *, kind: str = Kind.REJECTED) -> Reply:
        """Never going to work: send the record to the dead-letter topic now."""
        return cls(Result.DEAD_LETTER, error=reason, error_kind=kind)


def text_bytes(text: str) -> bytes:
    """``text`` as UTF-8, with the bytes a ``surrogateescape`` decoding kept back restored (a reply header that was
    not UTF-8 comes back as the very bytes the service sent), and any other unencodable character escaped."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace")


def _headers(headers: Headers | dict[str, bytes | str] | None) -> Headers:
    if not headers:
        return ()
    if isinstance(headers, dict):
        return tuple((k, text_bytes(v) if isinstance(v, str) else v) for k, v in headers.items())
    return tuple(headers)
