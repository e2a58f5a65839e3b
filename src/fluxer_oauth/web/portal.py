"""The developer portal: an owner's applications, their settings, credential resets with
password confirmation (each new credential shown once), the OpenID Connect endpoints, and
an authorize-URL generator. Same rules as the JSON API; it calls the same platform functions."""

from __future__ import annotations

import re
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from fluxer_oauth.core.errors import ApiError
from fluxer_oauth.core.ids import parse_snowflake
from fluxer_oauth.core.permissions import PERMISSIONS
from fluxer_oauth.core.scopes import SCOPE, SCOPES, format_scopes
from fluxer_oauth.core.signing import DEFAULT_ALGORITHM, SIGNING_ALGORITHMS
from fluxer_oauth.oauth.metadata import DISCOVERY_PATH, metadata
from fluxer_oauth.platform import applications
from fluxer_oauth.web.caller import runtime
from fluxer_oauth.web.ratelimit import PasswordThrottle
from fluxer_oauth.web.pages import (
    cookie_user,
    csrf_ok,
    error_page,
    form_expired,
    form_field,
    login_redirect,
    read_form,
    redirect,
    render,
    same_origin,
)

LIST = "/developers/applications"
ICON_PATH = LIST + "/{application_id}/icon"
# Page routes whose form may carry an image (the edge reads up to settings.image_body_bytes
# of them, from a browser with a session cookie).
LARGE_BODIES = (("POST", re.compile(LIST + r"/[0-9]{1,20}/icon")),)
MAX_ICON_FIELD = 12 * 1024 * 1024  # a data URI of the largest image the API takes (settings.image_body_bytes)
# What the application page says after a save (?saved=...): switching the client type ends
# the secret, which the owner must hear about.
SAVED = {
    "1": "Saved.",
    "icon": "Icon saved.",
    "public": "Saved. This is now a public client: its client secret no longer works.",
    "confidential": "Saved. This is now a confidential client: reset the client secret below to get one "
                    "(nobody knows the old one).",
}
# The endpoints a relying party needs besides the issuer and discovery URL, in the order the
# page lists them, by their discovery field.
ENDPOINTS = (("Authorization", "authorization_endpoint"), ("Token", "token_endpoint"),
             ("Userinfo", "userinfo_endpoint"), ("JWKS", "jwks_uri"),
             ("Device authorization", "device_authorization_endpoint"))


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.replace("\r", "").split("\n") if line.strip()]


def _field(form, name: str, max_length: int = 4096) -> str:
    return form_field(form, name, max_length=max_length, multiline=True)


def _link(form, name: str) -> str | None:
    """A link field as typed, however long (the platform refuses what is too long, with the
    reason; a length cut here would remove the link instead), "" for none; None when it is
    repeated or holds control characters."""
    try:
        return form.get(name, max_length=1 << 20) or ""
    except ValueError:
        return None


def _not_found(request: Request) -> Response:
    return error_page(request, "There is no such application of yours.", status=404, heading="Not found", hint="")


def _message(exc: ApiError) -> str:
    details = exc.details.get("errors") or []
    return "; ".join(f"{e['path']}: {e['message']}" for e in details) or exc.message


async def home(request: Request) -> Response:
    return redirect(request, LIST, 302)


async def list_page(request: Request) -> Response:
    user = await cookie_user(request)
    if user is None:
        return login_redirect(request, request.url.path)
    apps = await applications.list_owned(runtime(request), user)
    return render(request, "portal_list.html", user=user, apps=apps, error=None)


@same_origin
async def create_submit(request: Request) -> Response:
    user = await cookie_user(request)
    if user is None:
        return login_redirect(request, request.url.path)
    form = await read_form(request)
    if not csrf_ok(request, form):
        return form_expired(request)
    try:
        created = await applications.create(
            runtime(request), user, name=_field(form, "name", 200), redirect_uris=_lines(_field(form, "redirect_uris")),
            bot=_field(form, "bot") == "1",
        )
    except ApiError as exc:
        apps = await applications.list_owned(runtime(request), user)
        return render(request, "portal_list.html", exc.status, user=user, apps=apps, error=_message(exc))
    secrets = [("Client secret", created["client_secret"], "client-secret")]
    if "bot" in created:
        secrets.append(("Bot token", created["bot"]["token"], "bot-token"))
    return await _app_page(request, user, int(created["id"]), secrets=secrets, notice="Application created.")


