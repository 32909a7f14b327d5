"""Stage secrets encrypted at rest: what is in the SQLite file, and starting with or without
the key."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest

from hookstage import service
from hookstage import workflow as wf
from hookstage.cipher import Cipher, new_key
from hookstage.engine import Engine, EngineError
from hookstage.signing import generate_standard_secret
from hookstage.store import open_store

SECRET = generate_standard_secret()
OLD_SECRET = generate_standard_secret()
TOKEN = "tok_bearer-at-rest-0123456789"
SCHEMA: dict[str, Any] = {"tools": [], "classifications": [], "relations": []}


def two_webhooks() -> list[dict[str, Any]]:
    return [
        {"id": "Start", "type": "Start", "name": "Start", "next": ["signed"]},
        {"id": "signed", "type": "Webhook", "name": "Signed", "next": ["bearer"],
         "url": "https://hooks.example.com/signed", "signatures": ["standard"],
         "auth": {"type": "secret", "secret": SECRET, "previousSecret": OLD_SECRET,
                  "previousUntil": "2099-01-01T00:00:00Z"}},
        {"id": "bearer", "type": "Webhook", "name": "Bearer", "next": ["Done"],
         "url": "https://hooks.example.com/bearer", "auth": {"type": "bearer", "token": TOKEN}},
        {"id": "Done", "type": "Complete", "name": "Done", "next": []},
    ]  # fmt: skip


def file_bytes(db: Path) -> bytes:
    """The database as it lies on disk, write-ahead log included."""
    return b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))


def stored_workflow(db: Path) -> Any:
    with sqlite3.connect(db) as conn:
        (text,) = conn.execute("SELECT workflow FROM projects").fetchone()
    return orjson.loads(text)


async def test_with_a_key_the_database_file_holds_no_secret(tmp_path: Path) -> None:
    db = tmp_path / "hookstage.sqlite"
    cipher = Cipher([new_key()])
    store = await open_store(str(db))
    try:
        engine = Engine(store, cipher=cipher)
        made = await engine.create_project(
            name="p", category_schema=SCHEMA, workflow_json=two_webhooks()
        )
        shown = wf.to_json(made.workflow)
        await engine.update_workflow(made.id, shown)  # re-saved without typing them again
        again = await Engine(store, cipher=cipher).get_project(made.id)  # read from the file
    finally:
        await store.close()
    assert again.workflow == made.workflow
    on_disk = file_bytes(db)
    for value in (SECRET, OLD_SECRET, TOKEN):
        assert value.encode() not in on_disk
    sealed = wf.stored_secrets(stored_workflow(db))
    assert len(sealed) == 3
    assert all(isinstance(v, dict) and cipher.is_current(v["sealed"]) for v in sealed)


async def test_a_key_given_later_seals_what_was_stored_plain(tmp_path: Path) -> None:
    db = tmp_path / "hookstage.sqlite"
    store = await open_store(str(db))
    try:
        made = await Engine(store).create_project(
            name="p", category_schema=SCHEMA, workflow_json=two_webhooks()
        )
        assert SECRET in wf.stored_secrets(stored_workflow(db))
        key = new_key()
        cipher = Cipher([key])
        assert await Engine(store, cipher=cipher).seal_stored() == 1
        assert await Engine(store, cipher=cipher).seal_stored() == 0  # nothing left to do
        assert all(isinstance(v, dict) for v in wf.stored_secrets(stored_workflow(db)))
        assert (await Engine(store, cipher=cipher).get_project(made.id)).workflow == made.workflow

        # A new key listed first: re-sealed with it, the old one still opens until then.
        newer = Cipher.from_setting(f"{new_key()},{key}")
        assert await Engine(store, cipher=newer).seal_stored() == 1
        sealed = wf.stored_secrets(stored_workflow(db))
        assert all(isinstance(v, dict) and newer.is_current(v["sealed"]) for v in sealed)
    finally:
        await store.close()


async def test_without_the_key_sealed_secrets_stop_the_start_with_a_clear_message(
    tmp_path: Path,
) -> None:
    db = tmp_path / "hookstage.sqlite"
    key = new_key()
    store = await open_store(str(db))
    try:
        await Engine(store, cipher=Cipher([key])).create_project(
            name="p", category_schema=SCHEMA, workflow_json=two_webhooks()
        )
        with pytest.raises(EngineError, match="HOOKSTAGE_SECRET_KEY"):
            await Engine(store).seal_stored()
        with pytest.raises(EngineError, match="HOOKSTAGE_SECRET_KEY"):
            await Engine(store, cipher=Cipher([new_key()])).seal_stored()
    finally:
        await store.close()
    config = service.ServiceConfig(database=str(db), port=0, dispatch=False)
    with pytest.raises(service.ServiceError) as refused:
        async with service.running(config):
            pass
    assert "sealed" in str(refused.value)
    assert "HOOKSTAGE_SECRET_KEY" in str(refused.value)
    keyed = service.ServiceConfig(database=str(db), port=0, dispatch=False, secret_key=key)
    async with service.running(keyed) as svc:
        assert len(await svc.engine.list_projects()) == 1


async def test_serving_without_a_key_warns_once_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    plain = service.ServiceConfig(database=str(tmp_path / "a.sqlite"), port=0, dispatch=False)
    async with service.running(plain) as svc:
        await svc.engine.create_project(
            name="p", category_schema=SCHEMA, workflow_json=two_webhooks()
        )
        await svc.engine.list_projects()
    warnings = [r.getMessage() for r in caplog.records if "HOOKSTAGE_SECRET_KEY" in r.getMessage()]
    assert len(warnings) == 1
    assert "unencrypted" in warnings[0]
    assert "hookstage secret-key" in warnings[0]

    caplog.clear()
    keyed = service.ServiceConfig(
        database=str(tmp_path / "b.sqlite"), port=0, dispatch=False, secret_key=new_key()
    )
    async with service.running(keyed):
        pass
    assert not [r for r in caplog.records if "HOOKSTAGE_SECRET_KEY" in r.getMessage()]
