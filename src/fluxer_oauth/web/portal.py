"""The developer portal: an owner's applications, each in three sections (General
information, OAuth2, Bot) with a form of its own, credential resets and deletion behind
confirmation pages (password confirmed), the OpenID Connect endpoints, and an authorize-URL
generator. Same rules as the JSON API; it calls the same platform functions.

Every successful POST answers 303 to a page (Post/Redirect/Get). A credential made by a
POST (a new application's client secret and bot token, a reset) is shown once by the page
the redirect leads to: it travels there in a sealed one-time cookie (web/flash.py)."""

from __future__ import annotations

import re
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from fluxer_oauth.core.errors import ApiError
from fluxer_oauth.core.ids import parse_snowflake
from fluxer_oauth.core.permissions import PERMISSIONS
from fluxer_oauth.core.scopes import SCOPES, format_scopes
from fluxer_oauth.core.signing import DEFAULT_ALGORITHM, SIGNING_ALGORITHMS
from fluxer_oauth.oauth.metadata import DISCOVERY_PATH, metadata
from fluxer_oauth.platform import applications
from fluxer_oauth.platform.passwords import check_password
from fluxer_oauth.platform.validation import invalid_form_body
from fluxer_oauth.web import flash
from fluxer_oauth.web.caller import runtime
from fluxer_oauth.web.i18n import _
from fluxer_oauth.web.page_messages import page_message
from fluxer_oauth.web.pages import (
    cookie_user,
    csrf_ok,
    error_page,
    form_expired,
    form_field,
    login_redirect,
    password_field,
    read_form,
    redirect,
    render,
    same_origin,
)
from fluxer_oauth.web.permission_labels import permission_labels, scope_description
from fluxer_oauth.web.ratelimit import PasswordThrottle

LIST = "/developers/applications"
ICON_PATH = LIST + "/{application_id}/icon"
# Page routes whose form may carry an image (the edge reads up to settings.image_body_bytes
# of them, from a browser with a session cookie).
LARGE_BODIES = (("POST", re.compile(LIST + r"/[0-9]{1,20}/icon")),)
MAX_ICON_FIELD = 12 * 1024 * 1024  # a data URI of the largest image the API takes (settings.image_body_bytes)
# The sections of an application's pages, by the path after /developers/applications/{id}.
SECTION_PATHS = {"general": "", "oauth2": "/oauth2", "bot": "/bot"}
GENERATOR_ANCHOR = "#url-generator"
# The endpoints a relying party needs besides the issuer and discovery URL, in the order the
# page lists them, by their discovery field.
ENDPOINT_FIELDS = ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri",
                   "device_authorization_endpoint")
# The bot permission checkboxes, grouped as Discord groups them; a permission not listed
# here is shown under General.
PERMISSION_GROUPS = (
    ("general", ("ADMINISTRATOR", "VIEW_AUDIT_LOG", "MANAGE_GUILD", "MANAGE_ROLES", "MANAGE_CHANNELS",
                 "KICK_MEMBERS", "BAN_MEMBERS", "MODERATE_MEMBERS", "CREATE_INSTANT_INVITE", "CHANGE_NICKNAME",
                 "MANAGE_NICKNAMES", "MANAGE_EXPRESSIONS", "CREATE_EXPRESSIONS", "MANAGE_WEBHOOKS", "VIEW_CHANNEL",
                 "VIEW_CHANNEL_MEMBERS")),
    ("text", ("SEND_MESSAGES", "SEND_TTS_MESSAGES", "MANAGE_MESSAGES", "PIN_MESSAGES", "EMBED_LINKS", "ATTACH_FILES",
              "READ_MESSAGE_HISTORY", "MENTION_EVERYONE", "USE_EXTERNAL_EMOJIS", "USE_EXTERNAL_STICKERS",
              "ADD_REACTIONS", "BYPASS_SLOWMODE")),
    ("voice", ("CONNECT", "SPEAK", "STREAM", "MUTE_MEMBERS", "DEAFEN_MEMBERS", "MOVE_MEMBERS", "USE_VAD",
               "PRIORITY_SPEAKER", "UPDATE_RTC_REGION")),
)


# --- what the pages say (at request time: the request's language) ------------------------------

def _section_names() -> dict[str, str]:
    return {"general": _("General information"), "oauth2": _("OAuth2"), "bot": _("Bot")}


