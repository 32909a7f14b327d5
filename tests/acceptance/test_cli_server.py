"""The server's command line as a user runs it: keys, serve, a project, import, export."""

from __future__ import annotations

import json
from pathlib import Path

from hookstage.demo import DEMO_SCHEMA, demo_assets, demo_workflow
from tests.support.inbox import Inbox, listening
from tests.support.process import hookstage, run_cli, started

SECRET = "cli-secret-0123456789"


async def test_a_terminal_session(tmp_path: Path) -> None:
    db = str(tmp_path / "hookstage.sqlite")
    key = run_cli("keys", "create", "me", "--db", db).stdout.strip()
    listed = run_cli("keys", "list", "--db", db)
    assert "me" in listed.stdout
    assert key not in listed.stdout

    inbox = Inbox()
    async with listening(inbox, SECRET) as hook_url:
        (tmp_path / "schema.json").write_text(json.dumps(DEMO_SCHEMA))
        (tmp_path / "workflow.json").write_text(json.dumps(demo_workflow(hook_url, SECRET)))
        assets = tmp_path / "assets.ndjson"
        assets.write_text("".join(json.dumps(a) + "\n" for a in demo_assets(30)))
        with started(
            hookstage("serve", "--db", db, "--port", "0", "--allow-egress", "loopback"),
            r"serving on (http://\S+)",
        ) as s:
            auth = ("--url", s.match.group(1), "--key", key)
            made = run_cli(
                "create-project", "street", "--schema", str(tmp_path / "schema.json"),
                "--workflow", str(tmp_path / "workflow.json"), *auth,
            )  # fmt: skip
            assert made.returncode == 0, made.stderr
            project = made.stdout.strip()

            imported = run_cli("import", str(assets), "-p", project, "--chunk", "7", *auth)
            assert "imported 30 assets" in imported.stdout, imported.stderr
            again = run_cli("import", str(assets), "-p", project, "--skip-existing", *auth)
            assert "imported 0 assets, skipped 30" in again.stdout, again.stderr
            refused = run_cli("import", str(assets), "-p", project, *auth)
            assert refused.returncode == 1
            assert "already imported" in refused.stderr

            out = tmp_path / "export.json"
            exported = run_cli("export", "-p", project, "--format", "json", "-o", str(out), *auth)
            assert "exported 30 tasks" in exported.stderr
            records = json.loads(out.read_text())
            assert sorted(r["externalId"] for r in records) == [
                a["externalId"] for a in demo_assets(30)
            ]
            assert all(r["task"]["stage"] == "Start" for r in records)

            shown = run_cli("task", records[0]["task"]["taskId"], *auth)
            assert records[0]["externalId"] in shown.stdout
            assert "Label" in shown.stdout

            wrong = run_cli("projects", "--url", s.match.group(1), "--key", "hs_not-a-key")
            assert wrong.returncode == 1
            assert "401" in wrong.stderr
    assert SECRET not in "".join(s.output)
