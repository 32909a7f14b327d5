"""What the pages show, worked out from what the engine and the store give: pure functions.

Times are shown in UTC; durations in ms or s; a receiver's answer by its first line or so;
secrets by whether they are set and their last four characters, never more.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import orjson

from hookstage import workflow
from hookstage.store.deliveries import AttemptInfo, DeliveryInfo
from hookstage.store.stats import Minute
from hookstage.web import charts

__all__ = [
    "NOTICES",
    "AttemptView",
    "Card",
    "Setting",
    "answer_text",
    "attempt_view",
    "card",
    "circuit_of",
    "clock",
    "count",
    "delivery_charts",
    "duration",
    "iso",
    "link",
    "pretty_body",
    "response_start",
    "settings_rows",
    "shown_url",
    "when",
]

RESPONSE_START = 200
BODY_SHOWN = 256 * 1024
POLL_SOON, POLL_LATER = 2, 30
NOTICES = {
    "queued": "Queued: it will be sent again with the same id and the same bytes.",
    "pending": "Still pending: it will be sent; nothing was queued twice.",
    "rerun": "Re-run: the stage's finished deliveries were queued again.",
    "rerun-failed": "Re-run: the stage's failed deliveries were queued again.",
}


def when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S")


def clock(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%H:%M")


def iso(epoch: float | None) -> str:
    if epoch is None:
        return ""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


def duration(ms: float | None) -> str:
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.2f} s"
    return f"{ms / 60_000:.1f} min"


def count(number: int) -> str:
    return f"{number:,}"


def answer_text(answer: Any) -> str:
    if isinstance(answer, list):
        return ", ".join(str(a) for a in answer)
    return "" if answer is None else str(answer)


def response_start(body: bytes | None, limit: int = RESPONSE_START) -> str:
    """The beginning of a receiver's answer, on one line."""
    if not body:
        return ""
    text = " ".join(bytes(body[: limit * 4]).decode("utf-8", "replace").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def pretty_body(body: bytes) -> tuple[str, bool]:
    """A delivery's body for reading (indented when it is JSON), and whether it was cut."""
    cut = len(body) > BODY_SHOWN
    try:
        text = orjson.dumps(orjson.loads(body), option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:
        text = body.decode("utf-8", "replace")
    return (text[:BODY_SHOWN], cut or len(text) > BODY_SHOWN)


def shown_url(url: str) -> str:
    """A webhook URL without the password it may carry."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:****@{host}"))


def link(path: str, **params: str | int | float | None) -> str:
    """``path`` with the given query parameters, empty ones left out."""
    kept = {k: str(v) for k, v in params.items() if v is not None and v != ""}
    return f"{path}?{urlencode(kept)}" if kept else path


@dataclass(frozen=True)
class AttemptView:
    number: int
    started: str
    started_iso: str
    duration: str
    status: str
    ok: bool
    error: str
    response: str


def attempt_view(attempt: AttemptInfo) -> AttemptView:
    error = attempt.error_class or ""
    if attempt.error:
        error = f"{error}: {attempt.error}" if error else attempt.error
    ok = attempt.error_class is None and attempt.status_code is not None
    ok = ok and 200 <= (attempt.status_code or 0) < 300
    return AttemptView(
        number=attempt.number,
        started=when(attempt.started_at),
        started_iso=iso(attempt.started_at),
        duration=duration(attempt.duration_ms),
        status="-" if attempt.status_code is None else str(attempt.status_code),
        ok=ok,
        error=error,
        response=response_start(attempt.response_body),
    )


@dataclass(frozen=True)
class Card:
    """A delivery with its attempts, as a card that refreshes itself while pending."""

    info: DeliveryInfo
    attempts: list[AttemptView]
    poll: int | None  # seconds between refreshes, None once finished
    created: str
    due: str


def card(info: DeliveryInfo, tried: Sequence[AttemptInfo], *, now: float) -> Card:
    poll = None
    if info.state == "pending":
        soon = info.leased_by is not None or info.due_at - now < 60
        poll = POLL_SOON if soon else POLL_LATER
    return Card(
        info=info,
        attempts=[attempt_view(a) for a in tried],
        poll=poll,
        created=when(info.created_at),
        due=when(info.due_at) if info.state == "pending" else "",
    )


@dataclass(frozen=True)
class Setting:
    name: str
    value: str


def _secret_text(what: str, secret: workflow.Secret) -> str:
    tail = secret.last4
    return f"{what}: set, …{tail}" if tail else f"{what}: set"


def settings_rows(settings: workflow.WebhookSettings) -> list[Setting]:
    """A Webhook stage's settings for reading: a secret is "set", with at most its tail."""
    auth = settings.auth
    if isinstance(auth, workflow.SecretAuth):
        shown_auth = _secret_text("secret", auth.secret)
    elif isinstance(auth, workflow.BearerAuth):
        shown_auth = _secret_text("bearer token", auth.token)
    else:
        shown_auth = "none"
    return [
        Setting("URL", shown_url(settings.url)),
        Setting("auth", shown_auth),
        Setting("payload format", settings.format),
        Setting("extra signatures", ", ".join(settings.signatures) or "none"),
        Setting("timeout", duration(settings.timeout_ms)),
        Setting("mode", settings.mode),
    ]


def circuit_of(state: Mapping[str, Any] | None, *, project_id: str, stage_id: str, url: str) -> str:
    """The circuit of a stage's endpoint, from the dispatcher's state when it reports
    circuits (keyed by URL, by ``project/stage`` or by stage id; a string or an object
    with ``state``). A reported map without this endpoint means closed."""
    if state is None:
        return "not reported (no dispatcher in this process)"
    circuits = state.get("circuits")
    if not isinstance(circuits, Mapping):
        return "not reported by the dispatcher"
    for key in (url, f"{project_id}/{stage_id}", stage_id):
        found = circuits.get(key)
        if isinstance(found, Mapping):
            found = found.get("state")
        if isinstance(found, str) and found:
            return found
    return "closed"


_OK, _FAILED, _P50, _P95 = "#2da44e", "#cf222e", "#0969da", "#bf8700"


def delivery_charts(minutes: Sequence[Minute]) -> tuple[Any, Any]:
    """Attempts per minute (delivered and failed stacked) and latency p50/p95 per minute."""
    ticks = [(i, clock(m.start)) for i, m in enumerate(minutes) if i % 10 == 0]
    if minutes:
        ticks.append((len(minutes) - 1, "now"))
    tips = [
        f"{clock(m.start)} UTC: {m.attempts} attempts, {m.delivered} delivered, {m.failed} failed"
        for m in minutes
    ]
    per_minute = charts.bars(
        [
            charts.Series("delivered", [m.delivered for m in minutes], _OK),
            charts.Series("failed", [m.failed for m in minutes], _FAILED),
        ],
        ticks=ticks,
        tips=tips,
        label="attempts per minute, last hour",
        empty="no attempts in the last hour",
    )
    latency_tips = [
        f"{clock(m.start)} UTC: p50 {duration(m.p50_ms)}, p95 {duration(m.p95_ms)}" for m in minutes
    ]
    latency = charts.lines(
        [
            charts.Series("p50", [m.p50_ms for m in minutes], _P50),
            charts.Series("p95", [m.p95_ms for m in minutes], _P95),
        ],
        ticks=ticks,
        tips=latency_tips,
        label="latency per minute (p50, p95), last hour",
        unit=" ms",
        empty="no attempts in the last hour",
    )
    return per_minute, latency