def _saved_notices() -> dict[str, str]:
    """What a section says after a save (?saved=...): switching the client type ends the
    secret, which the owner must hear about."""
    return {
        "1": _("Saved."),
        "icon": _("Icon saved."),
        "public": _("Saved. This is now a public client: its client secret no longer works."),
        "confidential": _("Saved. This is now a confidential client: reset the client secret below to get one "
                          "(nobody knows the old one)."),
    }


def _flash_notices() -> dict[str, str]:
    return {
        "created": _("Application created."),
        "secret_reset": _("Client secret reset. The old one no longer works."),
        "token_reset": _("Bot token reset. The old one no longer works."),
    }


def _credential_labels() -> dict[str, tuple[str, str]]:
    """(label, element id) of each credential a flash can carry."""
    return {
        "client_secret": (_("Client secret"), "client-secret"),
        "bot_token": (_("Bot token"), "bot-token"),
        "new_client_secret": (_("New client secret"), "client-secret"),
        "new_bot_token": (_("New bot token"), "bot-token"),
    }


def _group_names() -> dict[str, str]:
    return {"general": _("General permissions"), "text": _("Text permissions"), "voice": _("Voice permissions")}


def _endpoint_labels() -> dict[str, str]:
    return {"issuer": _("Issuer"), "discovery": _("Discovery"), "authorization_endpoint": _("Authorization"),
            "token_endpoint": _("Token"), "userinfo_endpoint": _("Userinfo"), "jwks_uri": _("JWKS"),
            "device_authorization_endpoint": _("Device authorization")}


# --- helpers -------------------------------------------------------------------------------------

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


def app_path(application_id, section: str = "general") -> str:
    return f"{LIST}/{application_id}{SECTION_PATHS[section]}"


def _not_found(request: Request) -> Response:
    return error_page(request, _("There is no such application of yours."), status=404, heading=_("Not found"),
                      hint="")


def _application_id(request: Request) -> int | None:
    return parse_snowflake(request.path_params["application_id"])


async def _owned_view(request: Request):
    """(owner, application view) of a portal page about one application, or the response
    that refuses it (login for strangers, 404 for other people's applications)."""
    user = await cookie_user(request)
    if user is None:  # back here after the login, with the same query (the generator's choices)
        query = request.url.query
        return None, None, login_redirect(request, request.url.path + (f"?{query}" if query else ""))
    view = await _view(request, user, _application_id(request))
    if view is None:
        return None, None, _not_found(request)
    return user, view, None


async def _view(request: Request, user, application_id: int | None) -> dict | None:
    if application_id is None:
        return None
    try:
        app, bot_user = await applications.owned(runtime(request), user, application_id)
    except ApiError:
        return None
    return applications.application_json(app, owner=user, bot_user=bot_user, private=True)


async def _guarded(request: Request):
    """(user, form, application view) of a portal POST about one application, or the
    response that refuses it."""
    user = await cookie_user(request)
    if user is None:
        return None, None, None, login_redirect(request, request.url.path)
    form = await read_form(request)
    if not csrf_ok(request, form):
        return None, None, None, form_expired(request)
    view = await _view(request, user, _application_id(request))
    if view is None:
        return None, None, None, _not_found(request)
    return user, form, view, None


def _oidc_endpoints(settings) -> list[tuple[str, str, str]]:
    """(label, URL, element id) of what a relying party configures, read from the discovery
    document itself so the page can never disagree with it."""
    document = metadata(settings)
    labels = _endpoint_labels()
    rows = [("issuer", document["issuer"]), ("discovery", document["issuer"] + DISCOVERY_PATH)]
    rows += [(field, document[field]) for field in ENDPOINT_FIELDS]
    return [(labels[name], url, f"oidc-{name}") for name, url in rows]


def _credentials_shown(payload: dict | None) -> list[tuple[str, str, str]]:
    labels = _credential_labels()
    shown = []
    for item in (payload or {}).get("credentials") or []:
        if isinstance(item, list) and len(item) == 2 and item[0] in labels and isinstance(item[1], str):
            label, element_id = labels[item[0]]
            shown.append((label, item[1], element_id))
    return shown


def _render_section(request: Request, user, view: dict, section: str, status: int = 200, *, notice=None,
                    error=None, typed=None, shown=(), **extra) -> Response:
    names = _section_names()
    context = dict(
        user=user, app=view, section=section, section_name=names[section], notice=notice, error=error,
        typed=typed or {}, secrets=list(shown),
        sections=[(key, names[key], app_path(view["id"], key)) for key in SECTION_PATHS],
    )
    if section == "oauth2":
        context.update(endpoints=_oidc_endpoints(runtime(request).settings), algorithms=SIGNING_ALGORITHMS,
                       default_algorithm=DEFAULT_ALGORITHM, generator=_generator(request, view))
    context.update(extra)
    return render(request, f"portal_{section}.html", status, **context)


