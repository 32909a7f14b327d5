"""The signature doctor: why a webhook does not verify, in plain English.

Pure and standard library only (it builds on ``verify``). ``diagnose`` verifies like
``verify.verify`` and, when that fails, tries the usual mistakes to say why: a
re-serialised body, a secret with a stray newline or in another form, a prefix or
algorithm of another scheme, a stale timestamp, a missing header. Findings never contain
the secret, a token or the expected signature.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, cast

from hookstage.verify import (
    AUTHORIZATION,
    HUB,
    HUB_256,
    WEBHOOK_ID,
    WEBHOOK_SIGNATURE,
    WEBHOOK_TIMESTAMP,
    Reason,
    Scheme,
    VerificationError,
    detect_scheme,
    verify,
)

__all__ = ["Diagnosis", "diagnose", "parse_header_line"]

_TCHAR = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEX = re.compile(r"[0-9a-fA-F]+")
_VERSION = re.compile(r"v[0-9a-z]{1,4}")
_HEADER_OF = {
    Scheme.STANDARD: WEBHOOK_SIGNATURE,
    Scheme.HUB_256: HUB_256,
    Scheme.HUB: HUB,
    Scheme.BEARER: AUTHORIZATION,
}
_ALGORITHMS: dict[int, tuple[str, Callable[[], Any]]] = {
    20: ("HMAC-SHA1", hashlib.sha1),
    32: ("HMAC-SHA256", hashlib.sha256),
}
# Re-serialising a huge body 32 ways would make the doctor slow; byte-level variants stay.
_JSON_VARIANTS_UP_TO = 1 << 20

# (what it is, the bytes); the first entry of a variant list is the input as given ("").
_Variant = tuple[str, bytes]
_Pairs = list[tuple[str, str]]


class _Context(NamedTuple):
    tolerance: float
    now: float
    reason: Reason


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """The verdict: ``ok`` (it verified), the ``scheme`` checked (None when the request has
    no signature header at all or an argument was unusable), ``findings`` in plain English,
    most important first, and the ``reason`` code of the verification error (None if ok)."""

    ok: bool
    scheme: Scheme | None
    findings: list[str] = field(default_factory=list)
    reason: Reason | None = None


def diagnose(
    body: bytes,
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
    secret: str | bytes,
    *,
    scheme: Scheme | str = "auto",
    tolerance: float = 300,
    now: float | None = None,
) -> Diagnosis:
    """Verify ``body`` and ``headers`` with ``secret`` (as ``verify.verify`` does) and explain.

    When verification fails, the findings say why where it can be told: the body matches
    once re-serialised (compact or pretty JSON, sorted keys, newline, CRLF), the secret
    matches once stripped or decoded, a ``sha1=`` prefix, upper-case hex, a digest of
    another algorithm or another scheme's header, a timestamp outside the tolerance (by how
    much), a missing header (with the names of those present). Bad arguments do not raise:
    they become the finding, with reason ``wrong-type`` or ``bad-argument``.
    """
    raw = _raw_pairs(headers)
    if raw is None:
        message = "headers must be a mapping of names to values or a list of (name, value) pairs"
        return Diagnosis(False, None, [message], "wrong-type")
    try:
        verified = verify(body, raw, secret, scheme=scheme, tolerance=tolerance, now=now)
    except VerificationError as error:
        if error.reason in ("wrong-type", "bad-argument"):
            return Diagnosis(False, None, [error.message], error.reason)
        pairs = _text_pairs(raw)
        # verify() checked body, scheme, tolerance and now before anything else: all usable.
        clock = time.time() if now is None else float(now)
        context = _Context(float(tolerance), clock, error.reason)
        chosen = _chosen(scheme, pairs)
        return _explain(error, bytes(body), pairs, secret, chosen=chosen, context=context)
    if verified is Scheme.BEARER:
        findings = ["the Authorization bearer token matches"]
    else:
        findings = [f"the {_HEADER_OF[verified]} header verifies: it matches the body and secret"]
    findings += _upper_case(verified, _text_pairs(raw))
    return Diagnosis(True, verified, findings)


def parse_header_line(line: str) -> tuple[str, str]:
    """Split ``"Name: value"`` into ``(name, value)``, trimming spaces around both.

    Raises ValueError (without repeating the value, which may be a credential) when there
    is no ``:``, the name is empty or not a valid HTTP header name, or the value holds a
    line break or NUL; TypeError when ``line`` is not a str.
    """
    if not isinstance(line, str):
        raise TypeError(f"header line must be str, got {type(line).__name__}")
    name, sep, value = line.partition(":")
    if not sep:
        raise ValueError("a header must be given as 'Name: value' (no ':' found)")
    name = name.strip()
    if not name:
        raise ValueError("the header name before ':' is empty: expected 'Name: value'")
    if not _TCHAR.fullmatch(name):
        raise ValueError(
            "the text before ':' is not a valid HTTP header name "
            "(letters, digits and !#$%&'*+-.^_`|~ only, no spaces)"
        )
    value = value.strip(" \t")
    if any(char in value for char in "\r\n\0"):
        raise ValueError(f"the {name} header value contains a line break or NUL character")
    return name, value


# ---- the request as plain text -------------------------------------------------------------


def _raw_pairs(headers: object) -> list[tuple[object, object]] | None:
    """The headers as a list of pairs (read once, for verify and for us), or None if unusable."""
    if isinstance(headers, (str, bytes, bytearray, memoryview)):
        return None
    try:  # user code (a mapping's items(), an iterator) may fail in any way
        items = getattr(headers, "items", None)
        source = cast(Iterable[object], items() if callable(items) else headers)
        pairs = list(source)
    except Exception:
        return None
    if not all(isinstance(pair, (tuple, list)) and len(pair) == 2 for pair in pairs):
        return None
    return [(name, value) for name, value in cast(list[tuple[object, object]], pairs)]


def _text_pairs(raw: list[tuple[object, object]]) -> _Pairs:
    """The pairs as text, for reading only (verify has judged their validity)."""
    return [
        (_text(name, "latin-1"), _text(value, "utf-8"))
        for name, value in raw
        if isinstance(name, (str, bytes, bytearray)) and isinstance(value, (str, bytes, bytearray))
    ]


def _text(value: str | bytes | bytearray, encoding: str) -> str:
    if isinstance(value, str):
        return value
    return bytes(value).decode(encoding, errors="replace")


def _lookup(pairs: _Pairs, name: str) -> str | None:
    wanted = name.lower()
    for key, value in pairs:
        if key.lower() == wanted:
            return value.strip(" \t")
    return None


def _chosen(requested: Scheme | str, pairs: _Pairs) -> Scheme | None:
    if requested != "auto":
        return Scheme(requested)  # verify() has already refused unknown names
    try:
        return detect_scheme(pairs)
    except VerificationError:
        return None


# ---- explaining a failure ------------------------------------------------------------------


def _explain(
    error: VerificationError,
    data: bytes,
    pairs: _Pairs,
    secret: str | bytes,
    *,
    chosen: Scheme | None,
    context: _Context,
) -> Diagnosis:
    findings = [error.message]
    if chosen is None:
        return Diagnosis(False, None, [*findings, _present(pairs)], error.reason)
    if error.reason == "missing-header":
        findings.append(_present(pairs))
    elif isinstance(secret, (str, bytes)):
        findings += _EXPLAINERS[chosen](data, pairs, secret, context)
    findings += _other_schemes(chosen, data, pairs, secret, context)
    return Diagnosis(False, chosen, findings, error.reason)


def _present(pairs: _Pairs) -> str:
    names = sorted({name for name, _ in pairs}, key=str.lower)
    if not names:
        return "the request has no headers at all"
    return "headers present: " + ", ".join(names)


def _other_schemes(
    chosen: Scheme, data: bytes, pairs: _Pairs, secret: str | bytes, context: _Context
) -> list[str]:
    """Another scheme's header beside (or instead of) the one checked, and whether it verifies."""
    findings = []
    for other, header in _HEADER_OF.items():
        if other is chosen or _lookup(pairs, header) is None:
            continue
        try:
            verify(data, pairs, secret, scheme=other, tolerance=context.tolerance, now=context.now)
        except VerificationError:
            findings.append(f"the request also carries {header}, the '{other}' scheme's header")
        else:
            findings.append(f"the {header} header (scheme '{other}') verifies with this secret")
    return findings


