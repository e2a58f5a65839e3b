"""The authorization request (SPEC §4.1): validation in the specified order, and the
user's decision turned into a redirect carrying a code or an error.

Two kinds of failure, never confused:
- ``UnsafeRequest``: the client or its redirect URI cannot be trusted, so the user sees an
  error page and is never redirected;
- ``RedirectError``: everything later, sent back to the validated redirect URI.
"""

from __future__ import annotations

from dataclasses import dataclass

from fluxer_oauth.core import credentials
from fluxer_oauth.core.errors import ApiError
from fluxer_oauth.core.ids import parse_snowflake
from fluxer_oauth.core.permissions import parse_permissions
from fluxer_oauth.core.redirect_uris import find_registered
from fluxer_oauth.core.scopes import ScopeError, check_scope_rules, covers, format_scopes, needs_staff, parse_scopes
from fluxer_oauth.core.timefmt import now
from fluxer_oauth.oauth import id_token
from fluxer_oauth.oauth.params import ParamError, Params
from fluxer_oauth.oauth.redirects import with_query
from fluxer_oauth.platform import guilds
from fluxer_oauth.platform.applications import redirect_uris_of
from fluxer_oauth.platform.two_factor import staff_mfa_missing
from fluxer_oauth.runtime import Runtime
from fluxer_oauth.store import applications as app_store
from fluxer_oauth.store import audit
from fluxer_oauth.store import oauth as oauth_store


PROMPTS = frozenset({"none", "consent", "login"})
CODE_CHALLENGE_METHODS = ("S256",)
RESPONSE_MODES = ("query",)
ID_TOKEN_HINT_MAX = 4096  # an id_token is a few hundred characters; far above, it is not one
# What the login page adds to the authorization request it sends a user back to: that this
# browser's session began with that sign-in, for that client, a moment ago. It satisfies
# prompt=login and max_age once (or a signed-out user's first sign-in would be asked for
# again). Signed with the server secret over the time, the session and the client, and
# good for a few minutes: copied to another browser, another client, or kept, it is ignored.
LOGIN_AFTER = "login_after"
LOGIN_MARKER_TTL = 600.0


def _login_mac(secret: bytes, stamp: str, session_token: str, client_id: str) -> str:
    signed = f"{stamp}|{credentials.b64url(credentials.sha256(session_token))}|{client_id}"
    return credentials.b64url(credentials.keyed_hash(secret, LOGIN_AFTER, signed)[:16])


def login_marker(secret: bytes, session_token: str, client_id: str, at: float) -> str:
    """The ``login_after`` value for a sign-in that began ``session_token`` at ``at``."""
    stamp = str(int(at))
    return f"{stamp}.{_login_mac(secret, stamp, session_token, client_id)}"


def just_signed_in(secret: bytes, value: str | None, session_token: str | None, client_id: str, at: float) -> bool:
    """Whether ``value`` is the marker of this session's sign-in for this client, still fresh."""
    stamp, _, mac = (value or "").partition(".")
    if not session_token or not stamp.isascii() or not stamp.isdigit() or len(stamp) > 12:
        return False
    if not 0 <= at - int(stamp) <= LOGIN_MARKER_TTL:
        return False
    return credentials.constant_time_equal(mac, _login_mac(secret, stamp, session_token, client_id))


class UnsafeRequest(Exception):
    """Shown on an error page (400); the message explains what is wrong."""


class RedirectError(Exception):
    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.redirect: str | None = None  # filled in once the redirect URI is known
        self.state: str | None = None


@dataclass(frozen=True)
class AuthorizationRequest:
    app: object
    redirect_uri: str | None  # as requested (validated against the registration)
    redirect_uri_explicit: bool
    state: str | None
    scopes: tuple[str, ...]
    prompts: frozenset[str]  # none, consent, login (OpenID Connect allows several but none)
    code_challenge: str | None
    permissions: int
    guild_id: int | None
    disable_guild_select: bool
    bot_install: bool = False  # bot-only, no code: ends on the success page
    nonce: str | None = None  # OpenID Connect: echoed in the id_token
    max_age: int | None = None  # OpenID Connect: the longest time since the user signed in
    id_token_hint: str | None = None  # OpenID Connect: an id_token of the user expected to be signed in

    @property
    def openid(self) -> bool:
        return "openid" in self.scopes

    def needs_fresh_login(self, signed_in_at: float, at: float, *, just_signed_in: bool = False) -> bool:
        """Whether the user must sign in again before this request goes on (``just_signed_in``:
        the login page sent them here from a sign-in made for it)."""
        if just_signed_in:
            return False
        if "login" in self.prompts:
            return True
        return self.max_age is not None and at - signed_in_at > self.max_age

    def granted_permissions(self, ticked: int | None) -> int:
        """What the bot gets: the requested permissions the user left ticked (all of them
        when ``ticked`` is None), never one the request did not ask for."""
        return self.permissions if ticked is None else self.permissions & ticked

    def chosen_guild(self, choice: int | None) -> int | None:
        """The guild to add the bot to: the preselected one when the request locks it."""
        if self.disable_guild_select and self.guild_id is not None:
            return self.guild_id
        return choice


