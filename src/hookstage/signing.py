"""Signature schemes, sender side: the headers that prove a delivery came from us.

Standard library only, and nothing else of hookstage, so any sender can use it alone.

Schemes:

- ``hub``: Ango Hub's ``X-Hub-Signature``: lowercase hex HMAC-SHA1 of the exact body bytes,
  keyed with the secret as UTF-8, with no ``sha1=`` prefix.
- ``hub-256``: GitHub's ``X-Hub-Signature-256``: ``sha256=`` + lowercase hex HMAC-SHA256.
- ``standard``: Standard Webhooks v1 (https://www.standardwebhooks.com): ``webhook-id``,
  ``webhook-timestamp`` (integer seconds) and ``webhook-signature``, space-separated
  ``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`` entries, one per secret.
  The key is the base64 after the optional ``whsec_`` prefix.
- ``bearer``: ``Authorization: Bearer <token>``.

One ``whsec_`` secret serves every scheme: the hub schemes key with its text as written,
Standard Webhooks with the key it encodes, which is what receivers of each scheme do.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import secrets as _random
from collections.abc import Iterable, Sequence
from enum import StrEnum
from typing import Any

__all__ = [
    "Body",
    "Scheme",
    "Signer",
    "bearer_headers",
    "generate_standard_secret",
    "hub_signature",
    "hub_signature_256",
    "standard_webhooks_headers",
]

Body = bytes | bytearray | memoryview

_STANDARD_PREFIX = "whsec_"
# Visible ASCII, no spaces: safe in a header value and in the signed "{id}.{ts}.{body}".
_HEADER_TOKEN = re.compile(r"[\x21-\x7e]+")


class Scheme(StrEnum):
    """A way of authenticating a delivery; ``verify.Scheme`` mirrors it value for value."""

    HUB = "hub"
    HUB_256 = "hub-256"
    STANDARD = "standard"
    BEARER = "bearer"


_SECRET_SCHEMES = frozenset({Scheme.HUB, Scheme.HUB_256, Scheme.STANDARD})


def hub_signature(secret: str | bytes, body: Body) -> str:
    """The ``X-Hub-Signature`` value Ango sends: lowercase hex HMAC-SHA1, no prefix.

    Raises TypeError for a body that is not bytes or a secret that is not str/bytes,
    ValueError for an empty secret.
    """
    return _mac(_template(_hmac_key(secret), "sha1"), _body(body)).hex()


def hub_signature_256(secret: str | bytes, body: Body) -> str:
    """The ``X-Hub-Signature-256`` value: ``sha256=`` + lowercase hex HMAC-SHA256.

    Raises like ``hub_signature``.
    """
    return "sha256=" + _mac(_template(_hmac_key(secret), "sha256"), _body(body)).hex()


def standard_webhooks_headers(
    secrets: Sequence[str], msg_id: str, timestamp: int, body: Body
) -> dict[str, str]:
    """The three Standard Webhooks headers, one ``v1`` signature per secret, in order.

    ``secrets`` are ``whsec_<base64>`` (prefix optional); give the newest first and keep
    the old ones during a rotation. ``msg_id`` is the delivery's stable id (visible ASCII),
    ``timestamp`` integer epoch seconds at send time. Raises TypeError/ValueError naming
    the bad argument; the message never contains a secret.
    """
    data = _body(body)
    ident = _msg_id(msg_id)
    stamp = _timestamp(timestamp)
    keys = [
        _standard_key(secret, f"secrets[{i}]") for i, secret in enumerate(_secret_list(secrets))
    ]
    if not keys:
        raise ValueError("secrets: at least one Standard Webhooks secret is needed")
    return _standard_headers([_template(key, "sha256") for key in keys], ident, stamp, data)


def _standard_headers(
    templates: Sequence[hmac.HMAC], ident: str, stamp: str, data: bytes
) -> dict[str, str]:
    signed = f"{ident}.{stamp}.".encode() + data
    signature = " ".join(
        "v1," + base64.b64encode(_mac(template, signed)).decode() for template in templates
    )
    return {"webhook-id": ident, "webhook-timestamp": stamp, "webhook-signature": signature}


def generate_standard_secret() -> str:
    """A new random Standard Webhooks secret: ``whsec_`` + base64 of 32 random bytes."""
    return _STANDARD_PREFIX + base64.b64encode(_random.token_bytes(32)).decode()


def bearer_headers(token: str) -> dict[str, str]:
    """``{"Authorization": "Bearer <token>"}``; the token must be visible ASCII, no spaces.

    Raises TypeError/ValueError for a bad token (without repeating it).
    """
    return {"Authorization": "Bearer " + _token(token)}


class Signer:
    """The authentication of one webhook target: which schemes, with which credentials.

    Built once from configuration (it checks everything then, so a bad secret is refused
    when saved, not at the first delivery); ``headers()`` is then pure. ``secrets`` are
    newest first: ``hub`` and ``hub-256`` sign with the newest only (their header has
    room for one value), ``standard`` with all of them. No schemes means no headers.
    Secrets and token never appear in ``repr``/``str``.

    Raises ValueError for an unknown scheme, a missing secret or token, an empty secret,
    one with surrounding whitespace, a Standard Webhooks secret that is not base64, or a
    token that cannot go in a header; TypeError for wrong types.
    """

    __slots__ = ("_hub", "_hub_256", "_schemes", "_secrets", "_standard", "_token")

    def __init__(
        self,
        schemes: Iterable[Scheme | str] = (),
        *,
        secrets: Sequence[str] = (),
        token: str | None = None,
    ) -> None:
        self._schemes = _schemes(schemes)
        self._secrets = _config_secrets(secrets)
        self._token = None if token is None else _token(token)
        self._check_complete()
        # Keyed once: a delivery then costs the hash of its body, not the key's set-up too.
        newest = _hmac_key(self._secrets[0]) if self._secrets else b""
        self._hub = _template(newest, "sha1") if Scheme.HUB in self._schemes else None
        self._hub_256 = _template(newest, "sha256") if Scheme.HUB_256 in self._schemes else None
        self._standard = (
            [
                _template(_standard_key(secret, f"secrets[{i}]"), "sha256")
                for i, secret in enumerate(self._secrets)
            ]
            if Scheme.STANDARD in self._schemes
            else []
        )

    @property
    def schemes(self) -> frozenset[Scheme]:
        """The schemes this signer adds headers for."""
        return self._schemes

    def headers(self, body: Body, *, msg_id: str, timestamp: int) -> dict[str, str]:
        """Every authentication header for one delivery of ``body`` (the exact bytes sent).

        ``msg_id`` (the delivery's stable id) and ``timestamp`` (epoch seconds, at send
        time) are used by ``standard`` only but always checked, so a caller's bug shows
        whatever the schemes. Raises TypeError/ValueError for bad arguments.
        """
        data = _body(body)
        ident = _msg_id(msg_id)
        stamp = _timestamp(timestamp)
        out: dict[str, str] = {}
        if self._hub is not None:
            out["X-Hub-Signature"] = _mac(self._hub, data).hex()
        if self._hub_256 is not None:
            out["X-Hub-Signature-256"] = "sha256=" + _mac(self._hub_256, data).hex()
        if self._standard:
            out.update(_standard_headers(self._standard, ident, stamp, data))
        if Scheme.BEARER in self._schemes and self._token is not None:
            out.update(bearer_headers(self._token))
        return out

    def __reduce__(self) -> tuple[Any, ...]:
        # The keyed HMAC objects cannot be pickled or copied: rebuild from the configuration.
        return (_signer, (tuple(self._schemes), self._secrets, self._token))

    def __repr__(self) -> str:
        names = ", ".join(sorted(self._schemes))
        token = ", token=<hidden>" if self._token is not None else ""
        return f"Signer(schemes=[{names}], secrets=<{len(self._secrets)} hidden>{token})"

    def _check_complete(self) -> None:
        needing = sorted(self._schemes & _SECRET_SCHEMES)
        if needing and not self._secrets:
            raise ValueError(f"secrets: scheme(s) {', '.join(needing)} need at least one secret")
        if Scheme.BEARER in self._schemes and self._token is None:
            raise ValueError("token: scheme bearer needs a token")


def _signer(schemes: tuple[Scheme, ...], secrets: tuple[str, ...], token: str | None) -> Signer:
    return Signer(schemes, secrets=secrets, token=token)


def _schemes(schemes: Iterable[Scheme | str]) -> frozenset[Scheme]:
    if isinstance(schemes, str):  # a lone "hub" would otherwise iterate as "h", "u", "b"
        schemes = (schemes,)
    out = set()
    for scheme in schemes:
        try:
            out.add(Scheme(scheme))
        except ValueError:
            expected = ", ".join(s.value for s in Scheme)
            raise ValueError(
                f"schemes: unknown scheme {scheme!r}, expected one of {expected}"
            ) from None
    return frozenset(out)


def _config_secrets(secrets: Sequence[str]) -> tuple[str, ...]:
    out = _secret_list(secrets)
    for i, secret in enumerate(out):
        if not isinstance(secret, str):
            raise TypeError(f"secrets[{i}] must be str, got {type(secret).__name__}")
        _hmac_key(secret, f"secrets[{i}]")
        if secret != secret.strip():
            raise ValueError(f"secrets[{i}] has leading or trailing whitespace")
    return out


def _secret_list(secrets: Sequence[str]) -> tuple[str, ...]:
    if isinstance(secrets, (str, bytes)) or not isinstance(secrets, Sequence):
        raise TypeError("secrets must be a sequence (list or tuple) of str, newest first")
    return tuple(secrets)


# hashlib lets go of the GIL to hash 2048 bytes or more in one call (CPython's
# HASHLIB_GIL_MINSIZE). In the dispatcher the store's SQLite thread always wants the GIL, and
# winning it back cost the event loop ~20 us per delivery (measured on a 2 KB drain), ten
# times the hash itself. Pieces one byte short keep the GIL, at ~0.1 us each; only speed
# depends on the size, never the signature.
_PIECE = 2047


def _template(key: bytes, algorithm: str) -> hmac.HMAC:
    return hmac.new(key, digestmod=algorithm)


def _mac(template: hmac.HMAC, data: bytes) -> bytes:
    """The HMAC of ``data`` under ``template``'s key, which is left as it was."""
    mac = template.copy()
    view = memoryview(data)
    for start in range(0, len(view), _PIECE):
        mac.update(view[start : start + _PIECE])
    return mac.digest()


