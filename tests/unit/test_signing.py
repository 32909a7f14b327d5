"""Sender-side signatures: each scheme checked against code and vectors no one here wrote."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import pickle
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks import Webhook

from hookstage import verify
from hookstage.signing import (
    Scheme,
    Signer,
    bearer_headers,
    generate_standard_secret,
    hub_signature,
    hub_signature_256,
    standard_webhooks_headers,
)

# shared/ sits beside the repository (here and in CI's clone).
SEED = Path(__file__).resolve().parents[3] / "shared" / "samples" / "webhook-seed-2023.json"
SEED_SECRET = b"your_secret_key"  # the secret in the seed's Flask sample
STANDARD_A = "whsec_" + base64.b64encode(b"A" * 32).decode()
STANDARD_B = "whsec_" + base64.b64encode(b"B" * 24).decode()


def seed_body() -> bytes:
    return SEED.read_bytes()


def seed_check(secret: bytes, body: bytes, header: str) -> bool:
    """The seed document's receiver, verbatim in substance."""
    computed_signature = hmac.new(secret, msg=body, digestmod=hashlib.sha1).hexdigest()
    return header == computed_signature


# ---- X-Hub-Signature (Ango) ----------------------------------------------------------------


def test_hub_signature_passes_the_seed_receivers_check_on_the_seed_sample() -> None:
    body = seed_body()
    header = hub_signature(SEED_SECRET.decode(), body)
    assert seed_check(SEED_SECRET, body, header)
    assert not seed_check(SEED_SECRET, body + b"\n", header)


def test_hub_signature_is_bare_lowercase_hex_sha1() -> None:
    value = hub_signature("key", b"The quick brown fox jumps over the lazy dog")
    # The well-known HMAC-SHA1 example vector.
    assert value == "de7c9b85b8b78aa6bc8a7a36f70a90701c9db4d9"


def test_hub_signature_accepts_bytes_secret_and_bytes_like_bodies() -> None:
    expected = hub_signature("key", b"payload")
    assert hub_signature(b"key", bytearray(b"payload")) == expected
    assert hub_signature("key", memoryview(b"payload")) == expected


def test_hub_signature_keys_non_ascii_secrets_as_utf8() -> None:
    secret = "clé-秘密"
    expected = hmac.new(secret.encode("utf-8"), b"x", hashlib.sha1).hexdigest()
    assert hub_signature(secret, b"x") == expected


def test_hub_signature_256_has_githubs_form() -> None:
    # GitHub's documented example ("Validating webhook deliveries").
    value = hub_signature_256("It's a Secret to Everybody", b"Hello, World!")
    assert value == "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


@pytest.mark.parametrize("function", [hub_signature, hub_signature_256])
def test_hub_signatures_refuse_bad_arguments(function: Any) -> None:
    with pytest.raises(TypeError, match="body"):
        function("key", "a str body")
    with pytest.raises(TypeError, match="secret"):
        function(None, b"body")
    with pytest.raises(ValueError, match="secret must not be empty"):
        function("", b"body")


# ---- Standard Webhooks ---------------------------------------------------------------------


def test_standard_headers_match_the_specifications_example() -> None:
    # The example of the Standard Webhooks specification's reference implementations.
    headers = standard_webhooks_headers(
        ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        b'{"test": 2432232314}',
    )
    assert headers == {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }


def test_standard_headers_pass_the_standardwebhooks_package() -> None:
    body = seed_body()
    headers = standard_webhooks_headers([STANDARD_A], "msg_1", int(time.time()), body)
    assert Webhook(STANDARD_A).verify(body, headers)["assetId"] == "65141af7a9e78800154eeb54"


def test_standard_headers_sign_with_every_secret_of_a_rotation() -> None:
    body = seed_body()
    headers = standard_webhooks_headers([STANDARD_A, STANDARD_B], "msg_2", int(time.time()), body)
    assert headers["webhook-signature"].count("v1,") == 2
    # A receiver that has either secret accepts the message.
    for secret in (STANDARD_A, STANDARD_B):
        Webhook(secret).verify(body, headers)
    unrelated = "whsec_" + base64.b64encode(b"C" * 32).decode()
    with pytest.raises(Exception, match="No matching signature"):
        Webhook(unrelated).verify(body, headers)


def test_standard_secret_prefix_is_optional() -> None:
    with_prefix = standard_webhooks_headers([STANDARD_A], "m", 1, b"{}")
    without = standard_webhooks_headers([STANDARD_A.removeprefix("whsec_")], "m", 1, b"{}")
    assert with_prefix == without


