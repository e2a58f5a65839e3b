"""Two-factor sign-in with TOTP (RFC 6238: 6 digits, 30-second steps, SHA-1, as every
authenticator app reads an ``otpauth://`` QR code), and ten single-use recovery codes.

The secret is sealed under the server secret in the users row; a code is accepted for the
current step or one step either side (clock drift), and only for a step later than the last
accepted one, so no code signs in twice. Recovery codes (10 characters, 50 bits) are stored
as HMACs keyed by the server secret: the database alone does not reveal them.

Sign-in in two steps: the password check gives a ticket (sealed: the user, when it expires,
and a fingerprint of the password hash, so a reset password ends it) and the second step
takes the ticket and a TOTP or recovery code. Both steps count failures like passwords.

FLUXER_REQUIRE_STAFF_MFA: a staff member without two-factor cannot approve the admin scope
nor use the admin API (``staff_mfa_missing``)."""

from __future__ import annotations

import hashlib
import json
import secrets
import time

import pyotp

from fluxer_oauth.core import credentials
from fluxer_oauth.core.errors import ApiError
from fluxer_oauth.core.sealing import Unsealable, seal, unseal
from fluxer_oauth.core.timefmt import now
from fluxer_oauth.grants import endings
from fluxer_oauth.platform.passwords import UNTHROTTLED, PasswordThrottle, check_password
from fluxer_oauth.runtime import Runtime
from fluxer_oauth.store import account_security as security_store
from fluxer_oauth.store import audit
from fluxer_oauth.store import users as user_store

ISSUER = "Fluxer"  # what authenticator apps list the account under
STEP_SECONDS = 30
DRIFT_STEPS = 1
SECRET_LENGTH = 32  # base32 characters: 160 bits, RFC 4226's recommendation
RECOVERY_CODES = 10
RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i: read off paper
RECOVERY_LENGTH = 10

_TOTP_PURPOSE, _TOTP_VERSION = b"totp-secret", b"\x01"
_TICKET_PURPOSE, _TICKET_VERSION = b"mfa-ticket", b"\x01"

INVALID_CODE = ApiError(400, "INVALID_MFA_CODE", "the two-factor code is incorrect or was already used")
INVALID_TICKET = ApiError(400, "INVALID_MFA_TICKET", "the sign-in took too long or the ticket is invalid: sign in again")
ALREADY_ENABLED = ApiError(400, "MFA_ALREADY_ENABLED", "two-factor sign-in is already on")
NOT_ENABLED = ApiError(400, "MFA_NOT_ENABLED", "two-factor sign-in is not on")


def staff_mfa_missing(settings, user) -> bool:
    """A staff member who may not act as staff until they turn two-factor sign-in on."""
    return bool(settings.require_staff_mfa and user.staff and not user.mfa_enabled)


# --- enrolment -----------------------------------------------------------------------------------

def new_secret() -> str:
    return pyotp.random_base32(SECRET_LENGTH)


def provisioning_uri(secret: str, account_name: str) -> str:
    """The ``otpauth://`` URI an authenticator app reads (from the QR code the page shows)."""
    return pyotp.TOTP(secret, interval=STEP_SECONDS).provisioning_uri(name=account_name, issuer_name=ISSUER)


def _valid_secret(secret) -> bool:
    return (isinstance(secret, str) and len(secret) == SECRET_LENGTH
            and all(ch in "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567" for ch in secret))


def _matching_step(secret: str, code: str, at: float) -> int | None:
    """The time step ``code`` belongs to (within the drift), or None."""
    code = "".join(code.split())
    if len(code) != 6 or not code.isdigit() or not code.isascii():
        return None
    totp = pyotp.TOTP(secret, interval=STEP_SECONDS)
    current = int(at // STEP_SECONDS)
    found = None
    for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1):  # all of them: no timing difference
        if credentials.constant_time_equal(totp.at(step * STEP_SECONDS), code):
            found = step
    return found


