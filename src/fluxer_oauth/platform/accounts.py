"""Accounts: registration, login, sessions, and the user object of SPEC §3."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from fluxer_oauth.core import credentials
from fluxer_oauth.core.errors import ApiError
from fluxer_oauth.core.timefmt import now
from fluxer_oauth.mail.outbox import Mail
from fluxer_oauth.platform import images, mail_links, two_factor
from fluxer_oauth.platform.passwords import UNTHROTTLED, PasswordThrottle, check_new_password, check_password
from fluxer_oauth.platform.validation import FormErrors, check_text, has_control_characters
from fluxer_oauth.runtime import Runtime
from fluxer_oauth.store import audit
from fluxer_oauth.store import users as user_store
from fluxer_oauth.store import account_security as security_store
from fluxer_oauth.store.errors import AlreadyExists
from fluxer_oauth.store.tables import EMAIL_VERIFICATION, PASSWORD_RESET

USERNAME = re.compile(r"[A-Za-z0-9_.]{2,32}")
# No control characters: no address has them, and PostgreSQL refuses NUL in text outright.
# Both parts are dot-atoms (RFC 5322): no specials (quoted local parts, address literals),
# no empty label. In a To header the specials make a list, a group, a comment or an angle
# address, so the mail's recipients would not be the address stored (a comma adds one;
# "x;a@b.c" sends to "x" alone), and an empty label makes no address at all.
_ATOM = r'[^@\s\x00-\x1f\x7f"(),.:;<>\[\\\]]+'
EMAIL = re.compile(rf"(?=[^@]{{1,64}}@){_ATOM}(?:\.{_ATOM})*@{_ATOM}(?:\.{_ATOM})+")


def checked_email(errors: FormErrors, email) -> str | None:
    """``email`` without surrounding space when it is an address accounts may have; else
    EMAIL_INVALID is added to ``errors`` and None returned."""
    email = email.strip() if isinstance(email, str) else ""
    if len(email) > 254 or not EMAIL.fullmatch(email):
        errors.add("email", "EMAIL_INVALID", "not a valid email address")
        return None
    return email


def new_discriminator() -> str:
    return f"{secrets.randbelow(9999) + 1:04d}"


async def register(rt: Runtime, username: str, email: str, password: str) -> tuple[str, object]:
    """A new account, a session for it, and a mail with the link that verifies its address."""
    user = await create_user(rt, username, email, password)
    await mail_links.send_verification(rt, user)
    return await start_session(rt, user.id), user


async def create_user(rt: Runtime, username: str, email: str, password: str):
    errors = FormErrors()
    if not USERNAME.fullmatch(username):
        errors.add("username", "USERNAME_INVALID", "2-32 characters of letters, digits, '_' and '.'")
    email = email.strip()
    checked_email(errors, email)
    check_new_password(errors, password, min_score=rt.settings.password_min_score, user_inputs=(username, email))
    errors.raise_if_any()

    username_key, email_key = username.lower(), email.lower()
    async with rt.db.read() as conn:
        taken = await user_store.username_or_email_taken(conn, username_key, email_key)
    if taken:
        _raise_taken(taken)
    password_hash = await rt.passwords.hash(password)
    user_id = rt.ids.next()
    try:
        async with rt.db.write() as conn:
            await user_store.insert_user(
                conn,
                id=user_id,
                username=username,
                username_key=username_key,
                discriminator=new_discriminator(),
                email=email,
                email_key=email_key,
                verified=False,
                password_hash=password_hash,
                created_at=now(),
            )
    except AlreadyExists:  # a parallel registration took the name first
        _raise_taken("username or email")
    async with rt.db.read() as conn:
        return await user_store.get_user(conn, user_id)


async def update_profile(rt: Runtime, user, changes: dict, *, throttle: PasswordThrottle = UNTHROTTLED,
                         session_token: str | None = None):
    """``PATCH /users/@me``: ``changes`` holds the fields sent, and only those change:
    ``username`` (the rules and uniqueness of registration; another letter case of one's own
    name is fine), ``global_name`` (None or blank: none), ``avatar`` (a data URI, or None to
    remove it), ``email`` and ``new_password``, which need the current ``password``. A new
    email is unverified until its link is followed (the mail goes out after the change); a
    new password ends every other session (``session_token``: the one that asked, kept). The
    user row after."""
    errors = FormErrors()
    values: dict = {}
    if "username" in changes:
        username = changes["username"]
        if not isinstance(username, str) or not USERNAME.fullmatch(username):
            errors.add("username", "USERNAME_INVALID", "2-32 characters of letters, digits, '_' and '.'")
        else:
            values["username"], values["username_key"] = username, username.lower()
    if "global_name" in changes:
        global_name = (changes["global_name"] or "").strip() or None
        check_text(errors, "global_name", global_name, min_len=1, max_len=32)
        values["global_name"] = global_name
    # The account's own address again (in any letter case) changes nothing and is not checked.
    email_changed = isinstance(changes.get("email"), str) and \
        changes["email"].strip().lower() != (user.email or "").lower()
    if email_changed or ("email" in changes and not isinstance(changes["email"], str)):
        email = checked_email(errors, changes["email"])
        if email is not None:
            values.update(email=email, email_key=email.lower(), verified=False)
    if "new_password" in changes:
        check_new_password(errors, changes["new_password"], min_score=rt.settings.password_min_score,
                           user_inputs=(values.get("username", user.username), values.get("email", user.email)),
                           path="new_password")
    errors.raise_if_any()
    if email_changed or "new_password" in changes:  # who holds the session must know the password
        await check_password(rt, user, changes.get("password"), throttle)
    if "new_password" in changes:
        values["password_hash"] = await rt.passwords.hash(changes["new_password"])
    image = None
    if "avatar" in changes:
        image = await images.process(rt, "avatar", changes["avatar"]) if changes["avatar"] is not None else None
        values["avatar"] = image.hash if image is not None else None
    if "username_key" in values or "email_key" in values:
        async with rt.db.read() as conn:
            if "username_key" in values and await user_store.username_taken(conn, values["username_key"], user.id):
                _raise_taken("username")
            if "email_key" in values and await user_store.email_taken(conn, values["email_key"], user.id):
                _raise_taken("email")
    if values:
        at = now()
        try:
            async with images.storing(rt, image) as record_image:
                async with rt.db.write() as conn:
                    await record_image(conn)
                    await user_store.update_profile(conn, user.id, **values)
                    if "email" in values:  # links sent to the old address do nothing now
                        for purpose in (EMAIL_VERIFICATION, PASSWORD_RESET):
                            await security_store.end_mail_links(conn, user.id, purpose, at)
                    if "password_hash" in values:
                        await user_store.end_sessions(conn, user.id, keep=session_token and
                                                      credentials.sha256(session_token))
                    await audit.record(
                        conn, id=rt.ids.next(), now=at, action="user.updated", actor_id=user.id,
                        target_user_id=user.id,
                        details={key: value for key, value in values.items()
                                 if key not in ("username_key", "email_key", "password_hash")}
                        | ({"password": "changed"} if "password_hash" in values else {}),
                    )
        except AlreadyExists:  # a parallel change or registration took the name first
            _raise_taken("email" if "email_key" in values and "username_key" not in values else "username")
    async with rt.db.read() as conn:
        updated = await user_store.get_user(conn, user.id)
    if email_changed:
        if user.email:
            rt.mail.send(Mail("email_changed", user.email, {"username": user.username, "email": updated.email}))
        await mail_links.send_verification(rt, updated)
    if "password_hash" in values:
        mail_links.notify_password_changed(rt, updated)
    return updated


def _raise_taken(what: str):
    errors = FormErrors()
    path = what if what in ("username", "email") else "username"
    errors.add(path, f"{path.upper()}_ALREADY_TAKEN", f"this {what} is already registered")
    errors.raise_if_any()


@dataclass(frozen=True)
class SignIn:
    """The outcome of a correct password: a session, or (two-factor sign-in on) the ticket
    that the second step (``complete_sign_in``) takes with a code."""

    user: object
    session: str | None = None
    ticket: str | None = None


async def login(rt: Runtime, login_name: str, password: str, throttle: PasswordThrottle = UNTHROTTLED) -> SignIn:
    """A new session for valid credentials, or a ticket for the second step. The same error
    for an unknown account and a wrong password, and the same work (a password verification)
    for both. Failures count against the account found (its username and email alike), or
    the name typed if none."""
    # No account name holds control characters, and PostgreSQL refuses NUL in text outright.
    findable = len(login_name) <= 254 and not has_control_characters(login_name)
    async with rt.db.read() as conn:
        user = await user_store.find_by_login(conn, login_name) if findable else None
    account = f"user:{user.id}" if user is not None else f"name:{login_name.strip().lower()[:254]}"
    stored = user.password_hash if user is not None and user.disabled_at is None and not user.bot else None
    async with throttle.attempt(account) as count_failure:
        if not await rt.passwords.verify(stored, password[:128]):
            await count_failure()
            raise ApiError(400, "INVALID_LOGIN", "login or password is incorrect")
    return await sign_in(rt, user)


async def sign_in(rt: Runtime, user) -> SignIn:
    """After a proof of the password (a login, a reset link): a session, or the ticket of the
    second step when two-factor sign-in is on (a mailed link never stands in for the code)."""
    if user.mfa_enabled:
        return SignIn(user, ticket=two_factor.new_ticket(rt, user))
    return SignIn(user, session=await start_session(rt, user.id))


async def reset_password(rt: Runtime, token, new_password) -> SignIn:
    """``POST /auth/reset``: the new password (mail_links.reset_password ends every session),
    then signed in with it as a login is."""
    return await sign_in(rt, await mail_links.reset_password(rt, token, new_password))


async def complete_sign_in(rt: Runtime, ticket, code, throttle: PasswordThrottle = UNTHROTTLED) -> SignIn:
    """The second step: the password step's ticket and a TOTP or recovery code; a session."""
    user = await two_factor.ticket_user(rt, ticket)
    await two_factor.check_code_throttled(rt, user, code, throttle)
    return SignIn(user, session=await start_session(rt, user.id))


