"""HttpTransport on real sockets: tiny servers on loopback that answer the way real
receivers do, and some the way broken ones do."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field

import orjson
import pytest
import uvloop
from hypothesis import given, settings
from hypothesis import strategies as st

from hookstage.egress import tls_context
from hookstage.pool import Answer, Connection, Origin
from hookstage.transport import MAX_RESPONSE_BODY, HttpTransport, OutboundRequest, Outcome
from tests.support import network
from tests.support.network import Authority, unanswered_port

WITHIN = 5.0
BODY = b'{"task": "t-1", "n": "\xc3\xa9"}'
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


# --- scripted receivers -----------------------------------------------------------------------


@dataclass
class Request:
    line: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


@dataclass
class Peer:
    """One connection as the server sees it."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    number: int  # 0 for the first connection the server accepted

    async def request(self) -> Request | None:
        """The next request on this connection, or None when the client closed it."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        line, *rest = head.decode().split("\r\n")[:-2]
        headers = [(k, v.strip()) for k, _, v in (h.partition(":") for h in rest)]
        length = int(next((v for k, v in headers if k.lower() == "content-length"), "0"))
        return Request(line, headers, await self.reader.readexactly(length))

    async def answer(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def closed_by_client(self) -> bool:
        try:
            return await self.reader.read() == b""
        except ConnectionError:
            return True


Script = Callable[[Peer], Awaitable[None]]


@dataclass
class Server:
    url: str
    port: int
    requests: list[Request] = field(default_factory=list)
    connections: int = 0
    open: int = 0
    most_open: int = 0
    client_closed: int = 0
    handlers: dict[asyncio.Task[None], asyncio.StreamWriter] = field(default_factory=dict)

    def track(self, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers[task] = writer

    async def stop(self, listener: asyncio.Server) -> None:
        listener.close()
        for writer in self.handlers.values():
            writer.close()
        await asyncio.gather(*self.handlers, return_exceptions=True)
        await listener.wait_closed()


@contextlib.asynccontextmanager
async def serving(script: Script, host: str = "127.0.0.1") -> AsyncIterator[Server]:
    """A server on port 0 that runs ``script`` for every connection it accepts; the
    requests the script read are in ``requests`` (via ``serve``'s wrapper)."""
    server = Server("", 0)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server.track(writer)
        peer = Peer(reader, writer, server.connections)
        server.connections += 1
        server.open += 1
        server.most_open = max(server.most_open, server.open)
        try:
            await script(peer)
        except ConnectionError:
            pass
        finally:
            server.open -= 1
            writer.close()

    listener = await asyncio.start_server(handle, host, 0)
    server.port = listener.sockets[0].getsockname()[1]
    server.url = f"http://{host}:{server.port}"
    try:
        yield server
    finally:
        await server.stop(listener)


def recording(server_box: list[Server], respond: Callable[[Peer, Request], bytes | None]) -> Script:
    """A script that reads requests one after another and answers each with ``respond``
    (None: close the connection without answering)."""

    async def script(peer: Peer) -> None:
        while (request := await peer.request()) is not None:
            server_box[0].requests.append(request)
            answer = respond(peer, request)
            if answer is None:
                return
            await peer.answer(answer)
        server_box[0].client_closed += 1

    return script


@contextlib.asynccontextmanager
async def answering(respond: Callable[[Peer, Request], bytes | None]) -> AsyncIterator[Server]:
    box: list[Server] = []
    async with serving(recording(box, respond)) as server:
        box.append(server)
        yield server


@contextlib.asynccontextmanager
async def transport(**options: object) -> AsyncIterator[HttpTransport]:
    made = HttpTransport(**options)  # type: ignore[arg-type]
    try:
        yield made
    finally:
        await made.aclose()


async def post(http: HttpTransport, url: str, **options: object) -> Outcome:
    return await http.send(OutboundRequest(url, BODY, {}, **options))  # type: ignore[arg-type]


async def until(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WITHIN
    while not check():
        assert time.monotonic() < deadline, "not within the deadline"
        await asyncio.sleep(0.01)


def always(data: bytes) -> Callable[[Peer, Request], bytes | None]:
    return lambda peer, request: data


# --- the request ------------------------------------------------------------------------------


async def test_a_post_has_host_content_length_and_the_callers_headers_and_nothing_else() -> None:
    async with answering(always(OK)) as server, transport() as http:
        headers = {
            "Content-Type": "application/json",
            "X-Hub-Signature": "sha1=abc",
            "Content-Length": "999",  # the body is ours to frame
            "Expect": "100-continue",
        }
        outcome = await http.send(
            OutboundRequest(server.url + "/hooks/a b?x=1&y=é#frag", BODY, headers)
        )
    assert (outcome.status, outcome.body, outcome.error_class) == (200, b"ok", None)
    [request] = server.requests
    assert request.line == "POST /hooks/a%20b?x=1&y=%C3%A9 HTTP/1.1"
    assert request.header("Host") == [f"127.0.0.1:{server.port}"]
    assert request.header("Content-Length") == [str(len(BODY))]
    assert request.header("Content-Type") == ["application/json"]
    assert request.header("X-Hub-Signature") == ["sha1=abc"]
    assert request.header("Transfer-Encoding") == request.header("Expect") == []
    assert request.body == BODY


async def test_a_redirect_is_an_answer_not_followed() -> None:
    moved = b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n"
    async with answering(always(moved)) as server, transport() as http:
        outcome = await post(http, server.url + "/hook")
    assert (outcome.status, outcome.header("location")) == (302, "/elsewhere")
    assert len(server.requests) == 1


async def test_bad_urls_and_headers_fail_the_attempt_without_echoing_them() -> None:
    async with transport() as http:
        for url, expected in (
            ("ftp://example.com/hook", "http:// or https://"),
            ("https://user:s3cret@example.com/hook", "credentials"),
            ("http://example.com:99999/hook", "port"),
            ("http://example.com:0/hook", "port"),
            ("http:///hook", "host"),
        ):
            outcome = await post(http, url)
            assert outcome.error_class == "url", url
            assert expected in str(outcome.error)
            assert "s3cret" not in str(outcome.error)
        broken = await http.send(
            OutboundRequest("http://127.0.0.1:9/", b"", {"Authorization": "Bearer t0k\r\nX: y"})
        )
    assert broken.error_class == "client"
    assert "Authorization" in str(broken.error)
    assert "t0k" not in str(broken.error)


# --- answers ----------------------------------------------------------------------------------


async def test_a_chunked_answer_is_decoded_and_repeated_headers_are_joined() -> None:
    chunked = (
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nSet-Cookie: a=1\r\n"
        b"X-Seen: one\r\nset-cookie: b=2\r\n\r\n"
        b"3\r\nabc\r\n5;ext=1\r\ndefgh\r\n0\r\nX-Trailer: t\r\n\r\n"
    )
    async with answering(always(chunked)) as server, transport() as http:
        first = await post(http, server.url)
        second = await post(http, server.url)
    assert (first.status, first.body) == (201, b"abcdefgh")
    assert first.headers == {
        "Transfer-Encoding": "chunked",
        "Set-Cookie": "a=1, b=2",
        "X-Seen": "one",
    }
    assert second.body == b"abcdefgh"
    assert server.connections == 1  # kept alive


async def test_an_answer_without_length_ends_when_the_receiver_closes() -> None:
    async def until_close(peer: Peer) -> None:
        if await peer.request() is None:
            return
        await peer.answer(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\npart one, ")
        await peer.answer(b"part two")
        peer.writer.close()

    async with serving(until_close) as server, transport() as http:
        first = await post(http, server.url)
        second = await post(http, server.url)
    assert (first.status, first.body) == (200, b"part one, part two")
    assert second.body == first.body
    assert server.connections == 2


async def test_interim_answers_are_skipped_and_101_is_a_protocol_error() -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + OK
    async with answering(always(interim)) as server, transport() as http:
        outcome = await post(http, server.url)
        again = await post(http, server.url)
    assert (outcome.status, outcome.body, outcome.header("link")) == (200, b"ok", None)
    assert again.status == 200
    assert server.connections == 1

    switching = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"
    )
    async with answering(always(switching)) as server, transport() as http:
        outcome = await post(http, server.url)
    assert (outcome.status, outcome.error_class) == (None, "protocol")
    assert "101" in str(outcome.error)


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    ],
    ids=["connection-close", "http-1.0"],
)
async def test_a_connection_the_receiver_will_close_is_not_reused(answer: bytes) -> None:
    async with answering(always(answer)) as server, transport() as http:
        outcomes = [await post(http, server.url) for _ in range(3)]
    assert [o.status for o in outcomes] == [200, 200, 200]
    assert server.connections == 3