# --- step 1: the client and where it may be sent back ---------------------------------------

async def identify_client(rt: Runtime, params: Params):
    """The application, the validated redirect URI (None for a bot-only install that ends on
    the success page), whether it was given explicitly, and whether this is such an install.
    Raises ``UnsafeRequest`` when the client or its redirect URI cannot be trusted."""
    try:
        client_id_text = params.get("client_id", required=True)
        requested_uri = params.get("redirect_uri")
    except ParamError as exc:
        raise UnsafeRequest(str(exc)) from exc
    client_id = parse_snowflake(client_id_text)
    app = None
    if client_id is not None:
        app = await rt.db.clients.application(client_id)  # None too when its owner is disabled
    if app is None:
        raise UnsafeRequest("client_id does not name a known application")
    registered = redirect_uris_of(app)
    bot_install = _is_bot_install(app, params)
    if requested_uri is not None:
        if find_registered(registered, requested_uri) is None:
            raise UnsafeRequest("redirect_uri is not registered for this application")
        return app, (None if bot_install else requested_uri), True, bot_install
    if bot_install:
        return app, None, False, True
    if len(registered) == 1:  # RFC 6749 §3.1.2.3: the only one may be implied
        return app, registered[0], False, False
    raise UnsafeRequest(
        "redirect_uri is required" if registered else "this application has no redirect URI registered"
    )


def _is_bot_install(app, params: Params) -> bool:
    """A bot-only request without response_type adds the bot and ends on a success page,
    unless the application demands the full code grant (bot_require_code_grant)."""
    if app.bot_require_code_grant:
        return False
    try:
        raw = params.get("scope")
        return raw is not None and parse_scopes(raw) == ("bot",) and params.get("response_type") is None
    except (ParamError, ScopeError):
        return False


# --- step 2: everything else, reported by redirect ------------------------------------------

async def parse_request(rt: Runtime, params: Params) -> AuthorizationRequest:
    """Validate a whole authorization request; raises ``UnsafeRequest``, or ``RedirectError``
    carrying the redirect URI and state to report it to."""
    app, redirect_uri, explicit, bot_install = await identify_client(rt, params)
    try:
        state = params.get("state")
    except ParamError:
        state = None
    try:
        return _parse_rest(app, redirect_uri, explicit, bot_install, state, params)
    except RedirectError as exc:
        exc.redirect = redirect_uri
        exc.state = state
        if redirect_uri is None:  # a bot install without a redirect: show the page
            raise UnsafeRequest(exc.description) from exc
        raise


