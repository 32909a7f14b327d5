"""`hookstage listen`: the seed's sample receiver, done properly.

Every POST on the hook path is verified, answered, printed (one line) and kept: the last
`keep` requests in memory for the inspector, and every request in a SQLite file when `store`
is given. One writer thread owns the file and commits in batches, so the event loop never
waits on the disk.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import queue
import random
import sqlite3
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

import jinja2
import orjson
from aiohttp import web
from multidict import CIMultiDictProxy
from rich.console import Console
from rich.text import Text

from hookstage.verify import Scheme, VerificationError, detect_scheme, verify, verify_bearer

__all__ = [
    "Received",
    "ReceiverConfig",
    "ReceiverError",
    "Summary",
    "create_app",
    "serve",
    "summarize",
]

Verdict = Literal["valid", "invalid", "unchecked"]

SCHEMES: Final = ("auto", "hub", "hub-256", "standard", "bearer", "none")
# Paths the inspector owns: a hook path there would shadow a page.
_RESERVED: Final = ("/healthz", "/requests", "/requests.json")
_RESERVED_PREFIXES: Final = ("/requests/", "/static/")
# Header values that carry a credential: never kept, printed or rendered.
_CREDENTIAL_HEADERS: Final = frozenset({"authorization", "proxy-authorization"})
_FLUSH_EVERY: Final = 0.01  # seconds a received request may wait before it is handed to disk
_FLUSH_ROWS: Final = 500
_LIST_BODY_LIMIT: Final = 64 * 1024  # bytes of body shown inline in the list; the page has all


class ReceiverError(Exception):
    """The receiver could not start or keep its store (the message says which and why)."""


@dataclass(frozen=True)
class ReceiverConfig:
    """`hookstage listen`'s options; bad values raise ValueError naming the field."""

    host: str = "127.0.0.1"
    port: int = 8000
    path: str = "/hook"
    secret: str | None = None
    token: str | None = None
    scheme: str = "auto"
    accept_invalid: bool = False
    show_body: bool = False
    quiet: bool = False
    store: Path | None = None
    fail_rate: float = 0.0
    status: int = 200
    delay: float = 0.0
    tolerance: float = 300.0
    seed: int | None = None
    keep: int = 1000
    max_body: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        for problem in _problems(self):
            raise ValueError(problem)


def _problems(c: ReceiverConfig) -> Iterable[str]:
    yield from _where_problems(c)
    yield from _check_problems(c)
    yield from _answer_problems(c)


def _where_problems(c: ReceiverConfig) -> Iterable[str]:
    if not 0 <= c.port <= 65535:
        yield f"port: expected 0..65535, got {c.port}"
    if not c.path.startswith("/"):
        yield f"path: expected a path starting with '/', got {c.path!r}"
    if c.path in _RESERVED or c.path.startswith(_RESERVED_PREFIXES):
        yield f"path: {c.path!r} is used by the inspector; choose another (e.g. /hook)"
    if c.keep < 1:
        yield f"keep: expected a positive number of requests, got {c.keep}"
    if c.max_body < 1:
        yield f"max_body: expected a positive number of bytes, got {c.max_body}"


def _check_problems(c: ReceiverConfig) -> Iterable[str]:
    if c.scheme not in SCHEMES:
        yield f"scheme: expected one of {', '.join(SCHEMES)}, got {c.scheme!r}"
    if c.scheme in ("hub", "hub-256", "standard") and not c.secret:
        yield f"secret: scheme {c.scheme!r} needs a secret"
    if c.scheme == "bearer" and not (c.token or c.secret):
        yield "token: scheme 'bearer' needs a token"
    if c.tolerance <= 0:
        yield f"tolerance: expected seconds > 0, got {c.tolerance}"


def _answer_problems(c: ReceiverConfig) -> Iterable[str]:
    if not 0.0 <= c.fail_rate <= 1.0:
        yield f"fail_rate: expected a fraction between 0 and 1, got {c.fail_rate}"
    if not 200 <= c.status <= 599:
        yield f"status: expected an HTTP status 200..599, got {c.status}"
    if c.delay < 0:
        yield f"delay: expected seconds >= 0, got {c.delay}"


