"""Browser pages: login, sign-up, logout, the authorization (consent) page, the authorized
apps, and the demo redirect target.

Every page sends anti-framing, a strict CSP, no referrer to other sites and no caching.
Forms carry a CSRF token bound to a cookie and to the session (an HMAC over both), and
every form POST is refused when another site sent it (``same_origin``). The session lives
in an HttpOnly, SameSite=Lax cookie that is Secure when the public URL is https.
"""

from __future__ import annotations

import functools
import logging
import time
from datetime import datetime
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from babel.dates import format_date
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from fluxer_oauth.core import credentials
from fluxer_oauth.core.errors import ApiError
from fluxer_oauth.core.ids import parse_snowflake
from fluxer_oauth.core.permissions import PERMISSIONS, defined_only
from fluxer_oauth.oauth import authorize as authz
from fluxer_oauth.oauth.params import Params
from fluxer_oauth.platform import accounts, authorizations, guilds
from fluxer_oauth.store.errors import StoreUnavailable
from fluxer_oauth.web import flash
from fluxer_oauth.web.caller import runtime
from fluxer_oauth.web.cookies import CSRF_COOKIE, SESSION_COOKIE
from fluxer_oauth.web.i18n import _, current_locale
from fluxer_oauth.web.page_messages import field_messages, page_message
from fluxer_oauth.web.permission_labels import labelled_permissions, scope_description
from fluxer_oauth.web.ratelimit import PasswordThrottle, RateLimited, client_ip, limit, limit_registration
from fluxer_oauth.web.templating import error_html, page_headers, retry_text, templates

logger = logging.getLogger("fluxer.pages")
MAX_FORM_FIELD = 4096

def security_headers(request: Request) -> dict:
    return page_headers(runtime(request).settings.https)


def _apply(request: Request, response: Response) -> Response:
    for name, value in security_headers(request).items():
        response.headers[name] = value
    return response


# Forms sent before there is a session: their token is bound to none, so the login form
# also works in a browser that still holds a session cookie (or one a reset has ended).
BEFORE_LOGIN_TEMPLATES = frozenset({"login.html", "signup.html", "login_code.html", "forgot_password.html",
                                    "reset_password.html", "verify_email.html"})


def render(request: Request, template: str, status: int = 200, **context) -> HTMLResponse:
    seed = request.cookies.get(CSRF_COOKIE)
    fresh_seed = None
    if not seed or len(seed) > 100:
        seed = fresh_seed = credentials.new_csrf_seed()
    session = None if template in BEFORE_LOGIN_TEMPLATES else request.cookies.get(SESSION_COOKIE)
    context["csrf_token"] = credentials.csrf_token(runtime(request).secret, seed, session)
    context.setdefault("public_url", runtime(request).settings.public_url)
    response = HTMLResponse(templates.get_template(template).render(**context), status_code=status)
    if fresh_seed:
        _set_cookie(request, response, CSRF_COOKIE, fresh_seed, max_age=None)
    return _apply(request, response)


def redirect(request: Request, url: str, status: int = 303) -> Response:
    return _apply(request, RedirectResponse(url, status_code=status))


def error_page(request: Request, message: str | None = None, *, status: int = 400, heading: str | None = None,
               hint: str | None = None) -> HTMLResponse:
    """The error page (templating.error_html) from a page handler: the status's heading and
    sentence unless the handler says more; 5xx name the request id."""
    body = error_html(status, public_url=runtime(request).settings.public_url,
                      request_id=getattr(request.state, "request_id", None), message=message, heading=heading,
                      hint=hint)
    return _apply(request, HTMLResponse(body, status_code=status))


def _set_cookie(request: Request, response: Response, name: str, value: str, max_age: int | None) -> None:
    response.set_cookie(
        name, value, max_age=max_age, path="/", httponly=True, samesite="lax",
        secure=runtime(request).settings.https,
    )


