"""/activate: where a person approves a device (RFC 8628 §3.3, the verification URI).

GET shows the form (prefilled from ``?user_code=``, as verification_uri_complete links);
a signed-out visitor goes to the login page first and comes back with the code they had.
POST ``action=continue`` looks the code up and shows the consent; ``authorize`` or
``cancel`` decide, then a page says to go back to the device. Every POST looks the code up
again under the user-code throttles (per signed-in user and address, per address, and a
per-user ceiling: web/ratelimit.FailureThrottle), so a guesser gets nothing by skipping a
step; a wrong, expired or already decided code are one answer."""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from fluxer_oauth.oauth import device
from fluxer_oauth.web.caller import runtime
from fluxer_oauth.web.i18n import _
from fluxer_oauth.web.pages import (cookie_user, csrf_ok, error_page, form_expired, form_field, login_redirect,
                                    read_form, render, same_origin)
from fluxer_oauth.web.permission_labels import scope_description
from fluxer_oauth.web.ratelimit import RateLimited, UserCodeThrottle

MAX_TYPED_CODE = 32  # room for spaces and hyphens around the 8 letters
ACTIONS = ("continue", "authorize", "cancel")


def _here(typed: str) -> str:
    """This page with the code the person had typed (where login and "Not you?" come back to)."""
    return device.ACTIVATE_PATH + (f"?{urlencode({'user_code': typed})}" if typed else "")


def _prefilled(typed: str) -> str:
    """A typed code as the form shows it again: XXXX-XXXX when it reads as a user code."""
    code = device.normalize_user_code(typed)
    return device.shown_user_code(code) if code is not None else typed


def _refusal(message: str) -> str:
    """A refusal of ``oauth.device`` (English, for the person at /activate) in the page's
    language; one this table does not know as it is."""
    return {
        device.INVALID_CODE: _("That code is not valid. Check the code on your device and try again."),
        "This request asks for access that cannot be granted to a device.":
            _("This request asks for access that cannot be granted to a device."),
        "This application can no longer be authorized.": _("This application can no longer be authorized."),
    }.get(message, message)


def _enter_page(request: Request, user, typed: str, *, error: str | None = None, status: int = 200) -> Response:
    return render(request, "activate.html", status, user=user, user_code=_prefilled(typed), error=error,
                  switch_next=_here(typed))


async def activate_page(request: Request) -> Response:
    typed = request.query_params.get("user_code", "").strip()[:MAX_TYPED_CODE]
    user = await cookie_user(request)
    if user is None:
        return login_redirect(request, _here(typed))
    return _enter_page(request, user, typed)


@same_origin
async def activate_submit(request: Request) -> Response:
    form = await read_form(request)
    typed = form_field(form, "user_code", max_length=MAX_TYPED_CODE)
    user = await cookie_user(request)
    if user is None:  # signed out meanwhile: sign in, then back here with the code
        return login_redirect(request, _here(typed), 303)
    if not csrf_ok(request, form):
        return form_expired(request)
    action = form_field(form, "action")
    if action not in ACTIONS:
        return error_page(request, _("Choose Continue, Authorize or Cancel."))
    rt = runtime(request)
    try:
        # Keyed by what the caller proved: the signed-in user and the address.
        async with UserCodeThrottle(request.scope).attempt(f"user:{user.id}") as count_failure:
            pending = await device.find_pending(rt, typed)
            if pending is None:
                await count_failure()
    except RateLimited as exc:
        response = _enter_page(request, user, typed, status=429,
                               error=_("Too many wrong codes. Wait a few minutes, then try again."))
        response.headers["Retry-After"] = exc.headers["Retry-After"]
        return response
    if pending is None:
        return _enter_page(request, user, typed, error=_refusal(device.INVALID_CODE), status=400)
    if action == "continue":
        return _consent_page(request, pending, user)
    if action == "cancel":
        await device.deny(rt, pending)
        return render(request, "activate_done.html", approved=False, app_name=pending.app.name)
    try:
        await device.approve(rt, pending, user, signed_in_at=user.signed_in_at)
    except device.ActivationRefused as exc:
        return _enter_page(request, user, typed, error=_refusal(str(exc)), status=400)
    return render(request, "activate_done.html", approved=True, app_name=pending.app.name)


def _consent_page(request: Request, pending: device.PendingDevice, user) -> Response:
    """The authorization page's consent, for a device: its code shown to compare."""
    return render(request, "activate_consent.html", app=pending.app, user=user, error=None,
                  scopes=[(scope, scope_description(scope)) for scope in pending.scopes], bot=False,
                  user_code=pending.shown_code, switch_next=_here(pending.shown_code), redirect_host="")