@dataclass(frozen=True, slots=True)
class Summary:
    """What an Ango payload is about, read cheaply from its JSON."""

    external_id: str | None
    stage: str | None
    tools: int | None
    classifications: int | None


@dataclass(frozen=True, slots=True)
class Received:
    """One request as it arrived and how it was answered.

    `headers` are the request's, in order, except credential values (Authorization),
    which are replaced by "[redacted]" before anything keeps or shows them. `body` is the
    exact bytes. `reason` says why an invalid request failed (never a secret); `status` is
    the status we answered. `summary` is read from the body when asked for (not on the
    hot path: a quiet receiver never parses a body).
    """

    id: int
    received_at: datetime
    method: str
    path: str
    query: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    verdict: Verdict
    scheme: str | None
    reason: str | None
    status: int

    @property
    def summary(self) -> Summary | None:
        return summarize(self.body)


def summarize(body: bytes) -> Summary | None:
    """The summary of an Ango webhook or export body; None for anything else."""
    if body[:64].lstrip()[:1] != b"{":  # not a JSON object: skip the parser's exception
        return None
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    task = doc.get("task")
    if not isinstance(task, dict):
        task = {}
    if "externalId" not in doc and not task:
        return None
    # ango-2025 names the stage in stageName (stage is its id); ango-2023 in stage.
    stage = task.get("stageName") or task.get("stage")
    return Summary(
        external_id=_text(doc.get("externalId")),
        stage=_text(stage),
        tools=_count(task.get("tools")),
        classifications=_count(task.get("classifications")),
    )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _count(value: object) -> int | None:
    return len(value) if isinstance(value, list) else None


# --- decisions (pure) ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Check:
    verdict: Verdict
    scheme: str | None
    reason: str | None


def _check(config: ReceiverConfig, body: bytes, headers: Mapping[str, str]) -> _Check:
    """Verify one request as the config says: which scheme passed, or why it failed."""
    secret = config.secret
    token = config.token or (secret if config.scheme == "bearer" else None)
    if config.scheme == "none" or not (secret or token):
        return _Check("unchecked", None, None)
    try:
        if token and _claims_bearer(config.scheme, secret, headers):
            verify_bearer(headers, token)
            return _Check("valid", Scheme.BEARER.value, None)
        # Config validation leaves a secret here: every scheme but bearer requires one.
        scheme = verify(
            body, headers, secret or "", scheme=config.scheme, tolerance=config.tolerance
        )
        return _Check("valid", scheme.value, None)
    except VerificationError as exc:
        return _Check("invalid", None, f"{exc.reason}: {exc}")  # verify never quotes secrets


def _claims_bearer(scheme: str, secret: str | None, headers: Mapping[str, str]) -> bool:
    if scheme != "auto":
        return scheme == "bearer"
    # With a secret and a token, the strongest credential the request carries is checked.
    return not secret or detect_scheme(headers) is Scheme.BEARER


def _status(config: ReceiverConfig, check: _Check, rng: random.Random) -> int:
    if check.verdict == "invalid" and not config.accept_invalid:
        return 401
    if config.fail_rate and rng.random() < config.fail_rate:
        return 500
    return config.status


def _redact(headers: CIMultiDictProxy[str]) -> tuple[tuple[str, str], ...]:
    pairs = tuple(headers.items())
    if not any(name in headers for name in _CREDENTIAL_HEADERS):  # case-insensitive lookups
        return pairs
    return tuple(
        (name, _redacted(value)) if name.lower() in _CREDENTIAL_HEADERS else (name, value)
        for name, value in pairs
    )


def _redacted(value: str) -> str:
    kind, _, rest = value.partition(" ")
    return f"{kind} [redacted]" if rest else "[redacted]"