async def start_session(rt: Runtime, user_id: int) -> str:
    token = credentials.new_session_token()
    at = now()
    async with rt.db.write() as conn:
        await user_store.insert_session(
            conn, credentials.sha256(token), user_id, at, at + rt.settings.session_ttl
        )
    return token


async def session_user(rt: Runtime, token: str):
    if not credentials.looks_like_session_token(token):
        return None
    async with rt.db.read() as conn:
        return await user_store.session_user(conn, credentials.sha256(token), now())


async def logout(rt: Runtime, token: str) -> None:
    async with rt.db.write() as conn:
        await user_store.delete_session(conn, credentials.sha256(token))


# What anyone who sees another user may read (Discord's partial user): not the account's own
# settings (mfa_enabled, locale), which only identify grants, nor flags beyond the public ones.
PUBLIC_USER_FIELDS = ("id", "username", "discriminator", "global_name", "avatar", "banner", "accent_color", "bot",
                      "system", "public_flags")


def public_user_json(user) -> dict:
    """The user as others see them: in a guild's member list, as an application's owner or bot."""
    full = user_json(user, with_email=False)
    return {name: full[name] for name in PUBLIC_USER_FIELDS}


def user_json(user, *, with_email: bool) -> dict:
    """The user object with Discord's field names (SPEC §1, §3)."""
    body = {
        "id": str(user.id),
        "username": user.username,
        "discriminator": user.discriminator,
        "global_name": user.global_name,
        "avatar": user.avatar,
        "banner": user.banner,
        "accent_color": user.accent_color,
        "bot": bool(user.bot),
        "system": bool(user.system),
        "mfa_enabled": bool(user.mfa_enabled),
        "locale": user.locale,
        "flags": user.flags,
        "public_flags": user.flags,
    }
    if with_email:
        body["email"] = user.email
        body["verified"] = bool(user.verified)
    return body