def _oidc_endpoints(settings) -> list[tuple[str, str, str]]:
    """(label, URL, element id) of what a relying party configures, read from the discovery
    document itself so the page can never disagree with it."""
    document = metadata(settings)
    rows = [("Issuer", document["issuer"], "issuer"), ("Discovery", document["issuer"] + DISCOVERY_PATH, "discovery")]
    rows += [(label, document[field], field) for label, field in ENDPOINTS]
    return [(label, url, f"oidc-{name}") for label, url, name in rows]


def _render_app(request: Request, user, view: dict, status: int = 200, *, secrets=(), notice=None,
                error=None) -> Response:
    return render(request, "portal_app.html", status, user=user, app=view, secrets=list(secrets), notice=notice,
                  error=error, endpoints=_oidc_endpoints(runtime(request).settings), algorithms=SIGNING_ALGORITHMS,
                  default_algorithm=DEFAULT_ALGORITHM)


async def _app_page(request: Request, user, application_id: int, *, secrets=(), notice=None, error=None,
                    status: int = 200) -> Response:
    app, bot_user = await applications.owned(runtime(request), user, application_id)
    view = applications.application_json(app, owner=user, bot_user=bot_user, private=True)
    return _render_app(request, user, view, status, secrets=secrets, notice=notice, error=error)


def _application_id(request: Request) -> int | None:
    return parse_snowflake(request.path_params["application_id"])


async def _owned_view(request: Request):
    """(owner, application view) of a portal page about one application, or the response
    that refuses it (login for strangers, 404 for other people's applications)."""
    user = await cookie_user(request)
    if user is None:
        return None, None, login_redirect(request, request.url.path)
    application_id = _application_id(request)
    try:
        if application_id is None:
            raise applications.UNKNOWN_APPLICATION
        app, bot_user = await applications.owned(runtime(request), user, application_id)
    except ApiError:
        return None, None, _not_found(request)
    return user, applications.application_json(app, owner=user, bot_user=bot_user, private=True), None


async def app_page(request: Request) -> Response:
    user, view, refusal = await _owned_view(request)
    if refusal is not None:
        return refusal
    return _render_app(request, user, view, notice=SAVED.get(request.query_params.get("saved", "")))


async def _guarded(request: Request):
    """(user, form, application id) of a portal POST, or the response that refuses it."""
    user = await cookie_user(request)
    if user is None:
        return None, None, None, login_redirect(request, request.url.path)
    form = await read_form(request)
    if not csrf_ok(request, form):
        return None, None, None, form_expired(request)
    application_id = _application_id(request)
    if application_id is None:
        return None, None, None, _not_found(request)
    return user, form, application_id, None


@same_origin
async def update_submit(request: Request) -> Response:
    user, form, application_id, refusal = await _guarded(request)
    if refusal is not None:
        return refusal
    changes = {
        "name": _field(form, "name", 200),
        "description": _field(form, "description", 1000),
        "redirect_uris": _lines(_field(form, "redirect_uris")),
        "bot_public": _field(form, "bot_public") == "1",
        "bot_require_code_grant": _field(form, "bot_require_code_grant") == "1",
        "public_client": _field(form, "public_client") == "1",
        "id_token_signed_response_alg": _field(form, "id_token_signed_response_alg", 16) or None,
    }
    for link in applications.LINK_FIELDS:
        changes[link] = _link(form, link)
    try:
        malformed = [link for link in applications.LINK_FIELDS if changes[link] is None]
        if malformed:
            return await _app_page(request, user, application_id, error=f"{malformed[0]}: is not a well formed URL",
                                   status=400)
        before, _ = await applications.owned(runtime(request), user, application_id)
        after = await applications.update(runtime(request), user, application_id, changes)
    except ApiError as exc:
        if exc.status == 404:
            return _not_found(request)
        return await _app_page(request, user, application_id, error=_message(exc), status=exc.status)
    switched = after["public_client"] != bool(before.public_client)
    saved = ("public" if after["public_client"] else "confidential") if switched else "1"
    return redirect(request, f"{LIST}/{application_id}?saved={saved}", 303)


