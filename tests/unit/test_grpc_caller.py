"""The gRPC caller against a real gRPC service (``tests/grpc_service.py``): metadata out, status mapping in, TLS.

No Kafka is involved: events are built by hand and the service records what it received before answering.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from streamcar.call.grpc import GrpcCaller, channel_count, parse_retry_after, request_metadata
from streamcar.config import CallConfig
from streamcar.errors import ConfigError
from streamcar.event import KEEP_KEY, Event, Reply, Result

from grpc_service import Seen, ServerTls, TestGrpcService, order, receipt_of
from pki import Leaf, Pki, make_pki

Code = grpc.StatusCode
RETRIED = [Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED, Code.RESOURCE_EXHAUSTED, Code.ABORTED]
DEAD_LETTERED = [
    Code.CANCELLED,
    Code.UNKNOWN,
    Code.INVALID_ARGUMENT,
    Code.NOT_FOUND,
    Code.ALREADY_EXISTS,
    Code.PERMISSION_DENIED,
    Code.FAILED_PRECONDITION,
    Code.OUT_OF_RANGE,
    Code.UNIMPLEMENTED,
    Code.INTERNAL,
    Code.DATA_LOSS,
    Code.UNAUTHENTICATED,
]


def event(
    value: bytes | None = None,
    *,
    key: bytes | None = b"order-1",
    offset: int = 41,
    headers: tuple[tuple[str, bytes | None], ...] = (),
) -> Event:
    return Event(
        topic="orders",
        partition=2,
        offset=offset,
        timestamp=1_700_000_000_123,
        key=key,
        value=order("o-1", 250) if value is None else value,
        headers=headers,
    )


def config(url: str, **extra: Any) -> CallConfig:
    return CallConfig.model_validate({"url": url, "timeout": "1s", **extra})


@asynccontextmanager
async def started(call_config: CallConfig, max_in_flight: int = 16) -> AsyncIterator[GrpcCaller]:
    caller = GrpcCaller(call_config, max_in_flight=max_in_flight)
    await caller.start()
    try:
        yield caller
    finally:
        await caller.close()


async def call_one(call_config: CallConfig, ev: Event | None = None) -> Reply:
    async with started(call_config) as caller:
        [reply] = await caller.call([ev or event()])
    return reply


@pytest.fixture
def service() -> Iterator[TestGrpcService]:
    running = TestGrpcService().start()
    yield running
    running.stop()


@pytest.fixture
def service_factory() -> Iterator[Callable[..., TestGrpcService]]:
    running: list[TestGrpcService] = []

    def make(**kwargs: Any) -> TestGrpcService:
        running.append(TestGrpcService(**kwargs).start())
        return running[-1]

    yield make
    for one in running:
        one.stop()


def aborting(code: Any, details: str = "", trailers: tuple[tuple[str, str | bytes], ...] = ()) -> Any:
    async def handler(seen: Seen, context: Any) -> bytes:
        await context.abort(code, details, trailing_metadata=trailers)
        raise AssertionError("abort returned")

    return handler


def answering(
    body: bytes,
    *,
    initial: tuple[tuple[str, str | bytes], ...] = (),
    trailers: tuple[tuple[str, str | bytes], ...] = (),
) -> Any:
    async def handler(seen: Seen, context: Any) -> bytes:
        if initial:
            await context.send_initial_metadata(initial)
        context.set_trailing_metadata(trailers)
        return body

    return handler


# --- the request ---------------------------------------------------------------------------------------------------


async def test_success_publishes_the_response_and_the_service_gets_the_kafka_metadata(
    service: TestGrpcService,
) -> None:
    record_headers = (
        ("Trace-Id", b"abc\x00"),
        ("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        ("tracestate", b"rojo=00f067aa0ba902b7"),
        ("empty", None),
        ("not a key!", b"skipped"),
    )
    call_config = config(service.url, headers={"Authorization": "Bearer s3cret", "X-Tenant": "acme"})

    reply = await call_one(call_config, event(key=b"\x00key\xff", headers=record_headers))

    assert reply.result is Result.SUCCESS
    assert reply.value is not None
    got = receipt_of(reply.value)
    assert (got.id, got.amount, got.status) == ("o-1", 250, "ok")
    assert reply.key is KEEP_KEY
    assert reply.headers == ()
    [seen] = service.requests()
    assert seen.body == order("o-1", 250)
    assert (seen.topic, seen.partition, seen.offset, seen.key) == ("orders", 2, 41, b"\x00key\xff")
    md = seen.metadata
    assert md["kafka-timestamp"] == "1700000000123"
    assert md["idempotency-key"] == "orders-2-41"
    assert md["traceparent"] == "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert md["tracestate"] == "rojo=00f067aa0ba902b7"
    assert md["kafka-header-trace-id-bin"] == b"abc\x00"
    assert md["kafka-header-traceparent-bin"] == record_headers[1][1]
    assert md["kafka-header-empty-bin"] == b""
    assert not any("skipped" in str(value) or "not a key" in key for key, value in md.items())
    assert md["authorization"] == "Bearer s3cret"
    assert md["x-tenant"] == "acme"


async def test_a_null_key_sends_no_key_and_a_null_value_sends_zero_bytes(service: TestGrpcService) -> None:
    reply = await call_one(config(service.url), event(b"", key=None))

    assert reply.result is Result.SUCCESS
    [seen] = service.requests()
    assert seen.body == b""
    assert "kafka-key-bin" not in seen.metadata
    assert seen.key is None


def test_request_metadata_skips_trace_context_that_is_not_printable_ascii() -> None:
    metadata = dict(request_metadata(event(headers=(("traceparent", b"bad\x01value"),))))
    assert "traceparent" not in metadata
    assert metadata["kafka-header-traceparent-bin"] == b"bad\x01value"


async def test_events_of_a_batch_are_called_concurrently_and_answered_in_order(service: TestGrpcService) -> None:
    all_arrived = asyncio.Event()

    async def wait_for_all(seen: Seen, context: Any) -> bytes:
        if service.count() == 3:
            all_arrived.set()
        await asyncio.wait_for(all_arrived.wait(), 5)  # would time out if the calls were made one after another
        return seen.body

    service.handler = wait_for_all
    async with started(config(service.url, timeout="10s")) as caller:
        replies = await caller.call([event(f"v{i}".encode(), offset=i) for i in range(3)])

    assert [r.value for r in replies] == [b"v0", b"v1", b"v2"]


async def test_hundreds_of_concurrent_calls_spread_over_several_connections(service: TestGrpcService) -> None:
    n = 300
    peers: set[str] = set()
    all_arrived = asyncio.Event()

    async def record_peer(seen: Seen, context: Any) -> bytes:
        peers.add(context.peer())
        if service.count() == n:
            all_arrived.set()
        await asyncio.wait_for(all_arrived.wait(), 10)
        return seen.body

    service.handler = record_peer
    async with started(config(service.url, timeout="20s"), max_in_flight=256) as caller:
        replies = await asyncio.gather(*(caller.call([event(str(i).encode(), offset=i)]) for i in range(n)))

    assert [r.value for [r] in replies] == [str(i).encode() for i in range(n)]
    assert len(peers) == channel_count(256) == 3  # one connection per channel


@pytest.mark.parametrize(("max_in_flight", "channels"), [(1, 1), (100, 1), (101, 2), (256, 3), (10_000, 8)])
def test_one_connection_per_hundred_calls_in_flight_within_a_bound(max_in_flight: int, channels: int) -> None:
    assert channel_count(max_in_flight) == channels


# --- the reply -----------------------------------------------------------------------------------------------------


async def test_an_empty_response_publishes_nothing(service: TestGrpcService) -> None:
    service.handler = answering(b"", initial=(("kafka-key-bin", b"ignored"),))

    reply = await call_one(config(service.url))

    assert reply == Reply.success(None)


async def test_a_response_over_max_response_bytes_is_a_bad_reply(service: TestGrpcService) -> None:
    service.handler = answering(b"x" * (2 * 1024 * 1024))

    reply = await call_one(config(service.url, max_response_bytes="1MiB"))

    assert (reply.result, reply.error_kind) == (Result.RETRY, "bad-reply")
    assert "exceeds 1,048,576 bytes (call.max_response_bytes)" in (reply.error or "")
    assert (await call_one(config(service.url, max_response_bytes="4MiB"))).result is Result.SUCCESS


async def test_response_metadata_sets_the_reply_key_and_headers(service: TestGrpcService) -> None:
    service.handler = answering(
        b"out",
        initial=(("kafka-key-bin", b"new\x00key"), ("kafka-header-source-bin", b"grpc")),
        trailers=(("kafka-header-x.y_z-bin", b"\xff"), ("kafka-header-text", "not binary: ignored")),
    )

    reply = await call_one(config(service.url))

    assert reply.result is Result.SUCCESS
    assert reply.value == b"out"
    assert reply.key == b"new\x00key"
    assert reply.headers == (("source", b"grpc"), ("x.y_z", b"\xff"))


@pytest.mark.parametrize("code", RETRIED, ids=lambda code: code.name)
async def test_transient_statuses_retry(service: TestGrpcService, code: Any) -> None:
    service.handler = aborting(code, "try later")

    reply = await call_one(config(service.url))

    assert reply.result is Result.RETRY
    assert reply.error_kind == "grpc-status"
    assert reply.error == f"gRPC {code.name}: try later"
    assert reply.retry_after is None


@pytest.mark.parametrize("code", DEAD_LETTERED, ids=lambda code: code.name)
async def test_other_statuses_dead_letter_at_once(service: TestGrpcService, code: Any) -> None:
    service.handler = aborting(code, "no such order")

    reply = await call_one(config(service.url))

    assert reply.result is Result.DEAD_LETTER
    assert reply.error_kind == "grpc-status"
    assert reply.error == f"gRPC {code.name}: no such order"
    refused = code in (Code.UNIMPLEMENTED, Code.UNAUTHENTICATED, Code.PERMISSION_DENIED)
    assert reply.refusal == (f"gRPC {code.name} on /streamcar.test.Orders/Handle" if refused else None)


async def test_a_handler_exception_is_unknown_and_dead_lettered(service: TestGrpcService) -> None:
    async def broken(seen: Seen, context: Any) -> bytes:
        raise ValueError("bug")

    service.handler = broken
    reply = await call_one(config(service.url))
    assert reply.result is Result.DEAD_LETTER
    assert reply.error is not None
    assert reply.error.startswith("gRPC UNKNOWN")


async def test_an_unknown_method_is_unimplemented_and_dead_lettered(service: TestGrpcService) -> None:
    reply = await call_one(config(service.url.replace("/Handle", "/Missing")))
    assert reply.result is Result.DEAD_LETTER
    assert reply.error is not None
    assert reply.error.startswith("gRPC UNIMPLEMENTED")
    assert reply.refusal is not None
    assert reply.refusal.endswith("/Missing")  # a refusal a wrong setup gets: the engine watches for a storm of them


async def test_call_status_maps_codes_by_name(service: TestGrpcService) -> None:
    service.handler = aborting(Code.NOT_FOUND, "no such order")
    reply = await call_one(config(service.url, status={"not_found": "drop", "ALREADY_EXISTS": "success"}))
    assert reply.result is Result.DROP
    service.handler = aborting(Code.UNIMPLEMENTED)
    mapped = await call_one(config(service.url, status={"UNIMPLEMENTED": "retry"}))
    assert (mapped.result, mapped.refusal) == (Result.RETRY, None)


@pytest.mark.parametrize("code", [Code.OK, Code.UNAVAILABLE, Code.INVALID_ARGUMENT], ids=lambda code: code.name)
@pytest.mark.parametrize(
    ("override", "expected", "kind"),
    [
        ("drop", Result.DROP, None),
        ("retry", Result.RETRY, "grpc-status"),
        ("dead-letter", Result.DEAD_LETTER, "rejected"),
        (" Dead-Letter ", Result.DEAD_LETTER, "rejected"),
    ],
)
async def test_the_streamcar_result_trailer_overrides_the_status(
    service: TestGrpcService, code: Any, override: str, expected: Result, kind: str | None
) -> None:
    trailers = (("streamcar-result", override),)
    ok = code == Code.OK
    service.handler = answering(b"out", trailers=trailers) if ok else aborting(code, "why", trailers)

    reply = await call_one(config(service.url))

    assert reply.result is expected
    assert reply.error_kind == kind
    assert reply.value is None
    if expected is not Result.DROP:
        assert reply.error is not None
        assert reply.error.startswith(f"gRPC {code.name}")
        assert "(streamcar-result: " in reply.error


@pytest.mark.parametrize(
    ("handler", "after"),
    [
        (aborting(Code.RESOURCE_EXHAUSTED, "slow down", (("retry-after", "2.5"),)), 2.5),
        (aborting(Code.UNAVAILABLE, "", (("retry-after", "7"),)), 7.0),
        (answering(b"out", trailers=(("streamcar-result", "retry"), ("retry-after", "3"))), 3.0),
        (aborting(Code.UNAVAILABLE, "", (("retry-after", "soon"),)), None),
        (aborting(Code.UNAVAILABLE, "", (("retry-after", "-1"),)), None),
    ],
)
async def test_a_retry_after_trailer_delays_the_retry(service: TestGrpcService, handler: Any, after: float) -> None:
    service.handler = handler

    reply = await call_one(config(service.url))

    assert reply.result is Result.RETRY
    assert reply.retry_after == after


@pytest.mark.parametrize(("value", "seconds"), [("0", 0.0), (" 1.5 ", 1.5), ("", None), ("nan", None), ("inf", None)])
def test_parse_retry_after(value: str, seconds: float | None) -> None:
    assert parse_retry_after(value) == seconds


async def test_a_service_slower_than_the_timeout_is_retried_as_a_timeout(service: TestGrpcService) -> None:
    async def slow(seen: Seen, context: Any) -> bytes:
        await asyncio.sleep(5)
        return b"late"

    service.handler = slow
    begun = time.monotonic()
    reply = await call_one(config(service.url, timeout="200ms"))
    elapsed = time.monotonic() - begun

    assert reply.result is Result.RETRY
    assert reply.error_kind == "timeout"
    assert reply.error == "no reply within 200ms"
    assert 0.2 <= elapsed < 3
    assert service.count() == 1


async def test_a_service_that_is_down_is_retried_and_reached_again_once_up(service: TestGrpcService) -> None:
    async with started(config(service.url)) as caller:
        [before] = await caller.call([event()])
        service.down()
        [during] = await caller.call([event()])
        service.up()
        deadline = time.monotonic() + 15  # bounded by the channel's reconnect backoff (at most 5s)
        [after] = await caller.call([event()])
        while after.result is not Result.SUCCESS and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            [after] = await caller.call([event()])

    assert before.result is Result.SUCCESS
    assert during.result is Result.RETRY
    assert during.error_kind == "connection"  # nothing listens: the circuit breaker opens at once
    assert during.error is not None
    assert during.error.startswith("gRPC UNAVAILABLE")
    assert after.result is Result.SUCCESS


async def test_closing_the_caller_mid_call_retries_the_call(service: TestGrpcService) -> None:
    loop = asyncio.get_running_loop()
    arrived = asyncio.Event()  # set from the service's thread

    async def blocked(seen: Seen, context: Any) -> bytes:
        loop.call_soon_threadsafe(arrived.set)
        await asyncio.sleep(10)  # cancelled when the client goes away
        return b"late"

    service.handler = blocked
    caller = GrpcCaller(config(service.url, timeout="10s"), max_in_flight=1)
    await caller.start()
    pending = asyncio.create_task(caller.call([event()]))
    await asyncio.wait_for(arrived.wait(), 5)
    await caller.close()
    [reply] = await asyncio.wait_for(pending, 5)

    assert reply.result is Result.RETRY
    assert reply.error_kind == "connection"


async def test_call_before_start_is_a_programming_error() -> None:
    caller = GrpcCaller(config("grpc://127.0.0.1:1/a.B/C"), max_in_flight=1)
    with pytest.raises(RuntimeError, match="start"):
        await caller.call([event()])


# --- configuration -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"X~Tilde": "v"}, "call.headers.X~Tilde: not a gRPC metadata key"),
        ({"grpc-timeout": "1S"}, "call.headers.grpc-timeout: not a gRPC metadata key"),
        ({"X-Name": "caf\u00e9"}, "call.headers.X-Name: gRPC metadata values must be printable ASCII"),
    ],
)
async def test_headers_grpc_cannot_send_are_config_errors(headers: dict[str, str], message: str) -> None:
    caller = GrpcCaller(config("grpc://127.0.0.1:1/a.B/C", headers=headers), max_in_flight=1)
    with pytest.raises(ConfigError) as raised:
        await caller.start()
    assert str(raised.value).startswith(message)


async def test_binary_static_headers_are_sent_as_bytes(service: TestGrpcService) -> None:
    await call_one(config(service.url, headers={"X-Token-Bin": "abc"}))
    assert service.requests()[0].metadata["x-token-bin"] == b"abc"


async def test_a_missing_ca_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    caller = GrpcCaller(config("grpcs://127.0.0.1:1/a.B/C", tls={"ca_file": str(missing)}), max_in_flight=1)
    with pytest.raises(ConfigError) as raised:
        await caller.start()
    assert str(raised.value) == f"call.tls.ca_file: cannot read {missing}: No such file or directory"


async def test_a_key_file_without_pem_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    (tmp_path / "key.pem").write_text("not a key")
    tls = {"cert_file": str(tmp_path / "cert.pem"), "key_file": str(tmp_path / "key.pem")}
    caller = GrpcCaller(config("grpcs://127.0.0.1:1/a.B/C", tls=tls), max_in_flight=1)
    with pytest.raises(ConfigError, match=r"^call\.tls\.key_file: .*key\.pem holds no PEM data$"):
        await caller.start()


def test_a_non_grpc_target_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^call\.url: "):
        GrpcCaller(config("http://127.0.0.1:1/x"), max_in_flight=1)


# --- TLS -----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def server_tls(leaf: Leaf, *, client_ca: Path | None = None) -> ServerTls:
    return ServerTls(
        leaf.cert.read_bytes(), leaf.key.read_bytes(), None if client_ca is None else client_ca.read_bytes()
    )


async def test_grpcs_with_the_services_ca_succeeds(service_factory: Callable[..., TestGrpcService], pki: Pki) -> None:
    secure = service_factory(tls=server_tls(pki.server))
    assert secure.url.startswith("grpcs://127.0.0.1:")

    reply = await call_one(config(secure.url, tls={"ca_file": str(pki.ca)}))

    assert reply.result is Result.SUCCESS
    assert secure.count() == 1


@pytest.mark.parametrize("other_ca", [True, False], ids=["another-ca", "system-cas"])
async def test_grpcs_with_cas_that_did_not_sign_the_service_is_retried(
    service_factory: Callable[..., TestGrpcService], pki: Pki, other_ca: bool
) -> None:
    secure = service_factory(tls=server_tls(pki.server))
    extra = {"tls": {"ca_file": str(pki.other_ca)}} if other_ca else {}

    reply = await call_one(config(secure.url, **extra))

    assert reply.result is Result.RETRY
    assert reply.error is not None
    assert reply.error.startswith("gRPC UNAVAILABLE")
    assert secure.count() == 0


async def test_grpc_to_a_tls_service_is_retried(service_factory: Callable[..., TestGrpcService], pki: Pki) -> None:
    secure = service_factory(tls=server_tls(pki.server))
    reply = await call_one(config(secure.url.replace("grpcs://", "grpc://")))
    assert reply.result is Result.RETRY
    assert secure.count() == 0


async def test_mutual_tls_with_the_client_certificate_succeeds(
    service_factory: Callable[..., TestGrpcService], pki: Pki
) -> None:
    secure = service_factory(tls=server_tls(pki.server, client_ca=pki.ca))
    tls = {"ca_file": str(pki.ca), "cert_file": str(pki.client.cert), "key_file": str(pki.client.key)}

    reply = await call_one(config(secure.url, tls=tls))

    assert reply.result is Result.SUCCESS
    assert secure.count() == 1


async def test_mutual_tls_without_a_client_certificate_is_refused(
    service_factory: Callable[..., TestGrpcService], pki: Pki
) -> None:
    secure = service_factory(tls=server_tls(pki.server, client_ca=pki.ca))

    reply = await call_one(config(secure.url, tls={"ca_file": str(pki.ca)}))

    assert reply.result is Result.RETRY
    assert reply.error is not None
    assert reply.error.startswith("gRPC UNAVAILABLE")
    assert secure.count() == 0


@pytest.mark.parametrize(("server_name", "expected"), [("orders.internal", Result.SUCCESS), (None, Result.RETRY)])
async def test_server_name_verifies_a_certificate_issued_for_another_name(
    service_factory: Callable[..., TestGrpcService], pki: Pki, server_name: str | None, expected: Result
) -> None:
    secure = service_factory(tls=server_tls(pki.named_server))
    tls: dict[str, str] = {"ca_file": str(pki.ca)}
    if server_name is not None:
        tls["server_name"] = server_name

    reply = await call_one(config(secure.url, tls=tls))

    assert reply.result is expected
    assert secure.count() == (1 if expected is Result.SUCCESS else 0)