def _upper_case(scheme: Scheme, pairs: _Pairs) -> list[str]:
    if scheme not in (Scheme.HUB, Scheme.HUB_256):
        return []
    header = _HEADER_OF[scheme]
    digits = (_lookup(pairs, header) or "").rpartition("=")[2]
    return [_upper_case_note(header)] if digits != digits.lower() else []


def _upper_case_note(header: str) -> str:
    return (
        f"{header} is upper-case hex: accepted here, but Ango and GitHub send lower case, and "
        "a receiver comparing strings (like the seed's Flask sample) rejects it"
    )


# ---- X-Hub-Signature and X-Hub-Signature-256 -----------------------------------------------


def _explain_hub(data: bytes, pairs: _Pairs, secret: str | bytes, _: _Context) -> list[str]:
    value = _lookup(pairs, HUB) or ""
    prefix, sep, rest = value.partition("=")
    if sep and prefix.lower() in ("sha1", "sha256"):
        value = rest  # verify's message names the prefix; see whether the rest is right
    return _explain_digest(HUB, 20, value, data, secret)


def _explain_hub_256(data: bytes, pairs: _Pairs, secret: str | bytes, _: _Context) -> list[str]:
    value = _lookup(pairs, HUB_256) or ""
    findings = []
    prefix, sep, rest = value.partition("=")
    if not sep:
        findings.append(f"{HUB_256} has no 'sha256=' prefix: its form is sha256=<hex digest>")
    else:
        value = rest
        if prefix.lower() != "sha256":
            findings.append(f"{HUB_256} starts with '{prefix}=' instead of 'sha256='")
    return findings + _explain_digest(HUB_256, 32, value, data, secret)


