"""Generation, hashing and checking of every credential the server hands out (SPEC §2).

Server-generated values carry at least 256 bits of entropy, so a fast hash is enough:
SHA-256 for tokens and codes, HMAC-SHA256 keyed by the server secret for client secrets.
Only hashes are stored; comparisons are constant-time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import string
import struct
import time

SESSION_PREFIX = "flx_"
_SESSION_ALPHABET = string.ascii_letters + string.digits
SESSION_BODY_LENGTH = 36  # 36 alphanumerics ≈ 214 bits


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    if len(text) > 512 or not text.isascii():
        raise ValueError("not base64url")
    padded = text + "=" * (-len(text) % 4)
    try:
        return base64.urlsafe_b64decode(padded.encode())
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not base64url") from exc


def sha256(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


def new_opaque_token() -> str:
    """Authorization codes: 256 random bits, base64url (43 chars)."""
    return secrets.token_urlsafe(32)


# Access and refresh tokens open with their issue time, and are stored under that time
# followed by their SHA-256. The tokens index is keyed by it, so a new token's key lands at
# the index's growing end instead of on a random page: a batch of inserts dirties a few
# pages rather than one per row, and a million stored tokens leave no cold pages to read
# (measured in bench/RESULTS.md). The time is no secret (introspection tells it); the 256 random
# bits stay the token's strength, and the key still holds only a hash of the token.
_ISSUED_MS_BYTES = 6  # milliseconds since the epoch, big-endian: enough until the year 10889
_ISSUED_MS_CHARS = 8  # its base64url text, which the 32 random bytes follow
STORED_TOKEN_LENGTH = 51  # base64url of 6 + 32 bytes
# A presented access token longer than this is none of ours, whatever else it is: refused
# before it is hashed or looked up.
MAX_PRESENTED_TOKEN_LENGTH = 512


def new_stored_token() -> str:
    """An access or refresh token: issue time (6 bytes, ms) then 256 random bits, base64url."""
    issued_ms = time.time_ns() // 1_000_000
    return b64url(issued_ms.to_bytes(_ISSUED_MS_BYTES, "big") + secrets.token_bytes(32))


def stored_token_key(token: str) -> bytes:
    """The key an access or refresh token is stored and looked up under: its issue time, then
    its SHA-256. Anything else presented (older 43-character tokens, garbage) is keyed by its
    SHA-256 alone, which is how tokens were stored before the time was added."""
    digest = hashlib.sha256(token.encode()).digest()
    if len(token) != STORED_TOKEN_LENGTH:
        return digest
    try:
        issued = base64.urlsafe_b64decode(token[:_ISSUED_MS_CHARS])
    except (binascii.Error, ValueError):
        return digest
    # A key only matches a stored one if the token's whole hash does, whatever the prefix.
    return issued + digest


def new_session_token() -> str:
    return SESSION_PREFIX + "".join(secrets.choice(_SESSION_ALPHABET) for _ in range(SESSION_BODY_LENGTH))


def looks_like_session_token(value: str) -> bool:
    return (
        len(value) == len(SESSION_PREFIX) + SESSION_BODY_LENGTH
        and value.startswith(SESSION_PREFIX)
        and value[len(SESSION_PREFIX):].isascii()
        and value[len(SESSION_PREFIX):].isalnum()
    )


def new_client_secret() -> str:
    """256 random bits in [A-Za-z0-9_-] (base64url without padding)."""
    return secrets.token_urlsafe(32)


_keyed_bases: dict[tuple[bytes, str], "hmac.HMAC"] = {}


def keyed_hash(secret_key: bytes, purpose: str, value: str) -> bytes:
    """HMAC-SHA256 of ``value`` under the server secret, separated by purpose."""
    # The keyed state after the purpose prefix is computed once and copied (a third cheaper).
    base = _keyed_bases.get((secret_key, purpose))
    if base is None:
        base = _keyed_bases[(secret_key, purpose)] = hmac.new(secret_key, purpose.encode() + b"\x00", hashlib.sha256)
    keyed = base.copy()
    keyed.update(value.encode())
    return keyed.digest()


def client_secret_hash(secret_key: bytes, client_secret: str) -> bytes:
    return keyed_hash(secret_key, "client-secret", client_secret)


def constant_time_equal(a: bytes | str, b: bytes | str) -> bool:
    if isinstance(a, str):
        a = a.encode()
    if isinstance(b, str):
        b = b.encode()
    return hmac.compare_digest(a, b)


# --- CSRF ---------------------------------------------------------------------------------

def new_csrf_seed() -> str:
    return secrets.token_urlsafe(24)


def csrf_token(secret_key: bytes, seed: str, session_token: str | None = None) -> str:
    """The form token: an HMAC over the browser's CSRF cookie seed and its session (the
    session token's hash; nothing before login). A cookie and token pair planted from
    another session does not match the victim's session."""
    bound = sha256(session_token).hex() if session_token else ""
    # The hash is hex (no NUL) and comes first, so the message splits one way only.
    return b64url(keyed_hash(secret_key, "csrf", bound + "\x00" + seed))