def _hmac_key(secret: str | bytes, field: str = "secret") -> bytes:
    if isinstance(secret, str):
        try:
            key = secret.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"{field} is not valid text (cannot be encoded as UTF-8)") from None
    elif isinstance(secret, (bytes, bytearray, memoryview)):
        key = bytes(secret)
    else:
        raise TypeError(f"{field} must be str or bytes, got {type(secret).__name__}")
    if not key:
        raise ValueError(f"{field} must not be empty")
    return key


def _standard_key(secret: str, field: str) -> bytes:
    if not isinstance(secret, str):
        raise TypeError(f"{field} must be str, got {type(secret).__name__}")
    text = secret.removeprefix(_STANDARD_PREFIX).rstrip("=")
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(
            f"{field} is not a Standard Webhooks secret: expected 'whsec_' followed by base64"
        ) from None
    if not key:
        raise ValueError(f"{field} must not be empty")
    return key


def _body(body: Body) -> bytes:
    if type(body) is bytes:  # the usual case, and immutable: no copy
        return body
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body)
    raise TypeError(f"body must be the exact bytes to send, got {type(body).__name__}")


def _msg_id(msg_id: str) -> str:
    if not isinstance(msg_id, str):
        raise TypeError(f"msg_id must be str, got {type(msg_id).__name__}")
    if not _HEADER_TOKEN.fullmatch(msg_id):
        raise ValueError("msg_id must be non-empty visible ASCII without spaces")
    return msg_id


def _timestamp(timestamp: int) -> str:
    if isinstance(timestamp, bool) or not isinstance(timestamp, int):
        raise TypeError(f"timestamp must be int epoch seconds, got {type(timestamp).__name__}")
    if timestamp < 0:
        raise ValueError("timestamp must be epoch seconds, not negative")
    return str(timestamp)


def _token(token: str) -> str:
    if not isinstance(token, str):
        raise TypeError(f"token must be str, got {type(token).__name__}")
    if not _HEADER_TOKEN.fullmatch(token):
        raise ValueError("token must be non-empty visible ASCII without spaces")
    return token
