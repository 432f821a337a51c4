"""The configuration models: one frozen pydantic model per YAML mapping, unknown keys rejected.

Checks spanning several fields raise :data:`PROBLEMS_ERROR`, whose context carries ``(sub-path, message)``
pairs, so that e.g. a missing SASL username is reported at ``kafka.security.username`` rather than at
``kafka.security``.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any, Literal, Self
from urllib.parse import parse_qsl, unquote, urlsplit

from pydantic import AliasChoices, Field, field_validator, model_validator

from streamcar.config._call import BatchConfig, CallConfig, ServiceTlsConfig
from streamcar.config._cluster import AdminConfig, KafkaConfig, SecurityConfig
from streamcar.config._durations import Duration, format_duration
from streamcar.config._exactly import exactly_once_problems, exactly_once_warnings
from streamcar.config._fields import (
    _SECRET_NAME,
    PROBLEMS_ERROR,
    REDACTED,
    InstanceId,
    NonEmptyStr,
    PipelineName,
    TopicName,
    _mask,
    _Model,
    _raise_problems,
    _redact_url,
)
from streamcar.config._limits import AutoInFlight, AutoLimits, InFlight, RateLimit
from streamcar.config._outputs import DeadLetterConfig, PublishConfig
from streamcar.config._queue import queue_problems, queue_warnings

__all__ = [
    "PROBLEMS_ERROR",
    "REDACTED",
    "AdminConfig",
    "BatchConfig",
    "CallConfig",
    "KafkaConfig",
    "SecurityConfig",
    "ServiceTlsConfig",
]


class ConsumeConfig(_Model):
    """What a pipeline reads, and as which consumer group."""

    topics: list[TopicName] = Field(min_length=1)
    """The input topics, read together in one consumer group."""
    group: NonEmptyStr | None = None
    """The consumer group (``group.id``). Its committed offsets say what is done; every replica of the service
    uses the same group, and each pipeline a group of its own."""
    share_group: NonEmptyStr | None = None
    """Queue mode, instead of ``group``: the Kafka share group (KIP-932) whose members share every partition,
    each record acquired by one member under a lock and acknowledged on its own (docs/queues.md). Needs
    ``ordering: none`` and a ``dead_letter`` topic. Preview: the Kafka client marks its share consumer so."""
    from_: Literal["earliest", "latest"] = Field(
        default="earliest", validation_alias=AliasChoices("from", "from_"), serialization_alias="from"
    )
    """Where a group without committed offsets starts: at the oldest records or after the newest. A partition
    new to a running group (added to the topic, or the topic created again) starts at its oldest record either
    way. Written ``from`` in YAML, ``from_`` in Python."""
    instance_id: InstanceId | None = None
    """Static membership (``group.instance.id``), e.g. ``${POD_NAME}``: a member restarted under the same id
    takes its partitions back at once, without a rebalance of the others, as long as it returns within the
    session timeout. Unique per member of the group. An empty value means none (``${POD_NAME:-}``)."""

    @property
    def group_id(self) -> str:
        """The consumer group's or the share group's name."""
        name = self.group if self.group is not None else self.share_group
        assert name is not None  # _one_group
        return name

    @property
    def queue(self) -> bool:
        """Queue mode: a share group."""
        return self.share_group is not None

    @model_validator(mode="after")
    def _one_group(self) -> Self:
        if (self.group is None) == (self.share_group is None):
            both = self.group is not None
            missing = "required, but missing (or share_group, for a queue)"
            text = "give group or share_group, not both" if both else missing
            _raise_problems([(("share_group" if both else "group",), text)])
        return self

    @field_validator("instance_id", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("topics")
    @classmethod
    def _distinct(cls, topics: list[str]) -> list[str]:
        first: dict[str, int] = {}
        _raise_problems(
            ((index,), f"duplicate topic {topic!r} (also at index {first[topic]})")
            for index, topic in enumerate(topics)
            if first.setdefault(topic, index) != index
        )
        return topics


class RetryConfig(_Model):
    """How a failed call is tried again: exponential backoff with jitter, honouring ``Retry-After``. A message
    waiting for its retry holds back only its own key."""

    attempts: int = Field(default=5, ge=1)
    """Total number of calls, the first included; then the message is dead-lettered (kind ``exhausted``)."""
    initial_backoff: Duration = 0.2
    """The wait after the first failure; it doubles after each further one (half of it random)."""
    max_backoff: Duration = 30.0
    """The longest wait between two attempts. Without a dead-letter topic, a message whose attempts are spent
    is tried again at this interval, holding its key, and never dropped."""
    max_block: Duration | None = Field(default=None, gt=0)
    """A message that has held its key this long since it first failed is dead-lettered (kind ``blocked``) at its
    next failure instead of retried. Failures that cost no attempt (the service was down) do not end it."""

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.max_backoff < self.initial_backoff:
            at_least = format_duration(self.initial_backoff)
            _raise_problems([(("max_backoff",), f"must be at least initial_backoff ({at_least})")])
        return self


class CircuitBreakerConfig(_Model):
    """Stop calling a service that is down: pause consumption, probe, resume. While the circuit is open no
    message uses up its retries, so none is dead-lettered only because the service was down."""

    enabled: bool = True
    """false: never open the circuit (and no pause on a reject storm); each message spends its attempts."""
    failure_ratio: float = Field(default=0.5, gt=0, le=1)
    """Open when at least this share of the calls within ``window`` could not get through..."""
    min_calls: int = Field(default=20, ge=1)
    """...and at least this many calls were made within it."""
    window: Duration = Field(default=10.0, gt=0)
    """The span over which ``failure_ratio`` and ``min_calls`` are counted."""
    consecutive: int = Field(default=5, ge=1)
    """Also open after this many calls in a row could not get through (and at once on a refused connection)."""
    open_for: Duration = Field(default=1.0, gt=0)
    """How long to wait before probing; doubles each time every probe failed."""
    probes: int = Field(default=3, ge=1, le=100)
    """Calls let through to probe the service; the first that gets through closes the circuit."""
    max_open: Duration = Field(default=30.0, gt=0)
    """The longest wait between probes."""

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.max_open < self.open_for:
            _raise_problems([(("max_open",), f"must be at least open_for ({format_duration(self.open_for)})")])
        return self


class PipelineConfig(_Model):
    """One pipeline: topics in, a service called for each message, replies and dead letters out."""

    consume: ConsumeConfig
    call: CallConfig
    ordering: Literal["key", "partition", "none"] = "key"
    """``key``: a key's messages are called one after another in offset order, different keys side by side
    (null keys are unordered); ``partition``: one message at a time per partition; ``none``: no order."""
    max_in_flight: InFlight = 256
    """Messages in a call to the service at once (or waiting for a retry); a key's next message waits for its
    previous one to be done. ``auto``, or ``{auto: {min: 4, max: 512, initial: 32}}`` (the defaults): calls in
    flight follow the service's latency and overload answers, between ``min`` and ``max``; the engine's other
    bounds are those of ``max`` (docs/delivery.md, "Adaptive concurrency")."""
    rate_limit: RateLimit = None
    """At most this many calls per second (messages with batch delivery): ``500/s``, or ``{rate: 500/s, burst:
    50}``."""
    retry: RetryConfig = RetryConfig()
    circuit_breaker: CircuitBreakerConfig = CircuitBreakerConfig()
    publish: PublishConfig | None = None
    dead_letter: DeadLetterConfig | None = None
    shutdown_timeout: Duration = 30.0
    """How long calls in flight get to finish when their partition is revoked or the sidecar stops (SIGTERM);
    then their partitions' offsets are committed. Stopping takes at most this plus 5 s."""
    commit_interval: Duration = Field(default=1.0, gt=0)
    """How often the contiguous watermark (and the offsets done above it) is committed; also after every
    ``max_in_flight / 2`` completions. With ``publish.exactly_once``, how often a transaction commits."""

    @property
    def in_flight_bound(self) -> int:
        """The fixed ``max_in_flight``, or an adaptive one's ``max``: what the engine's bounds are made of."""
        limit = self.max_in_flight
        return limit if isinstance(limit, int) else limit.auto.max

    @property
    def adaptive(self) -> AutoLimits | None:
        """The adaptive limit's bounds, if ``max_in_flight`` is ``auto``."""
        limit = self.max_in_flight
        return limit.auto if isinstance(limit, AutoInFlight) else None

    @model_validator(mode="after")
    def _queue_mode(self) -> Self:
        if self.consume.queue:
            exactly_once = self.publish is not None and self.publish.exactly_once
            problems = queue_problems(
                ordering=self.ordering,
                instance_id=self.consume.instance_id,
                exactly_once=exactly_once,
                dead_letter=self.dead_letter is not None,
                attempts=self.retry.attempts,
            )
            _raise_problems(problems)
        return self

    @model_validator(mode="after")
    def _burst_fits_a_batch(self) -> Self:
        rate, batch = self.rate_limit, self.call.batch.max_messages
        if rate is not None and rate.burst is not None and rate.burst < batch:
            _raise_problems([(("rate_limit", "burst"), f"must be at least call.batch.max_messages ({batch})")])
        return self

    @model_validator(mode="after")
    def _no_loop(self) -> Self:
        if self.publish is not None:
            self._allowed_outputs()
        outputs = {"publish": self.publish, "dead_letter": self.dead_letter}
        _raise_problems(
            ((name, "topic"), f"{output.topic!r} is also consumed by this pipeline (an endless loop)")
            for name, output in outputs.items()
            if output is not None and output.topic in self.consume.topics
        )
        return self

    def _allowed_outputs(self) -> None:
        """publish.allow must not let a reply route into what this pipeline reads or its dead-letter topic."""
        assert self.publish is not None
        dlq = [self.dead_letter.topic] if self.dead_letter is not None else []
        _raise_problems(
            (("publish", "allow", str(index)), f"{pattern!r} matches {what} {topic!r}")
            for index, pattern in enumerate(self.publish.allow or ())
            for what, topics in (("the input topic", self.consume.topics), ("the dead-letter topic", dlq))
            for topic in topics
            if fnmatchcase(topic, pattern)
        )


