"""Sealing secrets at rest: webhook secrets and bearer tokens encrypted in the database.

The key comes from the environment (``HOOKSTAGE_SECRET_KEY``), never from the database, so
a copy of the database (a backup, a stolen file) does not carry the secrets it guards.
Fernet (AES-128-CBC with HMAC-SHA256, from ``cryptography``): authenticated, so a token
altered or sealed with another key is refused, not decrypted to garbage.

The setting may list several keys, comma-separated, newest first: values are sealed with
the newest and opened with any, so a key is replaced by putting the new one first, letting
``serve`` re-seal what it finds (it does at start), then dropping the old one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

__all__ = ["KEY_ENV", "Cipher", "CipherError", "new_key"]

KEY_ENV: Final = "HOOKSTAGE_SECRET_KEY"


class CipherError(ValueError):
    """A key that is not a Fernet key, or a sealed value no key given can open.
    The message never contains a key or a value."""


def new_key() -> str:
    """A new random key for ``HOOKSTAGE_SECRET_KEY``."""
    return Fernet.generate_key().decode("ascii")


class Cipher:
    """Seals and opens text with one or more Fernet keys (newest first)."""

    __slots__ = ("_all", "_newest")

    def __init__(self, keys: Sequence[str]) -> None:
        if isinstance(keys, str) or not keys:
            raise CipherError(f"{KEY_ENV}: expected one or more keys, newest first")
        fernets = [_fernet(key, i) for i, key in enumerate(keys)]
        self._newest = fernets[0]
        self._all = MultiFernet(fernets)

    @classmethod
    def from_setting(cls, setting: str) -> Cipher:
        """From the variable's text: keys separated by commas, newest first."""
        return cls([key.strip() for key in setting.split(",") if key.strip()])

    def seal(self, text: str) -> str:
        return self._newest.encrypt(text.encode("utf-8", "surrogatepass")).decode("ascii")

    def unseal(self, token: str) -> str:
        """The text sealed in ``token``; CipherError if no key opens it."""
        try:
            return self._all.decrypt(token.encode("ascii")).decode("utf-8", "surrogatepass")
        except (InvalidToken, UnicodeError, TypeError, AttributeError) as exc:
            raise CipherError(
                f"a sealed value cannot be opened with the keys in {KEY_ENV}"
            ) from exc

    def is_current(self, token: str) -> bool:
        """Whether ``token`` is sealed with the newest key (no re-sealing needed)."""
        try:
            self._newest.decrypt(token.encode("ascii"))
        except (InvalidToken, UnicodeError, TypeError, AttributeError):
            return False
        return True

    def __repr__(self) -> str:
        return "Cipher(<keys hidden>)"


def _fernet(key: str, index: int) -> Fernet:
    try:
        return Fernet(key.encode("ascii"))
    except (ValueError, TypeError, UnicodeError, AttributeError) as exc:
        where = f"{KEY_ENV}" if index == 0 else f"{KEY_ENV} (key {index + 1})"
        raise CipherError(
            f"{where}: not a Fernet key (32 url-safe base64-encoded bytes);"
            " `hookstage secret-key` prints a new one"
        ) from exc
