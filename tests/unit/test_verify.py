"""Receiver-side verification: right answers, clear refusals, and nothing but VerificationError."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy
from standardwebhooks import Webhook

from hookstage import signing
from hookstage.verify import (
    Scheme,
    VerificationError,
    detect_scheme,
    verify,
    verify_bearer,
    verify_hub_signature,
    verify_hub_signature_256,
    verify_standard_webhooks,
)

SEED = Path(__file__).resolve().parents[3] / "shared" / "samples" / "webhook-seed-2023.json"
SECRET = "s3cr3t-for-tests"
OTHER = "another-secret"
STANDARD = "whsec_" + base64.b64encode(b"standard-webhooks-key-32-bytes!!").decode()
STANDARD_OLD = "whsec_" + base64.b64encode(b"the-previous-key-24-byte").decode()
TOKEN = "tok-abcdef0123456789"
NOW = 1_700_000_000
BODY = b'{"externalId": "a.png", "task": {"stage": "Label"}}'


def seed_body() -> bytes:
    return SEED.read_bytes()


def sha1_hex(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()


def sha256_hex(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def standard_headers(body: bytes, secret: str = STANDARD, stamp: int = NOW) -> dict[str, str]:
    """Signed by the standardwebhooks package, not by us."""
    signature = Webhook(secret).sign("msg_1", datetime.fromtimestamp(stamp, tz=UTC), body.decode())
    return {"webhook-id": "msg_1", "webhook-timestamp": str(stamp), "webhook-signature": signature}


def reason_of(call: Callable[[], object]) -> str:
    with pytest.raises(VerificationError) as caught:
        call()
    return caught.value.reason


# ---- X-Hub-Signature -----------------------------------------------------------------------


def test_hub_accepts_the_seed_sample_signed_as_ango_does() -> None:
    body = seed_body()
    verify_hub_signature(body, {"X-Hub-Signature": sha1_hex(SECRET, body)}, SECRET)
    assert verify(body, {"X-Hub-Signature": sha1_hex(SECRET, body)}, SECRET) is Scheme.HUB


class ItemsOnly:
    """Like Flask's request.headers: has items(), is not a Mapping."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._pairs = pairs

    def items(self) -> Iterator[tuple[str, str]]:
        return iter(self._pairs)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda name, value: {name: value},
        lambda name, value: {name.lower(): value},
        lambda name, value: {name.upper(): value},
        lambda name, value: [("Content-Type", "application/json"), (name, value)],
        lambda name, value: [(b"content-type", b"x"), (name.lower().encode(), value.encode())],
        lambda name, value: CIMultiDictProxy(CIMultiDict([(name, value)])),
        lambda name, value: ItemsOnly([(name, value)]),
        lambda name, value: ((n, v) for n, v in [(name, value)]),
        lambda name, value: {name: f" {value}\t"},
    ],
    ids=["dict", "lower", "upper", "pairs", "asgi-bytes", "multidict", "items-only", "gen", "ows"],
)
def test_any_header_container_in_any_case(wrap: Callable[[str, str], object]) -> None:
    verify_hub_signature(BODY, wrap("X-Hub-Signature", sha1_hex(SECRET, BODY)), SECRET)


def test_hub_accepts_upper_case_hex() -> None:
    verify_hub_signature(BODY, {"X-Hub-Signature": sha1_hex(SECRET, BODY).upper()}, SECRET)


def test_hub_accepts_any_secret_of_a_rotation_and_bytes_keys() -> None:
    headers = {"X-Hub-Signature": sha1_hex(SECRET, BODY)}
    verify_hub_signature(BODY, headers, [OTHER, SECRET])
    verify_hub_signature(BODY, headers, SECRET.encode())
    verify_hub_signature(bytearray(BODY), headers, (b"x", SECRET))
    verify_hub_signature(memoryview(BODY), headers, SECRET)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("sha1=" + sha1_hex(SECRET, BODY), "starts with 'sha1='"),
        ("sha256=" + sha256_hex(SECRET, BODY), "X-Hub-Signature-256"),
        (sha256_hex(SECRET, BODY), "40 hex digits"),
        (sha1_hex(SECRET, BODY)[:-1], "40 hex digits"),
        (sha1_hex(SECRET, BODY)[:-1] + "g", "40 hex digits"),
        ("é" * 40, "40 hex digits"),
        ("", "is empty"),
    ],
)
def test_hub_refuses_malformed_values(value: str, fragment: str) -> None:
    with pytest.raises(VerificationError, match=fragment) as caught:
        verify_hub_signature(BODY, {"X-Hub-Signature": value}, SECRET)
    assert caught.value.reason == "malformed-header"


