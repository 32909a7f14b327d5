"""The shared samples and the seed's own checks, for tests that compare against them."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

__all__ = ["SAMPLES", "sample_bytes", "seed_signature"]

# CI clones the repository beside a copy of shared/, as the developers' machines have it.
SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "samples"


def sample_bytes(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def seed_signature(body: bytes, secret: str) -> str:
    """What the seed's Flask sample compares the header with."""
    return hmac.new(secret.encode(), msg=body, digestmod=hashlib.sha1).hexdigest()