def _explain_digest(
    header: str, size: int, value: str, data: bytes, secret: str | bytes
) -> list[str]:
    findings, digest = _decode_digest(header, size, value)
    expected = _ALGORITHMS[size][0]
    if digest is None:
        return findings
    if len(digest) not in _ALGORITHMS:
        return [*findings, f"{header} holds {len(digest)} bytes; {expected} is {size} bytes"]
    algorithm, hash_factory = _ALGORITHMS[len(digest)]
    other = algorithm if len(digest) != size else None
    if other:
        findings.append(f"{header} holds an {other} digest, but {header} carries {expected}")
    match = _search(
        [digest],
        _hmac_keys(secret),
        _body_variants(data),
        lambda key, body: hmac.new(key, body, hash_factory).digest(),
    )
    findings.append(_describe(match, other))
    if match is None and isinstance(secret, str) and secret.strip().startswith("whsec_"):
        findings.append(
            "the secret is in Standard Webhooks form (whsec_...): for this header a sender keys "
            "HMAC with the secret text exactly as entered"
        )
    return findings


def _decode_digest(header: str, size: int, value: str) -> tuple[list[str], bytes | None]:
    if _HEX.fullmatch(value) and len(value) % 2 == 0:
        notes = [_upper_case_note(header)] if value != value.lower() else []
        return notes, bytes.fromhex(value)
    decoded = _b64(value)
    if len(decoded) in _ALGORITHMS:
        return [f"{header} is base64-encoded; it must be hex"], decoded
    return [f"{header} is not a hex digest ({2 * size} hex digits expected)"], None


# ---- Standard Webhooks ---------------------------------------------------------------------