def test_hub_mismatch_and_missing() -> None:
    assert (
        reason_of(
            lambda: verify_hub_signature(BODY, {"X-Hub-Signature": sha1_hex(OTHER, BODY)}, SECRET)
        )
        == "bad-signature"
    )
    changed = BODY.replace(b"Label", b"Review")
    headers = {"X-Hub-Signature": sha1_hex(SECRET, BODY)}
    assert reason_of(lambda: verify_hub_signature(changed, headers, SECRET)) == "bad-signature"
    with pytest.raises(VerificationError, match="X-Hub-Signature header is missing") as caught:
        verify_hub_signature(BODY, {"X-Hub-Signature-256": "sha256=00"}, SECRET)
    assert caught.value.reason == "missing-header"


def test_repeated_headers_must_agree() -> None:
    good = sha1_hex(SECRET, BODY)
    verify_hub_signature(BODY, [("X-Hub-Signature", good), ("x-hub-signature", good)], SECRET)
    with pytest.raises(VerificationError, match="more than once") as caught:
        verify_hub_signature(
            BODY, [("X-Hub-Signature", good), ("x-hub-signature", "0" * 40)], SECRET
        )
    assert caught.value.reason == "malformed-header"


def test_undecodable_header_values_are_malformed() -> None:
    for value in (b"\xff" * 40, "\udcff" * 40):
        with pytest.raises(VerificationError, match="not valid UTF-8") as caught:
            verify_hub_signature(BODY, [("X-Hub-Signature", value)], SECRET)
        assert caught.value.reason == "malformed-header"


# ---- X-Hub-Signature-256 -------------------------------------------------------------------


def test_hub_256() -> None:
    verify_hub_signature_256(
        BODY, {"x-hub-signature-256": "sha256=" + sha256_hex(SECRET, BODY)}, SECRET
    )
    upper = "SHA256=" + sha256_hex(SECRET, BODY).upper()
    verify_hub_signature_256(BODY, {"X-Hub-Signature-256": upper}, SECRET)
    wrong = {"X-Hub-Signature-256": "sha256=" + sha256_hex(OTHER, BODY)}
    assert reason_of(lambda: verify_hub_signature_256(BODY, wrong, SECRET)) == "bad-signature"


@pytest.mark.parametrize(
    "value",
    [
        sha256_hex(SECRET, BODY),
        "sha1=" + sha1_hex(SECRET, BODY),
        "sha256=" + sha1_hex(SECRET, BODY),
    ],
)
def test_hub_256_refuses_malformed_values(value: str) -> None:
    with pytest.raises(
        VerificationError, match=r"'sha256=' followed by 64 hex|64 hex digits"
    ) as caught:
        verify_hub_signature_256(BODY, {"X-Hub-Signature-256": value}, SECRET)
    assert caught.value.reason == "malformed-header"


# ---- Standard Webhooks ---------------------------------------------------------------------


def test_standard_accepts_what_the_standardwebhooks_package_signs() -> None:
    body = seed_body()
    verify_standard_webhooks(body, standard_headers(body), STANDARD, now=NOW)
    # The current clock by default.
    stamp = int(time.time())
    verify_standard_webhooks(body, standard_headers(body, stamp=stamp), STANDARD)


def test_standard_secret_forms() -> None:
    headers = standard_headers(BODY)
    verify_standard_webhooks(BODY, headers, STANDARD.removeprefix("whsec_"), now=NOW)
    verify_standard_webhooks(BODY, headers, STANDARD.rstrip("="), now=NOW)
    raw_key = base64.b64decode(STANDARD.removeprefix("whsec_"))
    verify_standard_webhooks(BODY, headers, raw_key, now=NOW)
    verify_standard_webhooks(BODY, headers, [STANDARD_OLD, STANDARD], now=NOW)