def _parse_rest(app, redirect_uri, explicit, bot_install, state, params: Params) -> AuthorizationRequest:
    try:
        params.get("state")  # a repeated or overlong state is still an invalid request
        response_type = params.get("response_type")
        raw_scope = params.get("scope")
        prompt = params.get("prompt")
        challenge = params.get("code_challenge")
        method = params.get("code_challenge_method")
        raw_permissions = params.get("permissions")
        raw_guild = params.get("guild_id")
        raw_lock = params.get("disable_guild_select")
        nonce = params.get("nonce")
        raw_max_age = params.get("max_age")
        response_mode = params.get("response_mode")
        id_token_hint = params.get("id_token_hint", max_length=ID_TOKEN_HINT_MAX)
    except ParamError as exc:
        raise RedirectError("invalid_request", str(exc)) from exc
    # What discovery does not advertise is refused rather than ignored: a relying party that
    # asked for form_post, or a signed request object, must not be answered as if it had not.
    if response_mode is not None and response_mode not in RESPONSE_MODES:
        raise RedirectError("invalid_request", "response_mode must be query")
    for name, error in (("request", "request_not_supported"), ("request_uri", "request_uri_not_supported")):
        if name in params.names():
            raise RedirectError(error, f"the {name} parameter is not supported")

    if response_type is None and not bot_install:
        raise RedirectError("invalid_request", "response_type is required")
    if response_type is not None and response_type != "code":
        raise RedirectError("unsupported_response_type", "only response_type=code is supported")
    if app.disabled_at is not None:
        raise RedirectError("unauthorized_client", "this application has been disabled")
    if raw_scope is None:
        raise RedirectError("invalid_request", "scope is required")
    try:
        scopes = parse_scopes(raw_scope)
        check_scope_rules(scopes)
    except ScopeError as exc:
        raise RedirectError("invalid_scope", str(exc)) from exc
    if "bot" in scopes and app.bot_id is None:
        raise RedirectError("invalid_scope", "the bot scope needs an application with a bot")
    if needs_staff(scopes) and not app.trusted:
        raise RedirectError("invalid_scope", "the admin scope is only for trusted applications")

    if method is not None and method not in CODE_CHALLENGE_METHODS:
        raise RedirectError("invalid_request", "code_challenge_method must be S256")
    if challenge is not None and method is None:
        raise RedirectError("invalid_request", "code_challenge_method=S256 is required with code_challenge")
    if method is not None and challenge is None:
        raise RedirectError("invalid_request", "code_challenge is required with code_challenge_method")
    if challenge is not None and not credentials.valid_code_challenge(challenge):
        raise RedirectError("invalid_request", "code_challenge must be 43 base64url characters")
    if app.public_client and challenge is None and not bot_install:
        raise RedirectError("invalid_request", "a public client must use PKCE (code_challenge with S256)")
    prompts = frozenset(prompt.split()) if prompt is not None else frozenset()
    if not prompts <= PROMPTS:
        raise RedirectError("invalid_request", "prompt must be none, consent or login")
    if "none" in prompts and len(prompts) > 1:
        raise RedirectError("invalid_request", "prompt=none cannot be combined with other values")
    max_age = None
    if raw_max_age is not None:
        if not raw_max_age.isascii() or not raw_max_age.isdigit() or len(raw_max_age) > 10:
            raise RedirectError("invalid_request", "max_age must be a non-negative number of seconds")
        max_age = int(raw_max_age)

    permissions = 0
    if raw_permissions is not None:
        parsed = parse_permissions(raw_permissions)
        if parsed is None:
            raise RedirectError("invalid_request", "permissions must be a non-negative integer")
        permissions = parsed
    guild_id = None
    if raw_guild is not None:
        guild_id = parse_snowflake(raw_guild)
        if guild_id is None:
            raise RedirectError("invalid_request", "guild_id must be a snowflake")
    if raw_lock is not None and raw_lock not in ("true", "false"):
        raise RedirectError("invalid_request", "disable_guild_select must be true or false")

    return AuthorizationRequest(
        app=app,
        redirect_uri=redirect_uri,
        redirect_uri_explicit=explicit,
        state=state,
        scopes=scopes,
        prompts=prompts,
        code_challenge=challenge,
        permissions=permissions,
        guild_id=guild_id,
        disable_guild_select=raw_lock == "true",
        bot_install=bot_install,
        nonce=nonce if "openid" in scopes else None,
        max_age=max_age,
        id_token_hint=id_token_hint,
    )


# --- the answer -----------------------------------------------------------------------------

def error_redirect(rt: Runtime, redirect_uri: str, error: str, description: str, state: str | None) -> str:
    return with_query(
        redirect_uri,
        {"error": error, "error_description": description, "state": state, "iss": rt.settings.issuer},
    )


async def check_hinted_user(rt: Runtime, request: AuthorizationRequest, user) -> None:
    """With ``id_token_hint``, the signed-in user must be the one the id_token names (Core
    1.0 §3.1.2.1): otherwise ``login_required``, never a code for someone else. The hint must
    be an id_token this server issued to this client (expired ones too: that is their use)."""
    if request.id_token_hint is None:
        return
    subject = await id_token.subject_of(rt, request.id_token_hint, client_id=str(request.app.id))
    if subject is None:
        raise RedirectError("invalid_request", "id_token_hint is not an id_token issued to this client")
    if subject != str(user.id):
        raise RedirectError("login_required", "the signed-in user is not the one id_token_hint names")


def check_user_may_grant(rt: Runtime, request: AuthorizationRequest, user) -> None:
    if needs_staff(request.scopes) and not user.staff:
        raise RedirectError("access_denied", "only staff members can grant the admin scope")
    if needs_staff(request.scopes) and staff_mfa_missing(rt.settings, user):
        raise RedirectError("access_denied", "staff members must turn on two-factor sign-in to grant the admin scope")


