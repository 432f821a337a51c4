"""The building blocks of the configuration models: field types, the cross-field problem report, the base
model, and how secrets are masked when a config is shown."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, PlainValidator, StringConstraints, WithJsonSchema
from pydantic_core import PydanticCustomError

PROBLEMS_ERROR = "streamcar_problems"

SubPath = tuple[str | int, ...]


def _raise_problems(found: Iterable[tuple[SubPath, str]]) -> None:
    problems = list(found)
    if problems:
        summary = "; ".join(f"{'.'.join(map(str, sub))}: {message}" for sub, message in problems)
        raise PydanticCustomError(PROBLEMS_ERROR, "{summary}", {"summary": summary, "problems": problems})


def _matching(pattern: str, what: str, rule: str) -> AfterValidator:
    regex = re.compile(pattern)

    def check(value: str) -> str:
        if not regex.fullmatch(value) or value in (".", ".."):
            raise ValueError(f"invalid {what} {value!r}: {rule}")
        return value

    return AfterValidator(check)


_TOPIC, _PIPELINE = r"[a-zA-Z0-9._-]{1,249}", r"[A-Za-z0-9][A-Za-z0-9_.-]*"
TopicName = Annotated[
    str,
    _matching(_TOPIC, "topic name", "use 1 to 249 of a-z A-Z 0-9 . _ -"),
    WithJsonSchema({"type": "string", "pattern": f"^{_TOPIC}$"}),
]
InstanceId = Annotated[
    str,
    _matching(_TOPIC, "consumer group instance id", "use 1 to 249 of a-z A-Z 0-9 . _ -"),
    WithJsonSchema({"type": "string", "pattern": f"^{_TOPIC}$"}),
]
PipelineName = Annotated[
    str,
    _matching(_PIPELINE, "pipeline name", "use letters, digits, _ . - and start with a letter or digit"),
    WithJsonSchema({"type": "string", "pattern": f"^{_PIPELINE}$"}),
]
NonEmptyStr = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]

_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# Headers that frame an HTTP/1.1 request or manage its connection: the sidecar's client sets them itself.
_CONNECTION_HEADERS = frozenset(
    {"content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "te", "trailer", "expect"}
)
# Names whose values are credentials in librdkafka settings and HTTP headers; over-redacting is harmless.
_SECRET_NAME = re.compile(r"pass|secret|token|auth|cookie|credential|key$|\.pem$|jaas|oauthbearer\.config", re.I)
REDACTED = "***"


def _librdkafka_value(value: object) -> str | int | float | bool:
    if isinstance(value, str | int | float | bool):
        return value
    raise ValueError("a librdkafka setting must be a string, number or boolean")


LibrdkafkaValue = Annotated[
    str | int | float | bool,
    PlainValidator(_librdkafka_value),
    WithJsonSchema({"type": ["string", "integer", "number", "boolean"]}),
]


_CREDENTIAL_QUERY = re.compile(r"(?i)(^|&)([^=&]*(?:pass|secret|token|auth|key|sig)[^=&]*=)[^&]*")


def _redact_url(url: str) -> str:
    """``url`` with the password of its userinfo and the values of credential-named query parameters masked."""
    parts = urlsplit(url)
    if parts.password is not None:
        host = parts.netloc.rpartition("@")[2]
        parts = parts._replace(netloc=f"{parts.username}:{REDACTED}@{host}")
    if parts.query:
        parts = parts._replace(query=_CREDENTIAL_QUERY.sub(rf"\1\2{REDACTED}", parts.query))
    return urlunsplit(parts)


def _mask(settings: dict[str, Any]) -> dict[str, Any]:
    return {name: REDACTED if _SECRET_NAME.search(name) else value for name, value in settings.items()}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, serialize_by_alias=True, use_attribute_docstrings=True)


_TOPIC_GLOB = re.compile(r"[A-Za-z0-9._\-*?\[\]!]{1,249}")
_GRPC_NAMES = """OK CANCELLED UNKNOWN INVALID_ARGUMENT DEADLINE_EXCEEDED NOT_FOUND ALREADY_EXISTS PERMISSION_DENIED
RESOURCE_EXHAUSTED FAILED_PRECONDITION ABORTED OUT_OF_RANGE UNIMPLEMENTED INTERNAL UNAVAILABLE DATA_LOSS
UNAUTHENTICATED"""
GRPC_CODES = frozenset(_GRPC_NAMES.split())


def _status_problems(status: Mapping[str, str], kind: str) -> Iterator[tuple[str, str]]:
    """call.status keys that do not name a status of the service's protocol."""
    for code in status:
        if kind == "http" and not (code.isdigit() and len(code) == 3 and 100 <= int(code) <= 599):
            yield code, "an HTTP status code (100-599) is expected"
        elif kind == "grpc" and code.upper() not in GRPC_CODES:
            yield code, f"a gRPC status name is expected ({', '.join(sorted(GRPC_CODES))})"
        elif kind == "python":
            yield code, "applies to http and grpc services only (a handler returns its own Reply)"
