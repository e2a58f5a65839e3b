"""Accounts: registration, login, sessions, and the user object of SPEC §3."""

from __future__ import annotations

import re
import secrets
from contextlib import asynccontextmanager
from typing import AsyncContextManager, Awaitable, Callable, Protocol

from fluxer_oauth.core import credentials
from fluxer_oauth.core.errors import ApiError
from fluxer_oauth.core.timefmt import now
from fluxer_oauth.platform import images
from fluxer_oauth.platform.validation import FormErrors, check_text, has_control_characters
from fluxer_oauth.runtime import Runtime
from fluxer_oauth.store import audit
from fluxer_oauth.store import users as user_store
from fluxer_oauth.store.errors import AlreadyExists

USERNAME = re.compile(r"[A-Za-z0-9_.]{2,32}")
EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]+\.[^@\s]+")


def new_discriminator() -> str:
    return f"{secrets.randbelow(9999) + 1:04d}"


async def register(rt: Runtime, username: str, email: str, password: str) -> tuple[str, object]:
    """A new account and a session for it."""
    user = await create_user(rt, username, email, password)
    return await start_session(rt, user.id), user


async def create_user(rt: Runtime, username: str, email: str, password: str):
    errors = FormErrors()
    if not USERNAME.fullmatch(username):
        errors.add("username", "USERNAME_INVALID", "2-32 characters of letters, digits, '_' and '.'")
    email = email.strip()
    if len(email) > 254 or not EMAIL.fullmatch(email):
        errors.add("email", "EMAIL_INVALID", "not a valid email address")
    check_text(errors, "password", password, min_len=8, max_len=128, allow_format_characters=True)
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


async def update_profile(rt: Runtime, user, changes: dict):
    """``PATCH /users/@me``: ``changes`` holds the fields sent, and only those change:
    ``username`` (the rules and uniqueness of registration; another letter case of one's own
    name is fine), ``global_name`` (None or blank: none), ``avatar`` (a data URI, or None to
    remove it). The user row after."""
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
    errors.raise_if_any()
    image = None
    if "avatar" in changes:
        image = await images.process(rt, "avatar", changes["avatar"]) if changes["avatar"] is not None else None
        values["avatar"] = image.hash if image is not None else None
    if "username_key" in values:
        async with rt.db.read() as conn:
            if await user_store.username_taken(conn, values["username_key"], user.id):
                _raise_taken("username")
    if values:
        at = now()
        try:
            async with images.storing(rt, image) as record_image:
                async with rt.db.write() as conn:
                    await record_image(conn)
                    await user_store.update_profile(conn, user.id, **values)
                    await audit.record(
                        conn, id=rt.ids.next(), now=at, action="user.updated", actor_id=user.id,
                        target_user_id=user.id,
                        details={key: value for key, value in values.items() if key != "username_key"},
                    )
        except AlreadyExists:  # a parallel change or registration took the name first
            _raise_taken("username")
    async with rt.db.read() as conn:
        return await user_store.get_user(conn, user.id)


def _raise_taken(what: str):
    errors = FormErrors()
    path = what if what in ("username", "email") else "username"
    errors.add(path, f"{path.upper()}_ALREADY_TAKEN", f"this {what} is already registered")
    errors.raise_if_any()


class PasswordThrottle(Protocol):
    """Counts failed password checks per account (the edge's rate limits, web/ratelimit.py):
    ``attempt(account)`` is an async context around one check, which raises when the account
    has no failure left and yields the coroutine function that counts a failure."""

    def attempt(self, account: str) -> AsyncContextManager[Callable[[], Awaitable[None]]]: ...


class _Unthrottled:
    @asynccontextmanager
    async def attempt(self, account: str):
        yield _nothing_to_count


async def _nothing_to_count() -> None:
    pass


UNTHROTTLED = _Unthrottled()


async def login(rt: Runtime, login_name: str, password: str,
                throttle: PasswordThrottle = UNTHROTTLED) -> tuple[str, object]:
    """A new session for valid credentials. The same error for an unknown account and a
    wrong password, and the same work (a password verification) for both. Failures count
    against the account found (its username and email alike), or the name typed if none."""
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
    return await start_session(rt, user.id), user


async def check_password(rt: Runtime, user, password: str, throttle: PasswordThrottle = UNTHROTTLED) -> None:
    """Confirmation step of sensitive operations (secret and token resets), throttled like a
    login: a stolen session must not become an online password guesser."""
    async with throttle.attempt(f"user:{user.id}") as count_failure:
        if not isinstance(password, str) or not await rt.passwords.verify(user.password_hash, password[:128]):
            await count_failure()
            raise ApiError(403, "INVALID_PASSWORD", "password confirmation failed")


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