async def read_form(request: Request) -> Params:
    body = await request.body()
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError):
        pairs = []
    return Params.from_pairs(pairs)


def form_field(params: Params, name: str, *, max_length: int = MAX_FORM_FIELD, multiline: bool = False) -> str:
    """A form field's text, or "" when it is missing, repeated, too long or has control characters."""
    try:
        return params.get(name, max_length=max_length, multiline=multiline) or ""
    except ValueError:
        return ""


MAX_PASSWORD_FIELD = 1024  # longer than any password the platform takes: it refuses the rest with the reason


def password_field(params: Params, name: str = "password") -> str:
    """A password field exactly as typed (never trimmed: the API takes spaces as part of a
    password, so the pages must too), or "" when missing, repeated or far too long."""
    return params.exact(name, max_length=MAX_PASSWORD_FIELD) or ""


def form_expired(request: Request) -> HTMLResponse:
    """The answer to a form whose CSRF token does not match this browser."""
    return error_page(request, _("Your form expired. Go back and try again."), status=403,
                      heading=_("Something went wrong"))


def login_redirect(request: Request, next_path: str, status: int = 302, *, again: bool = False) -> Response:
    """To the login page, which sends the user back to ``next_path`` afterwards; ``again``:
    the user is signed in but must sign in again (OpenID Connect's prompt=login, max_age)."""
    return redirect(request, "/login?" + ("again=1&" if again else "") + "next=" + quote(next_path, safe=""), status)


AUTHORIZE_PAGE = "/oauth2/authorize"


def _unmarked(query: str) -> list[tuple[str, str]]:
    """An authorization request's parameters without any login marker (authz.LOGIN_AFTER)."""
    return [(name, value) for name, value in parse_qsl(query, keep_blank_values=True) if name != authz.LOGIN_AFTER]


def _without_marker(query: str) -> str:
    """The authorization request to come back to after the login page (the login adds a
    fresh marker: _mark_sign_in)."""
    return f"{AUTHORIZE_PAGE}?" + urlencode(_unmarked(query))


def _mark_sign_in(secret: bytes, next_url: str, session_token: str) -> str:
    """After a sign-in that leads to an authorization request: mark the request as one this
    session's sign-in was made for (authz.LOGIN_AFTER), so prompt=login and max_age are
    satisfied by it, once."""
    path, _, query = next_url.partition("?")
    if path != AUTHORIZE_PAGE:
        return next_url
    pairs = _unmarked(query)
    client_id = next((value for name, value in pairs if name == "client_id"), "")
    pairs.append((authz.LOGIN_AFTER, authz.login_marker(secret, session_token, client_id, time.time())))
    return f"{AUTHORIZE_PAGE}?" + urlencode(pairs)


def csrf_ok(request: Request, params: Params, *, before_login: bool = False) -> bool:
    """The form's token matches this browser's CSRF cookie and its session cookie (no
    session for the login form)."""
    session = None if before_login else request.cookies.get(SESSION_COOKIE)
    return credentials.csrf_valid(runtime(request).secret, request.cookies.get(CSRF_COOKIE),
                                  form_field(params, "csrf_token"), session)


@functools.lru_cache(maxsize=8)
def public_origin(public_url: str) -> str:
    """The origin a browser sends for our pages: scheme://host[:port], no default port."""
    parts = urlsplit(public_url)
    scheme = parts.scheme.lower()
    host = parts.netloc.rpartition("@")[2].lower()
    default_port = {"http": ":80", "https": ":443"}.get(scheme)
    if default_port and host.endswith(default_port):
        host = host[: -len(default_port)]
    return f"{scheme}://{host}"


def sent_from_this_site(request: Request) -> bool:
    """False when the browser says another site sent the request. Without Origin (and
    without Sec-Fetch-Site) it is no browser's cross-site form: the CSRF token decides."""
    origins = request.headers.getlist("origin")
    if origins:
        expected = public_origin(runtime(request).settings.public_url)
        return all(origin.strip().lower() == expected for origin in origins)
    return request.headers.get("sec-fetch-site", "").strip().lower() not in ("cross-site", "same-site")