# --- the store ----------------------------------------------------------------------------

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY,
    received_at TEXT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    query TEXT NOT NULL,
    headers TEXT NOT NULL,
    body BLOB NOT NULL,
    verdict TEXT NOT NULL,
    scheme TEXT,
    reason TEXT,
    status INTEGER NOT NULL
)
"""
_INSERT: Final = """
INSERT INTO requests (id, received_at, method, path, query, headers, body, verdict, scheme,
                      reason, status)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
_SELECT: Final = """
SELECT id, received_at, method, path, query, headers, body, verdict, scheme, reason, status
FROM requests
"""


def _row(r: Received) -> tuple[object, ...]:
    try:
        headers = orjson.dumps(r.headers).decode()
    except orjson.JSONEncodeError:
        # A header that was not UTF-8 holds lone surrogates: stdlib json escapes them.
        headers = json.dumps(r.headers)
    at = r.received_at.isoformat()
    return (
        r.id,
        at,
        r.method,
        r.path,
        r.query,
        headers,
        r.body,
        r.verdict,
        r.scheme,
        r.reason,
        r.status,
    )


def _from_row(row: tuple[Any, ...]) -> Received:
    id_, at, method, path, query, headers, body, verdict, scheme, reason, status = row
    return Received(
        id=id_,
        received_at=datetime.fromisoformat(at),
        method=method,
        path=path,
        query=query,
        headers=tuple((name, value) for name, value in json.loads(headers)),
        body=bytes(body),
        verdict=verdict,
        scheme=scheme,
        reason=reason,
        status=status,
    )


