"""Links sent by mail: one that verifies an email address, one that sets a new password.

Each link carries a fresh 256-bit token; only its SHA-256 is stored (store/tables.py,
mail_links), with the address it was sent to, and it works once, until it expires
(FLUXER_EMAIL_VERIFICATION_TTL, FLUXER_PASSWORD_RESET_TTL), and only while that address
is still the account's. The pages behind the links
(web/account_pages.py) ask before they use one: opening a link, as a mail scanner does,
changes nothing.

A reset request is answered the same whether or not the account exists (the caller's
answer never depends on the lookup), and a new reset link leaves the earlier ones valid:
someone who asks for resets of another person's account fills that person's inbox with
working links (the per-account limit bounds how many) but never locks them out.
A reset ends every session of the account and every other reset link, and a mail tells
the user it happened."""

from __future__ import annotations

import logging
from urllib.parse import quote

from fluxer_oauth.core import credentials
from fluxer_oauth.core.errors import ApiError
from fluxer_oauth.core.timefmt import now
from fluxer_oauth.mail.outbox import Mail, MailUnavailable
from fluxer_oauth.ops.logging import log
from fluxer_oauth.platform.passwords import check_new_password
from fluxer_oauth.platform.validation import FormErrors, has_control_characters
from fluxer_oauth.runtime import Runtime
from fluxer_oauth.store import account_security as security_store
from fluxer_oauth.store import audit
from fluxer_oauth.store import users as user_store
from fluxer_oauth.store.tables import EMAIL_VERIFICATION, PASSWORD_RESET

logger = logging.getLogger("fluxer.accounts")

VERIFY_PATH = "/verify-email"
RESET_PATH = "/reset-password"
MAX_LINK_TOKEN = 128  # a presented token longer than this is none of ours

INVALID_LINK = ApiError(400, "INVALID_LINK", "this link is invalid, expired or already used")
ALREADY_VERIFIED = ApiError(400, "EMAIL_ALREADY_VERIFIED", "this email address is already verified")


def mail_unavailable() -> ApiError:
    return ApiError(503, "MAIL_UNAVAILABLE",
                    "this server cannot send mail: its operator has not configured SMTP (FLUXER_SMTP_URL)")


def require_mail(rt: Runtime) -> None:
    """The flows that only work by mail refuse up front when mail cannot be sent."""
    try:
        rt.mail.require()
    except MailUnavailable:
        raise mail_unavailable() from None


def _link(rt: Runtime, path: str, token: str) -> str:
    return f"{rt.settings.public_url}{path}?token={quote(token, safe='')}"


def _sent_to_their_address(user, link_email: str) -> bool:
    """Whether a link was mailed to the address the account has now: one mailed to a former
    address (its mailbox may be why the address changed) does nothing."""
    return user is not None and (user.email or "").lower() == link_email.lower()


def _token_hash(token: str | None) -> bytes | None:
    if not isinstance(token, str) or not token or len(token) > MAX_LINK_TOKEN or has_control_characters(token):
        return None
    return credentials.sha256(token)


async def _new_link(rt: Runtime, conn, *, purpose: int, user_id: int, email: str, ttl: int, at: float) -> str:
    token = credentials.new_opaque_token()
    await security_store.insert_mail_link(conn, token_hash=credentials.sha256(token), purpose=purpose,
                                          user_id=user_id, email=email, created_at=at, expires_at=at + ttl)
    return token


# --- email verification ---------------------------------------------------------------------------