def _seal_secret(rt: Runtime, user_id: int, secret: str) -> bytes:
    return seal(rt.secret, _TOTP_PURPOSE, _TOTP_VERSION, secret.encode(), str(user_id).encode())


def _open_secret(rt: Runtime, user) -> str | None:
    if user.totp_secret is None:
        return None
    try:
        return unseal(rt.secret, _TOTP_PURPOSE, _TOTP_VERSION, bytes(user.totp_secret), str(user.id).encode()).decode()
    except Unsealable:
        return None


def _recovery_hash(rt: Runtime, code: str) -> bytes:
    return credentials.keyed_hash(rt.secret, "recovery-code", code)


def _normalized_recovery(code: str) -> str:
    return "".join(ch for ch in code.lower() if ch not in " -\t")


def _new_recovery_codes() -> list[str]:
    codes = []
    for _ in range(RECOVERY_CODES):
        text = "".join(secrets.choice(RECOVERY_ALPHABET) for _ in range(RECOVERY_LENGTH))
        codes.append(f"{text[:5]}-{text[5:]}")
    return codes


async def _replace_recovery_codes(rt: Runtime, conn, user_id: int) -> list[str]:
    """Ten new recovery codes for the user, stored as their keyed hashes in place of the old
    ones; the codes themselves, to be shown once."""
    codes = _new_recovery_codes()
    await security_store.replace_recovery_codes(conn, user_id, [_recovery_hash(rt, _normalized_recovery(code))
                                                                for code in codes])
    return codes


async def enable(rt: Runtime, user, *, secret: str, code: str, password: str,
                 throttle: PasswordThrottle = UNTHROTTLED) -> list[str]:
    """Turns two-factor sign-in on with ``secret`` (from ``new_secret``, shown as a QR code)
    once ``code`` proves the app has it and ``password`` that it is the user. The ten
    recovery codes, shown once."""
    await check_password(rt, user, password, throttle)
    if user.mfa_enabled:
        raise ALREADY_ENABLED
    if not _valid_secret(secret):
        raise ApiError(400, "INVALID_MFA_SECRET", f"secret must be {SECRET_LENGTH} base32 characters")
    step = _matching_step(secret, code, time.time()) if isinstance(code, str) else None
    if step is None:
        raise INVALID_CODE
    at = now()
    async with rt.db.write() as conn:
        if not await security_store.set_totp(conn, user.id, _seal_secret(rt, user.id, secret), step):
            raise ALREADY_ENABLED  # a parallel request (a double submit) turned it on first
        codes = await _replace_recovery_codes(rt, conn, user.id)
        await audit.record(conn, id=rt.ids.next(), now=at, action="user.mfa_enabled", actor_id=user.id,
                           target_user_id=user.id)
    return codes


async def check_code(rt: Runtime, user, code) -> str:
    """Accepts a TOTP code (once: its step is recorded) or an unused recovery code (used up)
    of ``user``; which kind it was ("totp" or "recovery"); INVALID_CODE otherwise."""
    if not isinstance(code, str) or len(code) > 64 or not user.mfa_enabled:
        raise INVALID_CODE
    secret = _open_secret(rt, user)
    at = time.time()
    step = _matching_step(secret, code, at) if secret is not None else None
    async with rt.db.write() as conn:
        if step is not None:
            if await security_store.advance_totp_step(conn, user.id, step):
                return "totp"
            raise INVALID_CODE
        normalized = _normalized_recovery(code)
        if len(normalized) == RECOVERY_LENGTH and await security_store.use_recovery_code(
                conn, user.id, _recovery_hash(rt, normalized), at):
            await audit.record(conn, id=rt.ids.next(), now=at, action="user.mfa_recovery_code_used",
                               actor_id=user.id, target_user_id=user.id)
            return "recovery"
    raise INVALID_CODE