def _explain_standard(
    data: bytes, pairs: _Pairs, secret: str | bytes, context: _Context
) -> list[str]:
    msg_id = _lookup(pairs, WEBHOOK_ID) or ""
    stamp = _lookup(pairs, WEBHOOK_TIMESTAMP) or ""
    findings = _timestamp_findings(stamp, context)
    entries = [entry.partition(",") for entry in (_lookup(pairs, WEBHOOK_SIGNATURE) or "").split()]
    claimed = [_b64(encoded) for version, _, encoded in entries if version == "v1"]
    findings += _entry_findings(entries)
    if not any(sep for _, sep, _ in entries):  # bare signatures: try them as they are
        claimed = [_b64(version) for version, _, _ in entries]
    digests = [digest for digest in claimed if digest]
    if not digests:
        return findings
    prefix = f"{msg_id}.{stamp}.".encode()
    match = _search(
        digests,
        _standard_keys(secret),
        _body_variants(data),
        lambda key, body: hmac.new(key, prefix + body, hashlib.sha256).digest(),
    )
    findings.append(_describe(match, None))
    return findings


def _entry_findings(entries: list[tuple[str, str, str]]) -> list[str]:
    if entries and not any(sep for _, sep, _ in entries):
        return [f"{WEBHOOK_SIGNATURE} entries lack the 'v1,' version prefix (v1,<base64>)"]
    # Print a version only when it looks like one: a bare signature must not be echoed.
    ignored = {version if _VERSION.fullmatch(version) else "?" for version, _, _ in entries}
    ignored.discard("v1")
    if not ignored:
        return []
    return [
        f"{WEBHOOK_SIGNATURE} entries of version {', '.join(sorted(ignored))} are ignored: "
        "only v1 (HMAC-SHA256) is checked"
    ]


def _timestamp_findings(stamp: str, context: _Context) -> list[str]:
    if not stamp.isascii() or not stamp.isdigit():
        return [f"{WEBHOOK_TIMESTAMP} is not integer epoch seconds"]
    if len(stamp) >= 13:
        return [f"{WEBHOOK_TIMESTAMP} looks like milliseconds; Standard Webhooks uses seconds"]
    if context.reason in ("timestamp-too-old", "timestamp-too-new"):
        return []  # verify's own message already says by how much
    tolerance, now = context.tolerance, context.now
    age = now - int(stamp)
    if abs(age) <= tolerance:
        return []
    direction = "older" if age > 0 else "newer"
    return [
        f"the timestamp is {abs(age):.0f} s {direction} than now, {abs(age) - tolerance:.0f} s "
        f"beyond the {tolerance:g} s tolerance: a replayed or delayed message, or a clock off"
    ]


# ---- Bearer --------------------------------------------------------------------------------


def _explain_bearer(_data: bytes, pairs: _Pairs, secret: str | bytes, _: _Context) -> list[str]:
    word, _sep, credential = (_lookup(pairs, AUTHORIZATION) or "").partition(" ")
    if word.lower() != "bearer":
        return [f"{AUTHORIZATION} is not a Bearer credential (its scheme word is not 'Bearer')"]
    if not isinstance(secret, str):
        return []
    given = credential.strip().encode(errors="replace")
    stripped = secret.strip().encode(errors="replace")
    if secret != secret.strip() and hmac.compare_digest(given, stripped):
        return ["the token matches once its surrounding whitespace or newline is removed"]
    return ["the token differs from the one given (not only by whitespace)"]


_EXPLAINERS: dict[Scheme, Callable[[bytes, _Pairs, str | bytes, _Context], list[str]]] = {
    Scheme.HUB: _explain_hub,
    Scheme.HUB_256: _explain_hub_256,
    Scheme.STANDARD: _explain_standard,
    Scheme.BEARER: _explain_bearer,
}


# ---- trying the usual mistakes -------------------------------------------------------------


def _search(
    claimed: list[bytes],
    keys: list[_Variant],
    bodies: list[_Variant],
    sign: Callable[[bytes, bytes], bytes],
) -> tuple[str, str] | None:
    """The first (key, body) variant whose signature is one of ``claimed``."""
    for key_note, key in keys:
        for body_note, body in bodies:
            digest = sign(key, body)
            if any(hmac.compare_digest(digest, candidate) for candidate in claimed):
                return key_note, body_note
    return None


