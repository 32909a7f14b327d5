"""A server killed with SIGKILL after it acknowledged a submit still delivers that webhook."""

from __future__ import annotations

from pathlib import Path

import orjson

from hookstage.client import Client
from hookstage.demo import DEMO_SCHEMA, demo_assets, demo_workflow, labeled
from tests.support.inbox import Inbox, listening
from tests.support.process import hookstage, run_cli, started
from tests.support.samples import seed_signature

SECRET = "crash-secret-0123456789"
SERVING = r"serving on (http://\S+)"


async def test_an_acknowledged_submit_survives_sigkill(tmp_path: Path) -> None:
    db = str(tmp_path / "hookstage.sqlite")
    made = run_cli("keys", "create", "tester", "--db", db)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    inbox = Inbox()
    async with listening(inbox, SECRET) as hook_url:
        # No dispatcher in the first life: the webhook can only leave from the outbox.
        first = hookstage("serve", "--db", db, "--port", "0", "--no-dispatch")
        again = hookstage("serve", "--db", db, "--port", "0", "--allow-egress", "loopback")
        with started(first, SERVING) as server:
            async with Client(server.match.group(1), key) as api:
                project = await api.create_project(
                    "p", DEMO_SCHEMA, demo_workflow(hook_url, SECRET)
                )
                await api.import_assets(project["id"], demo_assets(1))
                (task,) = await api.tasks(project["id"], stage="Label")
                await api.submit(task["taskId"], labeled(1), user="a@example.com", duration=1)
            server.kill()
        assert inbox.received == []

        with started(again, SERVING):
            (arrived,) = await inbox.wait_for(1)
    assert orjson.loads(arrived.body)["task"]["taskId"] == task["taskId"]
    assert dict(arrived.headers)["X-Hub-Signature"] == seed_signature(arrived.body, SECRET)
