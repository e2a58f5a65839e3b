"""Data sealed under the server secret: AES-256-GCM under a key derived (HKDF-SHA256) from the
secret for one purpose, so no two uses share a key. A sealed value is ``version + nonce +
ciphertext``; the associated data (what the value belongs to) must match to open it."""

from __future__ import annotations

import functools
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

NONCE_BYTES = 12
TAG_BYTES = 16


class Unsealable(ValueError):
    """Not a value this secret sealed for this purpose and associated data (another secret, a
    tampered or truncated value, another version)."""


@functools.lru_cache(maxsize=16)
def _cipher(secret: bytes, purpose: bytes) -> AESGCM:
    return AESGCM(HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(secret))


def seal(secret: bytes, purpose: bytes, version: bytes, plaintext: bytes, associated: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return version + nonce + _cipher(secret, purpose).encrypt(nonce, plaintext, associated)


def unseal(secret: bytes, purpose: bytes, version: bytes, sealed: bytes, associated: bytes) -> bytes:
    if not sealed.startswith(version) or len(sealed) < len(version) + NONCE_BYTES + TAG_BYTES:
        raise Unsealable("not a sealed value of this version")
    body = sealed[len(version):]
    try:
        return _cipher(secret, purpose).decrypt(body[:NONCE_BYTES], body[NONCE_BYTES:], associated)
    except InvalidTag:
        raise Unsealable("does not open with this secret and associated data") from None
