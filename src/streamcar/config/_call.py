"""How a pipeline calls its service: the target URL, the timeout, batches, TLS and the reply mapping."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import Field, field_validator, model_validator

from streamcar.config._durations import Duration
from streamcar.config._fields import (
    _CONNECTION_HEADERS,
    _HEADER_NAME,
    NonEmptyStr,
    SubPath,
    _Model,
    _raise_problems,
    _redact_url,
    _status_problems,
)
from streamcar.config._sizes import ByteSize
from streamcar.config._targets import CallTarget, GrpcTarget, HttpTarget, parse_target


class BatchConfig(_Model):
    """Batch delivery: several messages per call, in the JSON envelope (HTTP) or as a list (Python)."""

    max_messages: int = Field(default=1, ge=1, le=10_000)
    """The most messages per call. 1 sends each message on its own; more switches to batch delivery (the JSON
    envelope over HTTP, a ``list[Event]`` for a Python handler; gRPC takes one message per call)."""
    max_wait: Duration = 0.005
    """How long a batch waits for more messages after its first one before it goes out anyway."""


class ServiceTlsConfig(_Model):
    """TLS to the service (https:// and grpcs:// targets); without it the system's CAs verify the service."""

    ca_file: Path | None = None
    """PEM bundle of the CAs that may sign the service's certificate."""
    cert_file: Path | None = None
    """Client certificate (PEM) for mutual TLS; needs key_file."""
    key_file: Path | None = None
    """The client certificate's private key (PEM)."""
    server_name: NonEmptyStr | None = None
    """The name the service's certificate must carry, when it differs from the URL's host."""

    @model_validator(mode="after")
    def _pair(self) -> Self:
        if (self.cert_file is None) != (self.key_file is None):
            missing = "key_file" if self.key_file is None else "cert_file"
            _raise_problems([((missing,), "cert_file and key_file go together (mutual TLS needs both)")])
        return self


class CallConfig(_Model):
    """The service a pipeline calls for each message (or batch), and how its answers are read."""

    url: str
    """Where the service is: ``http(s)://host:port/path``, ``grpc(s)://host:port/pkg.Service/Method`` or
    ``python:pkg.module:function`` (a handler in the sidecar's own process)."""
    timeout: Duration = Field(default=5.0, gt=0)
    """How long one call may take, from waiting for a connection to the last byte of the reply. A call that
    takes longer fails as ``timeout`` and is retried."""
    headers: dict[str, str] = Field(default_factory=dict, repr=False)
    """Sent with every call (HTTP headers; gRPC metadata, names lowercased). The values of headers named like
    credentials (``Authorization``, ``X-Api-Key``...) are redacted from every output."""
    batch: BatchConfig = BatchConfig()
    tls: ServiceTlsConfig | None = None
    max_response_bytes: ByteSize = Field(default=16 * 1024 * 1024, ge=1024)
    """The most a reply may hold: head and body, decompressed (HTTP), or the response message (gRPC). A bigger
    reply fails the call as ``bad-reply``, checked as the bytes arrive."""
    fanout: bool = False
    """gRPC: the method answers a ``streamcar.v1.Records`` message (docs/records.proto), zero or more records to
    publish, instead of the bytes of one (HTTP and Python say so in each reply)."""
    status: dict[str, Literal["success", "drop", "retry", "dead-letter"]] = Field(default_factory=dict)
    """What a status means, overriding the default mapping: HTTP codes (``{"404": drop, "409": success}``) or
    gRPC status names (``{NOT_FOUND: drop}``). A ``Streamcar-Result`` reply header still wins."""

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parse_target(value.strip())
        return value.strip()

    @field_validator("status", mode="before")
    @classmethod
    def _status(cls, value: Any) -> Any:
        # YAML reads 404 as a number, and people write dead_letter too
        if isinstance(value, dict):
            return {
                str(code).strip(): result.strip().lower().replace("_", "-") if isinstance(result, str) else result
                for code, result in value.items()
            }
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, headers: dict[str, str]) -> dict[str, str]:
        _raise_problems(
            ((name,), "invalid header name" if not _HEADER_NAME.fullmatch(name) else "line breaks are not allowed")
            for name, value in headers.items()
            if not _HEADER_NAME.fullmatch(name) or "\r" in value or "\n" in value
        )
        return headers

    @model_validator(mode="after")
    def _fits_target(self) -> Self:
        target = self.target
        problems: list[tuple[SubPath, str]] = []
        if self.batch.max_messages > 1 and target.kind == "grpc":
            problems.append((("batch", "max_messages"), "gRPC takes one record per call; batch needs http or python"))
        if self.fanout and target.kind != "grpc":
            problems.append((("fanout",), "applies to grpc:// services only (HTTP and Python replies say it each)"))
        if self.tls is not None and not (isinstance(target, HttpTarget | GrpcTarget) and target.tls):
            problems.append((("tls",), "applies to https:// and grpcs:// services only"))
        problems.extend((("status", code), problem) for code, problem in _status_problems(self.status, target.kind))
        if target.kind == "http":
            problems.extend(
                (("headers", name), "set by streamcar on each request (it frames and keeps the connection)")
                for name in self.headers
                if name.lower() in _CONNECTION_HEADERS
            )
        _raise_problems(problems)
        return self

    @property
    def target(self) -> CallTarget:
        return parse_target(self.url)

    @property
    def target_text(self) -> str:
        """The URL with any password in it replaced by ``***``."""
        return _redact_url(self.url)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            yield name, _redact_url(value) if name == "url" else value