class LogConfig(_Model):
    """How the sidecar logs, on stderr (``run --log-format/--log-level`` and $STREAMCAR_LOG_FORMAT/_LEVEL take
    precedence). Embedded with ``streamcar.serve()`` in a program that set logging up, streamcar's records go to
    that program's handlers instead, and this applies only when it did not."""

    format: Literal["console", "json"] = "console"
    """console: one readable line per event; json: one JSON object per line (time, level, logger, message,
    event, pipeline, topic, partition, offset...). Secrets are redacted in both."""
    level: Literal["debug", "info", "warning", "error"] = "info"
    """The least severe level logged."""


class TracingConfig(_Model):
    """OpenTelemetry spans per message (process, call, publish), continuing the trace of the record's
    ``traceparent``. Needs the SDK: ``pip install 'streamcar[tracing]'`` (the container image has it)."""

    enabled: bool = False
    """true: record spans (off, ``traceparent`` and ``tracestate`` still travel through unchanged)."""
    exporter: Literal["otlp", "console"] = "otlp"
    """otlp: OTLP over HTTP (protobuf) to ``endpoint``; console: spans as JSON on stdout (for debugging)."""
    endpoint: str = "http://127.0.0.1:4318/v1/traces"
    """The collector's OTLP/HTTP traces URL."""
    headers: dict[str, str] = Field(default_factory=dict, repr=False)
    """Sent with every export (e.g. an API key)."""
    service_name: NonEmptyStr = "streamcar"
    """The ``service.name`` resource attribute of the spans."""
    sample_ratio: float = Field(default=1.0, ge=0, le=1)
    """Share of new traces recorded; a record's sampled traceparent is always followed."""

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL, e.g. http://127.0.0.1:4318/v1/traces")
        return value.strip()