async def _section_page(request: Request, section: str) -> Response:
    """A section's GET: the saved notice, or once the credentials a POST's flash carried."""
    user, view, refusal = await _owned_view(request)
    if refusal is not None:
        return refusal
    carried = flash.take(request, view["id"])
    notice = _saved_notices().get(request.query_params.get("saved", ""))
    if carried is not None:
        notice = _flash_notices().get(carried.get("notice")) or notice
    response = _render_section(request, user, view, section, notice=notice, shown=_credentials_shown(carried))
    return flash.forget(request, response, path=app_path(view["id"]), scope=view["id"])


# --- the list and creation -------------------------------------------------------------------------

async def home(request: Request) -> Response:
    return redirect(request, LIST, 302)


async def list_page(request: Request) -> Response:
    user = await cookie_user(request)
    if user is None:
        return login_redirect(request, request.url.path)
    apps = await applications.list_owned(runtime(request), user)
    carried = flash.take(request, flash.LIST_SCOPE) or {}
    deleted = carried.get("deleted") if isinstance(carried.get("deleted"), str) else None
    notice = _("Application %(name)s deleted.") % {"name": deleted} if deleted else None
    response = render(request, "portal_list.html", user=user, apps=apps, error=None, notice=notice, typed={})
    return flash.forget(request, response, path=LIST, scope=flash.LIST_SCOPE)


@same_origin
async def create_submit(request: Request) -> Response:
    user = await cookie_user(request)
    if user is None:
        return login_redirect(request, request.url.path)
    form = await read_form(request)
    if not csrf_ok(request, form):
        return form_expired(request)
    typed = {"name": _field(form, "name", 200), "redirect_uris": _field(form, "redirect_uris"),
             "bot": _field(form, "bot") == "1"}
    try:
        created = await applications.create(runtime(request), user, name=typed["name"],
                                            redirect_uris=_lines(typed["redirect_uris"]), bot=typed["bot"])
    except ApiError as exc:
        apps = await applications.list_owned(runtime(request), user)
        return render(request, "portal_list.html", exc.status, user=user, apps=apps, error=page_message(exc),
                      notice=None, typed=typed)
    carried = [["client_secret", created["client_secret"]]] if "client_secret" in created else []
    if "bot" in created:
        carried.append(["bot_token", created["bot"]["token"]])
    response = redirect(request, app_path(created["id"]), 303)
    return flash.put(request, response, path=app_path(created["id"]), scope=created["id"],
                     payload={"credentials": carried, "notice": "created"})


# --- the sections -------------------------------------------------------------------------------

async def app_page(request: Request) -> Response:
    return await _section_page(request, "general")


async def oauth2_page(request: Request) -> Response:
    return await _section_page(request, "oauth2")


async def bot_page(request: Request) -> Response:
    return await _section_page(request, "bot")


async def _save(request: Request, user, view: dict, section: str, changes: dict, typed: dict) -> Response:
    """Save one section's fields (only those: the platform leaves the others as they are),
    then 303 back to the section; a refusal shows the section again with what was typed."""
    try:
        malformed = [link for link in applications.LINK_FIELDS if link in changes and changes[link] is None]
        if malformed:
            raise invalid_form_body([{"path": malformed[0], "code": "URL_TYPE_INVALID_URL",
                                      "message": "is not a well formed URL"}])
        after = await applications.update(runtime(request), user, int(view["id"]), changes)
    except ApiError as exc:
        if exc.status == 404:
            return _not_found(request)
        return _render_section(request, user, view, section, exc.status, error=page_message(exc), typed=typed)
    saved = "1"
    if "public_client" in changes and after["public_client"] != view["public_client"]:
        saved = "public" if after["public_client"] else "confidential"
    return redirect(request, f"{app_path(view['id'], section)}?saved={saved}", 303)


@same_origin
async def update_submit(request: Request) -> Response:
    """General information: name, description and the public links."""
    user, form, view, refusal = await _guarded(request)
    if refusal is not None:
        return refusal
    changes = {"name": _field(form, "name", 200), "description": _field(form, "description", 1000)}
    for link in applications.LINK_FIELDS:
        changes[link] = _link(form, link)
    typed = {name: value if value is not None else _field(form, name) for name, value in changes.items()}
    return await _save(request, user, view, "general", changes, typed)