def test_standard_accepts_any_of_several_signatures_and_ignores_other_versions() -> None:
    good = standard_headers(BODY)["webhook-signature"]
    old = standard_headers(BODY, secret=STANDARD_OLD)["webhook-signature"]
    for value in (
        f"{old} {good}",
        f"v1a,c2lnbmF0dXJl {good}",
        f"v1,!!garbled!! {good}",
        f"v2,{good.removeprefix('v1,')} {good}",
        f"  {good}  ",
    ):
        headers = {**standard_headers(BODY), "webhook-signature": value}
        verify_standard_webhooks(BODY, headers, STANDARD, now=NOW)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("v1a,c2lnbmF0dXJl", "malformed-header"),
        ("v1,", "malformed-header"),
        ("c2lnbmF0dXJl", "malformed-header"),
        ("v2,c2lnbmF0dXJl", "malformed-header"),
        ("v1,c2lnbmF0dXJl", "bad-signature"),
    ],
)
def test_standard_refuses_signatures_without_a_matching_v1(value: str, reason: str) -> None:
    headers = {**standard_headers(BODY), "webhook-signature": value}
    assert reason_of(lambda: verify_standard_webhooks(BODY, headers, STANDARD, now=NOW)) == reason


def test_standard_tolerance_both_ways() -> None:
    headers = standard_headers(BODY)
    for now in (NOW - 300, NOW + 300, NOW):
        verify_standard_webhooks(BODY, headers, STANDARD, now=now)
    with pytest.raises(VerificationError, match="301 s in the past") as old:
        verify_standard_webhooks(BODY, headers, STANDARD, now=NOW + 301)
    assert old.value.reason == "timestamp-too-old"
    with pytest.raises(VerificationError, match="301 s in the future") as new:
        verify_standard_webhooks(BODY, headers, STANDARD, now=NOW - 301)
    assert new.value.reason == "timestamp-too-new"
    verify_standard_webhooks(BODY, headers, STANDARD, now=NOW + 3600, tolerance=3600)
    verify_standard_webhooks(BODY, headers, STANDARD, now=0, tolerance=float("inf"))
    late = lambda: verify_standard_webhooks(BODY, headers, STANDARD, now=NOW + 1, tolerance=0)  # noqa: E731
    assert reason_of(late) == "timestamp-too-old"


def test_standard_checks_the_signature_before_the_clock() -> None:
    headers = standard_headers(BODY, secret=STANDARD_OLD)
    late = lambda: verify_standard_webhooks(BODY, headers, STANDARD, now=NOW + 10_000)  # noqa: E731
    assert reason_of(late) == "bad-signature"


@pytest.mark.parametrize("stamp", ["1.5", "-1", "abc", "1" * 16, "\u0661" * 10, "+170"])
def test_standard_refuses_malformed_timestamps(stamp: str) -> None:
    headers = {**standard_headers(BODY), "webhook-timestamp": stamp}
    with pytest.raises(VerificationError, match="integer seconds") as caught:
        verify_standard_webhooks(BODY, headers, STANDARD, now=NOW)
    assert caught.value.reason == "malformed-header"


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_standard_names_the_missing_header(missing: str) -> None:
    headers = standard_headers(BODY)
    del headers[missing]
    with pytest.raises(VerificationError, match=f"the {missing} header is missing") as caught:
        verify_standard_webhooks(BODY, headers, STANDARD, now=NOW)
    assert caught.value.reason == "missing-header"


@pytest.mark.parametrize("secret", ["your_secret_key", "whsec_", "whsec_a", [], ["whsec_é"]])
def test_standard_refuses_unusable_secrets(secret: Any) -> None:
    call = lambda: verify_standard_webhooks(BODY, standard_headers(BODY), secret, now=NOW)  # noqa: E731
    assert reason_of(call) == "bad-secret"


def test_standard_signs_the_raw_bytes_even_when_not_utf8() -> None:
    body = b"\xff\xfe binary"
    headers = signing.standard_webhooks_headers([STANDARD], "msg_1", NOW, body)
    verify_standard_webhooks(body, headers, STANDARD, now=NOW)


