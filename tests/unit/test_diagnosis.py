"""The signature doctor: each mistake it should recognise, told without leaking a secret."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hookstage.diagnosis import Diagnosis, diagnose, parse_header_line
from hookstage.signing import hub_signature, hub_signature_256, standard_webhooks_headers
from hookstage.verify import Scheme

SEED = Path(__file__).resolve().parents[3] / "shared" / "samples" / "webhook-seed-2023.json"
SECRET = "your_secret_key"
STANDARD = "whsec_" + base64.b64encode(b"standard-webhooks-key-32-bytes!!").decode()
TOKEN = "tok-abcdef0123456789"
NOW = 1_700_000_000


def seed_body() -> bytes:
    return SEED.read_bytes()


def run(
    body: bytes,
    headers: dict[str, str],
    secret: str | bytes,
    *,
    scheme: str = "auto",
    now: float = NOW,
    never_shown: tuple[str, ...] = (),
) -> Diagnosis:
    """diagnose(), checking on every call that no secret or expected signature is shown."""
    result = diagnose(body, headers, secret, scheme=scheme, now=now)
    text = "\n".join(result.findings)
    candidates = [
        secret if isinstance(secret, str) else "",
        hub_signature(SECRET, body),
        hub_signature_256(SECRET, body).removeprefix("sha256="),
        hub_signature(STANDARD, body),
        standard_webhooks_headers([STANDARD], "msg_1", NOW, body)["webhook-signature"][3:],
        *never_shown,
    ]
    leaked = [item for item in candidates if len(item.strip()) >= 8 and item.strip() in text]
    assert not leaked, f"findings show a secret or signature: {text}"
    assert result.findings, "a diagnosis always says something"
    return result


def one_finding(result: Diagnosis, fragment: str) -> str:
    matches = [finding for finding in result.findings if fragment in finding]
    assert matches, f"no finding with {fragment!r} in {result.findings}"
    return matches[0]


# ---- verdicts ------------------------------------------------------------------------------


def test_a_valid_signature() -> None:
    body = seed_body()
    result = run(body, {"X-Hub-Signature": hub_signature(SECRET, body)}, SECRET)
    assert result.ok
    assert result.scheme is Scheme.HUB
    assert result.reason is None
    assert result.findings == [
        "the X-Hub-Signature header verifies: it matches the body and secret"
    ]


def test_upper_case_hex_verifies_but_is_flagged() -> None:
    body = seed_body()
    result = run(body, {"X-Hub-Signature": hub_signature(SECRET, body).upper()}, SECRET)
    assert result.ok
    one_finding(result, "upper-case hex")


def test_upper_case_hex_is_flagged_on_failure_too() -> None:
    body = seed_body()
    result = run(body, {"X-Hub-Signature": hub_signature(SECRET, body + b"\n").upper()}, SECRET)
    assert not result.ok
    one_finding(result, "upper-case hex")
    one_finding(result, "trailing newline added")


# ---- the header's form ---------------------------------------------------------------------


def test_sha1_prefix_on_x_hub_signature() -> None:
    body = seed_body()
    result = run(body, {"X-Hub-Signature": "sha1=" + hub_signature(SECRET, body)}, SECRET)
    assert (result.ok, result.scheme, result.reason) == (False, Scheme.HUB, "malformed-header")
    one_finding(result, "starts with 'sha1='")
    one_finding(result, "the signature matches the body and secret as given")


def test_sha256_value_in_x_hub_signature() -> None:
    body = seed_body()
    digest = hub_signature_256(SECRET, body).removeprefix("sha256=")
    result = run(body, {"X-Hub-Signature": digest}, SECRET)
    assert not result.ok
    one_finding(result, "holds an HMAC-SHA256 digest, but X-Hub-Signature carries HMAC-SHA1")
    one_finding(result, "matches the body and secret as given, with HMAC-SHA256")


def test_github_style_value_in_x_hub_signature() -> None:
    body = seed_body()
    result = run(body, {"X-Hub-Signature": hub_signature_256(SECRET, body)}, SECRET)
    one_finding(result, "starts with 'sha256='")
    one_finding(result, "with HMAC-SHA256")


def test_sha1_value_in_x_hub_signature_256() -> None:
    body = seed_body()
    result = run(body, {"X-Hub-Signature-256": "sha256=" + hub_signature(SECRET, body)}, SECRET)
    assert result.scheme is Scheme.HUB_256
    one_finding(result, "holds an HMAC-SHA1 digest, but X-Hub-Signature-256 carries HMAC-SHA256")


def test_x_hub_signature_256_without_its_prefix() -> None:
    body = seed_body()
    digest = hub_signature_256(SECRET, body).removeprefix("sha256=")
    result = run(body, {"X-Hub-Signature-256": digest}, SECRET)
    one_finding(result, "has no 'sha256=' prefix")
    one_finding(result, "matches the body and secret as given")


def test_base64_digest_instead_of_hex() -> None:
    body = seed_body()
    digest = hmac.new(SECRET.encode(), body, hashlib.sha1).digest()
    result = run(body, {"X-Hub-Signature": base64.b64encode(digest).decode()}, SECRET)
    one_finding(result, "base64-encoded; it must be hex")
    one_finding(result, "matches the body and secret as given")


# ---- the body was re-serialised ------------------------------------------------------------


def reserialised(body: bytes) -> dict[str, bytes]:
    document = json.loads(body)
    return {
        "compact JSON": json.dumps(document, separators=(",", ":")).encode(),
        "JSON pretty-printed with indent 2": json.dumps(document, indent=2).encode(),
        "JSON pretty-printed with indent 4": json.dumps(document, indent=4).encode(),
        "keys sorted": json.dumps(document, indent=2, sort_keys=True).encode(),
        "Python's default ', ' and ': ' separators": json.dumps(document).encode(),
        "a trailing newline added": body + b"\n",
        "its trailing newline removed": body.rstrip(b"\n"),
        "CRLF line endings": body.replace(b"\n", b"\r\n"),
    }


@pytest.mark.parametrize("variant", list(reserialised(seed_body())))
def test_a_reserialised_body_is_recognised(variant: str) -> None:
    body = seed_body()
    signed = reserialised(body)[variant]
    result = run(body, {"X-Hub-Signature": hub_signature(SECRET, signed)}, SECRET)
    assert (result.ok, result.reason) == (False, "bad-signature")
    finding = one_finding(result, variant)
    assert finding.startswith("the signature matches the body ")
    assert finding.endswith("sign/send the exact raw bytes")


def test_crlf_body_signed_with_lf() -> None:
    body = seed_body().replace(b"\n", b"\r\n")
    result = run(body, {"X-Hub-Signature": hub_signature(SECRET, seed_body())}, SECRET)
    one_finding(result, "LF line endings instead of CRLF")


def test_reserialised_standard_webhooks_body() -> None:
    body = seed_body()
    compact = json.dumps(json.loads(body), separators=(",", ":")).encode()
    headers = standard_webhooks_headers([STANDARD], "msg_1", NOW, compact)
    result = run(body, headers, STANDARD)
    assert result.scheme is Scheme.STANDARD
    one_finding(result, "re-serialised as compact JSON")


# ---- the secret's form ---------------------------------------------------------------------


@pytest.mark.parametrize("given_secret", [SECRET + "\n", f"  {SECRET}", f"{SECRET}\r\n"])
def test_secret_with_surrounding_whitespace(given_secret: str) -> None:
    body = seed_body()
    result = run(body, {"X-Hub-Signature": hub_signature(SECRET, body)}, given_secret)
    one_finding(result, "the secret without its surrounding whitespace or newline")
    one_finding(result, "use the same secret, in the same form, on both sides")


def test_secret_given_as_base64() -> None:
    body = seed_body()
    encoded = base64.b64encode(SECRET.encode()).decode()
    result = run(body, {"X-Hub-Signature": hub_signature(SECRET, body)}, encoded)
    one_finding(result, "the secret base64-decoded")


def test_whsec_secret_where_the_hub_sender_used_its_key() -> None:
    body = seed_body()
    key = base64.b64decode(STANDARD.removeprefix("whsec_"))
    result = run(body, {"X-Hub-Signature": hub_signature(key, body)}, STANDARD)
    one_finding(result, "the key inside the whsec_ secret")


def test_whsec_secret_for_the_hub_scheme_that_matches_nothing() -> None:
    body = seed_body()
    result = run(body, {"X-Hub-Signature": hub_signature(SECRET, body)}, STANDARD)
    one_finding(result, "no variation tried matches")
    one_finding(result, "Standard Webhooks form (whsec_...)")


def test_plain_secret_for_standard_webhooks() -> None:
    body = seed_body()
    signed = b"msg_1." + str(NOW).encode() + b"." + body
    digest = hmac.new(SECRET.encode(), signed, hashlib.sha256).digest()
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(NOW),
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
    }
    result = run(body, headers, SECRET)
    assert result.reason == "bad-secret"
    one_finding(result, "'whsec_' followed by base64")
    one_finding(result, "the secret's text used as the key (not base64-decoded)")


def test_a_different_secret() -> None:
    body = seed_body()
    result = run(body, {"X-Hub-Signature": hub_signature("another", body)}, SECRET)
    assert result.reason == "bad-signature"
    one_finding(result, "most likely the secret differs")


# ---- Standard Webhooks timing and entries --------------------------------------------------


def test_timestamp_outside_the_tolerance_says_by_how_much() -> None:
    body = seed_body()
    headers = standard_webhooks_headers([STANDARD], "msg_1", NOW, body)
    old = run(body, headers, STANDARD, now=NOW + 1000)
    assert old.reason == "timestamp-too-old"
    one_finding(old, "1000 s in the past, beyond the 300 s tolerance")
    one_finding(old, "the signature matches the body and secret as given")
    new = run(body, headers, STANDARD, now=NOW - 400)
    assert new.reason == "timestamp-too-new"
    one_finding(new, "400 s in the future")


def test_a_stale_timestamp_beside_a_bad_signature_is_reported_too() -> None:
    body = seed_body()
    headers = standard_webhooks_headers([STANDARD], "msg_1", NOW, body + b"x")
    result = run(body, headers, STANDARD, now=NOW + 1000)
    assert result.reason == "bad-signature"
    one_finding(result, "the timestamp is 1000 s older than now, 700 s beyond the 300 s tolerance")


def test_timestamp_in_milliseconds() -> None:
    body = seed_body()
    headers = standard_webhooks_headers([STANDARD], "msg_1", NOW * 1000, body)
    result = run(body, headers, STANDARD)
    one_finding(result, "looks like milliseconds")


def test_signature_entries_of_other_versions_or_without_version() -> None:
    body = seed_body()
    headers = standard_webhooks_headers([STANDARD], "msg_1", NOW, body)
    signature = headers["webhook-signature"].removeprefix("v1,")
    result = run(body, {**headers, "webhook-signature": f"v1a,{signature}"}, STANDARD)
    one_finding(result, "entries of version v1a are ignored")
    bare = run(
        body, {**headers, "webhook-signature": signature}, STANDARD, never_shown=(signature,)
    )
    one_finding(bare, "lack the 'v1,' version prefix")
    one_finding(bare, "the signature matches the body and secret as given")


# ---- wrong or missing headers --------------------------------------------------------------


def test_undecodable_header_bytes() -> None:
    headers: Any = [(b"X-Hub-Signature", b"\xff" * 40)]
    result = diagnose(seed_body(), headers, SECRET)
    assert (result.scheme, result.reason) == (Scheme.HUB, "malformed-header")
    one_finding(result, "not valid UTF-8")


def test_a_value_that_is_no_digest_at_all() -> None:
    result = run(seed_body(), {"X-Hub-Signature": "not-a-signature"}, SECRET)
    one_finding(result, "not a hex digest (40 hex digits expected)")


def test_missing_header_lists_the_names_present_not_their_values() -> None:
    body = seed_body()
    headers = {"Content-Type": "application/json", "User-Agent": "curl/8.0 private-value"}
    result = run(body, headers, SECRET, never_shown=("private-value",))
    assert (result.ok, result.scheme, result.reason) == (False, None, "missing-header")
    one_finding(result, "no signature header")
    assert one_finding(result, "headers present") == "headers present: Content-Type, User-Agent"


def test_no_headers_at_all() -> None:
    result = run(seed_body(), {}, SECRET)
    one_finding(result, "no headers at all")


def test_explicit_scheme_whose_header_is_missing_points_at_the_one_present() -> None:
    body = seed_body()
    headers = standard_webhooks_headers([STANDARD], "msg_1", NOW, body)
    result = run(body, headers, STANDARD, scheme="hub")
    assert (result.scheme, result.reason) == (Scheme.HUB, "missing-header")
    one_finding(result, "the X-Hub-Signature header is missing")
    one_finding(result, "headers present: webhook-id, webhook-signature, webhook-timestamp")
    one_finding(
        result, "the webhook-signature header (scheme 'standard') verifies with this secret"
    )


def test_a_weaker_header_that_verifies_is_pointed_out() -> None:
    body = seed_body()
    headers = {
        **standard_webhooks_headers([STANDARD], "msg_1", NOW, body + b"x"),
        "X-Hub-Signature": hub_signature(STANDARD, body),
    }
    result = run(body, headers, STANDARD)
    assert (result.ok, result.scheme) == (False, Scheme.STANDARD)
    one_finding(result, "the X-Hub-Signature header (scheme 'hub') verifies with this secret")


def test_standard_headers_partly_missing() -> None:
    body = seed_body()
    headers = standard_webhooks_headers([STANDARD], "msg_1", NOW, body)
    del headers["webhook-id"]
    result = run(body, headers, STANDARD)
    one_finding(result, "the webhook-id header is missing")
    one_finding(result, "headers present: webhook-signature, webhook-timestamp")


# ---- bearer --------------------------------------------------------------------------------


def test_bearer_findings() -> None:
    valid = run(b"", {"Authorization": f"Bearer {TOKEN}"}, TOKEN)
    assert (valid.ok, valid.scheme, valid.findings) == (
        True,
        Scheme.BEARER,
        ["the Authorization bearer token matches"],
    )
    basic = run(b"", {"Authorization": f"Basic {TOKEN}"}, TOKEN)
    one_finding(basic, "not a Bearer credential")
    spaced = run(b"", {"Authorization": f"Bearer {TOKEN}"}, TOKEN + "\n")
    one_finding(spaced, "matches once its surrounding whitespace or newline is removed")
    other = run(b"", {"Authorization": "Bearer someone-elses-token"}, TOKEN)
    assert other.reason == "bad-token"
    one_finding(other, "differs from the one given")


# ---- bad arguments -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "options", "reason"),
    [
        (("text body", {"X-Hub-Signature": "0" * 40}, SECRET), {}, "wrong-type"),
        ((b"", {"X-Hub-Signature": "0" * 40}, None), {}, "wrong-type"),
        ((b"", None, SECRET), {}, "wrong-type"),
        ((b"", {"X-Hub-Signature": "0" * 40}, SECRET), {"scheme": "sha1"}, "bad-argument"),
        ((b"", {"X-Hub-Signature": "0" * 40}, SECRET), {"tolerance": -5}, "bad-argument"),
    ],
)
def test_bad_arguments_become_findings(
    arguments: tuple[Any, ...], options: dict[str, Any], reason: str
) -> None:
    result = diagnose(*arguments, **options)
    assert (result.ok, result.scheme, result.reason) == (False, None, reason)
    assert len(result.findings) == 1


anything = st.one_of(
    st.none(),
    st.integers(),
    st.floats(),
    st.text(),
    st.binary(),
    st.lists(st.tuples(st.text(), st.text()), max_size=3),
    st.dictionaries(st.sampled_from(["X-Hub-Signature", "webhook-signature", "x"]), st.text()),
)


@given(
    body=anything, headers=anything, secret=anything, scheme=st.one_of(st.just("auto"), anything)
)
def test_diagnose_never_raises(body: Any, headers: Any, secret: Any, scheme: Any) -> None:
    result = diagnose(body, headers, secret, scheme=scheme, now=NOW)
    assert result.findings
    assert result.ok is (result.reason is None)


# ---- parse_header_line ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("X-Hub-Signature: abc", ("X-Hub-Signature", "abc")),
        ("x-hub-signature:abc", ("x-hub-signature", "abc")),
        ("Authorization: Bearer  a:b ", ("Authorization", "Bearer  a:b")),
        ("webhook-signature: v1,a= v1,b=", ("webhook-signature", "v1,a= v1,b=")),
        ("X-Empty:", ("X-Empty", "")),
    ],
)
def test_parse_header_line(line: str, expected: tuple[str, str]) -> None:
    assert parse_header_line(line) == expected


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("X-Hub-Signature=secret-ish-value", "no ':' found"),
        (": value", "name before ':' is empty"),
        ("X Hub Signature: value", "not a valid HTTP header name"),
        ("X-Hub-Signature: a\r\nX-Injected: b", "line break or NUL"),
    ],
)
def test_parse_header_line_refuses_bad_lines(line: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment) as caught:
        parse_header_line(line)
    assert "secret-ish" not in str(caught.value)
    assert "X-Injected" not in str(caught.value)


def test_parse_header_line_refuses_non_text() -> None:
    with pytest.raises(TypeError, match="must be str"):
        parse_header_line(b"X: y")  # type: ignore[arg-type]


tchar = st.sampled_from("!#$%&'*+-.^_`|~0123456789abcdefXYZ")


@given(
    name=st.text(tchar, min_size=1, max_size=20),
    value=st.text(st.characters(exclude_characters="\r\n\0"), max_size=40),
)
def test_parse_header_line_round_trips(name: str, value: str) -> None:
    assert parse_header_line(f"{name}: {value}") == (name, value.strip(" \t"))


def parsed_or_problem(line: str) -> tuple[str, str] | str:
    try:
        return parse_header_line(line)
    except ValueError as error:
        return str(error)


@given(line=st.text(max_size=60))
def test_parse_header_line_either_parses_or_says_why(line: str) -> None:
    result = parsed_or_problem(line)
    if isinstance(result, str):
        assert result.startswith(("a header", "the "))
    else:
        name, value = result
        assert name == line.partition(":")[0].strip()
        assert not {"\r", "\n", "\0"} & set(value)