async def remembered_consent_covers(rt: Runtime, request: AuthorizationRequest, user) -> bool:
    if "bot" in request.scopes:  # adding a bot is a fresh decision every time
        return False
    async with rt.db.read() as conn:
        grant = await oauth_store.get_grant(conn, user.id, request.app.id)
    return grant is not None and covers(grant.scopes.split(), request.scopes)


def check_bot_allowed(request: AuthorizationRequest, user) -> None:
    if "bot" in request.scopes and not request.app.bot_public and request.app.owner_id != user.id:
        raise ApiError(403, "BOT_IS_PRIVATE", "only the owner of this private bot can add it")


async def approve(rt: Runtime, request: AuthorizationRequest, user, *, guild_id: int | None = None,
                  permissions: int | None = None, signed_in_at: float | None = None) -> str:
    """Record the consent (and add the bot), issue a code, and return where to send the
    user: the client's redirect with the code, or the success page of a bot install.
    ``permissions``: those the user left ticked on the consent page (None: all requested);
    the bot gets at most the requested ones, whatever is passed. Raises ``ApiError`` for a
    refused bot installation; nothing is written then."""
    check_user_may_grant(rt, request, user)
    check_bot_allowed(request, user)
    guild_id = request.chosen_guild(guild_id) if "bot" in request.scopes else None
    if "bot" in request.scopes and guild_id is None:
        raise ApiError(400, "GUILD_REQUIRED", "choose a guild to add the bot to")
    granted = request.granted_permissions(permissions)
    code = credentials.new_opaque_token()
    at = now()
    async with rt.db.write() as conn:
        # Checked again under the user's and the application's locks: an ending committed
        # since the request was validated (the application, its owner or the user disabled,
        # the application untrusted, the user no longer staff) must not be outlived by this.
        await oauth_store.hold_for_approval(conn, user.id, request.app.id)
        if not await app_store.may_authorize(conn, request.app.id, user.id, admin=needs_staff(request.scopes)):
            raise ApiError(400, "APPLICATION_UNAVAILABLE", "this application can no longer be authorized")
        if guild_id is not None:
            await guilds.install_bot(
                rt, conn, app=request.app, user=user, guild_id=guild_id, permissions=granted
            )
        if request.bot_install:
            return with_query(f"{rt.settings.public_url}/oauth2/authorized",
                              {"client_id": str(request.app.id), "guild_id": str(guild_id)})
        grant_id = await record_consent(rt, conn, user.id, request.app.id, request.scopes, at)
        await oauth_store.insert_code(
            conn,
            code_hash=credentials.sha256(code),
            family_id=rt.ids.next(),
            application_id=request.app.id,
            user_id=user.id,
            grant_id=grant_id,
            redirect_uri=request.redirect_uri,
            redirect_uri_explicit=request.redirect_uri_explicit,
            scopes=format_scopes(request.scopes),
            code_challenge=request.code_challenge,
            guild_id=guild_id,
            permissions=granted if guild_id is not None else None,
            created_at=at,
            expires_at=at + rt.settings.code_ttl,
            nonce=request.nonce,
            auth_time=signed_in_at,
        )
    return with_query(request.redirect_uri, {"code": code, "state": request.state, "iss": rt.settings.issuer})


async def record_consent(rt: Runtime, conn, user_id: int, application_id: int, scopes, at: float,
                         **audited) -> int:
    """Remember that the user approved ``scopes`` for the application (a code or a device
    approval): the grant keeps the union of every scope ever approved, ``bot`` excepted (a
    fresh decision every time). Audited as grant.approved (with ``audited`` details); returns
    the grant's id. The caller holds ``oauth_store.hold_for_approval``."""
    existing = await oauth_store.get_grant(conn, user_id, application_id)
    remembered = {scope for scope in scopes if scope != "bot"} | set(existing.scopes.split() if existing else ())
    grant_id = await oauth_store.upsert_grant(conn, rt.ids.next(), user_id, application_id,
                                              format_scopes(remembered), at)
    await audit.record(
        conn, id=rt.ids.next(), now=at, action="grant.approved", actor_id=user_id, application_id=application_id,
        target_user_id=user_id, details={"scopes": format_scopes(scopes), **audited},
    )
    return grant_id


def deny(rt: Runtime, request: AuthorizationRequest) -> str:
    return error_redirect(rt, request.redirect_uri, "access_denied", "the user denied the request", request.state)