# ---- Bearer --------------------------------------------------------------------------------


def test_bearer() -> None:
    verify_bearer({"Authorization": f"Bearer {TOKEN}"}, TOKEN)
    verify_bearer({"authorization": f"bearer  {TOKEN} "}, TOKEN)
    verify_bearer({"Authorization": f"Bearer {TOKEN}"}, ["old-token", TOKEN])
    assert reason_of(lambda: verify_bearer({"Authorization": "Bearer nope"}, TOKEN)) == "bad-token"
    for value in (f"Basic {TOKEN}", "Bearer", "Bearer   ", TOKEN):
        call = lambda v=value: verify_bearer({"Authorization": v}, TOKEN)  # noqa: E731
        assert reason_of(call) == "malformed-header"
    assert reason_of(lambda: verify_bearer({}, TOKEN)) == "missing-header"
    assert reason_of(lambda: verify_bearer({"Authorization": "Bearer x"}, "")) == "bad-secret"


# ---- verify(): choosing the scheme ---------------------------------------------------------


def all_schemes(body: bytes, *, standard_secret: str = STANDARD) -> dict[str, str]:
    return {
        **standard_headers(body, secret=standard_secret),
        "X-Hub-Signature-256": "sha256=" + sha256_hex(STANDARD, body),
        "X-Hub-Signature": sha1_hex(STANDARD, body),
        "Authorization": f"Bearer {TOKEN}",
    }


def test_auto_prefers_standard_then_hub_256_then_hub_then_bearer() -> None:
    headers = all_schemes(BODY)
    for header, scheme in [
        ("webhook-signature", Scheme.STANDARD),
        ("X-Hub-Signature-256", Scheme.HUB_256),
        ("X-Hub-Signature", Scheme.HUB),
    ]:
        assert detect_scheme(headers) is scheme
        assert verify(BODY, headers, STANDARD, now=NOW) is scheme
        del headers[header]
    assert detect_scheme(headers) is Scheme.BEARER
    assert verify(BODY, headers, TOKEN) is Scheme.BEARER


def test_auto_never_falls_back_to_a_weaker_scheme() -> None:
    headers = all_schemes(BODY, standard_secret=STANDARD_OLD)
    assert reason_of(lambda: verify(BODY, headers, STANDARD, now=NOW)) == "bad-signature"


def test_auto_without_any_signature_header() -> None:
    with pytest.raises(VerificationError, match="no signature header") as caught:
        verify(BODY, {"Content-Type": "application/json"}, SECRET)
    assert caught.value.reason == "missing-header"


def test_explicit_scheme_as_enum_or_string() -> None:
    headers = all_schemes(BODY)
    assert verify(BODY, headers, STANDARD, scheme=Scheme.HUB) is Scheme.HUB
    assert verify(BODY, headers, STANDARD, scheme="hub-256") is Scheme.HUB_256
    assert verify(BODY, headers, STANDARD, scheme=signing.Scheme.HUB) is Scheme.HUB
    assert verify(BODY, headers, TOKEN, scheme="bearer") is Scheme.BEARER
    with pytest.raises(VerificationError, match="unknown scheme 'sha1'") as caught:
        verify(BODY, headers, STANDARD, scheme="sha1")
    assert caught.value.reason == "bad-argument"


def test_headers_given_once_as_an_iterator_still_work_for_auto() -> None:
    pairs = iter([("X-Hub-Signature", sha1_hex(SECRET, BODY))])
    assert verify(BODY, pairs, SECRET) is Scheme.HUB


# ---- refusing bad arguments ----------------------------------------------------------------


def test_a_str_body_is_refused_with_a_hint() -> None:
    with pytest.raises(VerificationError, match="raw request bytes") as caught:
        verify(BODY.decode(), {"X-Hub-Signature": sha1_hex(SECRET, BODY)}, SECRET)  # type: ignore[arg-type]
    assert caught.value.reason == "wrong-type"


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"tolerance": -1}, "bad-argument"),
        ({"tolerance": float("nan")}, "bad-argument"),
        ({"tolerance": "300"}, "wrong-type"),
        ({"tolerance": True}, "wrong-type"),
        ({"now": float("inf")}, "bad-argument"),
        ({"now": 10**400}, "bad-argument"),
        ({"now": "now"}, "wrong-type"),
        ({"scheme": None}, "wrong-type"),
    ],
)
def test_bad_options(options: dict[str, Any], reason: str) -> None:
    headers = standard_headers(BODY)
    assert reason_of(lambda: verify(BODY, headers, STANDARD, **options)) == reason