@same_origin
async def icon_submit(request: Request) -> Response:
    """Upload (a data URI the page's script read from the chosen file) or remove the icon."""
    user, form, application_id, refusal = await _guarded(request)
    if refusal is not None:
        return refusal
    action = _field(form, "action", 16)
    icon = form_field(form, "icon", max_length=MAX_ICON_FIELD) if action == "upload" else None
    if action not in ("upload", "remove") or (action == "upload" and not icon):
        return await _app_page(request, user, application_id, error="Choose an image file first.", status=400)
    try:
        await applications.update(runtime(request), user, application_id, {"icon": icon})
    except ApiError as exc:
        if exc.status == 404:
            return _not_found(request)
        return await _app_page(request, user, application_id, error=_message(exc), status=exc.status)
    return redirect(request, f"{LIST}/{application_id}?saved=icon", 303)


@same_origin
async def reset_secret_submit(request: Request) -> Response:
    return await _reset(request, "secret")


@same_origin
async def reset_token_submit(request: Request) -> Response:
    return await _reset(request, "token")


async def _reset(request: Request, which: str) -> Response:
    user, form, application_id, refusal = await _guarded(request)
    if refusal is not None:
        return refusal
    password = _field(form, "password", 128)
    try:
        if which == "secret":
            value = (await applications.reset_client_secret(runtime(request), user, application_id, password,
                                                            PasswordThrottle(request.scope)))["client_secret"]
            secret = ("New client secret", value, "client-secret")
        else:
            value = (await applications.reset_bot_token(runtime(request), user, application_id, password,
                                                        PasswordThrottle(request.scope)))["token"]
            secret = ("New bot token", value, "bot-token")
    except ApiError as exc:
        if exc.status == 404:
            return _not_found(request)
        if exc.status == 429:
            return await _app_page(request, user, application_id, status=429,
                                   error="Too many failed attempts. Wait a few minutes and try again.")
        if exc.status == 400:  # nothing to reset (a public client's secret, a bot-less app's token)
            sentence = exc.message[:1].upper() + exc.message[1:] + "."
            return await _app_page(request, user, application_id, error=sentence, status=400)
        return await _app_page(request, user, application_id, error="Password confirmation failed.", status=403)
    return await _app_page(request, user, application_id, secrets=[secret], notice="The old one no longer works.")


@same_origin
async def delete_submit(request: Request) -> Response:
    user, _form, application_id, refusal = await _guarded(request)
    if refusal is not None:
        return refusal
    try:
        await applications.delete(runtime(request), user, application_id)
    except ApiError:
        pass  # not theirs, or already gone: the list shows the truth
    return redirect(request, LIST, 303)


async def url_generator_page(request: Request) -> Response:
    user, view, refusal = await _owned_view(request)
    if refusal is not None:
        return refusal
    offered = [scope.name for scope in SCOPES if not scope.staff_only or view["trusted"]]
    if "bot" not in view:
        offered = [scope for scope in offered if scope != "bot"]
    chosen_scopes = [scope for scope in request.query_params.getlist("scope") if scope in offered]
    chosen_permissions = [p for p in request.query_params.getlist("permission") if p in PERMISSIONS]
    chosen_redirect = request.query_params.get("redirect_uri")
    if chosen_redirect not in view["redirect_uris"]:
        chosen_redirect = view["redirect_uris"][0] if view["redirect_uris"] else None
    url = error = None
    pkce_required = False
    if chosen_scopes:
        query = {"client_id": view["id"], "scope": format_scopes(chosen_scopes)}
        if chosen_scopes != ["bot"]:
            if chosen_redirect is None:
                error = "Add a redirect URI to the application first."
            query.update({"response_type": "code", "redirect_uri": chosen_redirect})
            pkce_required = view["public_client"]  # the client adds its own code_challenge
        if "bot" in chosen_scopes:
            permissions = 0
            for name in chosen_permissions:
                permissions |= PERMISSIONS[name]
            query["permissions"] = str(permissions)
        if error is None:
            url = f"{runtime(request).settings.public_url}/oauth2/authorize?{urlencode(query)}"
    return render(
        request, "url_generator.html", user=user, app=view, url=url, error=error,
        scopes=[(scope, SCOPE[scope].description) for scope in offered],
        chosen_scopes=chosen_scopes, chosen_permissions=chosen_permissions, chosen_redirect=chosen_redirect,
        permission_list=list(PERMISSIONS), pkce_required=pkce_required,
    )