def csrf_valid(secret_key: bytes, seed: str | None, token: str | None, session_token: str | None = None) -> bool:
    if not seed or not token or len(token) > 100 or len(seed) > 100:
        return False
    return constant_time_equal(csrf_token(secret_key, seed, session_token), token)


# --- Bot tokens (SPEC §2.1) ---------------------------------------------------------------

BOT_ENTROPY_BYTES = 24  # 192 bits


def new_bot_token(secret_key: bytes, bot_id: int, created_at: int) -> str:
    id_part = b64url(str(bot_id).encode())
    time_part = b64url(struct.pack(">Q", created_at).lstrip(b"\x00") or b"\x00")
    entropy = secrets.token_bytes(BOT_ENTROPY_BYTES)
    signature = _bot_signature(secret_key, id_part, time_part, entropy)
    return f"{id_part}.{time_part}.{b64url(entropy + signature)}"


def _bot_signature(secret_key: bytes, id_part: str, time_part: str, entropy: bytes) -> bytes:
    message = id_part.encode() + b"." + time_part.encode() + b"." + entropy
    return hmac.new(secret_key, b"bot-token\x00" + message, hashlib.sha256).digest()


def verify_bot_token(secret_key: bytes, token: str) -> int | None:
    """The bot's ID when the token's signature is right, else None. No I/O: a forged
    token is refused before anything touches the database."""
    parts = token.split(".")
    if len(parts) != 3 or len(token) > 200:
        return None
    try:
        bot_id_text = b64url_decode(parts[0]).decode("ascii")
        b64url_decode(parts[1])
        tail = b64url_decode(parts[2])
    except (ValueError, UnicodeDecodeError):
        return None
    if len(tail) != BOT_ENTROPY_BYTES + 32 or not bot_id_text.isdigit() or len(bot_id_text) > 20:
        return None
    entropy, signature = tail[:BOT_ENTROPY_BYTES], tail[BOT_ENTROPY_BYTES:]
    expected = _bot_signature(secret_key, parts[0], parts[1], entropy)
    if not hmac.compare_digest(expected, signature):
        return None
    return int(bot_id_text)


# --- PKCE (RFC 7636, S256 only) -----------------------------------------------------------

_VERIFIER_CHARS = frozenset(string.ascii_letters + string.digits + "-._~")


def valid_code_verifier(verifier: str) -> bool:
    return 43 <= len(verifier) <= 128 and all(ch in _VERIFIER_CHARS for ch in verifier)


def valid_code_challenge(challenge: str) -> bool:
    # An S256 challenge is the base64url SHA-256 of a verifier: exactly 43 characters.
    return len(challenge) == 43 and all(ch in _VERIFIER_CHARS for ch in challenge)


def s256_challenge(verifier: str) -> str:
    return b64url(hashlib.sha256(verifier.encode("ascii")).digest())


def pkce_matches(verifier: str, challenge: str) -> bool:
    return valid_code_verifier(verifier) and constant_time_equal(s256_challenge(verifier), challenge)