@same_origin
async def oauth2_submit(request: Request) -> Response:
    """OAuth2: redirect URIs, the client type and the id_token signing algorithm."""
    user, form, view, refusal = await _guarded(request)
    if refusal is not None:
        return refusal
    changes = {
        "redirect_uris": _lines(_field(form, "redirect_uris")),
        "public_client": _field(form, "public_client") == "1",
        "id_token_signed_response_alg": _field(form, "id_token_signed_response_alg", 16) or None,
    }
    typed = {"redirect_uris": _field(form, "redirect_uris")}
    return await _save(request, user, view, "oauth2", changes, typed)


@same_origin
async def bot_submit(request: Request) -> Response:
    """Bot: who may add it, and whether adding it takes the full code grant."""
    user, form, view, refusal = await _guarded(request)
    if refusal is not None:
        return refusal
    if "bot" not in view:
        return _render_section(request, user, view, "bot", 400, error=_("This application has no bot."))
    changes = {"bot_public": _field(form, "bot_public") == "1",
               "bot_require_code_grant": _field(form, "bot_require_code_grant") == "1"}
    return await _save(request, user, view, "bot", changes, {})


@same_origin
async def icon_submit(request: Request) -> Response:
    """Upload (a data URI the page's script read from the chosen file) or remove the icon."""
    user, form, view, refusal = await _guarded(request)
    if refusal is not None:
        return refusal
    action = _field(form, "action", 16)
    icon = form_field(form, "icon", max_length=MAX_ICON_FIELD) if action == "upload" else None
    if action not in ("upload", "remove") or (action == "upload" and not icon):
        return _render_section(request, user, view, "general", 400, error=_("Choose an image file first."))
    try:
        await applications.update(runtime(request), user, int(view["id"]), {"icon": icon})
    except ApiError as exc:
        if exc.status == 404:
            return _not_found(request)
        return _render_section(request, user, view, "general", exc.status, error=page_message(exc))
    return redirect(request, f"{app_path(view['id'])}?saved=icon", 303)


# --- confirmation pages: reset secret, reset token, delete ---------------------------------------

# The section each confirmation page belongs to (its Cancel link and the redirect after it).
CONFIRM_SECTIONS = {"reset-secret": "oauth2", "reset-token": "bot", "delete": "general"}


def _render_confirm(request: Request, user, view: dict, action: str, status: int = 200, *, error=None) -> Response:
    """The page that explains what ``action`` does and holds its form (password confirmed)."""
    possible = True
    if action == "reset-secret":
        possible = not view["public_client"]
    elif action == "reset-token":
        possible = "bot" in view
    heading, button = {
        "reset-secret": (_("Reset the client secret of %(name)s?") % {"name": view["name"]}, _("Reset client secret")),
        "reset-token": (_("Reset the bot token of %(name)s?") % {"name": view["name"]}, _("Reset bot token")),
        "delete": (_("Delete %(name)s?") % {"name": view["name"]}, _("Delete application")),
    }[action]
    return render(request, "portal_confirm.html", status, user=user, app=view, action=action, possible=possible,
                  error=error, heading=heading, button=button, cancel=app_path(view["id"], CONFIRM_SECTIONS[action]))


async def _confirm_page(request: Request, action: str) -> Response:
    user, view, refusal = await _owned_view(request)
    if refusal is not None:
        return refusal
    return _render_confirm(request, user, view, action)


async def reset_secret_page(request: Request) -> Response:
    return await _confirm_page(request, "reset-secret")


async def reset_token_page(request: Request) -> Response:
    return await _confirm_page(request, "reset-token")


async def delete_page(request: Request) -> Response:
    return await _confirm_page(request, "delete")


@same_origin
async def reset_secret_submit(request: Request) -> Response:
    return await _confirmed(request, "reset-secret")


@same_origin
async def reset_token_submit(request: Request) -> Response:
    return await _confirmed(request, "reset-token")


@same_origin
async def delete_submit(request: Request) -> Response:
    return await _confirmed(request, "delete")