class Config(_Model):
    """A streamcar configuration: the Kafka cluster, the admin server, logs, tracing and the pipelines.

    Read from YAML with ``streamcar.load_config(path)``, or built in code, as ``Config(kafka=KafkaConfig(...),
    pipelines={"orders": PipelineConfig(...)})`` or ``Config.model_validate(mapping)``. Either way every field is
    validated (a ``pydantic.ValidationError`` in code, a ``ConfigError`` naming each field from
    ``load_config``) and the result is frozen."""

    kafka: KafkaConfig
    admin: AdminConfig = AdminConfig()
    log: LogConfig = LogConfig()
    tracing: TracingConfig = TracingConfig()
    pipelines: dict[PipelineName, PipelineConfig] = Field(min_length=1)
    """The pipelines by name (letters, digits, ``_ . -``); each has its own consumer group and producer."""

    @model_validator(mode="after")
    def _distinct_groups(self) -> Self:
        owners: dict[str, str] = {}
        _raise_problems(
            (
                ("pipelines", name, "consume", "share_group" if pipeline.consume.queue else "group"),
                f"{'share group' if pipeline.consume.queue else 'consumer group'} {pipeline.consume.group_id!r} is"
                f" also used by pipeline {owners[pipeline.consume.group_id]!r}; they would steal each other's"
                f" {'records' if pipeline.consume.queue else 'partitions'}",
            )
            for name, pipeline in self.pipelines.items()
            if owners.setdefault(pipeline.consume.group_id, name) != name
        )
        if any(p.publish is not None and p.publish.exactly_once for p in self.pipelines.values()):
            _raise_problems(exactly_once_problems(self.kafka.librdkafka, self.pipelines))
        return self

    def redacted(self) -> dict[str, Any]:
        """A JSON-ready dump with secrets replaced by ``***`` (for /status and logs)."""
        data = self.model_dump(mode="json")
        kafka = data["kafka"]
        if kafka["security"] is not None and kafka["security"]["password"] is not None:
            kafka["security"]["password"] = REDACTED
        kafka["librdkafka"] = _mask(kafka["librdkafka"])
        for pipeline in data["pipelines"].values():
            pipeline["call"]["url"] = _redact_url(pipeline["call"]["url"])
            pipeline["call"]["headers"] = _mask(pipeline["call"]["headers"])
        data["tracing"]["headers"] = _mask(data["tracing"]["headers"])
        return data

    def secrets(self) -> list[str]:
        """Every secret value in the config, for the log redactor: the Kafka password, credential-named
        librdkafka settings and call headers (whole values and their last word, e.g. a bearer token), and
        passwords in call URLs."""
        found: list[str] = []
        security = self.kafka.security
        if security is not None and security.password is not None:
            found.append(security.password.get_secret_value())
        found += [str(v) for k, v in self.kafka.librdkafka.items() if _SECRET_NAME.search(k)]
        found += [v for k, v in self.tracing.headers.items() if _SECRET_NAME.search(k)]
        for pipeline in self.pipelines.values():
            for name, value in pipeline.call.headers.items():
                if _SECRET_NAME.search(name):
                    found += [value, value.split()[-1]] if value.split() else [value]
            url = urlsplit(pipeline.call.url)
            if url.password:
                found.append(url.password)
                found.append(f"{unquote(url.username or '')}:{unquote(url.password)}")  # Basic auth's pair
                found.append(unquote(url.password))
            found += [value for name, value in parse_qsl(url.query) if _SECRET_NAME.search(name)]
        if self.admin.token is not None:
            found.append(self.admin.token.get_secret_value())
        found += [peer.token.get_secret_value() for peer in self.admin.peers if peer.token is not None]
        return [secret for secret in found if secret]

    def summary(self) -> list[str]:
        """One line per pipeline: ``orders: orders -> http://... (group orders-service, ordering key)``."""
        return [
            f"{name}: {', '.join(p.consume.topics)} -> {p.call.target_text} "
            f"({'share group' if p.consume.queue else 'group'} {p.consume.group_id}, ordering {p.ordering})"
            for name, p in self.pipelines.items()
        ]

    def warnings(self) -> list[str]:
        """What ``check`` warns of: settings that work but may not do what is meant, one line each."""
        queues = [
            line
            for name, p in self.pipelines.items()
            if p.consume.queue
            for line in queue_warnings(name, p.call.timeout)
        ]
        return queues + list(exactly_once_warnings(self.kafka.librdkafka, self.pipelines))
