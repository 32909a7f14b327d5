"""The API fuzzed from its own OpenAPI description (schemathesis), over a real socket against
`hookstage serve` in its own process, with a valid admin key: no answer is a 5xx, and a
refused request (any 4xx) leaves the database exactly as it was.

Every operation gets requests that follow its description and requests that break it, some
aimed at a real project, task, stage and delivery so they reach past the "not found".
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode
from schemathesis.core.result import Ok

from hookstage.demo import DEMO_SCHEMA, demo_assets, demo_workflow, labeled
from tests.support.process import hookstage, run_cli, started

SERVING = r"serving on (http://\S+)"
# Per operation and mode: about 800 requests in all, 12-17 s on an idle machine. A fixed
# number, not a clock, bounds the run: a busy machine makes it slower, never different.
EXAMPLES = 10
AUTH_HEADERS = ("Authorization", "X-API-Key", "apikey")


@dataclass(frozen=True)
class Server:
    url: str
    key: str
    db: Path
    ids: dict[str, str]


# Written by the server on its own schedule (its heartbeat), not by requests.
BY_ITSELF = frozenset({"workers"})


def fingerprint(db: Path) -> str:
    """Every row of every table: equal before and after means nothing was stored."""
    digest = hashlib.sha256()
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
        ]
        for table in tables:
            if table in BY_ITSELF:
                continue
            digest.update(table.encode())
            for row in conn.execute(f'SELECT * FROM "{table}" ORDER BY rowid'):
                digest.update(repr(row).encode())
    return digest.hexdigest()


def _seed(url: str, key: str) -> dict[str, str]:
    with httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=10) as http:
        workflow = demo_workflow("https://hooks.example.com/fuzz", "fuzz-secret-0123456789")
        project = http.post(
            "/api/projects",
            json={"name": "fuzz", "categorySchema": DEMO_SCHEMA, "workflow": workflow},
        ).json()
        pid = project["id"]
        tasks = http.post(f"/api/projects/{pid}/assets", json=demo_assets(3)).json()["taskIds"]
        http.post(f"/api/tasks/{tasks[0]}/submit", json=labeled(1)).raise_for_status()
        [delivery] = http.get(f"/api/projects/{pid}/deliveries").json()["deliveries"]
        # A key the fuzzer may revoke: not its own.
        spare = http.post("/api/keys", json={"name": "spare", "role": "read-only"}).json()
    return {
        "project_id": pid,
        "task_id": tasks[1],
        "stage_id": "webhook",
        "delivery_id": delivery["id"],
        "key_id": spare["id"],
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    db = tmp_path_factory.mktemp("fuzz") / "hookstage.sqlite"
    made = run_cli("keys", "create", "fuzzer", "--db", str(db))
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    # No dispatcher: nothing changes the database but the requests themselves.
    with started(hookstage("serve", "--db", str(db), "--port", "0", "--no-dispatch"), SERVING) as s:
        url = s.match.group(1)
        yield Server(url, key, db, _seed(url, key))


def _operations(url: str) -> list[Any]:
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    return [result.ok() for result in schema.get_all_operations() if isinstance(result, Ok)]


def _fuzz(
    server: Server, operation: Any, mode: GenerationMode, check: Callable[[Case[Any]], None]
) -> None:
    fixed = {
        name: server.ids[name]
        for name in (p.name for p in operation.path_parameters)
        if name in server.ids
    }
    # Half aimed at the real objects, half wherever the generator goes.
    strategy = st.one_of(
        operation.as_strategy(generation_mode=mode, path_parameters=fixed),
        operation.as_strategy(generation_mode=mode),
    )

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def run(case: Case[Any]) -> None:
        check(case)

    try:
        run()
    except Unsatisfiable:
        # Nothing can break an operation that takes no input (GET /healthz): no bad request.
        assert mode is GenerationMode.NEGATIVE
        assert not list(operation.path_parameters)
        assert not list(operation.body)


def test_no_request_gets_a_5xx_and_a_refused_one_stores_nothing(server: Server) -> None:
    session = requests.Session()
    auth = {"X-API-Key": server.key}
    seen: dict[int, int] = {}

    def check(case: Case[Any]) -> None:
        # The generated credentials would only ever get a 401 (see the test below): send
        # the admin key alone, so the request reaches what it is about.
        if case.headers:
            for name in AUTH_HEADERS:
                case.headers.pop(name, None)
        before = fingerprint(server.db)
        response = case.call(base_url=server.url, session=session, headers=auth, timeout=10)
        status = response.status_code
        seen[status] = seen.get(status, 0) + 1
        assert status < 500, f"{case.method} {case.formatted_path}: {status} {response.text}"
        if status >= 400:
            assert fingerprint(server.db) == before, f"{case.method} {case.formatted_path}"

    operations = _operations(server.url)
    assert len(operations) >= 20
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _fuzz(server, operation, mode, check)
    # It reached past the refusals: some requests succeeded, many were refused.
    assert sum(n for code, n in seen.items() if code < 300) >= 20, seen
    assert sum(n for code, n in seen.items() if 400 <= code < 500) >= 100, seen


_token = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=60)
_header_value = st.one_of(_token, _token.map(lambda text: f"Bearer {text}"))


def test_no_made_up_credentials_get_in_and_none_crash_the_server(server: Server) -> None:
    session = requests.Session()

    @settings(max_examples=100, deadline=None, database=None, derandomize=True)
    @given(st.dictionaries(st.sampled_from(AUTH_HEADERS), _header_value, max_size=3))
    def run(headers: dict[str, str]) -> None:
        before = fingerprint(server.db)
        response = session.get(f"{server.url}/api/projects", headers=headers, timeout=10)
        assert response.status_code == 401, (headers, response.text)
        assert fingerprint(server.db) == before
        # The real key beside a made-up one is refused too: which one counts is not guessed.
        mixed = {**headers, "X-API-Key": server.key}
        answer = session.get(f"{server.url}/api/projects", headers=mixed, timeout=10)
        assert answer.status_code == (200 if _presented(mixed) == {server.key} else 401), (
            mixed,
            answer.text,
        )

    run()


def _presented(headers: dict[str, str]) -> set[str]:
    """The keys a request presents: an Authorization of another scheme presents none."""
    found = {v for name, v in headers.items() if name != "Authorization" and v}
    scheme, _, credentials = headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials:
        found.add(credentials)
    return found