class Exploding(Mapping[str, str]):
    def __getitem__(self, key: str) -> str:
        raise RuntimeError("boom")

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("boom")

    def __len__(self) -> int:
        return 1


@pytest.mark.parametrize(
    "headers",
    [None, 42, "X-Hub-Signature: abc", b"raw", [("only-a-name",)], [1, 2], {1: "x"}, Exploding()],
)
def test_unusable_header_containers_are_wrong_type(headers: object) -> None:
    assert reason_of(lambda: verify(BODY, headers, SECRET)) == "wrong-type"


def test_messages_never_contain_the_secret_or_the_expected_signature() -> None:
    body = seed_body()
    attempts: list[Callable[[], object]] = [
        lambda: verify_hub_signature(body, {"X-Hub-Signature": "0" * 40}, SECRET),
        lambda: verify_hub_signature(body, {"X-Hub-Signature": "sha1=" + "0" * 40}, SECRET),
        lambda: verify_hub_signature_256(
            body, {"X-Hub-Signature-256": "sha256=" + "0" * 64}, SECRET
        ),
        lambda: verify_standard_webhooks(
            body, standard_headers(body, STANDARD_OLD), STANDARD, now=NOW
        ),
        lambda: verify_standard_webhooks(body, standard_headers(body), SECRET, now=NOW),
        lambda: verify_bearer({"Authorization": "Bearer wrong"}, TOKEN),
    ]
    expected = [
        SECRET,
        STANDARD,
        STANDARD.removeprefix("whsec_"),
        TOKEN,
        sha1_hex(SECRET, body),
        sha256_hex(SECRET, body),
        standard_headers(body)["webhook-signature"].removeprefix("v1,"),
    ]
    for attempt in attempts:
        with pytest.raises(VerificationError) as caught:
            attempt()
        shown = f"{caught.value} {caught.value!r}"
        assert not [item for item in expected if item in shown]


def test_signatures_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[object, object]] = []
    original = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return original(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    verify(BODY, {"X-Hub-Signature": sha1_hex(SECRET, BODY)}, SECRET)
    verify(BODY, standard_headers(BODY), STANDARD, now=NOW)
    verify(BODY, {"Authorization": f"Bearer {TOKEN}"}, TOKEN)
    assert len(calls) >= 3


# ---- totality: whatever comes in, only VerificationError goes out --------------------------

NAMES = [
    "X-Hub-Signature",
    "x-hub-signature-256",
    "WEBHOOK-ID",
    "webhook-timestamp",
    "webhook-signature",
    "authorization",
]
anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**300),
    st.floats(),
    st.text(),
    st.binary(),
    st.lists(st.one_of(st.text(), st.binary(), st.integers()), max_size=3),
    st.tuples(st.text(), st.text()),
    st.dictionaries(st.text(), st.text(), max_size=3),
    st.builds(object),
    st.sampled_from([Scheme.HUB, "auto", float("nan"), float("inf"), memoryview(b"x"), b"", ""]),
)
odd_text = st.text(st.characters(categories=["Cs", "Lu", "Nd", "Zs", "Cc"]), max_size=12)
plausible_value = st.one_of(
    st.text(),
    odd_text,
    st.binary(),
    st.from_regex(r"\A(sha1=|sha256=|SHA256=)?[0-9a-fA-F]{0,70}\Z"),
    st.from_regex(r"\A(v1,[A-Za-z0-9+/=]{0,50} ?){0,3}\Z"),
    st.from_regex(r"\A(Bearer|bearer|Basic)? ?\S{0,20}\Z"),
    st.from_regex(r"\A[0-9]{0,20}\Z"),
    anything,
)
header_name = st.one_of(
    st.sampled_from(NAMES), st.text(max_size=20), st.binary(max_size=20), anything
)
pairs = st.lists(st.tuples(header_name, plausible_value), max_size=8)


