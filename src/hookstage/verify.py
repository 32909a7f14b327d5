"""Webhook verification, receiver side: one total function per scheme, one error type.

Standard library only, and nothing else of hookstage: copy this one file into a service
if you like. Every function either returns (the request is authentic) or raises
``VerificationError``, whatever it is given: wrong types, malformed or missing headers,
undecodable values. Messages never contain a secret, a token or an expected signature.

Arguments, for every function:

- ``body``: the raw request body, exactly as received: ``bytes`` (``bytearray`` and
  ``memoryview`` too). A ``str`` is refused: decoding and re-encoding may change the bytes
  that were signed.
- ``headers``: any mapping with ``.items()`` (a dict in any letter case, aiohttp's,
  Starlette's or Flask's request headers) or a list of ``(name, value)`` pairs; names and
  values ``str`` or UTF-8 ``bytes``. Names are matched case-insensitively; surrounding
  spaces and tabs of values are ignored; a header repeated with different values is
  refused.
- secrets: ``str`` (keyed as UTF-8) or ``bytes`` (the raw key), or a list of them during a
  rotation (any one matching is enough). For Standard Webhooks a ``str`` secret is
  ``whsec_<base64>`` (prefix optional) and keys with the bytes it encodes.

Hex signatures are accepted in upper case too (the value is the same digest; Ango and
GitHub send lower case, and a receiver comparing strings with ``==`` would not).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import math
import re
import time
from collections.abc import Callable, Iterable, Sequence
from enum import StrEnum
from typing import Literal, cast

__all__ = [
    "Body",
    "Reason",
    "Scheme",
    "Secret",
    "VerificationError",
    "detect_scheme",
    "verify",
    "verify_bearer",
    "verify_hub_signature",
    "verify_hub_signature_256",
    "verify_standard_webhooks",
]

Reason = Literal[
    "missing-header",
    "malformed-header",
    "bad-signature",
    "bad-token",
    "timestamp-too-old",
    "timestamp-too-new",
    "bad-secret",
    "wrong-type",
    "bad-argument",
]

HUB = "X-Hub-Signature"
HUB_256 = "X-Hub-Signature-256"
WEBHOOK_ID = "webhook-id"
WEBHOOK_TIMESTAMP = "webhook-timestamp"
WEBHOOK_SIGNATURE = "webhook-signature"
AUTHORIZATION = "Authorization"

_HEX = re.compile(r"[0-9a-fA-F]+")
_SECONDS = re.compile(r"[0-9]{1,15}")  # 15 digits: far beyond any real clock, never a bignum
_STANDARD_PREFIX = "whsec_"

Body = bytes | bytearray | memoryview
Secret = str | bytes | Sequence[str | bytes]


class Scheme(StrEnum):
    """A way of authenticating a webhook; mirrors ``signing.Scheme`` value for value."""

    HUB = "hub"
    HUB_256 = "hub-256"
    STANDARD = "standard"
    BEARER = "bearer"


class VerificationError(Exception):
    """The request could not be verified. ``reason`` is a short machine code:

    ``missing-header``, ``malformed-header``, ``bad-signature``, ``bad-token``,
    ``timestamp-too-old``, ``timestamp-too-new``, ``bad-secret`` (the secret given to the
    verifier is unusable), ``wrong-type`` (an argument of the wrong Python type),
    ``bad-argument`` (an argument of the right type with an unusable value).
    ``message`` (also ``str(error)``) says what was wrong in plain English.
    """

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason: Reason = reason
        self.message = message

    def __repr__(self) -> str:
        return f"VerificationError({self.reason!r}, {self.message!r})"


def verify_hub_signature(body: Body, headers: object, secret: Secret) -> None:
    """Check Ango's ``X-Hub-Signature``: hex HMAC-SHA1 of the body, no ``sha1=`` prefix.

    Raises VerificationError: ``missing-header``, ``malformed-header`` (not 40 hex digits,
    or a ``sha1=``/``sha256=`` prefix), ``bad-signature``, or an argument error.
    """
    data, keys = _body(body), _hmac_keys(secret)
    _check_hub(data, _Headers(headers), keys)


def verify_hub_signature_256(body: Body, headers: object, secret: Secret) -> None:
    """Check GitHub-style ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>``.

    Raises VerificationError: ``missing-header``, ``malformed-header`` (no ``sha256=``
    prefix or not 64 hex digits), ``bad-signature``, or an argument error.
    """
    data, keys = _body(body), _hmac_keys(secret)
    _check_hub_256(data, _Headers(headers), keys)


def verify_standard_webhooks(
    body: Body,
    headers: object,
    secret_or_secrets: Secret,
    *,
    tolerance: float = 300,
    now: float | None = None,
) -> None:
    """Check Standard Webhooks v1: ``webhook-id``, ``webhook-timestamp``, ``webhook-signature``.

    Any ``v1,<base64>`` entry of ``webhook-signature`` may match any of the secrets; other
    versions are ignored. The timestamp (integer seconds) must lie within ``tolerance``
    seconds of ``now`` (default: ``time.time()``) either way; it is checked after the
    signature, so a timestamp error means an authentic but stale (or future) message.
    Raises VerificationError: ``missing-header``, ``malformed-header``, ``bad-signature``,
    ``timestamp-too-old``, ``timestamp-too-new``, ``bad-secret``, or an argument error.
    """
    window = _window(tolerance, now)
    data, keys = _body(body), _standard_keys(secret_or_secrets)
    _check_standard(data, _Headers(headers), keys, window)


def verify_bearer(headers: object, token: str | Sequence[str]) -> None:
    """Check ``Authorization: Bearer <token>`` (scheme word in any case) against the token(s).

    Raises VerificationError: ``missing-header``, ``malformed-header`` (not a Bearer
    credential), ``bad-token``, or an argument error.
    """
    _check_bearer(_Headers(headers), _tokens(token))


def detect_scheme(headers: object) -> Scheme:
    """The scheme a request is signed with, by its headers.

    The strongest present wins: ``webhook-signature`` (standard), then
    ``X-Hub-Signature-256``, ``X-Hub-Signature``, ``Authorization`` (bearer).
    Raises VerificationError ``missing-header`` when none is present.
    """
    return _detect(_Headers(headers))


def verify(
    body: Body,
    headers: object,
    secret: Secret,
    *,
    scheme: Scheme | str = "auto",
    tolerance: float = 300,
    now: float | None = None,
) -> Scheme:
    """Verify a request with ``scheme``, or with the one ``detect_scheme`` picks (``"auto"``).

    Only that one scheme is checked: a failing strong signature is never excused by a
    weaker header beside it. ``secret`` is the bearer token for ``bearer``. Returns the
    scheme that verified; raises VerificationError as the scheme's own function does, or
    ``bad-argument`` for an unknown scheme name.
    """
    chosen = _scheme(scheme)
    window = _window(tolerance, now)
    data = _body(body)
    view = _Headers(headers)
    if chosen is None:
        chosen = _detect(view)
    if chosen is Scheme.BEARER:
        _check_bearer(view, _tokens(secret))
    elif chosen is Scheme.STANDARD:
        _check_standard(data, view, _standard_keys(secret), window)
    else:
        check = _check_hub if chosen is Scheme.HUB else _check_hub_256
        check(data, view, _hmac_keys(secret))
    return chosen


class _Headers:
    """Case-insensitive, validated read access to whatever header container we were given."""

    def __init__(self, headers: object) -> None:
        self._pairs = [(_name(item), item[1]) for item in _items(headers)]

    def has(self, name: str) -> bool:
        wanted = name.lower()
        return any(key.lower() == wanted for key, _ in self._pairs)

    def get(self, name: str) -> str:
        wanted = name.lower()
        values = {_value(name, raw) for key, raw in self._pairs if key.lower() == wanted}
        if not values:
            raise VerificationError("missing-header", f"the {name} header is missing")
        if len(values) > 1:
            raise VerificationError(
                "malformed-header",
                f"the {name} header appears more than once, with different values",
            )
        value = values.pop()
        if not value:
            raise VerificationError("malformed-header", f"the {name} header is empty")
        return value


def _items(headers: object) -> list[tuple[object, object]]:
    wrong = VerificationError(
        "wrong-type",
        "headers must be a mapping of header names to values or a list of (name, value) pairs, "
        f"got {type(headers).__name__}",
    )
    if isinstance(headers, (str, bytes, bytearray, memoryview)):
        raise wrong
    try:  # user code (a mapping's items(), an iterator) may fail in any way: translate all
        items = getattr(headers, "items", None)
        source = items() if callable(items) else headers
        entries = list(cast(Iterable[object], source))
    except Exception as exc:
        raise wrong from exc
    pairs: list[tuple[object, object]] = []
    for entry in entries:
        if not isinstance(entry, (tuple, list)) or len(entry) != 2:
            raise wrong
        pairs.append((entry[0], entry[1]))
    return pairs


def _name(item: tuple[object, object]) -> str:
    name = item[0]
    if isinstance(name, str):
        return name
    if isinstance(name, (bytes, bytearray)):
        return bytes(name).decode("latin-1")  # header names are ASCII; this never fails
    raise VerificationError(
        "wrong-type", f"header names must be str or bytes, got {type(name).__name__}"
    )


def _value(name: str, raw: object) -> str:
    try:
        if isinstance(raw, str):
            raw.encode("utf-8")  # lone surrogates (undecodable input) would fail later
            text = raw
        elif isinstance(raw, (bytes, bytearray)):
            text = bytes(raw).decode("utf-8")
        else:
            raise VerificationError(
                "wrong-type",
                f"the {name} header value must be str or bytes, got {type(raw).__name__}",
            )
    except UnicodeError:
        raise VerificationError(
            "malformed-header", f"the {name} header is not valid UTF-8"
        ) from None
    return text.strip(" \t")


def _detect(view: _Headers) -> Scheme:
    for name, scheme in (
        (WEBHOOK_SIGNATURE, Scheme.STANDARD),
        (HUB_256, Scheme.HUB_256),
        (HUB, Scheme.HUB),
        (AUTHORIZATION, Scheme.BEARER),
    ):
        if view.has(name):
            return scheme
    raise VerificationError(
        "missing-header",
        f"no signature header: expected one of {WEBHOOK_SIGNATURE}, {HUB_256}, {HUB}, "
        f"{AUTHORIZATION}",
    )


def _check_hub(data: bytes, view: _Headers, keys: list[bytes]) -> None:
    value = view.get(HUB)
    prefix, sep, _ = value.partition("=")
    if sep and prefix.lower() in ("sha1", "sha256"):
        raise VerificationError(
            "malformed-header",
            f"{HUB} starts with '{prefix}=': Ango sends the bare hex HMAC-SHA1 digest, "
            "drop the prefix"
            + (f" (a sha256= value belongs in {HUB_256})" if prefix.lower() == "sha256" else ""),
        )
    claimed = _hex_digest(value, HUB, 20)
    _match(claimed, keys, lambda key: hmac.new(key, data, hashlib.sha1).digest(), HUB)


def _check_hub_256(data: bytes, view: _Headers, keys: list[bytes]) -> None:
    value = view.get(HUB_256)
    if value[:7].lower() != "sha256=":
        raise VerificationError(
            "malformed-header", f"{HUB_256} must be 'sha256=' followed by 64 hex digits"
        )
    claimed = _hex_digest(value[7:], HUB_256, 32)
    _match(claimed, keys, lambda key: hmac.new(key, data, hashlib.sha256).digest(), HUB_256)


def _hex_digest(value: str, name: str, size: int) -> bytes:
    if len(value) != 2 * size or not _HEX.fullmatch(value):
        raise VerificationError(
            "malformed-header", f"{name} must be {2 * size} hex digits (HMAC digest)"
        )
    return bytes.fromhex(value)


def _match(claimed: bytes, keys: list[bytes], digest: Callable[[bytes], bytes], name: str) -> None:
    if not any(hmac.compare_digest(digest(key), claimed) for key in keys):
        raise VerificationError(
            "bad-signature", f"{name} does not match the body signed with the secret"
        )


def _check_standard(
    data: bytes, view: _Headers, keys: list[bytes], window: tuple[float, float]
) -> None:
    msg_id, stamp, value = (
        view.get(WEBHOOK_ID),
        view.get(WEBHOOK_TIMESTAMP),
        view.get(WEBHOOK_SIGNATURE),
    )
    if not _SECONDS.fullmatch(stamp):
        raise VerificationError(
            "malformed-header", f"{WEBHOOK_TIMESTAMP} must be integer seconds since the epoch"
        )
    claimed = _v1_signatures(value)
    signed = f"{msg_id}.{stamp}.".encode() + data
    expected = [hmac.new(key, signed, hashlib.sha256).digest() for key in keys]
    if not any(hmac.compare_digest(e, c) for e in expected for c in claimed):
        raise VerificationError(
            "bad-signature",
            f"no {WEBHOOK_SIGNATURE} entry matches the message signed with the secret",
        )
    _check_window(int(stamp), window)


def _v1_signatures(value: str) -> list[bytes]:
    found = []
    for entry in value.split():
        version, sep, encoded = entry.partition(",")
        if version == "v1" and sep:
            with contextlib.suppress(ValueError):  # a garbled entry must not hide a good one
                found.append(_b64decode(encoded))
    found = [digest for digest in found if digest]
    if not found:
        raise VerificationError(
            "malformed-header",
            f"{WEBHOOK_SIGNATURE} has no 'v1,<base64>' entry (entries are space-separated)",
        )
    return found


def _check_window(stamp: int, window: tuple[float, float]) -> None:
    tolerance, now = window
    age = now - stamp
    if age > tolerance:
        raise VerificationError(
            "timestamp-too-old",
            f"{WEBHOOK_TIMESTAMP} is {age:.0f} s in the past, beyond the {tolerance:g} s tolerance",
        )
    if -age > tolerance:
        raise VerificationError(
            "timestamp-too-new",
            f"{WEBHOOK_TIMESTAMP} is {-age:.0f} s in the future, beyond the {tolerance:g} s "
            "tolerance (is a clock wrong?)",
        )


def _check_bearer(view: _Headers, tokens: list[bytes]) -> None:
    word, _, credential = view.get(AUTHORIZATION).partition(" ")
    credential = credential.strip(" \t")
    if word.lower() != "bearer" or not credential:
        raise VerificationError("malformed-header", f"{AUTHORIZATION} must be 'Bearer <token>'")
    given = credential.encode("utf-8")
    if not any(hmac.compare_digest(given, token) for token in tokens):
        raise VerificationError("bad-token", f"the {AUTHORIZATION} bearer token does not match")


def _body(body: object) -> bytes:
    if isinstance(body, (bytes, bytearray, memoryview)):
        try:
            return bytes(body)
        except (TypeError, ValueError) as exc:  # e.g. a released memoryview
            raise VerificationError("wrong-type", "body is an unreadable buffer") from exc
    hint = ": pass the raw request bytes, not decoded text" if isinstance(body, str) else ""
    raise VerificationError("wrong-type", f"body must be bytes, got {type(body).__name__}{hint}")


def _secret_list(secret: object, what: str) -> list[object]:
    if isinstance(secret, (str, bytes, bytearray, memoryview)):
        return [secret]
    wrong = VerificationError(
        "wrong-type", f"{what} must be str, bytes or a list of them, got {type(secret).__name__}"
    )
    if not isinstance(secret, Sequence):
        raise wrong
    try:  # a user's own Sequence type may fail in any way
        items = list(secret)
    except Exception as exc:
        raise wrong from exc
    if not items:
        raise VerificationError("bad-secret", f"the list of {what}s is empty")
    return items


def _hmac_keys(secret: object) -> list[bytes]:
    return [_raw_key(item) for item in _secret_list(secret, "secret")]


def _raw_key(item: object) -> bytes:
    if isinstance(item, str):
        try:
            key = item.encode("utf-8")
        except UnicodeError:
            raise VerificationError("bad-secret", "a secret is not encodable as UTF-8") from None
    elif isinstance(item, (bytes, bytearray, memoryview)):
        key = _body(item)
    else:
        raise VerificationError(
            "wrong-type", f"a secret must be str or bytes, got {type(item).__name__}"
        )
    if not key:
        raise VerificationError("bad-secret", "a secret is empty")
    return key


def _standard_keys(secret: object) -> list[bytes]:
    keys = []
    for item in _secret_list(secret, "secret"):
        if isinstance(item, str):
            try:
                key = _b64decode(item.removeprefix(_STANDARD_PREFIX))
            except ValueError:
                raise VerificationError(
                    "bad-secret",
                    "a Standard Webhooks secret must be 'whsec_' followed by base64",
                ) from None
            if not key:
                raise VerificationError("bad-secret", "a secret is empty")
            keys.append(key)
        else:
            keys.append(_raw_key(item))
    return keys


def _b64decode(text: str) -> bytes:
    """Strict standard base64, padding optional. Raises ValueError."""
    core = text.rstrip("=")
    try:
        return base64.b64decode(core + "=" * (-len(core) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not base64") from exc


def _tokens(token: object) -> list[bytes]:
    out = []
    for item in _secret_list(token, "token"):
        if not isinstance(item, str):
            raise VerificationError(
                "wrong-type", f"a bearer token must be str, got {type(item).__name__}"
            )
        try:
            encoded = item.encode("utf-8")
        except UnicodeError:
            raise VerificationError("bad-secret", "a token is not encodable as UTF-8") from None
        if not encoded.strip():
            raise VerificationError("bad-secret", "a token is empty")
        out.append(encoded)
    return out


def _scheme(scheme: object) -> Scheme | None:
    if not isinstance(scheme, str):
        raise VerificationError(
            "wrong-type", f"scheme must be a Scheme or str, got {type(scheme).__name__}"
        )
    if scheme == "auto":
        return None
    try:
        return Scheme(scheme)
    except ValueError:
        expected = ", ".join(["auto", *Scheme])
        raise VerificationError(
            "bad-argument", f"unknown scheme {scheme!r}: expected one of {expected}"
        ) from None


def _window(tolerance: object, now: object) -> tuple[float, float]:
    limit = _number(tolerance, "tolerance", allow_inf=True)
    if limit < 0:
        raise VerificationError("bad-argument", "tolerance must not be negative")
    clock = time.time() if now is None else _number(now, "now", allow_inf=False)
    return limit, clock


def _number(value: object, name: str, *, allow_inf: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise VerificationError(
            "wrong-type", f"{name} must be a number of seconds, got {type(value).__name__}"
        )
    try:
        number = float(value)
    except OverflowError:
        raise VerificationError("bad-argument", f"{name} is too large") from None
    if math.isnan(number) or (math.isinf(number) and not allow_inf):
        raise VerificationError("bad-argument", f"{name} must be a finite number of seconds")
    return number
