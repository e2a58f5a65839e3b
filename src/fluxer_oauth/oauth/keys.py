"""OpenID Connect signing keys: made, kept encrypted, published, rotated (with joserfc).

Each algorithm the server signs with (RS256, which every relying party supports, and ES256)
has its own key. A new key is published in the JWKS at once and signs only from
``signs_from`` (the publish delay later), so a relying party holding a cached JWKS has
fetched it again before it meets a token the new key signed. The key it replaces stops
signing then and stays published until every id_token it signed has expired.

Private keys are stored as PKCS#8, encrypted with AES-256-GCM under a key derived from the
server secret (HKDF), the key id as associated data: a row copied to another key id, or
read with another secret, does not decrypt. Nothing here logs a key."""

from __future__ import annotations

import functools
import json
import os

from joserfc.jwk import ECKey, RSAKey

from fluxer_oauth.core import credentials, sealing
from fluxer_oauth.core.signing import SIGNING_ALGORITHMS
from fluxer_oauth.core.timefmt import now as current_time
from fluxer_oauth.runtime import Runtime
from fluxer_oauth.store import keys as key_store
from fluxer_oauth.store.records import SigningKey

_ENCRYPTION_VERSION = b"k1"


class KeyUnreadable(RuntimeError):
    """A stored private key does not decrypt with this server's secret."""


_PURPOSE = b"fluxer oidc signing keys"  # the sealing key's HKDF info


# Each algorithm's joserfc key type and what a new key of it is generated with.
_KEY_TYPES = {"RS256": (RSAKey, 2048), "ES256": (ECKey, "P-256")}


def _parameters(kid: str, alg: str) -> dict:
    return {"kid": kid, "alg": alg, "use": "sig"}


def _generate(alg: str):
    key_type, size = _KEY_TYPES[alg]
    return key_type.generate_key(size, parameters=_parameters(credentials.b64url(os.urandom(12)), alg))


def new_key(secret: bytes, alg: str, *, at: float, signs_from: float) -> SigningKey:
    """A fresh key of ``alg``, its private half encrypted under ``secret``."""
    if alg not in SIGNING_ALGORITHMS:
        raise ValueError(f"unsupported signing algorithm {alg!r}")
    key = _generate(alg)
    kid = key.kid
    sealed = sealing.seal(secret, _PURPOSE, _ENCRYPTION_VERSION, key.as_pem(private=True), kid.encode())
    public = key.as_dict(private=False)
    return SigningKey(kid=kid, alg=alg, public_jwk=json.dumps(public, sort_keys=True),
                      private_key=sealed, created_at=at, signs_from=signs_from,
                      retires_at=None, published_until=None)


@functools.lru_cache(maxsize=16)
def private_key(secret: bytes, kid: str, alg: str, sealed: bytes):
    """The joserfc key of a stored row (decrypted once per process)."""
    if not sealed.startswith(_ENCRYPTION_VERSION):
        raise KeyUnreadable(f"signing key {kid} is stored in an unknown format")
    try:
        pem = sealing.unseal(secret, _PURPOSE, _ENCRYPTION_VERSION, sealed, kid.encode())
    except sealing.Unsealable as exc:  # another secret, or a tampered row
        raise KeyUnreadable(f"signing key {kid} does not decrypt with this server secret (did FLUXER_SECRET_KEY "
                            "change? `fluxer-oauth keys rotate` makes keys that sign at once)") from exc
    return _KEY_TYPES[alg][0].import_key(pem, parameters=_parameters(kid, alg))


def jwks(keys: tuple[SigningKey, ...]) -> dict:
    """The JWK Set of the published keys (public halves only)."""
    return {"keys": [json.loads(key.public_jwk) for key in keys]}


def status(key: SigningKey, at: float) -> str:
    """Where ``key`` is in its life at ``at``: next (published, not signing yet), current
    (signing), retiring (replaced: it signs until ``retires_at``, if it has not stopped
    already, then only verifies until ``published_until``), expired (out of the JWKS; the
    janitor deletes it). A next key replaced before its time is retiring: it never signs."""
    if key.published_until is not None and key.published_until <= at:
        return "expired"
    if key.retires_at is not None:
        return "retiring"
    return "next" if key.signs_from > at else "current"


def signer_of(keys: tuple[SigningKey, ...], alg: str, at: float) -> SigningKey | None:
    """The key that signs ``alg`` at ``at``: the newest one whose time has come."""
    for key in keys:  # newest first
        if key.alg == alg and key.signs_from <= at and (key.retires_at is None or key.retires_at > at):
            return key
    return None


async def signing_key(rt: Runtime, alg: str):
    """The joserfc private key to sign with now, making the first key of ``alg`` if there is none."""
    at = current_time()
    key = signer_of(await rt.db.keys.published(at), alg, at)
    if key is None:
        key = await _first_key(rt, alg)
    return private_key(rt.secret, key.kid, key.alg, key.private_key)


async def _first_key(rt: Runtime, alg: str) -> SigningKey:
    """No key signs ``alg`` yet (a new server): one that signs at once (nothing can have
    cached a JWKS without it). Made under the keys lock, so two workers make one."""
    async with rt.db.write() as conn:
        await key_store.lock(conn)
        at = current_time()  # after the wait: a key made meanwhile signs from before now
        key = signer_of(await key_store.list_published(conn, at), alg, at)
        if key is None:
            key = new_key(rt.secret, alg, at=at, signs_from=at)
            await key_store.insert(conn, key)
    rt.db.keys.forget()
    return key


def _can_sign(rt: Runtime, key: SigningKey | None) -> bool:
    """Whether ``key`` exists and decrypts with this server's secret (it does not once
    FLUXER_SECRET_KEY has changed)."""
    if key is None:
        return False
    try:
        private_key(rt.secret, key.kid, key.alg, key.private_key)
    except KeyUnreadable:
        return False
    return True


async def rotate(rt: Runtime, *, publish_delay: float | None = None) -> list[SigningKey]:
    """A new key for each algorithm, published now and signing after ``publish_delay``
    (the setting by default); the keys it replaces stop signing then and leave the JWKS once
    the last id_token they could have signed has expired. Returns the new keys.

    The delay protects relying parties' cached key sets from a key that signs too soon; when
    no key can sign an algorithm now (none yet, or the secret changed and the current one no
    longer decrypts), waiting would only keep its id_tokens failing, so the new one signs at
    once. The rotation never needs an old key to decrypt: it only tries, to learn that."""
    delay = rt.settings.key_publish_delay if publish_delay is None else publish_delay
    at = current_time()
    made = []
    async with rt.db.write() as conn:
        await key_store.lock(conn)
        published_now = await key_store.list_published(conn, at)
        for alg in SIGNING_ALGORITHMS:
            starts = at + delay if _can_sign(rt, signer_of(published_now, alg, at)) else at
            # Past their last id_token's expiry, with a cache period for the workers that still
            # signed with them until they read the rotation.
            published_until = starts + rt.settings.id_token_ttl + rt.settings.key_cache_seconds
            await key_store.retire_current(conn, alg, starts, published_until)
            key = new_key(rt.secret, alg, at=at, signs_from=starts)
            await key_store.insert(conn, key)
            made.append(key)
    rt.db.keys.forget()
    return made


async def published(rt: Runtime) -> dict:
    """The JWKS document, making the first keys on a new server."""
    at = current_time()
    keys = await rt.db.keys.published(at)
    missing = [alg for alg in SIGNING_ALGORITHMS if signer_of(keys, alg, at) is None]
    for alg in missing:
        await _first_key(rt, alg)
    return jwks(await rt.db.keys.published(at) if missing else keys)
