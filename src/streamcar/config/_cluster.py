"""The cluster's side of the configuration: how to reach Kafka (and as whom), and the admin server."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit, urlunsplit

from pydantic import BeforeValidator, Field, SecretStr, WithJsonSchema, field_validator, model_validator

from streamcar.config._fields import (
    LibrdkafkaValue,
    NonEmptyStr,
    SubPath,
    _Model,
    _raise_problems,
)
from streamcar.config._targets import split_host_port


class SecurityConfig(_Model):
    """How streamcar authenticates to and encrypts its connections to Kafka; without it, PLAINTEXT."""

    protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
    """``security.protocol``: SSL encrypts, SASL authenticates, SASL_SSL does both."""
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    """Required with SASL_PLAINTEXT and SASL_SSL."""
    username: str | None = None
    """The SASL user; required with SASL_PLAINTEXT and SASL_SSL."""
    password: SecretStr | None = None
    """The SASL password, e.g. ``${KAFKA_PASSWORD}``; required with SASL. Never logged, never in /status."""
    ca_file: Path | None = None
    """PEM bundle of the CAs that may sign the brokers' certificates (SSL, SASL_SSL); default: the system's."""
    cert_file: Path | None = None
    """Client certificate (PEM) for mutual TLS; needs key_file."""
    key_file: Path | None = None
    """The client certificate's private key (PEM)."""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        sasl, tls = self.protocol.startswith("SASL_"), self.protocol.endswith("SSL")
        found: list[tuple[SubPath, str]] = []
        for name in ("sasl_mechanism", "username", "password"):
            value = getattr(self, name)
            text = value.get_secret_value() if isinstance(value, SecretStr) else value
            if sasl and not (text or "").strip():
                found.append(((name,), f"required when protocol is {self.protocol}"))
            elif not sasl and value is not None:
                found.append(((name,), f"only used with SASL_PLAINTEXT or SASL_SSL, not {self.protocol}"))
        for name in ("ca_file", "cert_file", "key_file"):
            if not tls and getattr(self, name) is not None:
                found.append(((name,), f"only used with SSL or SASL_SSL, not {self.protocol}"))
        if tls and (self.cert_file is None) != (self.key_file is None):
            missing = "key_file" if self.key_file is None else "cert_file"
            found.append(((missing,), "cert_file and key_file go together (a client certificate needs its key)"))
        _raise_problems(found)
        return self


class KafkaConfig(_Model):
    """The Kafka cluster every pipeline of this sidecar reads from and writes to."""

    bootstrap_servers: str
    """Comma-separated host:port list, e.g. ``${KAFKA_BOOTSTRAP:-127.0.0.1:9092}``."""
    client_id: NonEmptyStr = "streamcar"
    """``client.id`` of the consumers (the producers add ``-<pipeline>``); it also names the transactional ids
    of exactly-once pipelines."""
    security: SecurityConfig | None = None
    librdkafka: dict[str, LibrdkafkaValue] = Field(default_factory=dict, repr=False)
    """Raw librdkafka settings, applied last (they win). A setting only a consumer (or only a producer) knows
    goes to that kind of client only; values of settings named like credentials are redacted."""

    @field_validator("bootstrap_servers")
    @classmethod
    def _servers(cls, value: str) -> str:
        servers = [server.strip() for server in value.split(",")]
        if not any(servers):
            raise ValueError("at least one broker host:port is required")
        bad = []
        for server in servers:
            try:
                split_host_port(server)
            except ValueError as exc:
                bad.append(str(exc))
        if bad:
            raise ValueError("; ".join(bad))
        return ",".join(servers)

    def client_config(self) -> dict[str, str | int | float | bool]:
        """librdkafka settings for a consumer, producer or admin client of this cluster."""
        config: dict[str, str | int | float | bool] = {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": self.client_id,
        }
        if (security := self.security) is not None:
            optional = {
                "sasl.mechanism": security.sasl_mechanism,
                "sasl.username": security.username,
                "sasl.password": security.password.get_secret_value() if security.password else None,
                "ssl.ca.location": security.ca_file,
                "ssl.certificate.location": security.cert_file,
                "ssl.key.location": security.key_file,
            }
            config["security.protocol"] = security.protocol
            config.update({name: str(value) for name, value in optional.items() if value is not None})
        config.update(self.librdkafka)
        return config


def admin_base_url(text: str) -> str:
    """A sidecar's admin base URL, checked and ending in ``/`` (``http://10.0.0.7:8095/``; a path is a prefix,
    e.g. behind a proxy). Raises ValueError saying what is wrong."""
    text = text.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{text!r}: an http:// or https:// URL is expected")
    if not parts.hostname:
        raise ValueError(f"{text!r} has no host")
    if parts.username is not None or parts.password is not None:
        # not echoed: the URL holds a credential
        raise ValueError("a token goes in the token field, not in the URL (it would show wherever the URL does)")
    if parts.query or parts.fragment:
        raise ValueError(f"{text!r}: the admin base URL takes no query or fragment")
    netloc = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    netloc += f":{port}" if port is not None else ""
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/") + "/", "", ""))


class PeerConfig(_Model):
    """Another sidecar whose /status the overview shows."""

    url: str
    """Its admin base URL, e.g. ``http://orders-0.orders:8095``."""
    token: SecretStr | None = Field(default=None, repr=False)
    """Its ``admin.token``, if it has one (e.g. ``${ORDERS_ADMIN_TOKEN}``); never shown."""

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return admin_base_url(value)


def _peer(value: Any) -> Any:
    return {"url": value} if isinstance(value, str) else value


_PEER_SCHEMA = {
    "anyOf": [
        {"type": "string", "description": "the peer's admin base URL"},
        {
            "type": "object",
            "properties": {
                "url": {"type": "string", "description": "the peer's admin base URL"},
                "token": {"type": "string", "description": "the peer's admin.token; never shown"},
            },
            "required": ["url"],
            "additionalProperties": False,
        },
    ]
}
Peer = Annotated[PeerConfig, BeforeValidator(_peer), WithJsonSchema(_PEER_SCHEMA)]


class AdminConfig(_Model):
    """The admin HTTP server: ``/healthz``, ``/readyz``, ``/metrics``, ``/status`` and the status page."""

    listen: str = "127.0.0.1:8095"
    """host:port of /healthz, /readyz, /metrics, /status and the status page; port 0 picks a free port."""
    allowed_hosts: list[NonEmptyStr] | None = None
    """Host header values (a name, or name:port) the admin server answers; others get 403, which stops DNS
    rebinding. Default: IP addresses, localhost, this machine's names and $POD_NAME / $HOSTNAME."""
    token: SecretStr | None = Field(default=None, repr=False)
    """A bearer token for every endpoint but /healthz and /readyz (``Authorization: Bearer <token>``, or Basic
    with the token as password, which a browser asks for); e.g. ``${ADMIN_TOKEN}``."""
    peers: list[Peer] = Field(default_factory=list)
    """Other sidecars' admin base URLs (a URL, or ``{url, token}``): ``/overview`` draws the graph of topics and
    pipelines across them and this one."""

    @field_validator("listen")
    @classmethod
    def _address(cls, value: str) -> str:
        split_host_port(value.strip(), min_port=0)
        return value.strip()

    @property
    def host(self) -> str:
        return split_host_port(self.listen, min_port=0)[0]

    @property
    def port(self) -> int:
        return split_host_port(self.listen, min_port=0)[1]
