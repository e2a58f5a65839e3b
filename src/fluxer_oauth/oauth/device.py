"""The device authorization grant (RFC 8628), all but its token grant (oauth/token.py): the
device authorization endpoint, user codes, and the user's decision at /activate.

A device that cannot show a browser asks for a code pair; its user types the short user
code at /activate on another screen (signed in), sees the usual consent and approves or
denies; meanwhile the device polls the token endpoint with the long device code. Only the
device code's SHA-256 is stored. The user code is short enough to type, so it is what a
guesser would try: it is only ever looked up by a signed-in user, under the user-code
throttles (web/device_pages.py), and a wrong, expired or decided code all answer alike.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from fluxer_oauth.core import credentials
from fluxer_oauth.core.errors import OAuthError
from fluxer_oauth.core.scopes import SCOPES, ScopeError, check_scope_rules, format_scopes, parse_scopes
from fluxer_oauth.core.timefmt import now
from fluxer_oauth.oauth.authorize import record_consent
from fluxer_oauth.oauth.client_auth import authenticate_client
from fluxer_oauth.oauth.params import ParamError, Params
from fluxer_oauth.runtime import Runtime
from fluxer_oauth.store import applications as app_store
from fluxer_oauth.store import devices as device_store
from fluxer_oauth.store import oauth as oauth_store
from fluxer_oauth.store.errors import AlreadyExists

ACTIVATE_PATH = "/activate"  # the verification_uri, under the public URL
# RFC 8628 §6.1: no vowels (no words spelled), no digits (no 0/O or 1/I to confuse).
USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"
USER_CODE_LENGTH = 8  # 20**8 ≈ 2.6e10 codes (34.6 bits), shown as XXXX-XXXX
SLOW_DOWN_STEP = 5  # seconds added to a code's interval by each slow_down (RFC 8628 §3.5)
_USER_CODE_ATTEMPTS = 5  # a collision is rare (live codes / 2.6e10); five in a row, something is wrong
# What a device flow may ask for. Not bot: adding a bot is a guild chosen on the authorization
# page each time, and a device code never adds one. Not a staff-only scope: anyone can start a
# device flow and hand the code to someone else to approve (consent phishing), so the admin
# API is never granted this way.
DEVICE_FLOW_SCOPES = frozenset(scope.name for scope in SCOPES if not scope.staff_only and scope.name != "bot")
INVALID_CODE = "That code is not valid. Check the code on your device and try again."


def new_user_code() -> str:
    """A random user code, normalized (no hyphen)."""
    return "".join(secrets.choice(USER_CODE_ALPHABET) for _ in range(USER_CODE_LENGTH))


def normalize_user_code(typed: str) -> str | None:
    """The code as stored from what a person typed (any case, hyphens and spaces anywhere);
    None when it cannot be a user code, which then costs no query."""
    code = "".join(typed.split()).replace("-", "").upper()
    if len(code) != USER_CODE_LENGTH or not set(code) <= set(USER_CODE_ALPHABET):
        return None
    return code


def shown_user_code(code: str) -> str:
    """XXXX-XXXX: two halves are easier to read out and type."""
    half = USER_CODE_LENGTH // 2
    return f"{code[:half]}-{code[half:]}"


def device_flow_scopes(raw: str) -> tuple[str, ...]:
    """The canonical scopes of a device authorization request; ``invalid_scope`` otherwise."""
    try:
        scopes = parse_scopes(raw)
        check_scope_rules(scopes)
    except ScopeError as exc:
        raise OAuthError("invalid_scope", str(exc)) from exc
    refused = [scope for scope in scopes if scope not in DEVICE_FLOW_SCOPES]
    if refused:
        raise OAuthError("invalid_scope", f"the device flow cannot grant {', '.join(refused)}")
    return scopes


# --- the device authorization endpoint (RFC 8628 §3.1, §3.2) -------------------------------

async def device_authorization(rt: Runtime, params: Params, authorization: str | None) -> dict:
    """A new code pair for the authenticated client (confidential with its secret, public
    with its client_id alone, as at the token endpoint)."""
    app = await authenticate_client(rt, params, authorization)
    try:
        raw_scope = params.get("scope", required=True)
    except ParamError as exc:
        raise OAuthError("invalid_request", str(exc)) from exc
    scopes = format_scopes(device_flow_scopes(raw_scope))
    device_code = credentials.new_opaque_token()
    at = now()
    ttl, interval = rt.settings.device_code_ttl, rt.settings.device_poll_interval
    for _ in range(_USER_CODE_ATTEMPTS):
        user_code = new_user_code()
        try:
            async with rt.db.write() as conn:  # one transaction per attempt: a collision aborts it
                await device_store.insert(
                    conn, device_code_hash=credentials.sha256(device_code), user_code=user_code,
                    application_id=app.id, scopes=scopes, created_at=at, expires_at=at + ttl, interval=interval)
            break
        except AlreadyExists:
            continue
    else:
        raise OAuthError("temporarily_unavailable", "no user code could be allotted; try again", 503)
    shown = shown_user_code(user_code)
    verification_uri = f"{rt.settings.public_url}{ACTIVATE_PATH}"
    return {
        "device_code": device_code,
        "user_code": shown,
        "verification_uri": verification_uri,
        "verification_uri_complete": f"{verification_uri}?user_code={shown}",
        "expires_in": ttl,
        "interval": interval,
    }


# --- the user's decision at /activate (RFC 8628 §3.3) --------------------------------------

@dataclass(frozen=True)
class PendingDevice:
    """A code pair waiting for its user's decision, found by its user code."""

    device_code_hash: bytes
    user_code: str  # normalized
    app: object
    scopes: tuple[str, ...]

    @property
    def shown_code(self) -> str:
        return shown_user_code(self.user_code)