async def _confirmed(request: Request, action: str) -> Response:
    """A confirmation page's POST: the password checked (throttled like a login), then the
    action, then 303 to where its result shows (the new credential once, by flash)."""
    user, form, view, refusal = await _guarded(request)
    if refusal is not None:
        return refusal
    rt, application_id = runtime(request), int(view["id"])
    password = password_field(form)
    throttle = PasswordThrottle(request.scope)
    try:
        if action == "reset-secret":
            value = (await applications.reset_client_secret(rt, user, application_id, password, throttle))
            payload = {"credentials": [["new_client_secret", value["client_secret"]]], "notice": "secret_reset"}
        elif action == "reset-token":
            value = await applications.reset_bot_token(rt, user, application_id, password, throttle)
            payload = {"credentials": [["new_bot_token", value["token"]]], "notice": "token_reset"}
        else:
            await check_password(rt, user, password, throttle)
            await applications.delete(rt, user, application_id)
            response = redirect(request, LIST, 303)
            return flash.put(request, response, path=LIST, scope=flash.LIST_SCOPE, payload={"deleted": view["name"]})
    except ApiError as exc:
        if exc.status == 404:
            return _not_found(request)
        return _render_confirm(request, user, view, action, exc.status, error=page_message(exc))
    section = CONFIRM_SECTIONS[action]
    response = redirect(request, app_path(application_id, section), 303)
    return flash.put(request, response, path=app_path(application_id), scope=view["id"], payload=payload)


# --- the URL generator (in the OAuth2 section) -----------------------------------------------------

async def url_generator_page(request: Request) -> Response:
    """The generator's old address: the OAuth2 section, with the same choices."""
    query = request.url.query
    path = app_path(request.path_params["application_id"], "oauth2")
    if parse_snowflake(request.path_params["application_id"]) is None:
        return _not_found(request)
    return redirect(request, path + (f"?{query}" if query else "") + GENERATOR_ANCHOR, 302)


def generated_url(public_url: str, view: dict, scopes: list[str], permission_names: list[str],
                  redirect_uri: str | None) -> tuple[str | None, str | None, bool]:
    """(authorize URL, error, PKCE required) for the chosen scopes (in canonical order),
    permissions and redirect URI. static/url-generator.js follows the same rules."""
    if not scopes:
        return None, None, False
    query = {"client_id": view["id"], "scope": format_scopes(scopes)}
    pkce_required = False
    if scopes != ["bot"]:  # a bot alone needs no redirect: the consent page ends on Fluxer
        if redirect_uri is None:
            return None, _("Add a redirect URI to the application first."), False
        query.update({"response_type": "code", "redirect_uri": redirect_uri})
        pkce_required = view["public_client"]  # the client adds its own code_challenge
    if "bot" in scopes:
        permissions = 0
        for name in permission_names:
            permissions |= PERMISSIONS[name]
        query["permissions"] = str(permissions)
    return f"{public_url}/oauth2/authorize?{urlencode(query)}", None, pkce_required


def _generator(request: Request, view: dict) -> dict:
    """What the generator shows: the choices (from the query: the form is a GET) and the
    link they make."""
    offered = [scope.name for scope in SCOPES if not scope.staff_only or view["trusted"]]
    if "bot" not in view:
        offered = [scope for scope in offered if scope != "bot"]
    params = request.query_params
    chosen_scopes = [scope for scope in offered if scope in params.getlist("scope")]
    chosen_permissions = [name for name in PERMISSIONS if name in params.getlist("permission")]
    chosen_redirect = params.get("redirect_uri")
    if chosen_redirect not in view["redirect_uris"]:
        chosen_redirect = view["redirect_uris"][0] if view["redirect_uris"] else None
    public_url = runtime(request).settings.public_url
    url, error, pkce_required = generated_url(public_url, view, chosen_scopes, chosen_permissions, chosen_redirect)
    labels, groups = permission_labels(), _group_names()
    grouped = {name for _key, names in PERMISSION_GROUPS for name in names}
    permission_groups = []
    for key, names in PERMISSION_GROUPS:
        names = [name for name in names if name in PERMISSIONS]
        if key == "general":
            names += [name for name in PERMISSIONS if name not in grouped]
        permission_groups.append((key, groups[key], [(name, labels.get(name, name), PERMISSIONS[name])
                                                     for name in names]))
    return dict(
        url=url, error=error, pkce_required=pkce_required, authorize_url=f"{public_url}/oauth2/authorize",
        scopes=[(scope, scope_description(scope)) for scope in offered], chosen_scopes=chosen_scopes,
        chosen_permissions=chosen_permissions, chosen_redirect=chosen_redirect, permission_groups=permission_groups,
    )