async def test_keep_alive_reuses_one_connection_and_http_1_0_may_ask_for_it() -> None:
    kept = b"HTTP/1.0 204 No Content\r\nConnection: keep-alive\r\n\r\n"
    async with answering(always(kept)) as server, transport() as http:
        outcomes = [await post(http, server.url) for _ in range(3)]
    assert [(o.status, o.body) for o in outcomes] == [(204, b"")] * 3
    assert server.connections == 1


@pytest.mark.parametrize(
    "answer",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this",  # then the close
    ],
    ids=["not-http", "bad-length", "bad-chunk", "short-body"],
)
async def test_a_garbled_answer_is_a_protocol_error_and_drops_the_connection(
    answer: bytes,
) -> None:
    async def garble(peer: Peer) -> None:
        if await peer.request() is not None:
            await peer.answer(answer)  # then close: the short body's promised rest never comes

    async with serving(garble) as server, transport() as http:
        outcome = await post(http, server.url)
    assert (outcome.status, outcome.error_class) == (None, "protocol")
    assert "only this" not in str(outcome.error)


async def test_a_body_beyond_64_kib_is_cut_there_and_its_connection_closed() -> None:
    big = bytes(range(256)) * (10 * 1024 * 4)  # 10 MiB
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (big[:50_000], big[50_000:]))

    async def large(peer: Peer) -> None:
        request = await peer.request()
        if request is None:
            return
        if request.line.startswith("POST /chunked"):
            head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            peer.writer.write(head + chunked + b"0\r\n\r\n")
        else:
            peer.writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(big) + big)
        server.client_closed += await peer.closed_by_client()

    async with serving(large) as server, transport() as http:
        plain = await post(http, server.url + "/plain")
        chunks = await post(http, server.url + "/chunked")
        await until(lambda: server.client_closed == 2)
    assert (plain.status, plain.body) == (200, big[:MAX_RESPONSE_BODY])
    assert (chunks.status, chunks.body) == (200, big[:MAX_RESPONSE_BODY])
    assert server.connections == 2