class ActivationRefused(Exception):
    """The code cannot be approved (any more); the message is for the person at /activate."""


async def find_pending(rt: Runtime, typed: str) -> PendingDevice | None:
    """The undecided, unexpired code a person typed, of an application still enabled; None
    for anything else (unknown, expired, decided: the page says the same for each)."""
    user_code = normalize_user_code(typed)
    if user_code is None:
        return None
    async with rt.db.read() as conn:
        row = await device_store.find_pending(conn, user_code, now())
    if row is None:
        return None
    app = await rt.db.clients.application(row.application_id)  # None too when its owner is disabled
    if app is None or app.disabled_at is not None:
        return None
    return PendingDevice(row.device_code_hash, user_code, app, tuple(row.scopes.split()))


async def approve(rt: Runtime, pending: PendingDevice, user, *, signed_in_at: float | None) -> None:
    """Record the user's consent and mark the code approved by them, with the grant and
    family its tokens will carry and when the user signed in (the id_token's auth_time).
    Raises ``ActivationRefused``; nothing is written then."""
    if not set(pending.scopes) <= DEVICE_FLOW_SCOPES:  # refused at the endpoint; held here too
        raise ActivationRefused("This request asks for access that cannot be granted to a device.")
    at = now()
    async with rt.db.write() as conn:
        # Under the user's and the application's locks, as a code approval: an ending
        # committed since the code was found must not be outlived by this approval.
        await oauth_store.hold_for_approval(conn, user.id, pending.app.id)
        if not await app_store.may_authorize(conn, pending.app.id, user.id, admin=False):
            raise ActivationRefused("This application can no longer be authorized.")
        if not await device_store.approve(conn, pending.device_code_hash, user_id=user.id, family_id=rt.ids.next(),
                                          auth_time=signed_in_at, now=at):
            raise ActivationRefused(INVALID_CODE)  # decided or expired meanwhile
        grant_id = await record_consent(rt, conn, user.id, pending.app.id, pending.scopes, at, flow="device")
        await device_store.attach_grant(conn, pending.device_code_hash, grant_id)


async def deny(rt: Runtime, pending: PendingDevice) -> bool:
    """Mark the code denied (the device's next poll hears access_denied); whether it was
    still undecided."""
    async with rt.db.write() as conn:
        return await device_store.deny(conn, pending.device_code_hash, now())
