"""`hookstage listen` and `hookstage verify` as a user runs them, over real sockets."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import aiohttp

from tests.support.process import hookstage, run_cli, started
from tests.support.samples import SAMPLES
from tests.support.samples import seed_signature as _seed_signature

SAMPLE = SAMPLES / "webhook-seed-2023.json"
SECRET = "your_secret_key"


def seed_signature(body: bytes, secret: str = SECRET) -> str:
    return _seed_signature(body, secret)


async def test_listen_verifies_shows_and_keeps_a_signed_webhook(tmp_path: Path) -> None:
    body = SAMPLE.read_bytes()
    store = tmp_path / "requests.sqlite"
    args = hookstage("listen", "--port", "0", "--secret", SECRET, "--store", str(store))
    with started(args, r"listening on (http://\S+)/hook") as listener:
        url = listener.match.group(1)
        async with aiohttp.ClientSession() as http:
            good = {"X-Hub-Signature": seed_signature(body)}
            async with http.post(url + "/hook", data=body, headers=good) as response:
                assert (response.status, await response.text()) == (200, "ok")
            bad = {"X-Hub-Signature": seed_signature(body, "wrong")}
            async with http.post(url + "/hook", data=body, headers=bad) as response:
                assert response.status == 401
        valid = listener.read_until(r"valid.*Symbol Secondary Usage")
        assert "Label" in valid.string
        listener.read_until(r"invalid")
    with sqlite3.connect(store) as db:
        bodies = [row[0] for row in db.execute("SELECT body FROM requests ORDER BY id")]
    assert bodies == [body, body]


def test_verify_accepts_the_seed_signature(tmp_path: Path) -> None:
    body = SAMPLE.read_bytes()
    header = f"X-Hub-Signature: {seed_signature(body)}"
    done = run_cli("verify", "--secret", SECRET, "-H", header, str(SAMPLE))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "valid" in done.stdout


def test_verify_explains_a_reserialised_body(tmp_path: Path) -> None:
    body = SAMPLE.read_bytes()
    compact = tmp_path / "compact.json"
    compact.write_bytes(json.dumps(json.loads(body), separators=(",", ":")).encode())
    header = f"X-Hub-Signature: {seed_signature(body)}"
    done = run_cli("verify", "--secret", SECRET, "-H", header, str(compact))
    assert done.returncode == 1
    assert "re-serialised" in done.stdout or "exact raw bytes" in done.stdout
    assert SECRET not in done.stdout + done.stderr


def test_verify_explains_a_sha1_prefix_without_showing_the_secret() -> None:
    body = SAMPLE.read_bytes()
    header = f"X-Hub-Signature: sha1={seed_signature(body)}"
    done = run_cli("verify", "--secret", SECRET, "-H", header, str(SAMPLE))
    assert done.returncode == 1
    assert "sha1=" in done.stdout
    assert SECRET not in done.stdout + done.stderr


def test_verify_reads_the_body_from_stdin() -> None:
    body = SAMPLE.read_bytes()
    header = f"X-Hub-Signature: {seed_signature(body)}"
    done = run_cli("verify", "--secret", SECRET, "-H", header, "-", stdin=body)
    assert done.returncode == 0, done.stdout + done.stderr
