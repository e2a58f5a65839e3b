"""Passwords: what a new one must be, and checking one a person types.

A new password must be 8 to 128 characters, and not easy to guess, as the zxcvbn
estimator scores it (FLUXER_PASSWORD_MIN_SCORE, 3 of 4 by default: "safely unguessable",
about 10^10 guesses). The estimate knows common passwords, words, names, keyboard walks,
repeats, sequences, dates and the account's own username and email; its reason is given
back so a person knows what to change.

Checked wherever a password is chosen (sign-up, reset, change, the CLI); never at sign-in,
so an account made before the rule keeps working. ``check_password`` confirms a signed-in
user's password before a sensitive change, counting failures as a login does."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncContextManager, Awaitable, Callable, Protocol

from zxcvbn import zxcvbn

from fluxer_oauth.core.errors import ApiError
from fluxer_oauth.platform.validation import FormErrors, check_text

MIN_LENGTH, MAX_LENGTH = 8, 128
# zxcvbn's time grows with the length it matches over; past this many characters a
# password's strength is not in doubt, and the rest is not estimated.
ESTIMATED_LENGTH = 64
# When the estimator names no warning: its own advice for a short or plain password.
DEFAULT_REASON = "Add another word or two. Uncommon words are better."


def check_new_password(errors: FormErrors, password: str | None, *, min_score: int, user_inputs=(),
                       path: str = "password") -> None:
    """Adds ``password``'s problem to ``errors``: BASE_TYPE_BAD_LENGTH, CONTROL_CHARACTERS, or
    PASSWORD_TOO_WEAK with the estimator's ``reason`` (an English sentence the pages
    translate: web/password_feedback.py)."""
    if not isinstance(password, str):
        errors.add(path, "BASE_TYPE_REQUIRED", "this field is required")
        return
    check_text(errors, path, password, min_len=MIN_LENGTH, max_len=MAX_LENGTH, allow_format_characters=True)
    if errors.has(path):
        return
    reason = weakness(password, min_score=min_score, user_inputs=user_inputs)
    if reason is not None:
        errors.add(path, "PASSWORD_TOO_WEAK", f"too easy to guess: {reason}", reason=reason)


def weakness(password: str, *, min_score: int, user_inputs=()) -> str | None:
    """Why ``password`` scores below ``min_score``, or None when it does not."""
    inputs = [value.lower() for value in user_inputs if value]
    for value in list(inputs):  # an email's name part is a guess of its own
        if "@" in value:
            inputs.append(value.partition("@")[0])
    result = zxcvbn(password[:ESTIMATED_LENGTH], user_inputs=inputs)
    if result["score"] >= min_score:
        return None
    feedback = result["feedback"]
    return feedback.get("warning") or next(iter(feedback.get("suggestions") or ()), None) or DEFAULT_REASON


# --- checking a password -------------------------------------------------------------------------

class PasswordThrottle(Protocol):
    """Counts failed password checks per account (the edge's rate limits, web/ratelimit.py):
    ``attempt(account)`` is an async context around one check, which raises when the account
    has no failure left and yields the coroutine function that counts a failure. ``code``:
    the check is of a second-factor code, whose per-account ceiling is its own."""

    def attempt(self, account: str, *, code: bool = False) -> AsyncContextManager[Callable[[], Awaitable[None]]]: ...


class _Unthrottled:
    @asynccontextmanager
    async def attempt(self, account: str, *, code: bool = False):
        yield _nothing_to_count


async def _nothing_to_count() -> None:
    pass


UNTHROTTLED = _Unthrottled()


async def check_password(rt, user, password: str, throttle: PasswordThrottle = UNTHROTTLED) -> None:
    """Confirmation step of sensitive operations (secret and token resets), throttled like a
    login: a stolen session must not become an online password guesser."""
    async with throttle.attempt(f"user:{user.id}") as count_failure:
        if not isinstance(password, str) or not await rt.passwords.verify(user.password_hash, password[:128]):
            await count_failure()
            raise ApiError(403, "INVALID_PASSWORD", "password confirmation failed")