def _open(path: Path, keep: int) -> tuple[sqlite3.Connection, list[tuple[Any, ...]]]:
    """The file's connection (made ready for writing) and its last `keep` rows, newest first."""
    conn = None
    try:
        # The writer thread takes this connection over; it is never used from two at once.
        conn = sqlite3.connect(path, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(_SCHEMA)
        rows = conn.execute(_SELECT + "ORDER BY id DESC LIMIT ?", (keep,)).fetchall()
    except sqlite3.Error as exc:
        if conn is not None:
            conn.close()
        raise ReceiverError(f"store: cannot use {path} as a SQLite file: {exc}") from exc
    return conn, rows


class _Store:
    """A SQLite file written by one thread; batches arrive from the event loop."""

    def __init__(self, path: Path, console: Console) -> None:
        self._path = path
        self._console = console
        self._batches: queue.SimpleQueue[list[Received] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._write, name="hookstage-store", daemon=True)
        self._conn: sqlite3.Connection | None = None

    def open(self, keep: int) -> list[Received]:
        """Blocking: create the file if needed, start the writer; the last `keep` rows."""
        self._conn, rows = _open(self._path, keep)
        self._thread.start()
        return [_from_row(row) for row in reversed(rows)]

    def put(self, batch: list[Received]) -> None:
        self._batches.put(batch)

    def close(self) -> None:
        """Blocking: write everything handed over so far, then stop."""
        self._batches.put(None)
        if self._thread.is_alive():
            self._thread.join()

    def get(self, request_id: int) -> Received | None:
        """Blocking: one request, read on its own connection (WAL lets it run beside writes)."""
        with contextlib.closing(sqlite3.connect(self._path)) as conn:
            row = conn.execute(_SELECT + "WHERE id = ?", (request_id,)).fetchone()
        return None if row is None else _from_row(row)

    def _write(self) -> None:
        assert self._conn is not None
        with contextlib.closing(self._conn) as conn:
            while (batch := self._batches.get()) is not None:
                # Whatever piled up while the last commit ran goes into this one.
                more, done = self._drain()
                self._commit(conn, batch + more)
                if done:
                    return

    def _drain(self) -> tuple[list[Received], bool]:
        rows: list[Received] = []
        while True:
            try:
                batch = self._batches.get_nowait()
            except queue.Empty:
                return rows, False
            if batch is None:
                return rows, True
            rows.extend(batch)

    def _commit(self, conn: sqlite3.Connection, rows: list[Received]) -> None:
        try:
            with conn:
                conn.executemany(_INSERT, [_row(r) for r in rows])
        except sqlite3.Error as exc:
            # The receiver keeps answering; the user must learn the file is missing rows.
            self._console.print(f"store: could not write {len(rows)} request(s): {exc}")


# --- the application ----------------------------------------------------------------------


def _templates() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("hookstage", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


_CSP: Final = "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:"
_STATIC: Final = Path(__file__).parent / "static"


class _Receiver:
    def __init__(
        self, config: ReceiverConfig, on_request: Callable[[Received], None] | None
    ) -> None:
        self.config = config
        self._on_request = on_request
        self._rng = random.Random(config.seed)
        self._recent: deque[Received] = deque(maxlen=config.keep)
        self._next_id = 1
        self._console = Console(highlight=False, soft_wrap=True)
        self._errors = Console(stderr=True, highlight=False)
        self._store = _Store(config.store, self._errors) if config.store else None
        self._pending: list[Received] = []
        self._flush_handle: asyncio.TimerHandle | None = None
        self._templates = _templates()

    # lifecycle

    async def lifetime(self, _app: web.Application) -> AsyncIterator[None]:
        store = self._store
        if store is not None:
            self._recent.extend(await asyncio.to_thread(store.open, self.config.keep))
            # Ids go on from the file's last one, so a restart never reuses an id.
            self._next_id = self._recent[-1].id + 1 if self._recent else 1
        try:
            yield
        finally:
            if store is not None:
                self._flush()
                await asyncio.to_thread(store.close)

    def _keep(self, received: Received) -> None:
        self._recent.append(received)
        if self._store is None:
            return
        self._pending.append(received)
        if len(self._pending) >= _FLUSH_ROWS:
            self._flush()
        elif self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_later(_FLUSH_EVERY, self._flush)

    def _flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self._pending and self._store is not None:
            self._store.put(self._pending)
            self._pending = []

    # the hook

    async def hook(self, request: web.Request) -> web.Response:
        received_at = datetime.now(UTC)
        body = await request.read()
        check = _check(self.config, body, request.headers)
        status = _status(self.config, check, self._rng)
        received = Received(
            id=self._next_id,
            received_at=received_at,
            method=request.method,
            path=request.path,
            query=request.query_string,
            headers=_redact(request.headers),
            body=body,
            verdict=check.verdict,
            scheme=check.scheme,
            reason=check.reason,
            status=status,
        )
        self._next_id += 1
        self._keep(received)
        self._show(received)
        if self._on_request is not None:
            self._on_request(received)
        if self.config.delay:
            await asyncio.sleep(self.config.delay)
        return _answer(status, check)

    def _show(self, received: Received) -> None:
        if self.config.quiet:
            return
        self._console.print(_line(received))
        if self.config.show_body:
            text = _body_view(received.body)[1].translate(_CONTROL)
            self._console.print(Text(text))

    # the inspector

    def _find(self, request_id: int) -> Received | None:
        # Ids rise with time, so the ring is short-circuited from the newest end.
        for received in reversed(self._recent):
            if received.id == request_id:
                return received
            if received.id < request_id:
                break
        return None

    def _newest(self, after: int, limit: int) -> list[Received]:
        rows: list[Received] = []
        for received in reversed(self._recent):
            if received.id <= after or len(rows) >= limit:
                break
            rows.append(received)
        return rows

    def _render(self, template: str, **context: Any) -> web.Response:
        html = self._templates.get_template(template).render(**context)
        return web.Response(
            text=html,
            content_type="text/html",
            headers={"Content-Security-Policy": _CSP, "X-Content-Type-Options": "nosniff"},
        )

    async def inspector(self, request: web.Request) -> web.Response:
        limit = _int_param(request, "limit", 100)
        rows = self._newest(0, limit)
        last = self._recent[-1].id if self._recent else 0
        return self._render(
            "inspector.html",
            rows=[_view(r, _LIST_BODY_LIMIT) for r in rows],
            last=last,
            mode=_mode(self.config),
            hook_url=f"{request.scheme}://{request.host}{self.config.path}",
            shown=len(rows),
            keep=self.config.keep,
            stored=self._store is not None,
        )

    async def rows(self, request: web.Request) -> web.Response:
        after = _int_param(request, "after", 0)
        rows = self._newest(after, self.config.keep)
        if not rows:
            return web.Response(status=204)
        return self._render(
            "rows.html", rows=[_view(r, _LIST_BODY_LIMIT) for r in rows], last=rows[0].id
        )

    async def detail(self, request: web.Request) -> web.Response:
        request_id = _int_param(request, "id", 0)
        received = self._find(request_id)
        if received is None and self._store is not None:
            received = await asyncio.to_thread(self._store.get, request_id)
        if received is None:
            raise web.HTTPNotFound(text=f"no request with id {request_id}")
        return self._render("request.html", r=_view(received, None), mode=_mode(self.config))

    async def listing(self, request: web.Request) -> web.Response:
        after = _int_param(request, "after", 0)
        limit = _int_param(request, "limit", self.config.keep)
        data = [_json(r) for r in self._newest(after, limit)]
        return web.Response(body=orjson.dumps(data), content_type="application/json")


async def _healthz(_request: web.Request) -> web.Response:
    return web.Response(text="ok")


def _answer(status: int, check: _Check) -> web.Response:
    if status == 401:
        return web.Response(status=401, text=f"rejected: {check.reason}\n")
    if status == 500:
        return web.Response(status=500, text="simulated failure (fail rate)\n")
    if status in (204, 304):
        return web.Response(status=status)
    return web.Response(status=status, text="ok")


def _int_param(request: web.Request, name: str, default: int) -> int:
    raw = request.match_info.get(name) or request.query.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name}: expected an integer, got {raw!r}") from None


def _mode(config: ReceiverConfig) -> str:
    """How requests are checked, in words (never the secret itself)."""
    if config.scheme == "none" or not (config.secret or config.token):
        return "signatures not checked"
    detail = "any scheme" if config.scheme == "auto" else f"scheme {config.scheme}"
    if config.accept_invalid:
        return f"signatures checked ({detail}), invalid requests accepted"
    return f"signatures checked ({detail})"


# --- views --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _View:
    id: int
    time: str
    iso: str
    method: str
    path: str
    query: str
    verdict: Verdict
    scheme: str | None
    reason: str | None
    status: int
    summary: Summary | None
    headers: tuple[tuple[str, str], ...]
    size: int
    body_kind: str
    body: str
    truncated: bool


def _view(r: Received, limit: int | None) -> _View:
    kind, text = _body_view(r.body)
    truncated = limit is not None and len(text) > limit
    return _View(
        id=r.id,
        time=r.received_at.astimezone().strftime("%H:%M:%S.%f")[:-3],
        iso=r.received_at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        method=r.method,
        path=r.path,
        query=r.query,
        verdict=r.verdict,
        scheme=r.scheme,
        reason=r.reason,
        status=r.status,
        summary=r.summary,
        headers=_shown_headers(r.headers),
        size=len(r.body),
        body_kind=kind,
        body=text[:limit] if truncated else text,
        truncated=truncated,
    )


def _shown_headers(headers: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """Headers as text: bytes that were not UTF-8 (kept exactly, as surrogates) shown as \\xNN."""
    return tuple((name, _shown(value)) for name, value in headers)


def _shown(value: str) -> str:
    if value.isascii():
        return value
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _body_view(body: bytes) -> tuple[str, str]:
    """("json" | "text" | "hex" | "empty", what to show)."""
    if not body:
        return "empty", ""
    try:
        return "json", orjson.dumps(orjson.loads(body), option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:
        pass
    try:
        return "text", body.decode("utf-8")
    except UnicodeDecodeError:
        return "hex", _hexdump(body)


def _hexdump(body: bytes) -> str:
    lines = []
    for offset in range(0, len(body), 16):
        chunk = body[offset : offset + 16]
        printable = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{offset:08x}  {chunk.hex(' '):<47}  {printable}")
    return "\n".join(lines)


def _json(r: Received) -> dict[str, object]:
    try:
        body, encoding = r.body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        body, encoding = base64.b64encode(r.body).decode("ascii"), "base64"
    s = r.summary
    return {
        "id": r.id,
        "received_at": r.received_at.isoformat(),
        "method": r.method,
        "path": r.path,
        "query": r.query,
        "headers": _shown_headers(r.headers),
        "body": body,
        "body_encoding": encoding,
        "verdict": r.verdict,
        "scheme": r.scheme,
        "reason": r.reason,
        "status": r.status,
        "summary": None
        if s is None
        else {
            "externalId": s.external_id,
            "stage": s.stage,
            "tools": s.tools,
            "classifications": s.classifications,
        },
    }


_VERDICT_STYLE: Final = {"valid": "green", "invalid": "bold red", "unchecked": "yellow"}
# Senders choose these bytes: a terminal shows their control characters, never obeys them.
_CONTROL: Final = {c: f"\\x{c:02x}" for c in (*range(32), *range(127, 160)) if c not in (9, 10)}
_CONTROL_LINE: Final = {**_CONTROL, 9: "\\t", 10: "\\n"}


def _line(r: Received) -> Text:
    line = Text(r.received_at.astimezone().strftime("%H:%M:%S.%f")[:-3] + " ")
    line.append(f"{r.verdict:<9}", style=_VERDICT_STYLE[r.verdict])
    line.append(f" {r.status} ", style="bold" if r.status < 400 else "red")
    path = r.path.translate(_CONTROL_LINE)
    line.append(f"{r.method} {path}  {r.scheme or '-'}  {len(r.body)} B")
    s = r.summary
    if s is not None:
        line.append(f"  {(s.external_id or '-').translate(_CONTROL_LINE)}", style="cyan")
        line.append(f"  stage {(s.stage or '-').translate(_CONTROL_LINE)}")
        line.append(f"  tools {_n(s.tools)}  classifications {_n(s.classifications)}")
    if r.reason:
        line.append(f"  ({r.reason.translate(_CONTROL_LINE)})", style="red")
    return line


def _n(count: int | None) -> str:
    return "-" if count is None else str(count)


# --- entry points -------------------------------------------------------------------------


def create_app(
    config: ReceiverConfig, *, on_request: Callable[[Received], None] | None = None
) -> web.Application:
    """The receiver as an aiohttp application (the store opens when the app starts)."""
    receiver = _Receiver(config, on_request)
    app = web.Application(client_max_size=config.max_body)
    app.cleanup_ctx.append(receiver.lifetime)
    app.router.add_post(config.path, receiver.hook)
    app.router.add_get("/", receiver.inspector)
    app.router.add_get("/requests", receiver.rows)
    app.router.add_get("/requests.json", receiver.listing)
    app.router.add_get(r"/requests/{id:\d+}", receiver.detail)
    app.router.add_get("/healthz", _healthz)
    app.router.add_static("/static", _STATIC)
    return app


def _base_url(runner: web.AppRunner) -> str:
    host, port = runner.addresses[0][:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def serve(
    config: ReceiverConfig,
    *,
    on_ready: Callable[[str], None] | None = None,
    on_request: Callable[[Received], None] | None = None,
) -> None:
    """Listen until cancelled; on cancellation, everything received is written to the store."""
    runner = web.AppRunner(
        create_app(config, on_request=on_request), access_log=None, handle_signals=False
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.host, config.port, backlog=1024)
        try:
            await site.start()
        except OSError as exc:
            raise ReceiverError(
                f"cannot listen on {config.host}:{config.port}: {exc.strerror}"
            ) from exc
        if on_ready is not None:
            on_ready(_base_url(runner))
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
