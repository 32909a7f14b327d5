"""Sealing secrets at rest: round trips, wrong keys, key replacement, and no key in a message."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hookstage.cipher import Cipher, CipherError, new_key

KEY = new_key()
OTHER = new_key()
CIPHER = Cipher([KEY])


@given(st.text())
def test_what_is_sealed_opens_to_the_same_text(text: str) -> None:
    token = CIPHER.seal(text)
    assert token.isascii()
    assert CIPHER.unseal(token) == text


def test_a_secret_is_not_visible_in_its_sealed_form() -> None:
    token = CIPHER.seal("whsec_c2VjcmV0LXZhbHVlLTEyMzQ1Njc4")
    assert token.startswith("gAAAAA")
    assert "c2VjcmV0" not in token
    assert CIPHER.seal("same") != CIPHER.seal("same")  # a fresh IV each time


def test_another_key_cannot_open_it_and_says_which_setting_to_check() -> None:
    token = CIPHER.seal("s3cret-value")
    with pytest.raises(CipherError) as refused:
        Cipher([OTHER]).unseal(token)
    assert "HOOKSTAGE_SECRET_KEY" in str(refused.value)
    assert "s3cret-value" not in str(refused.value)
    with pytest.raises(CipherError):
        CIPHER.unseal(token[:-4] + "AAAA")  # altered: authenticated, so refused


def test_a_key_is_replaced_by_listing_the_new_one_first() -> None:
    old_token = Cipher([OTHER]).seal("rotating")
    both = Cipher.from_setting(f" {KEY} , {OTHER} ")
    assert both.unseal(old_token) == "rotating"
    assert not both.is_current(old_token)
    resealed = both.seal("rotating")
    assert both.is_current(resealed)
    assert CIPHER.unseal(resealed) == "rotating"  # the new key alone opens it


@pytest.mark.parametrize("setting", ["", "not-a-key", f"{KEY},short"])
def test_a_bad_key_is_refused_without_repeating_it(setting: str) -> None:
    with pytest.raises(CipherError) as refused:
        Cipher.from_setting(setting)
    message = str(refused.value)
    assert "HOOKSTAGE_SECRET_KEY" in message
    assert KEY not in message
    assert "not-a-key" not in message
    assert repr(CIPHER) == "Cipher(<keys hidden>)"