async def test_a_slow_answer_times_out_at_the_request_timeout() -> None:
    async def slow(peer: Peer) -> None:
        if await peer.request() is not None:
            await peer.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
            server.client_closed += await peer.closed_by_client()

    async with serving(slow) as server, transport() as http:
        outcome = await post(http, server.url, timeout=0.3)
        await until(lambda: server.client_closed == 1)  # the connection was given up
    assert (outcome.status, outcome.error_class) == (None, "timeout")
    assert outcome.error == "no complete answer within 0.3 s"
    assert 300 <= outcome.duration_ms < 3000


async def test_each_request_on_a_kept_connection_gets_its_own_timeout() -> None:
    delays = iter([0.0, 0.4, 0.0, 3600.0])

    async def paced(peer: Peer) -> None:
        while await peer.request() is not None:
            delay = next(delays)
            if delay > 60:
                server.client_closed += await peer.closed_by_client()
                return
            await asyncio.sleep(delay)  # a receiver taking its time, not a sync point
            await peer.answer(OK)

    async with serving(paced) as server, transport() as http:
        quick = await post(http, server.url, timeout=0.2)
        slow = await post(http, server.url, timeout=5)  # after a short one: not cut at 0.2
        patient = await post(http, server.url, timeout=10)
        hurried = await post(http, server.url, timeout=0.2)  # after a long one: still 0.2
    assert [o.status for o in (quick, slow, patient)] == [200] * 3
    assert slow.duration_ms >= 400
    assert (hurried.status, hurried.error_class) == (None, "timeout")
    assert 200 <= hurried.duration_ms < 3000
    assert server.connections == 1


