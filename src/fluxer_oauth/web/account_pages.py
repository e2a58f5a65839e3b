"""The account pages: the code step of a two-factor sign-in, a forgotten password, email
verification, and the account settings (email, password, two-factor sign-in).

The pages behind mailed links never use a link on GET (mail scanners open links): the GET
shows a form and only its POST verifies or sets the password. The forgotten-password form
answers one page whatever was typed, so it says nothing about which accounts exist.

Two-factor enrolment shows a fresh secret as a QR code (made here, as SVG, by segno) and as
text; the form carries the secret back sealed under the server secret and bound to the user
(``_seal_enrolment``), so nobody can swap in a secret of their own. Recovery codes are shown
once, by the page a POST redirects to, carried there in the sealed one-time cookie of
web/flash.py, as the portal shows new credentials."""

from __future__ import annotations

import segno
from starlette.requests import Request
from starlette.responses import Response

from fluxer_oauth.core import credentials
from fluxer_oauth.core.errors import ApiError
from fluxer_oauth.core.sealing import Unsealable, seal, unseal
from fluxer_oauth.platform import accounts, mail_links, two_factor
from fluxer_oauth.web import flash
from fluxer_oauth.web.caller import runtime
from fluxer_oauth.web.cookies import SESSION_COOKIE
from fluxer_oauth.web.i18n import _
from fluxer_oauth.web.page_messages import field_messages, page_message
from fluxer_oauth.web.pages import (
    cookie_user, csrf_ok, form_expired, form_field, login_redirect, login_url, password_field, read_form,
    redirect, render, retry_seconds, safe_next, same_origin, start_browser_session, to_login_with_notice,
    with_retry_after,
)
from fluxer_oauth.web.ratelimit import (
    PasswordThrottle, RateLimited, limit_password_reset, limit_verification_resend, password_reset_account_counter,
)
from fluxer_oauth.web.templating import retry_text

RESET_PAGE, VERIFY_PAGE = mail_links.RESET_PATH, mail_links.VERIFY_PATH  # where the mails' links lead
ACCOUNT = "/settings/account"
TWO_FACTOR = ACCOUNT + "/two-factor"
RECOVERY_CODES = TWO_FACTOR + "/recovery-codes"
CODES_FLASH = "recovery-codes"  # the flash's scope: the recovery codes, shown once
MAX_TICKET = 1024  # a sealed sign-in ticket is about 200 characters
MAX_CODE = 64  # a TOTP or recovery code, with room for spaces and hyphens
MAX_LOGIN = 254
MAX_SEALED_SECRET = 256
_ENROLMENT_PURPOSE, _ENROLMENT_VERSION = b"totp-enrolment-form", b"\x01"
SWAPPED_SECRET = ApiError(400, "INVALID_MFA_SECRET", "the form's secret is not one this server made for this user")


def _failed_attempts(exc: RateLimited) -> str:
    return _("Too many failed attempts.") + " " + retry_text(retry_seconds(exc))


# --- the code step of a two-factor sign-in --------------------------------------------------------

def _code_form(request: Request, status: int, next_url: str, ticket: str, error: str | None) -> Response:
    return render(request, "login_code.html", status, next=next_url, ticket=ticket, error=error)


async def login_code_page(request: Request) -> Response:
    """A GET of the code step (a reload, a bookmark): the ticket came with the password's
    POST, so the sign-in starts again."""
    return redirect(request, login_url(safe_next(request.query_params.get("next"))), 302)


@same_origin
async def login_code_submit(request: Request) -> Response:
    """The ticket of the password step and a code of the authenticator app, or a recovery
    code: a session, and on to ``next``. A wrong code shows the form again (failures are
    counted as wrong passwords are); a ticket that expired or no longer holds (the password
    changed) sends back to the login page."""
    form = await read_form(request)
    next_url = safe_next(form_field(form, "next"))
    ticket = form_field(form, "ticket", max_length=MAX_TICKET)
    if not csrf_ok(request, form, before_login=True):
        return _code_form(request, 403, next_url, ticket, _("Your form expired. Please try again."))
    try:
        signed_in = await accounts.complete_sign_in(runtime(request), ticket,
                                                    form_field(form, "code", max_length=MAX_CODE),
                                                    PasswordThrottle(request.scope))
    except RateLimited as exc:
        return with_retry_after(_code_form(request, 429, next_url, ticket, _failed_attempts(exc)), exc)
    except ApiError as exc:
        if exc.code == two_factor.INVALID_TICKET.code:
            return to_login_with_notice(request, next_url, "sign_in_again")
        return _code_form(request, exc.status, next_url, ticket, page_message(exc))
    return await start_browser_session(request, signed_in.session, next_url)


