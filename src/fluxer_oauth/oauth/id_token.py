"""The OpenID Connect id_token (Core 1.0 §2, §3.1.3.6) and the claims the user's scopes
allow, which userinfo answers too."""

from __future__ import annotations

import hashlib
from typing import NamedTuple

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from fluxer_oauth.core import credentials
from fluxer_oauth.core.signing import DEFAULT_ALGORITHM, SIGNING_ALGORITHMS
from fluxer_oauth.oauth.keys import KeyUnreadable, published, signing_key
from fluxer_oauth.runtime import Runtime


def user_claims(user, scopes) -> dict:
    """The standard claims of the user that ``scopes`` allow: the profile with identify,
    the address and whether it is verified with email."""
    claims = {"sub": str(user.id)}
    if "identify" in scopes:
        claims["preferred_username"] = user.username
        claims["name"] = user.global_name or user.username
        claims["locale"] = user.locale
    if "email" in scopes and user.email is not None:
        claims["email"] = user.email
        claims["email_verified"] = bool(user.verified)
    return claims


def at_hash(access_token: str) -> str:
    """The left half of the access token's SHA-256, base64url (both algorithms hash with SHA-256)."""
    return credentials.b64url(hashlib.sha256(access_token.encode("ascii")).digest()[:16])


class Signer(NamedTuple):
    """The key a client's id_tokens are signed with now, or why there is none."""

    alg: str
    key: object | None
    error: KeyUnreadable | None

    def ready(self) -> None:
        """Raise the reason this signer cannot sign (inside the grant's transaction, so the
        code is not spent on a response that would fail)."""
        if self.error is not None:
            raise self.error


async def signer_for(rt: Runtime, app) -> Signer:
    """The client's signer, found before a grant spends anything. A key that does not decrypt
    (the server secret changed) is kept as the error, and the key set is read again next
    time, since a rotation is what fixes it."""
    alg = app.id_token_signed_response_alg if app.id_token_signed_response_alg in SIGNING_ALGORITHMS \
        else DEFAULT_ALGORITHM
    try:
        return Signer(alg, await signing_key(rt, alg), None)
    except KeyUnreadable as exc:
        rt.db.keys.forget()
        return Signer(alg, None, exc)


def issue(rt: Runtime, signer: Signer, *, app, user, scopes, access_token: str, nonce: str | None,
          auth_time: float | None, at: float) -> str:
    """A signed id_token for ``user``, for the client ``app``."""
    signer.ready()
    issued_at = int(at)
    claims = {
        "iss": rt.settings.issuer,
        "aud": str(app.id),
        "azp": str(app.id),
        "iat": issued_at,
        "exp": issued_at + rt.settings.id_token_ttl,
        "at_hash": at_hash(access_token),
        **user_claims(user, scopes),
    }
    if auth_time is not None:
        claims["auth_time"] = int(auth_time)
    if nonce is not None:
        claims["nonce"] = nonce
    return jwt.encode({"alg": signer.alg, "kid": signer.key.kid, "typ": "JWT"}, claims, signer.key,
                      algorithms=[signer.alg])


async def subject_of(rt: Runtime, token: str, *, client_id: str) -> str | None:
    """The ``sub`` of an id_token this server signed for ``client_id`` (expired or not), or
    None: a bad signature, an unknown key, another issuer or audience, not a JWT at all."""
    try:
        decoded = jwt.decode(token, KeySet.import_key_set(await published(rt)), algorithms=list(SIGNING_ALGORITHMS))
    except (JoseError, ValueError):
        return None
    claims = decoded.claims
    if claims.get("iss") != rt.settings.issuer or claims.get("aud") != client_id:
        return None
    subject = claims.get("sub")
    return subject if isinstance(subject, str) else None