@pytest.mark.parametrize(
    ("arguments", "error", "fragment"),
    [
        (([], "m", 1, b""), ValueError, "at least one"),
        (("whsec_abc", "m", 1, b""), TypeError, "secrets must be a sequence"),
        ((["whsec_not base64!"], "m", 1, b""), ValueError, r"secrets\[0\] is not a Standard"),
        (([STANDARD_A], "", 1, b""), ValueError, "msg_id"),
        (([STANDARD_A], "has space", 1, b""), ValueError, "msg_id"),
        (([STANDARD_A], "m", -1, b""), ValueError, "timestamp"),
        (([STANDARD_A], "m", 1.5, b""), TypeError, "timestamp"),
        (([STANDARD_A], "m", True, b""), TypeError, "timestamp"),
        (([STANDARD_A], "m", 1, "{}"), TypeError, "body"),
    ],
)
def test_standard_headers_refuse_bad_arguments(
    arguments: tuple[Any, ...], error: type[Exception], fragment: str
) -> None:
    with pytest.raises(error, match=fragment):
        standard_webhooks_headers(*arguments)


def test_generated_standard_secrets_are_fresh_32_byte_keys() -> None:
    first, second = generate_standard_secret(), generate_standard_secret()
    assert first != second
    assert first.startswith("whsec_")
    assert len(base64.b64decode(first.removeprefix("whsec_"), validate=True)) == 32
    headers = standard_webhooks_headers([first], "m", int(time.time()), b"{}")
    Webhook(first).verify(b"{}", headers)


# ---- Bearer --------------------------------------------------------------------------------


def test_bearer_headers() -> None:
    assert bearer_headers("tok-123") == {"Authorization": "Bearer tok-123"}
    for bad in ("two words", "line\nbreak", "tök-secret"):
        with pytest.raises(ValueError, match="token must be") as caught:
            bearer_headers(bad)
        assert bad not in str(caught.value)
    with pytest.raises(ValueError, match="token must be non-empty"):
        bearer_headers("")


# ---- Signer: every header of one delivery --------------------------------------------------


def test_signer_adds_every_configured_schemes_headers() -> None:
    body = seed_body()
    now = int(time.time())
    signer = Signer(
        [Scheme.HUB, "hub-256", "standard", Scheme.BEARER],
        secrets=[STANDARD_A, STANDARD_B],
        token="tok",
    )
    headers = signer.headers(body, msg_id="dlv_1", timestamp=now)
    assert set(headers) == {
        "X-Hub-Signature",
        "X-Hub-Signature-256",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "Authorization",
    }
    # The hub schemes carry one value: the newest secret's, keyed with its text as written.
    assert seed_check(STANDARD_A.encode(), body, headers["X-Hub-Signature"])
    assert headers["X-Hub-Signature-256"] == hub_signature_256(STANDARD_A, body)
    assert headers["webhook-id"] == "dlv_1"
    assert headers["webhook-timestamp"] == str(now)
    assert headers["Authorization"] == "Bearer tok"
    for secret in (STANDARD_A, STANDARD_B):
        Webhook(secret).verify(body, headers)


@pytest.mark.parametrize("size", [0, 1, 2046, 2047, 2048, 4094, 4095, 100_003])
def test_signer_signs_bodies_of_any_size_as_the_receivers_check_them(size: int) -> None:
    # Bodies are hashed in pieces (to keep the GIL); every piece boundary must be seamless,
    # and a keyed signer must sign its second body as it signed its first.
    body = bytes(i % 251 for i in range(size))
    signer = Signer(["hub", "hub-256", "standard"], secrets=[STANDARD_A])
    for _ in range(2):
        headers = signer.headers(body, msg_id="dlv_1", timestamp=1_700_000_000)
        assert seed_check(STANDARD_A.encode(), body, headers["X-Hub-Signature"])
        expected = hmac.new(STANDARD_A.encode(), body, hashlib.sha256).hexdigest()
        assert headers["X-Hub-Signature-256"] == "sha256=" + expected
        verify.verify_standard_webhooks(body, headers, [STANDARD_A], now=1_700_000_000)
    assert seed_check(b"k", body, hub_signature(b"k", body))


def test_a_signer_survives_pickle_and_deepcopy() -> None:
    signer = Signer(["hub", "standard", "bearer"], secrets=[STANDARD_A], token="tok")
    headers = signer.headers(b"body", msg_id="dlv_1", timestamp=1_700_000_000)
    for again in (pickle.loads(pickle.dumps(signer)), copy.deepcopy(signer)):
        assert again.headers(b"body", msg_id="dlv_1", timestamp=1_700_000_000) == headers
        assert "whsec_" not in repr(again)


def test_signer_without_schemes_adds_nothing() -> None:
    assert Signer().headers(b"{}", msg_id="m", timestamp=0) == {}


def test_signer_accepts_a_single_scheme_name() -> None:
    signer = Signer("hub", secrets=["s"])
    assert signer.schemes == frozenset({Scheme.HUB})
    assert signer.headers(b"x", msg_id="m", timestamp=0) == {
        "X-Hub-Signature": hub_signature("s", b"x")
    }


