"""The HTTP client against hostile servers: whatever a server sends (garbage, bodies that never end, compression
bombs, huge heads, header bytes in any encoding, cut-off responses), a request ends in a :class:`Response` within
the bounds or in an :class:`HttpError` / ``TimeoutError``, within its deadline, and never in anything else.

Hypothesis writes the server's script; each example runs it on a loopback server against a real pool.
"""

from __future__ import annotations

import asyncio
import zlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamcar.call.http1 import BadReply, Http1Pool, HttpError, Response, _decode

LIMIT = 64 * 1024  # max_response for these examples: small, so endless bodies and bombs pass it fast
TIMEOUT = 2.0

tokens = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_", min_size=1, max_size=12)
# field values as servers send them: printable ASCII and obs-text (bytes 0x80-0xFF: latin-1, UTF-8, anything),
# now and then with control bytes llhttp refuses
_TEXT_BYTES = [*range(0x20, 0x7F), *range(0x80, 0x100), 0x09]
field_bytes = st.lists(st.sampled_from(_TEXT_BYTES), max_size=60).map(bytes) | st.binary(max_size=20).map(
    lambda b: b.replace(b"\r", b"").replace(b"\n", b"")
)
statuses = st.sampled_from([b"HTTP/1.1 200 OK", b"HTTP/1.1 503 Busy", b"HTTP/1.0 200 OK", b"HTTP/1.1 204 No"])
codings = st.sampled_from(["identity", "gzip", "deflate", "raw-deflate", "bomb", "garbage"])
framings = st.sampled_from(["length", "wrong-length", "chunked", "endless", "eof", "cut"])


def encode(body: bytes, coding: str) -> bytes:
    if coding == "gzip":
        return zlib.compress(body, wbits=31)
    if coding == "deflate":
        return zlib.compress(body)
    if coding == "raw-deflate":
        return zlib.compress(body, wbits=-15)
    if coding == "bomb":
        return zlib.compress(bytes(20 * LIMIT), wbits=31)
    if coding == "garbage":
        return b"\x1f\x8bnot gzip at all" + body
    return body


@st.composite
def scripts(draw: st.DrawFn) -> tuple[list[bytes], dict[str, bytes]]:
    """What the server writes (in pieces), and the headers it sends that a reader must get back byte for byte."""
    status = draw(statuses)
    coding = draw(codings)
    framing = draw(framings)
    body = encode(draw(st.binary(max_size=3000) | st.just(b"x" * (2 * LIMIT))), coding)
    fields = draw(st.lists(st.tuples(tokens, field_bytes), max_size=6))
    if draw(st.booleans()):
        fields.append(("X-Huge", b"h" * draw(st.sampled_from([100, 300 * 1024]))))
    head = [status]
    head += [name.encode() + b": " + value for name, value in fields]
    if coding != "identity":
        head.append(b"Content-Encoding: " + (b"deflate" if "deflate" in coding else b"gzip"))
    tail: list[bytes] = []
    if framing in ("length", "wrong-length", "cut"):
        length = len(body) + (7 if framing == "wrong-length" else 0)
        head.append(b"Content-Length: %d" % length)
        tail = [body[: len(body) // 2]] if framing == "cut" else [body]
    elif framing in ("chunked", "endless"):
        head.append(b"Transfer-Encoding: chunked")
        tail = [b"%x\r\n%s\r\n" % (len(body), body) if body else b"", b"0\r\n\r\n" if framing == "chunked" else b""]
    else:
        tail = [body]
    data = b"\r\n".join(head) + b"\r\n\r\n" + b"".join(tail)
    cuts = sorted(set(draw(st.lists(st.integers(0, len(data)), max_size=5))))
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True) if b > a]
    expected = {name: value for name, value in reversed(fields)}  # the first of a repeated name
    return pieces + ([b"<endless>"] if framing == "endless" else []), expected


async def run(pieces: list[bytes]) -> Response | BaseException:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            for piece in pieces:
                if piece == b"<endless>":
                    while True:  # a chunked body that never ends, as fast as the client reads
                        writer.write(b"4000\r\n" + b"e" * 0x4000 + b"\r\n")
                        await writer.drain()
                writer.write(piece)
                await writer.drain()
            writer.close()
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass  # the client hung up (or the example is over)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = Http1Pool(f"http://127.0.0.1:{port}/", limit=1, timeout=TIMEOUT, max_response=LIMIT)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        return await pool.post([("X-Test", "1")], b"request")
    except (HttpError, TimeoutError) as exc:
        return exc
    finally:
        assert loop.time() - started < TIMEOUT + 0.5, "past the deadline"
        await pool.close()
        server.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script=scripts())
def test_any_server_script_ends_in_a_bounded_response_or_an_http_error(
    script: tuple[list[bytes], dict[str, bytes]],
) -> None:
    pieces, expected = script
    outcome = asyncio.run(run(pieces))
    if isinstance(outcome, BaseException):
        assert isinstance(outcome, HttpError | TimeoutError), repr(outcome)
        return
    assert len(outcome.body) + outcome.head_size <= LIMIT
    for name, value in expected.items():
        if name.lower() not in ("content-length", "transfer-encoding", "content-encoding", "connection"):
            assert outcome.headers[name].encode("latin-1") == value.strip(b" \t")  # the bytes as sent, less OWS


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=4000), coding=st.sampled_from(["gzip", "x-gzip", "deflate"]))
def test_decoding_any_bytes_gives_bytes_within_the_room_or_a_bad_reply(body: bytes, coding: str) -> None:
    async def decode() -> bytes | BadReply:
        try:
            return await _decode(body, coding, 1000, 1000)
        except BadReply as exc:
            return exc

    outcome = asyncio.run(decode())
    assert isinstance(outcome, BadReply) or len(outcome) <= 1000


def test_a_bomb_stops_at_the_room_and_yields_to_the_loop_on_the_way() -> None:
    bomb = zlib.compress(bytes(64 * 1024 * 1024), wbits=31)  # 64 MiB of zeros in ~64 KB

    async def decode() -> tuple[BadReply | bytes, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        try:
            return await _decode(bomb, "gzip", 16 * 1024 * 1024, 16 * 1024 * 1024), ticks
        except BadReply as exc:
            return exc, ticks
        finally:
            task.cancel()

    outcome, ticks = asyncio.run(decode())
    assert isinstance(outcome, BadReply)
    assert "exceeds 16 MiB decompressed" in str(outcome)
    assert ticks >= 32  # 16 MiB in 256 KiB steps: the loop ran between them