async def check_code_throttled(rt: Runtime, user, code, throttle: PasswordThrottle = UNTHROTTLED) -> str:
    """``check_code``, each failure counted as a wrong password is per (account, IP) and per
    IP, and per account under the second factor's own, lower ceiling (FLUXER_RATE_LIMIT_MFA_
    CODE_ACCOUNT_FAILURES): whoever reaches this step knows the password, and spread over
    many addresses the password's account ceiling would let six digits be guessed in weeks."""
    async with throttle.attempt(f"user:{user.id}", code=True) as count_failure:
        try:
            return await check_code(rt, user, code)
        except ApiError:
            await count_failure()
            raise


async def disable(rt: Runtime, user, *, password: str, code: str, throttle: PasswordThrottle = UNTHROTTLED) -> None:
    """Turns two-factor sign-in off: the password and a current code (or a recovery code)."""
    if not user.mfa_enabled:
        raise NOT_ENABLED
    await check_password(rt, user, password, throttle)
    await check_code_throttled(rt, user, code, throttle)
    await _remove(rt, user, actor_id=user.id, action="user.mfa_disabled")


async def operator_reset(rt: Runtime, user) -> None:
    """``fluxer-oauth users mfa-reset``: for a user who lost their authenticator and codes."""
    await _remove(rt, user, actor_id=None, action="user.mfa_reset")


async def _remove(rt: Runtime, user, *, actor_id: int | None, action: str) -> None:
    at = now()
    async with rt.db.write() as conn:
        if rt.settings.require_staff_mfa and user.staff:  # staff access hangs on the second factor
            await endings.end_admin_access(rt, conn, user_id=user.id, by="mfa_removed", actor_id=actor_id, at=at)
        await security_store.set_totp(conn, user.id, None, None)
        await security_store.replace_recovery_codes(conn, user.id, [])
        await audit.record(conn, id=rt.ids.next(), now=at, action=action, actor_id=actor_id, target_user_id=user.id)


async def regenerate_recovery_codes(rt: Runtime, user, *, password: str, code: str,
                                    throttle: PasswordThrottle = UNTHROTTLED) -> list[str]:
    """Ten new recovery codes; the old ones stop working."""
    if not user.mfa_enabled:
        raise NOT_ENABLED
    await check_password(rt, user, password, throttle)
    await check_code_throttled(rt, user, code, throttle)
    at = now()
    async with rt.db.write() as conn:
        codes = await _replace_recovery_codes(rt, conn, user.id)
        await audit.record(conn, id=rt.ids.next(), now=at, action="user.mfa_recovery_codes_replaced",
                           actor_id=user.id, target_user_id=user.id)
    return codes


async def recovery_codes_left(rt: Runtime, user_id: int) -> int:
    async with rt.db.read() as conn:
        return await security_store.unused_recovery_codes(conn, user_id)


# --- the second step of a sign-in -----------------------------------------------------------

def _password_fingerprint(user) -> str:
    return hashlib.sha256((user.password_hash or "").encode()).hexdigest()[:16]


def new_ticket(rt: Runtime, user) -> str:
    """What the password step hands to the code step."""
    body = json.dumps({"u": user.id, "e": time.time() + rt.settings.mfa_ticket_ttl,
                       "p": _password_fingerprint(user)}).encode()
    return credentials.b64url(seal(rt.secret, _TICKET_PURPOSE, _TICKET_VERSION, body, b""))


async def ticket_user(rt: Runtime, ticket) -> object:
    """The user a live ticket is for (enabled, password unchanged); INVALID_TICKET otherwise."""
    try:
        sealed = credentials.b64url_decode(ticket) if isinstance(ticket, str) else b""
        body = json.loads(unseal(rt.secret, _TICKET_PURPOSE, _TICKET_VERSION, sealed, b""))
        user_id, expires_at, fingerprint = int(body["u"]), float(body["e"]), str(body["p"])
    except (ValueError, KeyError, TypeError, Unsealable):
        raise INVALID_TICKET from None
    if time.time() > expires_at:
        raise INVALID_TICKET
    async with rt.db.read() as conn:
        user = await user_store.get_user(conn, user_id)
    if (user is None or user.disabled_at is not None or not user.mfa_enabled
            or not credentials.constant_time_equal(_password_fingerprint(user), fingerprint)):
        raise INVALID_TICKET
    return user