async def send_verification(rt: Runtime, user) -> bool:
    """A verification link to the user's current address (after sign-up, an email change, or
    when asked again). False, and nothing written, when this server cannot send mail."""
    if not rt.mail.available or not user.email:
        return False
    at = now()
    async with rt.db.write() as conn:
        token = await _new_link(rt, conn, purpose=EMAIL_VERIFICATION, user_id=user.id, email=user.email,
                                ttl=rt.settings.email_verification_ttl, at=at)
    rt.mail.send(Mail("verify_email", user.email, {
        "username": user.username, "link": _link(rt, VERIFY_PATH, token),
        "hours": max(1, rt.settings.email_verification_ttl // 3600),
    }))
    return True


async def resend_verification(rt: Runtime, user, *, count=None) -> None:
    """``POST /auth/verify/resend`` and the settings page's button. ``count()``: the caller's
    per-user limit, awaited once the request is one that would send a mail (not for an
    address already verified, nor on a server without mail), raising when it is spent."""
    if user.verified:
        raise ALREADY_VERIFIED
    require_mail(rt)
    if count is not None:
        await count()
    await send_verification(rt, user)


async def verify_email(rt: Runtime, token: str | None):
    """Uses a verification link: the address it was sent to is verified, if it is still the
    account's address. The user row after; INVALID_LINK otherwise."""
    token_hash = _token_hash(token)
    if token_hash is None:
        raise INVALID_LINK
    at = now()
    async with rt.db.write() as conn:
        used = await security_store.use_mail_link(conn, token_hash, EMAIL_VERIFICATION, at)
        if used is None:
            raise INVALID_LINK
        user = await user_store.get_user(conn, used.user_id)
        if not _sent_to_their_address(user, used.email) or user.disabled_at is not None:
            raise INVALID_LINK  # the address changed since: this link verifies nothing now
        await user_store.set_user_fields(conn, user.id, verified=True)
        await audit.record(conn, id=rt.ids.next(), now=at, action="user.email_verified", actor_id=user.id,
                           target_user_id=user.id)
        return await user_store.get_user(conn, user.id)


# --- password reset -----------------------------------------------------------------------------

async def request_password_reset(rt: Runtime, login: str | None, *, count_for_account=None) -> None:
    """``POST /auth/forgot``: a reset link to the account's address, if there is such an
    account (by email or username) and it may sign in. Returns the same (nothing) either
    way, in the same time: the lookup is all the request waits for, and the link is written
    and mailed after it has its answer (the outbox's ``defer``), so neither the answer nor
    its timing tells whether the account exists. ``count_for_account(user_id)``: the
    caller's per-account limit, awaited before a mail is sent; a refusal there is swallowed
    so it says nothing about the account either."""
    require_mail(rt)
    if not isinstance(login, str) or len(login) > 254 or has_control_characters(login) or not login.strip():
        return
    async with rt.db.read() as conn:
        user = await user_store.find_by_login(conn, login)
    if user is None or user.bot or user.disabled_at is not None or not user.email:
        return

    async def mail_a_link() -> None:
        if count_for_account is not None:
            try:
                await count_for_account(user.id)
            except ApiError:
                log(logger, logging.INFO, "password reset mail withheld: the account's limit", user_id=user.id)
                return
        await send_reset_link(rt, user)

    rt.mail.defer("password_reset", mail_a_link)


async def send_reset_link(rt: Runtime, user, *, actor_id: int | None = None, mail: bool = True) -> str:
    """Writes a reset link for ``user`` and mails it (unless ``mail`` is False: the CLI's
    --no-mail); the link (the CLI prints it too)."""
    at = now()
    async with rt.db.write() as conn:
        token = await _new_link(rt, conn, purpose=PASSWORD_RESET, user_id=user.id, email=user.email,
                                ttl=rt.settings.password_reset_ttl, at=at)
        await audit.record(conn, id=rt.ids.next(), now=at, action="user.password_reset_requested",
                           actor_id=actor_id, target_user_id=user.id)
    link = _link(rt, RESET_PATH, token)
    if mail:
        rt.mail.send(Mail("password_reset", user.email, {
            "username": user.username, "link": link, "minutes": max(1, rt.settings.password_reset_ttl // 60),
        }))
    return link


async def reset_link_user(rt: Runtime, token: str | None):
    """The enabled user a live reset link is for (the page that asks for the new password
    shows the form only then), or None."""
    token_hash = _token_hash(token)
    if token_hash is None:
        return None
    async with rt.db.read() as conn:
        link = await security_store.live_mail_link(conn, token_hash, PASSWORD_RESET, now())
        user = await user_store.get_user(conn, link.user_id) if link is not None else None
    if user is None or user.disabled_at is not None or not _sent_to_their_address(user, link.email):
        return None
    return user


async def reset_password(rt: Runtime, token: str | None, new_password: str | None):
    """``POST /auth/reset``: the link's account gets ``new_password`` (the strength rules of
    sign-up); every session and every other reset link of it ends; a mail says so. The link
    is used only when the password is accepted. Returns the user row after."""
    user = await reset_link_user(rt, token)
    if user is None:
        raise INVALID_LINK
    errors = FormErrors()
    check_new_password(errors, new_password, min_score=rt.settings.password_min_score,
                       user_inputs=(user.username, user.email))
    errors.raise_if_any()
    password_hash = await rt.passwords.hash(new_password)
    at = now()
    async with rt.db.write() as conn:
        used = await security_store.use_mail_link(conn, _token_hash(token), PASSWORD_RESET, at)
        if used is None or used.user_id != user.id:  # used by a parallel request meanwhile
            raise INVALID_LINK
        await user_store.set_user_fields(conn, user.id, password_hash=password_hash)
        await user_store.end_sessions(conn, user.id)
        await security_store.end_mail_links(conn, user.id, PASSWORD_RESET, at)
        await audit.record(conn, id=rt.ids.next(), now=at, action="user.password_reset", actor_id=user.id,
                           target_user_id=user.id)
        changed = await user_store.get_user(conn, user.id)
    notify_password_changed(rt, changed)
    return changed


def notify_password_changed(rt: Runtime, user) -> None:
    if user.email:
        rt.mail.send(Mail("password_changed", user.email, {"username": user.username}))