def test_signer_accepts_verifys_scheme_values() -> None:
    signer = Signer([verify.Scheme.HUB_256], secrets=["s"])
    assert signer.schemes == frozenset({Scheme.HUB_256})


def test_signer_is_pure() -> None:
    signer = Signer(["standard", "hub"], secrets=[STANDARD_A])
    first = signer.headers(b"{}", msg_id="m", timestamp=100)
    assert signer.headers(b"{}", msg_id="m", timestamp=100) == first
    assert signer.headers(b"{}", msg_id="m", timestamp=101) != first


@pytest.mark.parametrize(
    ("schemes", "options", "fragment"),
    [
        (["sha1"], {}, "unknown scheme 'sha1'"),
        (["hub"], {}, "need at least one secret"),
        (["standard", "hub-256"], {}, "hub-256, standard need"),
        (["bearer"], {}, "bearer needs a token"),
        (["hub"], {"secrets": [""]}, r"secrets\[0\] must not be empty"),
        (
            ["hub"],
            {"secrets": ["ok", "secret-with-newline\n"]},
            r"secrets\[1\] has leading or trailing",
        ),
        (["standard"], {"secrets": ["your_secret_key"]}, r"secrets\[0\] is not a Standard"),
        (["bearer"], {"token": "two words"}, "token must be"),
    ],
)
def test_signer_refuses_incomplete_or_bad_configuration(
    schemes: list[str], options: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(ValueError, match=fragment) as caught:
        Signer(schemes, **options)
    for secret in options.get("secrets", []):
        if secret.strip():
            assert secret.strip() not in str(caught.value)


@pytest.mark.parametrize(
    ("schemes", "options", "fragment"),
    [
        (["hub"], {"secrets": "a string, not a list"}, "secrets must be a sequence"),
        (["hub"], {"secrets": [b"bytes"]}, r"secrets\[0\] must be str"),
        (["bearer"], {"token": 123}, "token must be str"),
    ],
)
def test_signer_refuses_wrong_types(
    schemes: list[str], options: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(TypeError, match=fragment):
        Signer(schemes, **options)


def test_signer_headers_check_their_arguments() -> None:
    signer = Signer(["hub"], secrets=["s"])
    with pytest.raises(TypeError, match="body"):
        signer.headers("text", msg_id="m", timestamp=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="msg_id"):
        signer.headers(b"", msg_id="bad id", timestamp=0)
    with pytest.raises(TypeError, match="timestamp"):
        signer.headers(b"", msg_id="m", timestamp=None)  # type: ignore[arg-type]


def test_secrets_never_appear_in_repr_or_str() -> None:
    hub_secret = "hub-secret-do-not-print"
    token = "token-do-not-print"
    signer = Signer(["hub", "bearer"], secrets=[STANDARD_A, hub_secret], token=token)
    with pytest.raises(ValueError, match="not a Standard") as caught:
        Signer(["standard"], secrets=[STANDARD_A, hub_secret])
    shown = " ".join([repr(signer), str(signer), str(caught.value), repr(caught.value)])
    for secret in (hub_secret, STANDARD_A, STANDARD_A.removeprefix("whsec_"), token):
        assert secret not in shown
    assert repr(signer) == "Signer(schemes=[bearer, hub], secrets=<2 hidden>, token=<hidden>)"


def test_scheme_values_are_mirrored_by_verify() -> None:
    assert [scheme.value for scheme in Scheme] == [scheme.value for scheme in verify.Scheme]


# ---- round trips through our own verifier --------------------------------------------------


@given(body=st.binary(), secret=st.text(min_size=1).map(lambda s: "k" + s.strip()))
def test_every_signature_verifies_and_any_other_body_does_not(body: bytes, secret: str) -> None:
    headers = Signer(["hub", "hub-256"], secrets=[secret]).headers(body, msg_id="m", timestamp=0)
    assert verify.verify(body, headers, secret, scheme="hub") is verify.Scheme.HUB
    assert verify.verify(body, headers, secret, scheme="hub-256") is verify.Scheme.HUB_256
    with pytest.raises(verify.VerificationError, match="does not match"):
        verify.verify(body + b"!", headers, secret, scheme="hub")


@given(body=st.binary(), key=st.binary(min_size=1, max_size=64), stamp=st.integers(0, 2**40))
def test_standard_signatures_verify_at_their_timestamp(body: bytes, key: bytes, stamp: int) -> None:
    secret = "whsec_" + base64.b64encode(key).decode()
    headers = Signer(["standard"], secrets=[secret]).headers(body, msg_id="m", timestamp=stamp)
    assert verify.verify(body, headers, secret, now=stamp) is verify.Scheme.STANDARD
    with pytest.raises(verify.VerificationError, match="no webhook-signature entry matches"):
        verify.verify(body + b"!", headers, secret, now=stamp)
