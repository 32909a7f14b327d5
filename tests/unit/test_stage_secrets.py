"""A Webhook stage's secrets: rotation with an overlap, sealing for the store, a CA bundle,
and what the sender signs with at a given moment."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hookstage import service
from hookstage import workflow as wf
from hookstage.cipher import Cipher, new_key
from hookstage.signing import generate_standard_secret, hub_signature
from hookstage.verify import verify_standard_webhooks

HOOK = "https://hooks.example.com/ango"
NEW = generate_standard_secret()
OLD = generate_standard_secret()
UNTIL = "2025-03-01T12:00:00Z"
UNTIL_EPOCH = datetime(2025, 3, 1, 12, tzinfo=UTC).timestamp()
TOKEN = "tok_abcdefghijklmnop0123"

Json = dict[str, Any]


def flow(auth: Json, **settings: Any) -> list[Json]:
    return [
        {"id": "Start", "type": "Start", "name": "Start", "next": ["Hook"]},
        {"id": "Hook", "type": "Webhook", "name": "Hook", "next": ["Done"],
         "url": HOOK, "auth": auth, **settings},
        {"id": "Done", "type": "Complete", "name": "Done", "next": []},
    ]  # fmt: skip


def rotating(**extra: Any) -> Json:
    return {"type": "secret", "secret": NEW, "previousSecret": OLD, "previousUntil": UNTIL, **extra}


def settings_of(workflow: wf.Workflow) -> wf.WebhookSettings:
    settings = workflow.stages["Hook"].settings
    assert isinstance(settings, wf.WebhookSettings)
    return settings


def auth_of(workflow: wf.Workflow) -> wf.SecretAuth:
    auth = settings_of(workflow).auth
    assert isinstance(auth, wf.SecretAuth)
    return auth


def problem_fields(data: object, **kwargs: Any) -> dict[str, str]:
    with pytest.raises(wf.WorkflowError) as refused:
        wf.parse(data, **kwargs)
    return {p.field: p.message for p in refused.value.problems}


# -- rotation -------------------------------------------------------------------------------


def test_a_rotation_keeps_the_old_secret_until_the_overlap_ends() -> None:
    auth = auth_of(wf.parse(flow(rotating(), signatures=["standard"])))
    assert [s.reveal() for s in auth.secrets_at(UNTIL_EPOCH - 1)] == [NEW, OLD]
    assert [s.reveal() for s in auth.secrets_at(UNTIL_EPOCH)] == [NEW]


def test_the_api_shows_a_rotation_without_either_secret() -> None:
    shown = wf.to_json(wf.parse(flow(rotating())))[1]["auth"]
    assert shown == {
        "type": "secret",
        "secret": {"set": True, "last4": NEW[-4:]},
        "previousSecret": {"set": True, "last4": OLD[-4:]},
        "previousUntil": "2025-03-01T12:00:00.000Z",
    }
    assert NEW not in json.dumps(shown)
    assert OLD not in json.dumps(shown)


@pytest.mark.parametrize(
    ("auth", "field", "expected"),
    [
        (rotating(previousUntil=None), "auth.previousUntil", "ISO-8601"),
        (rotating(previousUntil="next tuesday"), "auth.previousUntil", "ISO-8601"),
        (rotating(previousSecret=None), "auth.previousSecret", "write-only"),
        (rotating(previousSecret=NEW), "auth.previousSecret", "same as auth.secret"),
        (rotating(previousSecret="not-base64!"), "auth.previousSecret", "Standard Webhooks"),
    ],
)
def test_a_bad_rotation_names_the_field(auth: Json, field: str, expected: str) -> None:
    found = problem_fields(flow(auth, signatures=["standard"]))
    assert expected in found[field]
    assert NEW not in json.dumps(found)


def test_during_the_overlap_standard_webhooks_carries_both_signatures_and_hub_the_newest() -> None:
    settings = settings_of(wf.parse(flow(rotating(), signatures=["standard"])))
    body = b'{"task": 1}'
    now = int(UNTIL_EPOCH) - 60
    during = service.endpoint(settings, now=now).signer.headers(body, msg_id="dlv_1", timestamp=now)
    assert len(during["webhook-signature"].split()) == 2
    for secret in (NEW, OLD):  # a receiver holding either secret accepts it
        verify_standard_webhooks(body, during, secret, now=now)
    assert during["X-Hub-Signature"] == hub_signature(NEW, body)

    later = int(UNTIL_EPOCH) + 1
    after = service.endpoint(settings, now=later).signer.headers(
        body, msg_id="dlv_1", timestamp=later
    )
    assert len(after["webhook-signature"].split()) == 1
    verify_standard_webhooks(body, after, NEW, now=later)


def test_re_saving_the_shown_workflow_keeps_the_rotation() -> None:
    old = wf.parse(flow(rotating()))
    assert wf.parse(wf.merge_secrets(wf.to_json(old), old)) == old


def test_a_new_secret_with_the_mask_as_previous_rotates_without_typing_the_old_one() -> None:
    old = wf.parse(flow({"type": "secret", "secret": OLD}))
    shown: list[Json] = wf.to_json(old)
    shown[1]["auth"] = {
        "type": "secret",
        "secret": NEW,
        "previousSecret": shown[1]["auth"]["secret"],  # the mask the API showed
        "previousUntil": UNTIL,
    }
    auth = auth_of(wf.parse(wf.merge_secrets(shown, old)))
    assert (auth.secret.reveal(), auth.previous and auth.previous.reveal()) == (NEW, OLD)
    assert auth.previous_until == UNTIL_EPOCH


def test_leaving_previous_out_ends_the_overlap() -> None:
    old = wf.parse(flow(rotating()))
    shown: list[Json] = wf.to_json(old)
    del shown[1]["auth"]["previousSecret"], shown[1]["auth"]["previousUntil"]
    auth = auth_of(wf.parse(wf.merge_secrets(shown, old)))
    assert (auth.secret.reveal(), auth.previous) == (NEW, None)


# -- sealed for the store -------------------------------------------------------------------


def test_sealed_secrets_are_unreadable_in_the_stored_form_and_open_equal() -> None:
    cipher = Cipher([new_key()])
    parsed = wf.parse(
        [
            *flow(rotating())[:2],
            {"id": "Done", "type": "Webhook", "name": "Bearer", "next": ["End"],
             "url": HOOK, "auth": {"type": "bearer", "token": TOKEN}},
            {"id": "End", "type": "Complete", "name": "End", "next": []},
        ]
    )  # fmt: skip
    stored = wf.to_json(parsed, reveal_secrets=True, seal=cipher.seal)
    text = json.dumps(stored)
    for value in (NEW, OLD, TOKEN):
        assert value not in text
    assert all(isinstance(v, dict) and set(v) == {"sealed"} for v in wf.stored_secrets(stored))
    assert len(wf.stored_secrets(stored)) == 3
    assert wf.parse(stored, unseal=cipher.unseal) == parsed


def test_a_sealed_secret_never_opens_without_the_key() -> None:
    stored = wf.to_json(wf.parse(flow(rotating())), seal=Cipher([new_key()]).seal)
    found = problem_fields(stored)  # input from the API: nothing is ever unsealed
    assert "sealed" in found["auth.secret"]
    found = problem_fields(stored, unseal=Cipher([new_key()]).unseal)  # another key
    assert "HOOKSTAGE_SECRET_KEY" in found["auth.secret"]
    assert "auth.previousSecret" in found


# -- the CA bundle --------------------------------------------------------------------------

CA = """-----BEGIN CERTIFICATE-----
MIIBeDCCAR6gAwIBAgIUJ0VjJ9v1vJqJ6s0mYQ0v0b5dYJ0wCgYIKoZIzj0EAwIw
-----END CERTIFICATE-----
"""


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (12, "PEM CA certificates"),
        ("just text", "PEM CA certificates"),
        (CA, "no certificate that can be read"),
        ("-----BEGIN CERTIFICATE-----" + "A" * 300_000, "longer than the limit"),
    ],
)
def test_a_bad_ca_bundle_is_refused(value: object, expected: str) -> None:
    found = problem_fields(flow({"type": "none"}, caBundle=value))
    assert expected in found["caBundle"]


def test_no_ca_bundle_means_the_system_trust() -> None:
    settings = settings_of(wf.parse(flow({"type": "none"})))
    assert settings.ca_bundle is None
    assert "caBundle" not in wf.to_json(wf.parse(flow({"type": "none"})))[1]


@given(
    st.one_of(
        st.datetimes(timezones=st.none() | st.timezones()).map(lambda moment: moment.isoformat()),
        st.text(max_size=40),
    )
)
def test_any_end_of_overlap_parses_and_round_trips_or_is_refused(until: str) -> None:
    data = flow(rotating(previousUntil=until))
    try:
        parsed = wf.parse(data)
    except wf.WorkflowError:
        assert problem_fields(data).keys() == {"auth.previousUntil"}
        return
    assert wf.parse(wf.to_json(parsed, reveal_secrets=True)) == parsed
