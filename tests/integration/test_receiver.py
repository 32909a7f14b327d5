"""`hookstage listen` over real sockets: what a sender gets back, what the user sees and keeps."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import signal
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from yarl import URL

from hookstage.receiver import (
    Received,
    ReceiverConfig,
    ReceiverError,
    Summary,
    serve,
    summarize,
)
from tests.support.process import hookstage, started

SECRET = "s3cr3t-for-tests"
TOKEN = "tok-abcdef0123456789"
STANDARD_SECRET = "whsec_" + base64.b64encode(b"standard-webhooks-key-32-bytes!!").decode()
# shared/ sits beside the repository (here and in CI's clone).
SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "samples"
SEED = SAMPLES / "webhook-seed-2023.json"
SAMPLE_2025 = SAMPLES / "webhook-ango-2025.json"


def seed_body() -> bytes:
    return SEED.read_bytes()


def hub(body: bytes, secret: str = SECRET) -> dict[str, str]:
    signature = hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()
    return {"X-Hub-Signature": signature, "Content-Type": "application/json"}


def standard(body: bytes, *, timestamp: int | None = None) -> dict[str, str]:
    key = base64.b64decode(STANDARD_SECRET.removeprefix("whsec_"))
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    signed = f"msg_1.{stamp}.".encode() + body
    signature = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return {
        "webhook-id": "msg_1",
        "webhook-timestamp": stamp,
        "webhook-signature": f"v1,{signature}",
    }


@contextlib.asynccontextmanager
async def running(
    config: ReceiverConfig, seen: list[Received] | None = None, *, quiet: bool = True
) -> AsyncIterator[str]:
    """The receiver on a free port: its base URL, until the block ends (then it is stopped)."""
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve(
            replace(config, port=0, quiet=quiet),
            on_ready=ready.set_result,
            on_request=None if seen is None else seen.append,
        )
    )
    waiting: set[asyncio.Future[Any]] = {ready, task}
    done, _ = await asyncio.wait(waiting, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()  # serve ended before it was ready: raise its error
    assert ready in done, "the receiver did not become ready within 10 s"
    try:
        yield ready.result()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, data=body, headers=headers or {}) as response,
    ):
        return response.status, await response.text()


async def get_text(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status, await response.text()


async def listing(base: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(f"{base}/requests.json") as response:
        assert response.status == 200
        data: list[dict[str, Any]] = orjson.loads(await response.read())
        return data


# --- verification and answers ------------------------------------------------------------


async def test_valid_hub_signature_is_answered_ok_and_kept_valid() -> None:
    body = seed_body()
    seen: list[Received] = []
    async with running(ReceiverConfig(secret=SECRET), seen) as base:
        assert await post(f"{base}/hook", body, hub(body)) == (200, "ok")
        [kept] = await listing(base)
    assert (kept["verdict"], kept["scheme"], kept["status"], kept["reason"]) == (
        "valid",
        "hub",
        200,
        None,
    )
    assert kept["summary"] == {
        "externalId": "Symbol Secondary Usage - White.png",
        "stage": "Label",
        "tools": 1,
        "classifications": 0,
    }
    [received] = seen
    assert received.verdict == "valid"
    assert received.body == body
    assert received.received_at.tzinfo is not None


async def test_bad_signature_gets_401_with_a_reason_that_gives_nothing_away() -> None:
    body = seed_body()
    expected = hub(body)["X-Hub-Signature"]
    forged = hub(body, secret="not-the-secret")
    async with running(ReceiverConfig(secret=SECRET)) as base:
        status, text = await post(f"{base}/hook", body, forged)
        [kept] = await listing(base)
    assert status == 401
    assert text.strip()
    assert kept["verdict"] == "invalid"
    assert kept["status"] == 401
    assert kept["reason"]
    for leaked in (SECRET, expected):
        assert leaked not in text
        assert leaked not in kept["reason"]


async def test_missing_signature_is_invalid() -> None:
    async with running(ReceiverConfig(secret=SECRET)) as base:
        status, _ = await post(f"{base}/hook", b"{}")
        [kept] = await listing(base)
    assert status == 401
    assert kept["verdict"] == "invalid"


async def test_accept_invalid_answers_ok_but_keeps_the_verdict() -> None:
    body = seed_body()
    async with running(ReceiverConfig(secret=SECRET, accept_invalid=True)) as base:
        assert await post(f"{base}/hook", body, hub(body, "wrong")) == (200, "ok")
        [kept] = await listing(base)
    assert (kept["verdict"], kept["status"]) == ("invalid", 200)
    assert kept["reason"]


async def test_standard_webhooks_signature() -> None:
    body = seed_body()
    stale = int(time.time()) - 3600
    async with running(ReceiverConfig(secret=STANDARD_SECRET, scheme="standard")) as base:
        assert await post(f"{base}/hook", body, standard(body)) == (200, "ok")
        status, _ = await post(f"{base}/hook", body, standard(body, timestamp=stale))
        newest, oldest = await listing(base)
    assert (oldest["verdict"], oldest["scheme"]) == ("valid", "standard")
    assert status == 401
    assert newest["verdict"] == "invalid"


async def test_auto_detects_standard_webhooks_by_its_headers() -> None:
    body = seed_body()
    async with running(ReceiverConfig(secret=STANDARD_SECRET)) as base:
        assert await post(f"{base}/hook", body, standard(body)) == (200, "ok")
        [kept] = await listing(base)
    assert kept["scheme"] == "standard"


async def test_bearer_token_is_checked_and_never_shown() -> None:
    body = seed_body()
    async with running(ReceiverConfig(token=TOKEN)) as base:
        good = await post(f"{base}/hook", body, {"Authorization": f"Bearer {TOKEN}"})
        bad = await post(f"{base}/hook", body, {"Authorization": "Bearer guessed"})
        newest, oldest = await listing(base)
        _, page = await get_text(base + "/")
        _, detail = await get_text(f"{base}/requests/{oldest['id']}")
    assert good == (200, "ok")
    assert bad[0] == 401
    assert (oldest["verdict"], oldest["scheme"]) == ("valid", "bearer")
    assert newest["verdict"] == "invalid"
    assert "Authorization" in dict(oldest["headers"])
    for shown in (bad[1], str(oldest), str(newest), page, detail):
        assert TOKEN not in shown


async def test_with_secret_and_token_the_request_headers_choose_the_check() -> None:
    body = seed_body()
    async with running(ReceiverConfig(secret=SECRET, token=TOKEN)) as base:
        assert await post(f"{base}/hook", body, hub(body)) == (200, "ok")
        assert await post(f"{base}/hook", body, {"Authorization": f"Bearer {TOKEN}"}) == (
            200,
            "ok",
        )
        bad_token = await post(f"{base}/hook", body, {"Authorization": f"Bearer {SECRET}"})
        kept = await listing(base)
    assert bad_token[0] == 401
    assert [(k["verdict"], k["scheme"]) for k in kept] == [
        ("invalid", None),
        ("valid", "bearer"),
        ("valid", "hub"),
    ]


async def test_without_secret_or_token_requests_are_unchecked_and_accepted() -> None:
    async with running(ReceiverConfig()) as base:
        assert await post(f"{base}/hook", b"not json at all") == (200, "ok")
        [kept] = await listing(base)
    assert (kept["verdict"], kept["scheme"], kept["summary"]) == ("unchecked", None, None)


async def test_scheme_none_ignores_the_secret() -> None:
    async with running(ReceiverConfig(secret=SECRET, scheme="none")) as base:
        assert await post(f"{base}/hook", b"{}", hub(b"{}", "wrong")) == (200, "ok")
        [kept] = await listing(base)
    assert kept["verdict"] == "unchecked"


async def test_other_paths_are_404_and_other_methods_405() -> None:
    async with running(ReceiverConfig()) as base, aiohttp.ClientSession() as http:
        async with http.post(f"{base}/elsewhere", data=b"{}") as response:
            assert response.status == 404
        async with http.get(f"{base}/hook") as response:
            assert response.status == 405
        async with http.put(f"{base}/hook", data=b"{}") as response:
            assert response.status == 405
        async with http.get(f"{base}/healthz") as response:
            assert response.status == 200
        assert await listing(base) == []


@pytest.mark.parametrize(("fail_rate", "expected"), [(1.0, 500), (0.0, 200)])
async def test_fail_rate(fail_rate: float, expected: int) -> None:
    async with running(ReceiverConfig(fail_rate=fail_rate, seed=7)) as base:
        statuses = [(await post(f"{base}/hook", b"{}"))[0] for _ in range(5)]
        kept = await listing(base)
    assert statuses == [expected] * 5
    assert [k["status"] for k in kept] == [expected] * 5


async def test_fail_rate_is_repeatable_with_a_seed() -> None:
    async def statuses() -> list[int]:
        async with running(ReceiverConfig(fail_rate=0.5, seed=42)) as base:
            return [(await post(f"{base}/hook", b"{}"))[0] for _ in range(20)]

    first = await statuses()
    assert set(first) == {200, 500}
    assert await statuses() == first


async def test_status_option_answers_that_status() -> None:
    async with running(ReceiverConfig(status=202)) as base:
        assert await post(f"{base}/hook", b"{}") == (202, "ok")
        [kept] = await listing(base)
    assert kept["status"] == 202


async def test_delay_holds_the_answer() -> None:
    async with running(ReceiverConfig(delay=0.3)) as base:
        started = time.monotonic()
        assert await post(f"{base}/hook", b"{}") == (200, "ok")
        assert time.monotonic() - started >= 0.3


async def test_prints_one_line_per_request_and_the_body_on_request(
    capsys: pytest.CaptureFixture[str],
) -> None:
    body = seed_body()
    # An escape sequence in a JSON string (reaches the summary line) and raw in a text body.
    hostile = b'{"externalId": "evil\\u001b]0;owned\\u0007", "task": {}}'
    raw = b"plain \x1b[2J text"
    config = ReceiverConfig(secret=SECRET, show_body=True)
    async with running(config, quiet=False) as base:
        await post(f"{base}/hook", body, hub(body))
        await post(f"{base}/hook", hostile, hub(hostile, "wrong"))
        await post(f"{base}/hook", raw, hub(raw))
    out = capsys.readouterr().out
    first, second, _ = (line for line in out.splitlines() if "POST /hook" in line)
    for expected in ("valid", "200", "hub", "Symbol Secondary Usage - White.png", "Label"):
        assert expected in first
    assert "tools 1" in first
    assert "invalid" in second
    assert "401" in second
    assert "evil\\x1b]0;owned" in second
    assert '"updatedBy": "annotator@example.com"' in out  # the pretty body
    assert "\x1b" not in out  # a sender cannot drive the terminal
    assert SECRET not in out


async def test_quiet_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    async with running(ReceiverConfig(), quiet=True) as base:
        await post(f"{base}/hook", b"{}")
    assert "POST /hook" not in capsys.readouterr().out


def test_bad_config_names_the_field() -> None:
    with pytest.raises(ValueError, match="fail_rate"):
        ReceiverConfig(fail_rate=1.5)
    with pytest.raises(ValueError, match="secret"):
        ReceiverConfig(scheme="hub")
    with pytest.raises(ValueError, match="scheme"):
        ReceiverConfig(scheme="sha1")
    with pytest.raises(ValueError, match="path"):
        ReceiverConfig(path="/requests.json")
    with pytest.raises(ValueError, match="status"):
        ReceiverConfig(status=99)


# --- the store ------------------------------------------------------------------------------


async def test_store_keeps_exact_bytes_across_a_restart(tmp_path: Path) -> None:
    store = tmp_path / "requests.sqlite"
    config = ReceiverConfig(secret=SECRET, store=store)
    body = seed_body()
    odd = b"\x00\xff binary \xfe" * 10
    async with running(config) as base:
        assert (await post(f"{base}/hook", body, hub(body)))[0] == 200
        assert (await post(f"{base}/hook", odd, hub(odd, "wrong")))[0] == 401

    with contextlib.closing(sqlite3.connect(store)) as db:
        rows = db.execute(
            "SELECT id, body, verdict, status, reason, headers FROM requests ORDER BY id"
        ).fetchall()
    assert [(r[0], bytes(r[1]), r[2], r[3]) for r in rows] == [
        (1, body, "valid", 200),
        (2, odd, "invalid", 401),
    ]
    assert SECRET not in rows[1][4]
    assert hub(body)["X-Hub-Signature"] in rows[0][5]

    async with running(config) as base:
        assert (await post(f"{base}/hook", b"{}", hub(b"{}")))[0] == 200
        kept = await listing(base)
        status, page = await get_text(f"{base}/requests/1")
    assert [k["id"] for k in kept] == [3, 2, 1]
    assert base64.b64decode(kept[1]["body"]) == odd
    assert kept[1]["body_encoding"] == "base64"
    assert status == 200
    assert "Symbol Secondary Usage - White.png" in page


async def test_listen_stops_on_ctrl_c_and_flushes_the_store(tmp_path: Path) -> None:
    store = tmp_path / "ctrl-c.sqlite"
    args = hookstage("listen", "--port", "0", "--quiet", "--store", str(store))
    with started(args, r"listening on (http://\S+)/hook") as listener:
        base = listener.match.group(1)
        assert await post(f"{base}/hook", b'{"externalId": "kept"}') == (200, "ok")
        listener.process.send_signal(signal.SIGINT)
        assert listener.process.wait(timeout=20) == 0
    with contextlib.closing(sqlite3.connect(store)) as db:
        assert db.execute("SELECT body FROM requests").fetchall() == [(b'{"externalId": "kept"}',)]


async def test_store_reads_old_requests_beyond_the_memory_bound(tmp_path: Path) -> None:
    config = ReceiverConfig(store=tmp_path / "r.sqlite", keep=2)
    async with running(config) as base:
        for n in range(4):
            assert (await post(f"{base}/hook", f'{{"externalId": "e{n}"}}'.encode()))[0] == 200
        assert [k["id"] for k in await listing(base)] == [4, 3]
        # Request 1 has left memory: the page is read back from the file once it is written.
        deadline = time.monotonic() + 5
        while (found := await get_text(f"{base}/requests/1"))[0] != 200:
            assert time.monotonic() < deadline, found
            await asyncio.sleep(0.01)
    assert "e0" in found[1]


@pytest.mark.parametrize("name", ["missing-dir/r.sqlite", "not-sqlite.txt"])
async def test_store_that_cannot_be_used_is_a_clear_error(tmp_path: Path, name: str) -> None:
    (tmp_path / "not-sqlite.txt").write_text("just some notes, not a database\n" * 100)
    config = ReceiverConfig(store=tmp_path / name)
    with pytest.raises(ReceiverError, match="store: cannot use"):
        async with running(config):
            pass


async def test_seed_sample_round_trips_byte_for_byte(tmp_path: Path) -> None:
    body = seed_body()
    store = tmp_path / "seed.sqlite"
    async with running(ReceiverConfig(secret=SECRET, store=store)) as base:
        assert (await post(f"{base}/hook", body, hub(body)))[0] == 200
        [live] = await listing(base)
    async with running(ReceiverConfig(secret=SECRET, store=store)) as base:
        [reloaded] = await listing(base)
    with contextlib.closing(sqlite3.connect(store)) as db:
        (stored,) = db.execute("SELECT body FROM requests").fetchone()
    assert bytes(stored) == body
    for kept in (live, reloaded):
        assert kept["body_encoding"] == "utf-8"
        assert kept["body"].encode("utf-8") == body


# --- the inspector ----------------------------------------------------------------------------


async def test_inspector_lists_requests_with_their_headers_and_no_secret() -> None:
    body = seed_body()
    later = SAMPLE_2025.read_bytes()
    async with running(ReceiverConfig(secret=SECRET)) as base:
        await post(f"{base}/hook", body, {**hub(body), "X-Trace": "trace-<b>1</b>"})
        await post(f"{base}/hook", later, hub(later))
        status, page = await get_text(base + "/")
        _, detail = await get_text(f"{base}/requests/1")
        missing, _ = await get_text(f"{base}/requests/99")
    assert status == 200
    assert page.index("street-0001.jpg") < page.index("Symbol Secondary Usage - White.png")
    assert "X-Trace" in page
    assert "trace-&lt;b&gt;1&lt;/b&gt;" in page  # autoescaped
    assert "trace-<b>1</b>" not in page
    assert "valid" in page
    assert "/static/htmx.min.js" in page
    assert "stage Webhook" in page
    assert "externalId" in detail
    assert hub(body)["X-Hub-Signature"] in detail
    assert missing == 404
    for shown in (page, detail):
        assert SECRET not in shown


async def test_inspector_fragment_gives_only_newer_rows() -> None:
    async with running(ReceiverConfig()) as base:
        await post(f"{base}/hook", b'{"externalId": "first"}')
        await post(f"{base}/hook", b'{"externalId": "second"}')
        status, rows = await get_text(f"{base}/requests?after=1")
        none_new, _ = await get_text(f"{base}/requests?after=2")
        bad, message = await get_text(f"{base}/requests?after=x")
    assert status == 200
    assert "second" in rows
    assert "first" not in rows
    assert 'hx-get="/requests?after=2"' in rows
    assert none_new == 204
    assert bad == 400
    assert "after" in message


async def test_static_htmx_is_served() -> None:
    async with running(ReceiverConfig()) as base:
        status, script = await get_text(f"{base}/static/htmx.min.js")
    assert status == 200
    assert "htmx" in script


async def test_header_bytes_that_are_not_utf8_are_kept_exactly_and_shown_escaped(
    tmp_path: Path,
) -> None:
    store = tmp_path / "odd.sqlite"
    async with running(ReceiverConfig(store=store)) as base:
        url = URL(base)
        assert url.host is not None
        assert url.port is not None
        reader, writer = await asyncio.open_connection(url.host, url.port)
        writer.write(
            b"POST /hook HTTP/1.1\r\nHost: x\r\nX-Odd: caf\xe9 \xff\r\n"
            b"Content-Length: 2\r\nConnection: close\r\n\r\n{}"
        )
        answer = await reader.read()
        writer.close()
        await writer.wait_closed()
        page_status, page = await get_text(f"{base}/requests/1")
        [kept] = await listing(base)
    assert answer.startswith(b"HTTP/1.1 200")
    assert page_status == 200
    assert "caf\\xe9 \\xff" in page
    assert ["X-Odd", "caf\\xe9 \\xff"] in kept["headers"]
    with contextlib.closing(sqlite3.connect(store)) as db:
        (headers,) = db.execute("SELECT headers FROM requests").fetchone()
    raw = {name: value.encode("utf-8", "surrogateescape") for name, value in json.loads(headers)}
    assert raw["X-Odd"] == b"caf\xe9 \xff"


async def test_binary_body_is_shown_as_hex() -> None:
    async with running(ReceiverConfig()) as base:
        await post(f"{base}/hook", b"\x00\x01\xff")
        _, detail = await get_text(f"{base}/requests/1")
    assert "00 01 ff" in detail


# --- summaries ------------------------------------------------------------------------------


def test_summary_of_both_ango_formats() -> None:
    assert summarize(seed_body()) == Summary("Symbol Secondary Usage - White.png", "Label", 1, 0)
    assert summarize(SAMPLE_2025.read_bytes()) == Summary("street-0001.jpg", "Webhook", 2, 1)
    assert summarize(b'{"hello": "world"}') is None
    assert summarize(b"[1, 2]") is None


@given(st.binary())
def test_summary_never_fails_on_any_bytes(body: bytes) -> None:
    summary = summarize(body)
    assert summary is None or isinstance(summary, Summary)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=10,
)


@given(
    external=st.one_of(st.text(), json_values),
    tools=st.lists(json_values, max_size=5),
    classifications=st.one_of(st.lists(json_values, max_size=5), json_values),
)
def test_summary_counts_what_the_task_holds(
    external: object, tools: list[object], classifications: object
) -> None:
    body = orjson.dumps(
        {"externalId": external, "task": {"tools": tools, "classifications": classifications}}
    )
    summary = summarize(body)
    assert summary is not None
    assert summary.external_id == (external if isinstance(external, str) else None)
    assert summary.tools == len(tools)
    expected = len(classifications) if isinstance(classifications, list) else None
    assert summary.classifications == expected
