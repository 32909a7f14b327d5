"""What the dashboard shows: secrets as "set", URLs without passwords, safe redirects."""

from __future__ import annotations

from urllib.parse import urlsplit

from hypothesis import given
from hypothesis import strategies as st

from hookstage import workflow
from hookstage.store.deliveries import DeliveryInfo
from hookstage.web import session, views


@given(st.text(min_size=1, max_size=80))
def test_a_secret_shows_as_set_with_its_tail_only_when_long(secret: str) -> None:
    for auth in (workflow.SecretAuth(workflow.Secret(secret)),
                 workflow.BearerAuth(workflow.Secret(secret))):  # fmt: skip
        rows = views.settings_rows(workflow.WebhookSettings("https://h.example/x", auth=auth))
        shown = next(r.value for r in rows if r.name == "auth")
        assert shown.endswith(f"set, …{secret[-4:]}" if len(secret) >= 12 else "set")
        if len(secret) >= 8:  # shorter ones may match any word of the page
            assert secret not in " ".join(r.value for r in rows)


def test_a_url_is_shown_without_its_password() -> None:
    assert views.shown_url("https://bob:hunter2@h.example:8443/p?q=1") == (
        "https://bob:****@h.example:8443/p?q=1"
    )
    assert views.shown_url("https://h.example/p") == "https://h.example/p"


@given(st.text())
def test_after_login_a_person_only_ever_lands_on_this_site(target: str) -> None:
    landing = session.safe_next(target)
    parts = urlsplit(landing)
    assert landing.startswith("/")
    assert not landing.startswith(("//", "/\\"))
    assert not parts.scheme
    assert not parts.netloc


def test_the_circuit_comes_from_the_dispatcher_when_it_says() -> None:
    where = {"project_id": "p", "stage_id": "s", "url": "https://h.example/x"}
    assert views.circuit_of(None, **where).startswith("not reported")
    assert views.circuit_of({"workers": 1}, **where) == "not reported by the dispatcher"
    assert views.circuit_of({"circuits": {}}, **where) == "closed"
    assert views.circuit_of({"circuits": {"https://h.example/x": "open"}}, **where) == "open"
    assert views.circuit_of({"circuits": {"p/s": {"state": "half-open"}}}, **where) == ("half-open")


def test_a_receivers_answer_is_shown_by_its_start_on_one_line() -> None:
    assert views.response_start(b"line one\n\n  line two\t") == "line one line two"
    assert views.response_start(b"x" * 500, limit=10) == "x" * 9 + "…"
    assert views.response_start(b"\xff\xfe") == "\ufffd\ufffd"
    assert views.response_start(None) == ""


def info(state: str, due_at: float, leased_by: str | None = None) -> DeliveryInfo:
    return DeliveryInfo(
        "d", "p", "s", "t", "e", state, 1, due_at, 0.0, None, None, None, leased_by, None, None, 9
    )


def test_a_pending_card_refreshes_itself_often_only_when_an_attempt_is_near() -> None:
    now = 1000.0
    assert views.card(info("pending", now + 5), [], now=now).poll == views.POLL_SOON
    assert views.card(info("pending", now + 600, "w1"), [], now=now).poll == views.POLL_SOON
    assert views.card(info("pending", now + 600), [], now=now).poll == views.POLL_LATER
    assert views.card(info("failed", now), [], now=now).poll is None