# --- a forgotten password -------------------------------------------------------------------------

def _forgot_form(request: Request, status: int = 200, *, login: str = "", error: str | None = None) -> Response:
    rt = runtime(request)
    return render(request, "forgot_password.html", status, mail_available=rt.mail.available, sent=False,
                  login=login, error=error)


async def forgot_page(request: Request) -> Response:
    return _forgot_form(request)


@same_origin
async def forgot_submit(request: Request) -> Response:
    """One answer whatever was typed: the same page and status for an account that exists,
    one that does not, and one that has had its mails for now (the per-account limit);
    the per-address limit refuses everyone alike."""
    rt = runtime(request)
    form = await read_form(request)
    login = form_field(form, "login", max_length=MAX_LOGIN)
    if not csrf_ok(request, form, before_login=True):
        return _forgot_form(request, 403, login=login, error=_("Your form expired. Please try again."))
    if not rt.mail.available:
        return _forgot_form(request, 503)
    try:
        await limit_password_reset(request.scope)
        await mail_links.request_password_reset(rt, login,
                                                count_for_account=password_reset_account_counter(request.scope))
    except RateLimited as exc:
        error = _("Too many password resets were asked for from your network.") + " " + retry_text(retry_seconds(exc))
        return with_retry_after(_forgot_form(request, 429, login=login, error=error), exc)
    except ApiError as exc:  # mail became unavailable
        return _forgot_form(request, exc.status, login=login, error=page_message(exc))
    return render(request, "forgot_password.html", mail_available=True, sent=True, login="", error=None,
                  minutes=max(1, rt.settings.password_reset_ttl // 60))


def _link_invalid(request: Request, kind: str) -> Response:
    """A mailed link that does not work (unknown, expired, used): what to do instead."""
    return render(request, "link_invalid.html", 400, kind=kind, message=page_message(mail_links.INVALID_LINK))


def _reset_form(request: Request, token: str, user, status: int = 200, *, errors: dict | None = None,
                error: str | None = None) -> Response:
    errors = errors or {}
    focus = next((name for name in ("password", "password_confirm") if name in errors), "password")
    return render(request, "reset_password.html", status, token=token, username=user.username, errors=errors,
                  error=error, focus=focus)


async def reset_page(request: Request) -> Response:
    """The form for a new password, while the link is live. Looking the link up uses nothing."""
    token = request.query_params.get("token", "")
    user = await mail_links.reset_link_user(runtime(request), token)
    if user is None:
        return _link_invalid(request, "reset")
    return _reset_form(request, token, user)


@same_origin
async def reset_submit(request: Request) -> Response:
    """The new password, typed twice: every session of the account ends (this browser's
    too), and the login page says to sign in with it."""
    rt = runtime(request)
    form = await read_form(request)
    token = form_field(form, "token", max_length=mail_links.MAX_LINK_TOKEN)
    user = await mail_links.reset_link_user(rt, token)
    if user is None:
        return _link_invalid(request, "reset")
    if not csrf_ok(request, form, before_login=True):
        return _reset_form(request, token, user, 403, error=_("Your form expired. Please try again."))
    password = password_field(form)
    if password != password_field(form, "password_confirm"):
        return _reset_form(request, token, user, 400, errors={"password_confirm": _("The two passwords differ.")})
    try:
        await mail_links.reset_password(rt, token, password)
    except ApiError as exc:
        if exc.code == mail_links.INVALID_LINK.code:  # used or ended meanwhile
            return _link_invalid(request, "reset")
        errors = field_messages(exc)
        shown = {name: text for name, text in errors.items() if name == "password"}
        return _reset_form(request, token, user, exc.status, errors=shown,
                           error=None if shown else page_message(exc))
    return to_login_with_notice(request, "/", "password_reset")


# --- email verification ---------------------------------------------------------------------------

async def verify_page(request: Request) -> Response:
    """A button that verifies: opening the link alone changes nothing."""
    token = request.query_params.get("token", "")
    if not token or len(token) > mail_links.MAX_LINK_TOKEN:
        return _link_invalid(request, "verify")
    return render(request, "verify_email.html", token=token, verified_email=None, error=None)


@same_origin
async def verify_submit(request: Request) -> Response:
    form = await read_form(request)
    token = form_field(form, "token", max_length=mail_links.MAX_LINK_TOKEN)
    if not csrf_ok(request, form, before_login=True):
        return render(request, "verify_email.html", 403, token=token, verified_email=None,
                      error=_("Your form expired. Please try again."))
    try:
        user = await mail_links.verify_email(runtime(request), token)
    except ApiError:
        return _link_invalid(request, "verify")
    return render(request, "verify_email.html", token="", verified_email=user.email, error=None)


# --- the account settings -------------------------------------------------------------------------

# Each form of the settings page: the API's field paths and the ids of the form's fields
# (unique on the page), in the order the form shows them.
FORM_FIELDS = {
    "email": {"email": "new_email", "password": "email_password"},
    "password": {"password": "current_password", "new_password": "new_password",
                 "new_password_confirm": "new_password_confirm"},
    "recovery": {"password": "recovery_password", "code": "recovery_code"},
    "disable": {"password": "disable_password", "code": "disable_code"},
    "enrol": {"password": "password", "code": "code"},
}
# Refusals that name no field but are about one: the field they are shown under.
CODE_FIELDS = {"INVALID_PASSWORD": "password", "INVALID_MFA_CODE": "code"}


def _done_notices(mail_available: bool) -> dict[str, str]:
    """What the settings page says after a change (``?done=``)."""
    return {
        "email": _("Your email address was changed. We sent a link to the new address to verify it.")
        if mail_available else _("Your email address was changed."),
        "verification": _("We sent a new verification link. It can take a few minutes to arrive."),
        "password": _("Your password was changed. Your other sessions were signed out."),
        "two-factor-off": _("Two-factor sign-in is off."),
    }


def _form_errors(exc: ApiError, form: str) -> tuple[dict[str, str], str | None]:
    """``exc`` as the form ``form`` shows it: sentences under its fields (by field id) and
    the rest above it."""
    fields = FORM_FIELDS[form]
    if isinstance(exc, RateLimited):
        return {}, _failed_attempts(exc)
    by_path = field_messages(exc)
    if not by_path:
        field = CODE_FIELDS.get(exc.code)
        return ({fields[field]: page_message(exc)}, None) if field in fields else ({}, page_message(exc))
    shown = {fields[path]: text for path, text in by_path.items() if path in fields}
    rest = " ".join(text for path, text in by_path.items() if path not in fields)
    return shown, rest or None


def _first_wrong(form: str | None, errors: dict[str, str]) -> str | None:
    return next((field_id for field_id in FORM_FIELDS.get(form, {}).values() if field_id in errors), None)


async def _settings(request: Request, user, status: int = 200, *, form: str | None = None,
                    errors: dict | None = None, error: str | None = None, typed_email: str = "") -> Response:
    """The settings page; after a refused form, that form's errors (``form`` names it)."""
    rt = runtime(request)
    errors = errors or {}
    codes_left = await two_factor.recovery_codes_left(rt, user.id) if user.mfa_enabled else None
    done = request.query_params.get("done") if status == 200 else None
    return render(request, "account_settings.html", status, user=user, mail_available=rt.mail.available,
                  codes_left=codes_left, form=form, errors=errors, error=error, focus=_first_wrong(form, errors),
                  typed_email=typed_email, notice=_done_notices(rt.mail.available).get(done or ""))


async def _refused(request: Request, user, form: str, exc: ApiError, **typed) -> Response:
    errors, error = _form_errors(exc, form)
    response = await _settings(request, user, exc.status, form=form, errors=errors, error=error, **typed)
    return with_retry_after(response, exc) if isinstance(exc, RateLimited) else response


def _done(request: Request, what: str) -> Response:
    return redirect(request, f"{ACCOUNT}?done={what}", 303)


async def settings_page(request: Request) -> Response:
    user = await cookie_user(request)
    if user is None:
        return login_redirect(request, ACCOUNT)
    return await _settings(request, user)


async def _signed_in_form(request: Request):
    """(user, form) of a settings POST, or (None, the answer): the login page when signed
    out, the expired-form page when the CSRF token does not match."""
    user = await cookie_user(request)
    if user is None:
        return None, login_redirect(request, ACCOUNT, 303)
    form = await read_form(request)
    if not csrf_ok(request, form):
        return None, form_expired(request)
    return user, form


@same_origin
async def resend_verification_submit(request: Request) -> Response:
    user, form = await _signed_in_form(request)
    if user is None:
        return form
    rt = runtime(request)
    try:
        await mail_links.resend_verification(rt, user,
                                             count=lambda: limit_verification_resend(request.scope, user.id))
    except RateLimited as exc:
        error = _("You asked for too many verification mails.") + " " + retry_text(retry_seconds(exc))
        return with_retry_after(await _settings(request, user, 429, form="verification", error=error), exc)
    except ApiError as exc:
        return await _settings(request, user, exc.status, form="verification", error=page_message(exc))
    return _done(request, "verification")


@same_origin
async def email_submit(request: Request) -> Response:
    """A new address, confirmed with the password: unverified until its link is followed."""
    user, form = await _signed_in_form(request)
    if user is None:
        return form
    email = form_field(form, "email", max_length=MAX_LOGIN).strip()
    if email.lower() == (user.email or "").lower():
        return await _settings(request, user, 400, form="email", typed_email=email,
                               errors={"new_email": _("This is already your email address.")})
    return await _change_account(request, user, "email", {"email": email, "password": password_field(form)},
                                 typed_email=email)


@same_origin
async def password_submit(request: Request) -> Response:
    """A new password (typed twice) for the current one: every other session ends."""
    user, form = await _signed_in_form(request)
    if user is None:
        return form
    new_password = password_field(form, "new_password")
    if new_password != password_field(form, "new_password_confirm"):
        return await _settings(request, user, 400, form="password",
                               errors={"new_password_confirm": _("The two passwords differ.")})
    return await _change_account(request, user, "password",
                                 {"new_password": new_password, "password": password_field(form)})


async def _change_account(request: Request, user, form: str, changes: dict, **typed) -> Response:
    """A settings form's change (PATCH /users/@me's rules, the password confirmed and
    throttled, this session kept), then back to the settings saying so, or the form refused."""
    try:
        await accounts.update_profile(runtime(request), user, changes, throttle=PasswordThrottle(request.scope),
                                      session_token=request.cookies.get(SESSION_COOKIE))
    except ApiError as exc:
        return await _refused(request, user, form, exc, **typed)
    return _done(request, form)


# --- two-factor sign-in ---------------------------------------------------------------------------

def _seal_enrolment(rt, user_id: int, secret: str) -> str:
    """The secret of an enrolment form, sealed for this user: the form's POST takes only a
    secret this server made for the user signed in."""
    return credentials.b64url(seal(rt.secret, _ENROLMENT_PURPOSE, _ENROLMENT_VERSION, secret.encode(),
                                   str(user_id).encode()))


def _open_enrolment(rt, user_id: int, sealed: str) -> str | None:
    try:
        return unseal(rt.secret, _ENROLMENT_PURPOSE, _ENROLMENT_VERSION, credentials.b64url_decode(sealed),
                      str(user_id).encode()).decode()
    except (ValueError, Unsealable):
        return None


def qr_code(text: str) -> str:
    """``text`` as a QR code: an SVG data URI (the pages' CSP allows data: images), dark on
    light whatever the page's colours, with the quiet zone scanners need."""
    return segno.make(text, error="m").svg_data_uri(scale=5, border=4, dark="#000", light="#fff")


def _grouped(secret: str) -> str:
    """The secret as a person types it: groups of four."""
    return " ".join(secret[i:i + 4] for i in range(0, len(secret), 4))


def _enrol_page(request: Request, user, secret: str, status: int = 200, *, errors: dict | None = None,
                error: str | None = None) -> Response:
    rt = runtime(request)
    errors = errors or {}
    return render(request, "two_factor_setup.html", status, user=user,
                  qr=qr_code(two_factor.provisioning_uri(secret, user.username)), secret=_grouped(secret),
                  sealed_secret=_seal_enrolment(rt, user.id, secret), errors=errors, error=error,
                  focus=_first_wrong("enrol", errors) or "code")


async def two_factor_page(request: Request) -> Response:
    user = await cookie_user(request)
    if user is None:
        return login_redirect(request, TWO_FACTOR)
    if user.mfa_enabled:
        return redirect(request, ACCOUNT, 302)
    return _enrol_page(request, user, two_factor.new_secret())


@same_origin
async def two_factor_submit(request: Request) -> Response:
    """Turns two-factor sign-in on with the form's secret, a code of the app that scanned it
    and the password; then the recovery codes, once. Refused, the form comes back with the
    same secret, so the app already set up keeps working."""
    user, form = await _signed_in_form(request)
    if user is None:
        return form
    rt = runtime(request)
    secret = _open_enrolment(rt, user.id, form_field(form, "enrolment", max_length=MAX_SEALED_SECRET))
    if secret is None:  # altered, or made for someone else: start again with a new one
        return _enrol_page(request, user, two_factor.new_secret(), 400,
                           error=page_message(SWAPPED_SECRET))
    try:
        codes = await two_factor.enable(rt, user, secret=secret, code=form_field(form, "code", max_length=MAX_CODE),
                                        password=password_field(form), throttle=PasswordThrottle(request.scope))
    except ApiError as exc:
        if exc.code == two_factor.ALREADY_ENABLED.code:
            return redirect(request, ACCOUNT, 303)
        errors, error = _form_errors(exc, "enrol")
        response = _enrol_page(request, user, secret, exc.status, errors=errors, error=error)
        return with_retry_after(response, exc) if isinstance(exc, RateLimited) else response
    return _show_codes(request, codes, first=True)


def _show_codes(request: Request, codes: list[str], *, first: bool) -> Response:
    response = redirect(request, RECOVERY_CODES, 303)
    return flash.put(request, response, path=RECOVERY_CODES, scope=CODES_FLASH,
                     payload={"codes": codes, "first": first})


async def recovery_codes_page(request: Request) -> Response:
    """The recovery codes a POST just made, once: a reload finds them gone."""
    user = await cookie_user(request)
    if user is None:
        return login_redirect(request, ACCOUNT)
    carried = flash.take(request, CODES_FLASH) or {}
    codes = carried.get("codes")
    if not isinstance(codes, list) or not all(isinstance(code, str) for code in codes):
        return flash.forget(request, redirect(request, ACCOUNT, 302), path=RECOVERY_CODES)
    response = render(request, "recovery_codes.html", user=user, codes=codes, first=bool(carried.get("first")))
    return flash.forget(request, response, path=RECOVERY_CODES)


@same_origin
async def recovery_codes_submit(request: Request) -> Response:
    """New recovery codes (password and a code): the old ones stop working."""
    user, form = await _signed_in_form(request)
    if user is None:
        return form
    try:
        codes = await two_factor.regenerate_recovery_codes(
            runtime(request), user, password=password_field(form), code=form_field(form, "code", max_length=MAX_CODE),
            throttle=PasswordThrottle(request.scope))
    except ApiError as exc:
        return await _refused(request, user, "recovery", exc)
    return _show_codes(request, codes, first=False)


@same_origin
async def two_factor_disable_submit(request: Request) -> Response:
    user, form = await _signed_in_form(request)
    if user is None:
        return form
    try:
        await two_factor.disable(runtime(request), user, password=password_field(form),
                                 code=form_field(form, "code", max_length=MAX_CODE),
                                 throttle=PasswordThrottle(request.scope))
    except ApiError as exc:
        return await _refused(request, user, "disable", exc)
    return _done(request, "two-factor-off")