def _describe(match: tuple[str, str] | None, algorithm: str | None) -> str:
    if match is None:
        return (
            "no variation tried matches (re-serialised JSON, line endings, trailing newline, "
            "secret whitespace or encoding): most likely the secret differs from the sender's, "
            "or the body was changed in a way that cannot be guessed"
        )
    key_note, body_note = match
    parts = [part for part in (body_note, key_note) if part] or ["the body and secret as given"]
    what = " and ".join(parts) + (f", with {algorithm}" if algorithm else "")
    advice = []
    if algorithm:
        advice.append("the sender uses another algorithm than this header carries")
    if body_note:
        advice.append("sign/send the exact raw bytes")
    if key_note:
        advice.append("use the same secret, in the same form, on both sides")
    if not advice:
        advice.append("the signature itself is right; the problem is the one above")
    return f"the signature matches {what}: {'; '.join(advice)}"


def _body_variants(body: bytes) -> list[_Variant]:
    variants: dict[bytes, str] = {body: ""}
    for note, data in [*_line_variants(body), *_json_variants(body)]:
        variants.setdefault(data, note)
    return [(note, data) for data, note in variants.items()]


def _line_variants(body: bytes) -> list[_Variant]:
    out = [("the body with a trailing newline added", body + b"\n")]
    if body.endswith(b"\n"):
        out.append(("the body with its trailing newline removed", body.rstrip(b"\r\n")))
    if b"\r\n" in body:
        out.append(("the body with LF line endings instead of CRLF", body.replace(b"\r\n", b"\n")))
    elif b"\n" in body:
        out.append(("the body with CRLF line endings", body.replace(b"\n", b"\r\n")))
    return out


def _json_variants(body: bytes) -> list[_Variant]:
    if len(body) > _JSON_VARIANTS_UP_TO:
        return []
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):  # not JSON: only the byte-level variants apply
        return []
    styles: list[tuple[str, dict[str, Any]]] = [
        ("compact JSON", {"separators": (",", ":")}),
        ("JSON with Python's default ', ' and ': ' separators", {}),
        ("JSON pretty-printed with indent 2", {"indent": 2}),
        ("JSON pretty-printed with indent 4", {"indent": 4}),
    ]
    out = []
    for name, style in styles:
        for sort_keys in (False, True):
            for ascii_only in (False, True):
                text = json.dumps(document, sort_keys=sort_keys, ensure_ascii=ascii_only, **style)
                label = "the body re-serialised as " + name
                label += ", keys sorted" if sort_keys else ""
                label += ", non-ASCII escaped" if ascii_only else ""
                out.append((label, text.encode()))
                out.append((label + ", plus a trailing newline", text.encode() + b"\n"))
    return out


def _hmac_keys(secret: str | bytes) -> list[_Variant]:
    if isinstance(secret, bytes):
        return [("", secret)]
    stripped = secret.strip()
    keys: list[_Variant] = [
        ("", secret.encode(errors="replace")),
        (
            "the secret without its surrounding whitespace or newline",
            stripped.encode(errors="replace") if stripped != secret else b"",
        ),
        ("the secret base64-decoded", _b64(stripped)),
    ]
    if stripped.startswith("whsec_"):
        keys.append(("the key inside the whsec_ secret (base64-decoded)", _b64(stripped[6:])))
        keys.append(("the secret without its whsec_ prefix", stripped[6:].encode(errors="replace")))
    return [(note, key) for note, key in keys if key]


def _standard_keys(secret: str | bytes) -> list[_Variant]:
    if isinstance(secret, bytes):
        return [("", secret)]
    stripped = secret.strip()
    text = stripped.removeprefix("whsec_")
    keys: list[_Variant] = [
        ("", _b64(secret.removeprefix("whsec_"))),
        (
            "the secret without its surrounding whitespace or newline",
            _b64(text) if stripped != secret else b"",
        ),
        (
            "the secret's text used as the key (not base64-decoded)",
            stripped.encode(errors="replace"),
        ),
        ("the secret's text after whsec_ used as the key", text.encode(errors="replace")),
    ]
    return [(note, key) for note, key in keys if key]


def _b64(text: str) -> bytes:
    """Strict standard base64 (padding optional), or b"" when ``text`` is not base64."""
    core = text.rstrip("=")
    try:
        return base64.b64decode(core + "=" * (-len(core) % 4), validate=True)
    except (binascii.Error, ValueError):
        return b""
