"""The egress guard and TLS trust on real sockets: a receiver on loopback that the server may
reach only when an allow-list names loopback, and an https receiver trusted per stage.

Every address used is on this machine (127.0.0.0/8): a refused one is refused before any
socket exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from hookstage import service
from hookstage.demo import DEMO_SCHEMA, demo_assets, demo_workflow, labeled
from hookstage.egress import EgressPolicy, parse_allow
from hookstage.engine import Submission
from hookstage.pool import Resolver
from hookstage.store.deliveries import AttemptInfo
from hookstage.transport import HttpTransport, OutboundRequest, Outcome
from tests.support import network

WITHIN = 20.0
SECRET = "egress-stage-secret-0123456789"


@dataclass
class Receiver:
    url: str
    paths: list[str] = field(default_factory=list)


@contextlib.asynccontextmanager
async def receiving(
    tls: ssl.SSLContext | None = None, host: str = "127.0.0.1"
) -> AsyncIterator[Receiver]:
    seen: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        await request.read()
        seen.append(request.path)
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/{tail:.*}", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, 0, ssl_context=tls)
        await site.start()
        port = runner.addresses[0][1]
        yield Receiver(f"{'https' if tls else 'http'}://{host}:{port}", seen)
    finally:
        await runner.cleanup()


async def _send(policy: EgressPolicy, url: str, resolver: Resolver | None = None) -> Outcome:
    transport = HttpTransport(egress=policy, resolver=resolver)
    try:
        return await transport.send(OutboundRequest(url, b"{}", {}, timeout=5.0))
    finally:
        await transport.aclose()


async def test_loopback_is_refused_unless_the_allow_list_names_it() -> None:
    async with receiving() as receiver:
        refused = await _send(EgressPolicy(), receiver.url + "/hook")
        assert refused.status is None
        assert refused.error_class == "egress-refused"
        assert refused.error == (
            "127.0.0.1 is loopback: refused; allow it with --allow-egress 127.0.0.1/32"
            " or loopback (HOOKSTAGE_ALLOW_EGRESS)"
        )
        assert receiver.paths == []

        allowed = await _send(parse_allow(["loopback"]), receiver.url + "/hook")
        assert allowed.status == 200
        assert receiver.paths == ["/hook"]


async def test_a_name_is_judged_by_the_address_it_resolves_to() -> None:
    async with receiving() as receiver:
        port = receiver.url.rsplit(":", 1)[1]
        refused = await _send(EgressPolicy(), f"http://localhost:{port}/by-name")
        assert refused.error_class == "egress-refused"
        assert str(refused.error).startswith("localhost resolved to 127.0.0.1 (loopback)")
        assert "--allow-egress" in str(refused.error)
        assert receiver.paths == []


def _answers(address: str) -> Resolver:
    """DNS as a test says: every name resolves to ``address``."""

    async def resolve(host: str, port: int) -> list[str]:
        return [address]

    return resolve


async def test_a_name_that_now_resolves_to_a_private_address_is_refused_when_connecting() -> None:
    # The stage was saved with a name; what counts is what the name resolves to at send time.
    async with receiving() as receiver:
        port = receiver.url.rsplit(":", 1)[1]
        url = f"http://hooks.example.test:{port}/rebound"
        policy = EgressPolicy()
        refused = await _send(policy, url, _answers("127.0.0.1"))
        assert refused.error_class == "egress-refused"
        assert str(refused.error).startswith("hooks.example.test resolved to 127.0.0.1")
        assert receiver.paths == []

        allowed = parse_allow(["127.0.0.1/32"])
        sent = await _send(allowed, url, _answers("127.0.0.1"))
        assert sent.status == 200
        assert receiver.paths == ["/rebound"]


async def test_a_name_s_refused_addresses_are_never_connected_to() -> None:
    # Two listeners on one port: 127.0.0.2 (refused) and 127.0.0.1 (allowed). The name
    # resolves to the refused one first; only the allowed one may see a connection.
    seen: list[str] = []

    async def note(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(writer.get_extra_info("sockname")[0])
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    refused_side = await asyncio.start_server(note, "127.0.0.2", 0)
    port = refused_side.sockets[0].getsockname()[1]
    allowed_side = await asyncio.start_server(note, "127.0.0.1", port)

    async def both(host: str, port: int) -> list[str]:
        return ["127.0.0.2", "127.0.0.1"]

    try:
        sent = await _send(
            parse_allow(["127.0.0.1/32"]), f"http://hooks.example.test:{port}/", both
        )
    finally:
        for listener in (refused_side, allowed_side):
            listener.close()
            await listener.wait_closed()
    assert (sent.status, sent.error_class) == (204, None)
    assert seen == ["127.0.0.1"]


async def test_an_ipv4_mapped_literal_is_refused_at_the_socket() -> None:
    async with receiving() as receiver:
        port = receiver.url.rsplit(":", 1)[1]
        refused = await _send(EgressPolicy(), f"http://[::ffff:127.0.0.1]:{port}/mapped")
        assert refused.error_class == "egress-refused"
        assert "::ffff:127.0.0.1 is loopback (IPv4-mapped 127.0.0.1)" in str(refused.error)
        assert receiver.paths == []


# -- through the whole service -------------------------------------------------------------


async def _attempts(svc: service.Service, project_id: str, count: int) -> list[AttemptInfo]:
    deadline = time.monotonic() + WITHIN
    while True:
        found = await svc.engine.list_deliveries(project_id)
        details = [await svc.engine.get_delivery(d.id) for d in found]
        attempts = [a for d in details for a in d.attempt_log]
        if len(attempts) >= count:
            return attempts
        assert time.monotonic() < deadline, f"only {attempts} within {WITHIN} s"
        await asyncio.sleep(0.02)


async def _labelled_project(svc: service.Service, workflow: list[dict[str, object]]) -> str:
    project = await svc.engine.create_project(
        name="p", category_schema=DEMO_SCHEMA, workflow_json=workflow
    )
    [task_id] = (await svc.engine.import_assets(project.id, demo_assets(1))).created
    await svc.engine.submit(task_id, Submission(**labeled(1)), user="a@example.com")
    return project.id


async def test_a_refused_address_is_recorded_as_an_attempt_and_nothing_arrives(
    tmp_path: Path,
) -> None:
    async with receiving() as receiver:
        config = service.ServiceConfig(database=str(tmp_path / "db.sqlite"), port=0)
        async with service.running(config) as svc:
            project_id = await _labelled_project(svc, demo_workflow(receiver.url + "/hook", SECRET))
            [attempt] = await _attempts(svc, project_id, 1)
        assert attempt.status_code is None
        assert attempt.error_class == "egress-refused"
        assert "127.0.0.1 is loopback" in str(attempt.error)
        assert "--allow-egress" in str(attempt.error)
        assert receiver.paths == []

        allowing = service.ServiceConfig(
            database=str(tmp_path / "db2.sqlite"), port=0, allow_egress=("loopback",)
        )
        async with service.running(allowing) as svc:
            project_id = await _labelled_project(svc, demo_workflow(receiver.url + "/hook", SECRET))
            [attempt] = await _attempts(svc, project_id, 1)
        assert (attempt.status_code, attempt.error_class) == (200, None)
        assert receiver.paths == ["/hook"]


# -- TLS -----------------------------------------------------------------------------------


async def test_a_stage_trusts_its_own_ca_bundle_and_verification_stays_on(
    tmp_path: Path,
) -> None:
    authority = network.authority(tmp_path)
    async with receiving(authority.server) as receiver:
        # One URL for both stages: the trust is the stage's, not the URL's.
        trusted = demo_workflow(receiver.url + "/hook", SECRET)
        trusted[2]["caBundle"] = authority.ca_pem
        untrusted = demo_workflow(receiver.url + "/hook", SECRET)
        config = service.ServiceConfig(
            database=str(tmp_path / "db.sqlite"), port=0, allow_egress=("loopback",)
        )
        async with service.running(config) as svc:
            with_bundle = await _labelled_project(svc, trusted)
            without = await _labelled_project(svc, untrusted)
            [delivered] = await _attempts(svc, with_bundle, 1)
            [failed] = await _attempts(svc, without, 1)
            shown = (await svc.engine.get_project(with_bundle)).workflow
    assert (delivered.status_code, delivered.error_class) == (200, None)
    assert (failed.status_code, failed.error_class) == (None, "tls")
    assert "certificate verify failed" in str(failed.error)
    assert receiver.paths == ["/hook"]
    settings = shown.stages["webhook"].settings
    assert getattr(settings, "ca_bundle", None) == authority.ca_pem
