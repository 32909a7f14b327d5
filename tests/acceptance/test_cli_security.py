"""The security settings as a user gives them on the command line and in the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from hookstage.cipher import Cipher, new_key
from hookstage.client import Client
from hookstage.demo import DEMO_SCHEMA, demo_assets, demo_workflow, labeled
from tests.support.inbox import Inbox, listening
from tests.support.process import hookstage, run_cli, started

SERVING = r"serving on (http://\S+)"
SECRET = "cli-security-secret-4e8b1d9a"


def test_secret_key_prints_a_key_that_seals() -> None:
    made = run_cli("secret-key")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    cipher = Cipher.from_setting(key)
    assert cipher.unseal(cipher.seal("x")) == "x"
    assert "HOOKSTAGE_SECRET_KEY" in made.stderr


def test_a_key_can_be_made_to_expire(tmp_path: Path) -> None:
    db = str(tmp_path / "db.sqlite")
    made = run_cli("keys", "create", "ci-bot", "--role", "manager", "--expires", "30d", "--db", db)
    assert made.returncode == 0, made.stderr
    listed = run_cli("keys", "list", "--db", db).stdout
    [row] = [line for line in listed.splitlines() if "ci-bot" in line]
    assert "manager" in row
    assert "active" in row
    assert row.count("Z") == 2  # created and expires, both shown as times
    assert made.stdout.strip() not in listed
    refused = run_cli("keys", "create", "x", "--expires", "soon", "--db", db)
    assert refused.returncode == 2
    assert "--expires: expected a number and a unit" in refused.stderr


def test_serve_refuses_settings_it_cannot_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = str(tmp_path / "db.sqlite")
    refused = run_cli("serve", "--db", db, "--port", "0", "--allow-egress", "intranet")
    assert refused.returncode == 2
    assert "'intranet'" in refused.stderr
    assert "loopback" in refused.stderr
    monkeypatch.setenv("HOOKSTAGE_ALLOW_EGRESS", "loopback,10.0.0.0/99")
    refused = run_cli("serve", "--db", db, "--port", "0")
    assert refused.returncode == 2
    assert "'10.0.0.0/99'" in refused.stderr
    monkeypatch.delenv("HOOKSTAGE_ALLOW_EGRESS")
    monkeypatch.setenv("HOOKSTAGE_SECRET_KEY", "not-a-fernet-key")
    refused = run_cli("serve", "--db", db, "--port", "0")
    assert refused.returncode == 2
    assert "HOOKSTAGE_SECRET_KEY: not a Fernet key" in refused.stderr
    assert "not-a-fernet-key" not in refused.stderr + refused.stdout


async def test_serve_with_the_environment_seals_secrets_and_allows_loopback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "hookstage.sqlite"
    key = run_cli("keys", "create", "me", "--db", str(db)).stdout.strip()
    monkeypatch.setenv("HOOKSTAGE_SECRET_KEY", new_key())
    monkeypatch.setenv("HOOKSTAGE_ALLOW_EGRESS", "loopback")
    inbox = Inbox()
    async with listening(inbox, SECRET) as hook_url:
        with started(hookstage("serve", "--db", str(db), "--port", "0"), SERVING) as server:
            async with Client(server.match.group(1), key) as api:
                project = await api.create_project(
                    "p", DEMO_SCHEMA, demo_workflow(hook_url, SECRET)
                )
                await api.import_assets(project["id"], demo_assets(1))
                (task,) = await api.tasks(project["id"], stage="Label")
                await api.submit(task["taskId"], labeled(1), user="a@example.com", duration=1)
                (arrived,) = await inbox.wait_for(1)
            output = "".join(server.output)
    assert arrived.verdict == "valid"
    assert "HOOKSTAGE_SECRET_KEY is not set" not in output
    on_disk = _file_bytes(db)
    assert SECRET.encode() not in on_disk
    assert b'"sealed"' in on_disk


def test_serve_without_a_key_warns_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HOOKSTAGE_SECRET_KEY", raising=False)
    args = hookstage("serve", "--db", str(tmp_path / "db.sqlite"), "--port", "0")
    with started(args, r"HOOKSTAGE_SECRET_KEY is not set") as server:
        server.read_until(SERVING)
    warned = [line for line in server.output if "HOOKSTAGE_SECRET_KEY" in line]
    assert len(warned) == 1
    assert "unencrypted" in warned[0]


def _file_bytes(db: Path) -> bytes:
    """The database as it lies on disk, write-ahead log included."""
    return b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))