def as_dict(items: list[tuple[Any, Any]]) -> object:
    hashable = all(isinstance(name, (str, bytes)) for name, _ in items)
    return dict(items) if hashable else items


# One secret that keys every scheme (hub: its text, standard: the key it encodes, bearer: the
# token), so a request can be valid for all of them at once, bar one odd header.
GOOD = {
    **standard_headers(BODY),
    "X-Hub-Signature": sha1_hex(STANDARD, BODY),
    "X-Hub-Signature-256": "sha256=" + sha256_hex(STANDARD, BODY),
    "Authorization": f"Bearer {STANDARD}",
}
# What aiohttp (surrogateescape) makes of header bytes that are not UTF-8.
undecodable = st.builds("{}\udcff{}".format, st.text(max_size=4), st.text(max_size=4))
odd_values = st.one_of(
    undecodable,
    undecodable.map("Bearer ".__add__),
    odd_text,
    odd_text.map("v1,".__add__),
    st.binary(max_size=12),
    plausible_value,
)
headers_strategy = st.one_of(anything, pairs, pairs.map(as_dict))
secrets = st.one_of(
    st.sampled_from([SECRET, STANDARD, TOKEN, [OTHER, SECRET], STANDARD.encode()]),
    anything,
    st.text(),
    odd_text,
    st.binary(),
    st.from_regex(r"\A(whsec_)?[A-Za-z0-9+/=_é -]{0,50}\Z"),
    st.lists(st.one_of(st.text(), st.binary(), anything), max_size=3),
)
bodies = st.one_of(st.just(BODY), st.binary(), anything)
numbers = st.one_of(st.none(), st.just(NOW), st.floats(), st.integers(), anything)


def total(call: Callable[[], object]) -> None:
    with contextlib.suppress(VerificationError):
        call()


@given(
    value=odd_values,
    body=st.one_of(st.just(BODY), st.binary()),
    secret=st.one_of(st.just(STANDARD), secrets),
)
def test_one_odd_header_in_a_valid_request_meets_only_verification_errors(
    value: Any, body: bytes, secret: Any
) -> None:
    for name in GOOD:
        headers = {**GOOD, name: value}
        for scheme in ["auto", *Scheme]:
            total(partial(verify, body, headers, secret, scheme=scheme, now=NOW))


@given(body=bodies, headers=headers_strategy, secret=secrets)
def test_hub_functions_are_total(body: Any, headers: Any, secret: Any) -> None:
    total(lambda: verify_hub_signature(body, headers, secret))
    total(lambda: verify_hub_signature_256(body, headers, secret))


@given(body=bodies, headers=headers_strategy, secret=secrets, tolerance=numbers, now=numbers)
def test_standard_is_total(body: Any, headers: Any, secret: Any, tolerance: Any, now: Any) -> None:
    total(lambda: verify_standard_webhooks(body, headers, secret, tolerance=tolerance, now=now))


@given(headers=headers_strategy, token=secrets)
def test_bearer_and_detection_are_total(headers: Any, token: Any) -> None:
    total(lambda: verify_bearer(headers, token))
    total(lambda: detect_scheme(headers))


@given(
    body=bodies,
    headers=headers_strategy,
    secret=secrets,
    options=st.fixed_dictionaries(
        {
            "scheme": st.one_of(st.sampled_from(["auto", *Scheme]), anything),
            "tolerance": numbers,
            "now": numbers,
        }
    ),
)
def test_verify_is_total(body: Any, headers: Any, secret: Any, options: dict[str, Any]) -> None:
    total(lambda: verify(body, headers, secret, **options))


@given(body=st.binary(), secret=st.text(min_size=1), flip=st.integers(min_value=0))
def test_a_changed_body_never_verifies(body: bytes, secret: str, flip: int) -> None:
    headers = {"X-Hub-Signature": sha1_hex(secret, body)}
    verify(body, headers, secret)
    changed = bytearray(body + b"\0")
    changed[flip % len(changed)] ^= 0x01
    assert reason_of(lambda: verify(bytes(changed), headers, secret)) == "bad-signature"
