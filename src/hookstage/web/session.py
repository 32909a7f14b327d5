"""Who is looking: the API key a person pasted at login, kept in an HttpOnly cookie.

Every page checks the key again (`Engine.authenticate`), so revoking a key ends its
sessions at once. Actions need the manager role, as in the API, and a form token derived
from the key (an HMAC: any `serve` process sharing the database checks it, and a page
from another site cannot know it); the cookie is also SameSite=Strict.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from urllib.parse import parse_qs, quote, urlsplit

from fastapi import Request
from starlette.responses import Response

from hookstage.engine import ROLES, ApiKey, Engine

__all__ = [
    "COOKIE",
    "FORM_LIMIT",
    "LoginNeeded",
    "PageError",
    "Viewer",
    "allows",
    "csrf_token",
    "end",
    "form",
    "login_url",
    "safe_next",
    "start",
    "viewer",
]

COOKIE = "hookstage_session"
FORM_LIMIT = 16 * 1024
ACTING_ROLE = "manager"
_CSRF_CONTEXT = b"hookstage dashboard form token v1"


class PageError(Exception):
    """A page refused: shown as an HTML page with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class LoginNeeded(Exception):
    """No valid session: the login page, then back to ``back``."""

    def __init__(self, back: str) -> None:
        super().__init__("login needed")
        self.back = back


@dataclass(frozen=True)
class Viewer:
    key: ApiKey
    csrf: str

    @property
    def can_act(self) -> bool:
        return allows(self.key.role, ACTING_ROLE)

    def require_acting(self) -> None:
        if not self.can_act:
            raise PageError(
                403,
                f"this needs the {ACTING_ROLE} role or higher; your key's role is {self.key.role}",
            )

    def check(self, token: str | None) -> None:
        """Refuse a form that does not carry this session's token."""
        if not token or not hmac.compare_digest(token, self.csrf):
            raise PageError(403, "the form is out of date or came from another site: reload")


def allows(held: str, needed: str) -> bool:
    # ROLES runs from most to least powerful; an unknown stored role allows nothing.
    return held in ROLES and ROLES.index(held) <= ROLES.index(needed)


def csrf_token(key_value: str) -> str:
    return hmac.new(
        key_value.encode("utf-8", "surrogatepass"), _CSRF_CONTEXT, hashlib.sha256
    ).hexdigest()


async def viewer(request: Request, engine: Engine) -> Viewer:
    """The session's viewer, or LoginNeeded."""
    value = request.cookies.get(COOKIE)
    key = await engine.authenticate(value) if value else None
    if key is None or value is None:
        raise LoginNeeded(_here(request))
    return Viewer(key, csrf_token(value))


def _here(request: Request) -> str:
    url = request.url
    return url.path + (f"?{url.query}" if url.query else "")


def safe_next(value: str | None) -> str:
    """A place on this site to go back to after login: a path, never another origin."""
    if not value or not value.startswith("/") or value.startswith(("//", "/\\")):
        return "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return "/"
    return value


def login_url(back: str) -> str:
    back = safe_next(back)
    return "/login" if back == "/" else f"/login?next={quote(back, safe='')}"


def start(response: Response, key_value: str, *, secure: bool) -> None:
    """Open a session: the key in a cookie no script can read and no other site sends."""
    response.set_cookie(
        COOKIE, key_value, httponly=True, samesite="strict", secure=secure, path="/"
    )


def end(response: Response, *, secure: bool) -> None:
    response.delete_cookie(COOKIE, httponly=True, samesite="strict", secure=secure, path="/")


async def form(request: Request) -> dict[str, str]:
    """A small urlencoded form's fields (the first value of each)."""
    body = await request.body()
    if len(body) > FORM_LIMIT:
        raise PageError(413, f"the form is too large (more than {FORM_LIMIT} bytes)")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PageError(400, "the form is not UTF-8") from exc
    return {name: values[0] for name, values in parse_qs(text, keep_blank_values=True).items()}