def same_origin(handler):
    """For every state-changing form POST of the pages: refuse (403) a request another site
    sent, before the handler reads anything. Defence in depth behind the CSRF token."""
    @functools.wraps(handler)
    async def checked(request: Request) -> Response:
        if not sent_from_this_site(request):
            return error_page(request, _("This form was sent from another site, so it was not accepted."),
                              status=403, heading=_("Request refused"))
        return await handler(request)
    return checked


def safe_next(value: str | None) -> str:
    """Only same-origin paths: never an open redirect."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    if any(ord(ch) < 0x20 for ch in value) or urlsplit(value).netloc:
        return "/"
    return value


async def cookie_user(request: Request):
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    return await accounts.session_user(runtime(request), token)


# --- login ----------------------------------------------------------------------------------

LOGIN_PAGE = "/login"
LOGIN_FLASH = "login"  # the flash's scope: a notice for the login page after a redirect to it


def _login_notices() -> dict[str, str]:
    """What the login page says after a redirect to it (the flash names one of these)."""
    return {
        "password_reset": _("Your password was changed. Sign in with the new one."),
        "sign_in_again": _("Your sign-in took too long. Log in again."),
    }


def login_url(next_url: str) -> str:
    """The login page, leading on to ``next_url`` (a safe_next path) afterwards."""
    return LOGIN_PAGE if next_url == "/" else f"{LOGIN_PAGE}?next={quote(next_url, safe='')}"


def to_login_with_notice(request: Request, next_url: str, notice: str) -> Response:
    """303 to the login page (leading on to ``next_url``), which then says ``notice``."""
    response = redirect(request, login_url(next_url))
    return flash.put(request, response, path=LOGIN_PAGE, scope=LOGIN_FLASH, payload={"notice": notice})


async def login_page(request: Request) -> Response:
    next_url = safe_next(request.query_params.get("next"))
    again = request.query_params.get("again") == "1"
    user = await cookie_user(request)
    if user is not None and not again:  # signing in as someone else starts with logout
        return redirect(request, next_url)
    carried = flash.take(request, LOGIN_FLASH) or {}
    notice = _login_notices().get(carried.get("notice")) if isinstance(carried.get("notice"), str) else None
    response = render(request, "login.html", next=next_url, login=user.username if user is not None else "",
                      error=None, again=again, notice=notice)
    return flash.forget(request, response, path=LOGIN_PAGE)


@same_origin
async def login_submit(request: Request) -> Response:
    params = await read_form(request)
    next_url = safe_next(form_field(params, "next"))
    login_name = form_field(params, "login")
    if not csrf_ok(request, params, before_login=True):
        return render(request, "login.html", 403, next=next_url, login=login_name,
                      error=_("Your form expired. Please try again."))
    try:
        signed_in = await accounts.login(runtime(request), login_name, password_field(params),
                                         PasswordThrottle(request.scope))
    except RateLimited as exc:
        return with_retry_after(render(
            request, "login.html", 429, next=next_url, login=login_name,
            error=_("Too many failed attempts.") + " " + retry_text(retry_seconds(exc))), exc)
    except ApiError:
        return render(request, "login.html", 400, next=next_url, login=login_name,
                      error=_("Login or password is incorrect."))
    if signed_in.ticket is not None:  # the second step: a code (account_pages.py)
        return render(request, "login_code.html", next=next_url, ticket=signed_in.ticket, error=None)
    return await start_browser_session(request, signed_in.session, next_url)


async def start_browser_session(request: Request, token: str, next_url: str) -> Response:
    """After a login or a sign-up: the session this browser had ends, the new session's
    cookie is set, and 303 to ``next_url`` (marked as signed in for, when it is an
    authorization request: _mark_sign_in)."""
    await _end_cookie_session(request)  # the session this browser had, if any, ends here
    # 303, never 307: the browser must not re-post the credentials to the next page.
    response = redirect(request, _mark_sign_in(runtime(request).secret, next_url, token), 303)
    _set_cookie(request, response, SESSION_COOKIE, token, runtime(request).settings.session_ttl)
    return response


def retry_seconds(exc: RateLimited) -> int:
    try:
        return max(1, int(exc.headers.get("Retry-After", "60")))
    except ValueError:
        return 60


def with_retry_after(response: Response, exc: RateLimited) -> Response:
    response.headers["Retry-After"] = str(retry_seconds(exc))
    return response


# --- sign-up --------------------------------------------------------------------------------

SIGNUP_FIELDS = ("username", "email", "password", "password_confirm")


async def signup_page(request: Request) -> Response:
    next_url = safe_next(request.query_params.get("next"))
    if await cookie_user(request) is not None:  # already signed in: on to where the user was going
        return redirect(request, next_url)
    return _signup_form(request, 200, next_url)


@same_origin
async def signup_submit(request: Request) -> Response:
    """The form of ``POST /api/v1/auth/register`` (same rules, same throttle), plus the
    password typed twice; on success signed in as a login is, and on to ``next``. The
    typed username and email come back with the errors, never the password."""
    params = await read_form(request)
    next_url = safe_next(form_field(params, "next"))
    username, email = form_field(params, "username"), form_field(params, "email")
    password = password_field(params)
    kept = {"username": username, "email": email}
    if not csrf_ok(request, params, before_login=True):
        return _signup_form(request, 403, next_url, error=_("Your form expired. Please try again."), **kept)
    if password != password_field(params, "password_confirm"):
        return _signup_form(request, 400, next_url, errors={"password_confirm": _("The two passwords differ.")},
                            **kept)
    try:
        await limit_registration(request.scope)
        token, _user = await accounts.register(runtime(request), username, email, password)
    except RateLimited as exc:
        return with_retry_after(_signup_form(
            request, 429, next_url, error=_("Too many accounts were created from your network.") + " "
            + retry_text(retry_seconds(exc)), **kept), exc)
    except ApiError as exc:
        errors = field_messages(exc)  # a weak password's reason included, translated
        general = errors.pop("", None) or ("" if errors else page_message(exc))
        shown = {name: text for name, text in errors.items() if name in SIGNUP_FIELDS}
        if len(shown) < len(errors):  # a field the form does not have: said above the form
            general = page_message(exc)
        return _signup_form(request, exc.status, next_url, errors=shown, error=general or None, **kept)
    return await start_browser_session(request, token, next_url)


def _signup_form(request: Request, status: int, next_url: str, *, username: str = "", email: str = "",
                 errors: dict[str, str] | None = None, error: str | None = None) -> Response:
    errors = errors or {}
    first_wrong = next((name for name in SIGNUP_FIELDS if name in errors), None)
    return render(request, "signup.html", status, next=next_url, username=username, email=email, errors=errors,
                  error=error, focus=first_wrong or "username")


# --- logout ---------------------------------------------------------------------------------

async def logout_page(request: Request) -> Response:
    """GET never logs out (a link or a prefetch must not): it shows the button."""
    user = await cookie_user(request)
    if user is None:
        return redirect(request, "/login", 302)
    return render(request, "logout.html", user=user)


@same_origin
async def logout_submit(request: Request) -> Response:
    """Ends the session server-side (the row, not only the cookie) and returns to the login
    page; with ``next`` ("Not you?" on the consent page) the login leads back there."""
    form = await read_form(request)
    if not csrf_ok(request, form):
        return form_expired(request)
    await _end_cookie_session(request)
    next_url = safe_next(form_field(form, "next"))
    response = redirect(request, "/login") if next_url == "/" else login_redirect(request, next_url, 303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax",
                           secure=runtime(request).settings.https)
    return response


async def _end_cookie_session(request: Request) -> None:
    token = request.cookies.get(SESSION_COOKIE)
    if token and credentials.looks_like_session_token(token):
        await accounts.logout(runtime(request), token)


# --- authorize ------------------------------------------------------------------------------

async def authorize_page(request: Request) -> Response:
    query = request.url.query
    try:
        return await _authorize(request, Params.from_pairs(request.query_params.multi_items()), query, decision=None)
    except StoreUnavailable:  # before the redirect URI could be validated: say so here
        return unavailable_page(request)


@same_origin
async def authorize_submit(request: Request) -> Response:
    form = await read_form(request)
    query = form_field(form, "request")
    if not csrf_ok(request, form):
        return form_expired(request)
    params = Params.from_pairs(parse_qsl(query, keep_blank_values=True))
    decision = form_field(form, "action")
    if decision not in ("authorize", "cancel"):
        return error_page(request, _("Choose Authorize or Cancel."))
    guild_choice = parse_snowflake(form_field(form, "guild_id")) if form_field(form, "guild_id") else None
    ticked = _ticked_permissions(await request.body())
    try:
        return await _authorize(request, params, query, decision=decision, guild_choice=guild_choice,
                                ticked=ticked)
    except StoreUnavailable:
        return unavailable_page(request)


MAX_TICKED = 64  # more than there are permissions: a longer list is not the consent form's


def _ticked_permissions(body: bytes) -> int:
    """The bits of the ``permission`` boxes left ticked on the consent form (each box's value
    is a permission's name); unknown names are ignored. ``approve`` keeps only the requested
    ones of these: a forged box grants nothing, and no box at all grants no permission."""
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError):
        return 0
    ticked = 0
    for value in [value for name, value in pairs if name == "permission"][:MAX_TICKED]:
        ticked |= PERMISSIONS.get(value.strip(), 0)
    return ticked


async def _authorize(request: Request, params: Params, query: str, *, decision: str | None,
                     guild_choice: int | None = None, ticked: int | None = None) -> Response:
    rt = runtime(request)
    # GET answers with 302; after a form POST, 303 so the browser follows with a GET.
    status = 302 if decision is None else 303
    user = await cookie_user(request)
    await limit(request.scope, "authorize", f"user:{user.id}" if user is not None else f"ip:{client_ip(request.scope)}")
    try:
        auth_request = await authz.parse_request(rt, params)
    except authz.UnsafeRequest as exc:
        return error_page(request, str(exc), hint=_("Tell the developer of the application that sent you here."))
    except authz.RedirectError as exc:
        return redirect(request, authz.error_redirect(rt, exc.redirect, exc.error, exc.description, exc.state), status)

    try:
        if user is None or auth_request.needs_fresh_login(
                user.signed_in_at, time.time(), just_signed_in=_just_signed_in(request, params, auth_request)):
            if "none" in auth_request.prompts:
                raise authz.RedirectError("login_required", "the user is not logged in" if user is None
                                          else "the user must sign in again")
            return login_redirect(request, _without_marker(query), status, again=user is not None)
        await authz.check_hinted_user(rt, auth_request, user)
        authz.check_user_may_grant(rt, auth_request, user)
        authz.check_bot_allowed(auth_request, user)
        if decision == "cancel":
            if auth_request.redirect_uri is None:
                return error_page(request, _("You cancelled adding the bot."), status=200, heading=_("Cancelled"),
                                  hint="")
            return redirect(request, authz.deny(rt, auth_request), status)
        if decision == "authorize":
            # The form's boxes: the bot gets the requested permissions left ticked, no more.
            return redirect(request, await authz.approve(rt, auth_request, user, guild_id=guild_choice,
                                                         permissions=ticked, signed_in_at=user.signed_in_at),
                            status)
        if "none" in auth_request.prompts:
            if not await authz.remembered_consent_covers(rt, auth_request, user):
                raise authz.RedirectError("consent_required", "the user has not granted these scopes")
            return redirect(request, await authz.approve(rt, auth_request, user, signed_in_at=user.signed_in_at),
                            status)
    except authz.RedirectError as exc:
        return redirect(request, authz.error_redirect(rt, auth_request.redirect_uri, exc.error, exc.description,
                                                      auth_request.state), status)
    except StoreUnavailable:
        if auth_request.redirect_uri is None:
            return unavailable_page(request)
        return redirect(request, authz.error_redirect(rt, auth_request.redirect_uri, "temporarily_unavailable",
                                                      "the server is temporarily unavailable", auth_request.state),
                        status)
    except ApiError as exc:  # a refused bot installation: say why on the page
        if exc.code == "BOT_IS_PRIVATE":
            return error_page(request, page_message(exc), status=exc.status, heading=_("This bot is private"),
                              hint="")
        return await _consent_page(request, auth_request, user, query, error=page_message(exc), status=exc.status,
                                   guild_choice=guild_choice, ticked=ticked)
    except Exception:
        # The user is still sent back, with a request id in the log to find what happened.
        logger.exception("authorize failed", extra={"fields": {"request_id": request.state.request_id}})
        if auth_request.redirect_uri is None:
            return error_page(request, status=500)
        return redirect(request, authz.error_redirect(rt, auth_request.redirect_uri, "server_error",
                                                      "an unexpected error occurred", auth_request.state), status)
    return await _consent_page(request, auth_request, user, query)


def _just_signed_in(request: Request, params: Params, auth_request) -> bool:
    try:
        marker = params.get(authz.LOGIN_AFTER)
    except ValueError:  # repeated: not one the login page made
        return False
    return authz.just_signed_in(runtime(request).secret, marker, request.cookies.get(SESSION_COOKIE),
                                str(auth_request.app.id), time.time())


def unavailable_page(request: Request) -> Response:
    return error_page(request, status=503)


async def _consent_page(request: Request, auth_request, user, query: str, *, error: str | None = None,
                        status: int = 200, guild_choice: int | None = None, ticked: int | None = None) -> Response:
    """The consent form. With ``bot``: the servers the bot may be added to (the user holds
    Manage Server or Administrator there and the bot is not in it yet; only the preselected
    one when the request locks it), as radio buttons with their icons, and each requested
    permission as a box ticked by default (``ticked``: the boxes of a refused submission)."""
    bot = "bot" in auth_request.scopes
    eligible = (await guilds.manageable_guilds(runtime(request), user.id, bot_id=auth_request.app.bot_id)
                if bot else [])
    locked = auth_request.disable_guild_select and auth_request.guild_id is not None
    if locked:
        eligible = [g for g in eligible if g["id"] == str(auth_request.guild_id)]
    eligible_ids = {g["id"] for g in eligible}
    selected = next((str(choice) for choice in (guild_choice, auth_request.guild_id)
                     if choice is not None and str(choice) in eligible_ids), None)
    requested = defined_only(auth_request.permissions) if bot else 0
    granted = requested if ticked is None else requested & ticked
    return render(
        request,
        "consent.html",
        status,
        app=auth_request.app,
        user=user,
        error=error,
        scopes=[(scope, scope_description(scope)) for scope in auth_request.scopes],
        bot=bot,
        guilds=eligible,
        selected_guild=selected,
        guild_locked=locked,
        permissions=[(name, label, bool(granted & PERMISSIONS[name]))
                     for name, label in labelled_permissions(requested)],
        request_query=query,
        switch_next=f"/oauth2/authorize?{query}",
        redirect_host=urlsplit(auth_request.redirect_uri).netloc if auth_request.redirect_uri else "",
    )


async def bot_added_page(request: Request) -> Response:
    """Where a bot-only install ends (no redirect URI)."""
    rt = runtime(request)
    user = await cookie_user(request)
    client_id = parse_snowflake(request.query_params.get("client_id", ""))
    guild_id = parse_snowflake(request.query_params.get("guild_id", ""))
    app_name = guild_name = None
    if client_id is not None:
        app_name, guild_name = await guilds.install_names(rt, client_id, guild_id, user.id if user else None)
    return render(request, "bot_added.html", app_name=app_name, guild_name=guild_name)


# --- demo -----------------------------------------------------------------------------------

async def demo_callback(request: Request) -> Response:
    shown = [(name, value[:256]) for name, value in request.query_params.multi_items()
             if name in ("code", "state", "iss", "error", "error_description")]
    return render(request, "demo_callback.html", params=shown)


# --- settings: authorized apps -----------------------------------------------------------------

AUTHORIZED_APPS = "/settings/authorized-apps"
REVOKED_FLASH = "authorized-apps"  # the flash's scope: "Access of X revoked." after the 303


async def authorized_apps_page(request: Request) -> Response:
    user = await cookie_user(request)
    if user is None:
        return login_redirect(request, AUTHORIZED_APPS)
    apps = await authorizations.list_authorizations(runtime(request), user.id)
    revoked = flash.take(request, REVOKED_FLASH)
    notice = _("Access of %(name)s revoked.") % {"name": revoked["name"]} if revoked and "name" in revoked else None
    response = render(request, "authorized_apps.html", user=user, apps=[_shown_authorization(item) for item in apps],
                      notice=notice)
    return flash.forget(request, response, path=AUTHORIZED_APPS)


def _shown_authorization(item: dict) -> dict:
    """One authorized application as the page shows it: what it may do in the consent page's
    words, and its dates in the reader's language."""
    return {
        "application": item["application"],
        "scopes": [scope_description(scope) for scope in item["scopes"]],
        "since": _human_date(item["first_authorized_at"]),
        "last_used": _human_date(item["last_used_at"]),
    }


def _human_date(iso_time: str | None) -> str | None:
    """"30 November 2026" (as the locale writes it) of an API timestamp."""
    if not iso_time:
        return None
    return format_date(datetime.fromisoformat(iso_time.replace("Z", "+00:00")), format="long",
                       locale=current_locale())


async def _authorization_of(request: Request, user) -> dict | None:
    """The signed-in user's authorization of the application the path names, or None (an
    unknown application, or one the user has not authorized)."""
    application_id = parse_snowflake(request.path_params["application_id"])
    if application_id is None:
        return None
    items = await authorizations.list_authorizations(runtime(request), user.id)
    return next((item for item in items if item["application"]["id"] == str(application_id)), None)


async def revoke_app_page(request: Request) -> Response:
    """Revoking asks first, without JavaScript: this page says what ends, and its form
    POSTs the revocation (revoke_app_submit); Cancel goes back to the list."""
    user = await cookie_user(request)
    if user is None:
        return login_redirect(request, request.url.path)
    item = await _authorization_of(request, user)
    if item is None:
        return error_page(request, _("You have not authorized this application."), status=404)
    return render(request, "revoke_confirm.html", user=user, item=_shown_authorization(item))


@same_origin
async def revoke_app_submit(request: Request) -> Response:
    user = await cookie_user(request)
    if user is None:
        return login_redirect(request, AUTHORIZED_APPS, 303)
    form = await read_form(request)
    if not csrf_ok(request, form):
        return form_expired(request)
    response = redirect(request, AUTHORIZED_APPS, 303)
    item = await _authorization_of(request, user)
    if item is None:  # already gone (a second press of the button): the list shows the truth
        return response
    try:
        await authorizations.revoke_authorization(runtime(request), user.id, int(item["application"]["id"]))
    except ApiError:
        return response  # revoked in between
    return flash.put(request, response, path=AUTHORIZED_APPS, scope=REVOKED_FLASH,
                     payload={"name": item["application"]["name"]})