# --- keep-alive connections that go stale -----------------------------------------------------


async def test_a_reused_connection_the_receiver_closed_is_retried_once_on_a_fresh_one() -> None:
    answered: set[int] = set()

    def first_only(peer: Peer, request: Request) -> bytes | None:
        # Each connection answers its first request and closes on the next one unanswered:
        # a keep-alive connection the receiver closed as the request went out.
        if peer.number in answered:
            return None
        answered.add(peer.number)
        return OK

    async with answering(first_only) as server, transport() as http:
        first = await post(http, server.url)
        second = await post(http, server.url)
    assert (first.status, second.status) == (200, 200)
    assert server.connections == 2
    assert len(server.requests) == 3  # the one the stale connection swallowed, once more


async def test_the_stale_retry_happens_once_and_never_on_a_fresh_connection() -> None:
    answers = iter([OK])

    def once(peer: Peer, request: Request) -> bytes | None:
        return next(answers, None)

    async with answering(once) as server, transport() as http:
        assert (await post(http, server.url)).status == 200
        reused = await post(http, server.url)  # stale, then fresh: both closed unanswered
        fresh = await post(http, server.url)  # a fresh connection: no retry
    assert (reused.status, reused.error_class) == (None, "reset")
    assert (fresh.status, fresh.error_class) == (None, "reset")
    assert len(server.requests) == 1 + 2 + 1


async def test_a_connection_that_answered_partly_is_not_retried() -> None:
    async def script(peer: Peer) -> None:
        while (request := await peer.request()) is not None:
            server.requests.append(request)
            if len(server.requests) > 1:
                await peer.answer(b"HTTP/1.1 200 OK\r\nContent")
                return
            await peer.answer(OK)

    async with serving(script) as server, transport() as http:
        assert (await post(http, server.url)).status == 200
        outcome = await post(http, server.url)
    assert (outcome.status, outcome.error_class) == (None, "reset")
    assert len(server.requests) == 2


async def test_idle_connections_close_after_the_idle_timeout_and_on_aclose() -> None:
    async with answering(always(OK)) as server:
        async with transport(idle_timeout=0.2) as http:
            assert (await post(http, server.url)).status == 200
            await until(lambda: server.client_closed == 1)
            assert (await post(http, server.url)).status == 200
        await until(lambda: server.client_closed == 2)  # aclose closed the second
    assert server.connections == 2


async def test_a_receiver_talking_out_of_turn_loses_the_connection() -> None:
    async def chatty(peer: Peer) -> None:
        if await peer.request() is not None:
            await peer.answer(OK + b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n")
        while await peer.request() is not None:
            await peer.answer(OK)

    async with serving(chatty) as server, transport() as http:
        outcomes = [await post(http, server.url) for _ in range(2)]
    assert [o.status for o in outcomes] == [200, 200]
    assert server.connections == 2


# --- connecting -------------------------------------------------------------------------------


async def test_connecting_fails_with_its_own_error_classes() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    async with transport() as http:
        refused = await post(http, f"http://127.0.0.1:{port}/")
    assert (refused.status, refused.error_class) == (None, "refused")

    async def no_such_name(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    async with transport(resolver=no_such_name) as http:
        unknown = await post(http, "http://hooks.example.invalid/")
    assert (unknown.error_class, unknown.error) == ("dns", "[Errno -2] Name or service not known")


async def test_a_connect_timeout_is_not_a_request_timeout() -> None:
    with unanswered_port() as port:
        async with transport(connect_timeout=0.2) as http:
            outcome = await post(http, f"http://127.0.0.1:{port}/", timeout=5)
    assert (outcome.error_class, outcome.error) == (
        "connect-timeout",
        "no connection within the connect timeout",
    )
    assert outcome.duration_ms < 2000


async def test_the_limit_bounds_all_connections_and_idle_ones_make_room() -> None:
    busy = [0, 0]  # requests read and not yet answered, across both servers; the most seen

    async def slowly(peer: Peer) -> None:
        while await peer.request() is not None:
            busy[0] += 1
            busy[1] = max(busy)
            await asyncio.sleep(0.05)  # a receiver that takes its time, not a sync point
            busy[0] -= 1
            await peer.answer(OK)

    async with serving(slowly) as one, serving(slowly) as two, transport(limit=1) as http:
        first = await post(http, one.url)  # leaves an idle connection to `one`
        outcomes = await asyncio.gather(*(post(http, url) for url in [two.url, one.url] * 2))
    assert [o.status for o in [first, *outcomes]] == [200] * 5
    assert busy[1] == 1  # one connection at a time: one request at a time
    assert two.connections >= 1


async def test_a_cancelled_send_closes_its_connection_and_frees_its_place() -> None:
    async def stall_first(peer: Peer) -> None:
        if await peer.request() is None:
            return
        if peer.number == 0:
            server.client_closed += await peer.closed_by_client()
            return
        await peer.answer(OK)

    async with serving(stall_first) as server, transport(limit=1) as http:
        sending = asyncio.create_task(post(http, server.url))
        await until(lambda: server.open == 1)
        sending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sending
        await until(lambda: server.client_closed == 1)
        outcome = await post(http, server.url, timeout=2)
    assert outcome.status == 200


# --- TLS --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    return network.authority(tmp_path_factory.mktemp("ca"))


@contextlib.asynccontextmanager
async def serving_tls(authority: Authority) -> AsyncIterator[Server]:
    box: list[Server] = []
    script = recording(box, always(OK))

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server.track(writer)
        server.connections += 1
        try:
            await script(Peer(reader, writer, server.connections - 1))
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    listener = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=authority.server)
    port = listener.sockets[0].getsockname()[1]
    server = Server(f"https://127.0.0.1:{port}", port)
    box.append(server)
    try:
        yield server
    finally:
        await server.stop(listener)


async def test_https_verifies_with_the_requests_ca_and_never_shares_across_cas(
    authority: Authority,
) -> None:
    trusted = tls_context(authority.ca_pem)
    async with serving_tls(authority) as server, transport() as http:
        ok = [
            await http.send(OutboundRequest(server.url + "/h", BODY, {}, ssl=trusted))
            for _ in range(2)
        ]
        # Same host and port, the system's CAs: the connection made under the stage's CA
        # must not carry it.
        untrusted = await post(http, server.url + "/h")
    assert [o.status for o in ok] == [200, 200]
    assert server.connections == 1  # kept alive; the other never got past the handshake
    assert (untrusted.status, untrusted.error_class) == (None, "tls")
    assert "certificate verify failed" in str(untrusted.error)
    assert len(server.requests) == 2


# --- uvloop -----------------------------------------------------------------------------------


def test_the_same_transport_works_on_uvloop(authority: Authority) -> None:
    async def silent(peer: Peer) -> None:
        if await peer.request() is not None:
            await peer.closed_by_client()

    async def scenario() -> list[tuple[int | None, str | None]]:
        chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
        async with (
            answering(always(chunked)) as plain,
            serving_tls(authority) as secure,
            serving(silent) as black_hole,
            transport() as http,
        ):
            trusted = tls_context(authority.ca_pem)
            outcomes = [
                await post(http, plain.url),
                await post(http, plain.url),
                await http.send(OutboundRequest(secure.url, BODY, {}, ssl=trusted)),
                await http.send(OutboundRequest(secure.url, BODY, {}, ssl=trusted)),
                await post(http, black_hole.url, timeout=0.1),
            ]
            assert plain.connections == secure.connections == 1
        return [(o.status, o.error_class) for o in outcomes]

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        found = runner.run(scenario())
    assert found == [(200, None)] * 4 + [(None, "timeout")]


# --- the parser, fed in pieces ----------------------------------------------------------------


class _Wire(asyncio.Transport):
    """A transport that keeps what is written: enough for one Connection."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.closing = False

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        self.written.extend(bytes(piece) for piece in list_of_data)

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 0

    def abort(self) -> None:
        self.closing = True

    def close(self) -> None:
        self.closing = True


_answers = st.sampled_from(
    [
        (OK, Answer(200, [(b"Content-Length", b"2")], b"ok"), True),
        (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked"
            b"\r\n\r\n4\r\nnope\r\n0\r\n\r\n",
            Answer(404, [(b"Transfer-Encoding", b"chunked")], b"nope"),
            True,
        ),
        (
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\nbye",
            Answer(200, [(b"Connection", b"close"), (b"Content-Length", b"3")], b"bye"),
            False,
        ),
    ]
)


@settings(max_examples=60, deadline=None)
@given(_answers, st.lists(st.integers(1, 40), max_size=12))
def test_an_answer_split_anywhere_is_read_the_same(
    case: tuple[bytes, Answer, bool], cuts: list[int]
) -> None:
    data, expected, reusable = case

    async def feed() -> tuple[Answer, bool]:
        conn = Connection(Origin("127.0.0.1", 80, None), max_body=MAX_RESPONSE_BODY)
        conn.connection_made(_Wire())
        loop = asyncio.get_running_loop()
        waiter = conn.request([b"POST / HTTP/1.1\r\n\r\n"], loop.time() + 10)
        for piece in _pieces(data, cuts):
            conn.data_received(piece)
        return await waiter, conn.reusable

    assert asyncio.run(feed()) == (expected, reusable)


def _pieces(data: bytes, cuts: list[int]) -> Iterator[bytes]:
    start = 0
    for cut in cuts:
        if start >= len(data):
            return
        yield data[start : start + cut]
        start += cut
    if start < len(data):
        yield data[start:]


# --- what a hostile receiver may answer -------------------------------------------------------


async def test_header_bytes_that_are_not_utf8_are_kept_as_storable_text() -> None:
    answer = b"HTTP/1.1 200 OK\r\nX-Note: caf\xe9\r\nContent-Length: 2\r\n\r\nok"
    async with answering(always(answer)) as server, transport() as http:
        outcome = await post(http, server.url)
    assert (outcome.status, outcome.header("X-Note")) == (200, "caf\ufffd")
    orjson.dumps(dict(outcome.headers))  # what recording the attempt does: it must not fail


async def test_headers_beyond_64_kib_fail_the_attempt_and_drop_the_connection() -> None:
    lines = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 1000) for i in range(70))
    answer = b"HTTP/1.1 200 OK\r\n" + lines + b"Content-Length: 2\r\n\r\nok"
    async with answering(always(answer)) as server, transport() as http:
        outcome = await post(http, server.url)
    assert (outcome.status, outcome.error_class) == (None, "protocol")
    assert outcome.error == "the answer's headers exceed 64 KiB"


async def test_a_name_repeated_many_times_is_joined_in_order() -> None:
    lines = b"".join(b"Link: <%d>\r\n" % i for i in range(3000))
    answer = b"HTTP/1.1 200 OK\r\n" + lines + b"Content-Length: 2\r\n\r\nok"
    async with answering(always(answer)) as server, transport() as http:
        outcome = await post(http, server.url)
    assert outcome.header("Link") == ", ".join(f"<{i}>" for i in range(3000))


async def test_a_host_name_that_cannot_be_looked_up_is_a_dns_failure() -> None:
    async with transport() as http:
        outcome = await post(http, "http://a..example/hook")
    assert outcome.error_class == "dns"
