"""The token endpoint (SPEC §4.2) and its four grants.

A code or refresh token that is simply redeemed takes one group-committed write of the
hot store (store/redemptions.py), which writes only when nothing stands in the way; every
other case takes the grant's full path, where each grant runs in one write transaction.
Outcomes that must persist even though the client gets an error (a consumed code) are
returned, not raised, so the transaction commits before the error is reported. What a
detected replay or reuse ends is ended in a transaction of its own right after
(grants/endings.py: an ending never runs while the issuance's own shared lock is held).
A rotated refresh token presented again shortly after its rotation by its own confidential
client is a retry after a lost answer, not reuse (``_retried_within_leeway``).
"""

from __future__ import annotations

from dataclasses import dataclass

from fluxer_oauth.core import credentials
from fluxer_oauth.core.errors import OAuthError, invalid_client
from fluxer_oauth.core.scopes import (CLIENT_CREDENTIALS_SCOPES, ScopeError, covers, format_scopes, needs_staff,
                                      parse_scopes)
from fluxer_oauth.core.timefmt import now
from fluxer_oauth.oauth.client_auth import authenticate_client, presented_client, presented_secret_hash
from fluxer_oauth.oauth.params import ParamError, Params
from fluxer_oauth.grants import endings
from fluxer_oauth.oauth import id_token
from fluxer_oauth.oauth.device import SLOW_DOWN_STEP
from fluxer_oauth.ops import metrics
from fluxer_oauth.runtime import Runtime
from fluxer_oauth.platform.guilds import partial_guild_json
from fluxer_oauth.store import audit
from fluxer_oauth.store import devices as device_store
from fluxer_oauth.store import guilds as guild_store
from fluxer_oauth.store import oauth as oauth_store
from fluxer_oauth.store import users as user_store
from fluxer_oauth.store.records import ClientToken, Redemption
from fluxer_oauth.store.tables import ACCESS, REFRESH

def invalid_grant(description: str) -> OAuthError:
    return OAuthError("invalid_grant", description)


async def token_endpoint(rt: Runtime, params: Params, authorization: str | None) -> dict:
    try:
        grant_type = params.get("grant_type", required=True)
    except ParamError as exc:
        raise OAuthError("invalid_request", str(exc)) from exc
    # Where the store's checked insert saves the lookup (PostgreSQL), it authenticates and
    # issues in one statement, which leaves no moment between for a per-client limit: taken
    # only when there is none to count.
    if (grant_type == "client_credentials" and rt.db.tokens.checks_clients_on_insert
            and params.on_client_authenticated is None):
        body = await _client_credentials_checked_on_insert(rt, params, authorization)
        if body is not None:
            metrics.count_token_issued(grant_type)
            return body
        # Not written: the full path below finds out why and answers as it always does.
    app = await authenticate_client(rt, params, authorization)
    grant = _GRANTS.get(grant_type)
    if grant is None:
        raise OAuthError("unsupported_grant_type", f"grant_type must be one of {', '.join(GRANT_TYPES)}")
    body = await grant(rt, app, params)
    metrics.count_token_issued(grant_type)
    return body


def _read(params: Params, *names: str, required: tuple[str, ...] = ()) -> list[str | None]:
    try:
        return [params.get(name, required=name in required) for name in names]
    except ParamError as exc:
        raise OAuthError("invalid_request", str(exc)) from exc


@dataclass
class _Issued:
    access_token: str
    refresh_token: str | None
    rows: list[dict]


def _new_tokens(rt: Runtime, *, app_id, user_id, grant_id, family_id, scopes: str, guild_id, refresh: bool, at: float,
                issue_id: int | None = None):
    issue_id = issue_id if issue_id is not None else rt.ids.next()
    access = credentials.new_stored_token()
    common = dict(
        application_id=app_id, user_id=user_id, grant_id=grant_id, family_id=family_id, issue_id=issue_id,
        scopes=scopes, guild_id=guild_id, created_at=at, rotated=False,
    )
    rows = [dict(common, token_hash=credentials.stored_token_key(access), kind=ACCESS,
                 expires_at=at + rt.settings.access_token_ttl)]
    refresh_token = None
    if refresh:
        refresh_token = credentials.new_stored_token()
        rows.append(
            dict(common, token_hash=credentials.stored_token_key(refresh_token), kind=REFRESH,
                 expires_at=at + rt.settings.refresh_token_ttl)
        )
    return _Issued(access, refresh_token, rows)


def _redemption(rt: Runtime, key: bytes, application_id: int, at: float, **binding) -> tuple[str, str, Redemption]:
    """A new access/refresh pair and the store's redemption of ``key`` (a code's hash or a
    refresh token's key) that would issue it: (access token, refresh token, redemption)."""
    access, refresh = credentials.new_stored_token(), credentials.new_stored_token()
    settings = rt.settings
    return access, refresh, Redemption(
        key, application_id, at, credentials.stored_token_key(access), credentials.stored_token_key(refresh),
        rt.ids.next(), at + settings.access_token_ttl, at + settings.refresh_token_ttl, **binding)


def _response(rt: Runtime, access_token: str, scopes: str, *, refresh_token: str | None = None,
              guild: dict | None = None) -> dict:
    body = {
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": rt.settings.access_token_ttl,
        "scope": scopes,
    }
    if refresh_token is not None:
        body["refresh_token"] = refresh_token
    if guild is not None:
        body["guild"] = guild
    return body


# --- authorization_code ---------------------------------------------------------------------

async def _authorization_code(rt: Runtime, app, params: Params) -> dict:
    code, redirect_uri, verifier = _read(params, "code", "redirect_uri", "code_verifier", required=("code",))
    code_hash = credentials.sha256(code)
    at = now()
    if verifier is None or credentials.valid_code_verifier(verifier):
        # The common case in one group-committed write; anything else comes back unwritten.
        access, refresh, redemption = _redemption(
            rt, code_hash, app.id, at, redirect_uri=redirect_uri, public_client=app.public_client,
            challenge=credentials.s256_challenge(verifier) if verifier is not None else None)
        scopes = await rt.db.tokens.redeem_code(redemption)
        if scopes is not None:
            return _response(rt, access, scopes, refresh_token=refresh)
    failure: OAuthError | None = None
    replayed = None
    ending: str | None = None  # why the grant ends with this refusal
    signer = await id_token.signer_for(rt, app)
    async with rt.db.write() as conn:
        row = await oauth_store.consume_code(conn, code_hash, app.id, at)
        if row is None:
            previous = await oauth_store.get_code(conn, code_hash)
            if previous is not None and previous.application_id == app.id and previous.consumed_at is not None:
                replayed = previous
                failure = invalid_grant("this code has already been used; the tokens it issued are revoked")
            else:
                failure = invalid_grant("the code is unknown, expired, or was issued to another client")
        else:
            failure = _check_code_binding(row, redirect_uri, verifier, public=app.public_client)
            if failure is None:
                user = await user_store.get_user(conn, row.user_id)
                failure, ending = _holder_refusal(app, user, row.scopes.split())
            if failure is None:
                issued = await _issue_redeemed(rt, conn, signer, app, row, guild_id=row.guild_id, at=at)
                guild = await guild_store.get_guild(conn, row.guild_id) if row.guild_id is not None else None
    if replayed is not None:
        await endings.end_code_family(rt, replayed, at=at)
    if ending is not None:
        await endings.end_grant_now(rt, user_id=row.user_id, application_id=app.id, by=ending, at=at)
    if failure is not None:
        raise failure
    body = _response(rt, issued.access_token, row.scopes, refresh_token=issued.refresh_token,
                     guild=partial_guild_json(guild) if guild is not None else None)
    return _with_id_token(rt, body, signer, app=app, user=user, row=row, access_token=issued.access_token,
                          nonce=row.nonce, at=at)


async def _issue_redeemed(rt: Runtime, conn, signer, app, row, *, guild_id, at: float) -> _Issued:
    """The tokens of a code or device code just redeemed (``row``), written in its
    transaction. With openid, a signer that cannot sign raises here, before anything is
    issued: the transaction rolls back and the code stays unspent."""
    if "openid" in row.scopes.split():
        signer.ready()
    issued = _new_tokens(rt, app_id=app.id, user_id=row.user_id, grant_id=row.grant_id, family_id=row.family_id,
                         scopes=row.scopes, guild_id=guild_id, refresh=True, at=at)
    await oauth_store.insert_tokens(conn, issued.rows)
    await oauth_store.touch_grant(conn, row.grant_id, at)
    return issued


def _with_id_token(rt: Runtime, body: dict, signer, *, app, user, row, access_token: str, nonce: str | None,
                   at: float) -> dict:
    """``body`` with the id_token of a redeemed code whose scopes have openid."""
    scopes = row.scopes.split()
    if "openid" in scopes:
        body["id_token"] = id_token.issue(rt, signer, app=app, user=user, scopes=scopes, access_token=access_token,
                                          nonce=nonce, auth_time=row.auth_time, at=at)
    return body


def _holder_refusal(app, user, scopes) -> tuple[OAuthError | None, str | None]:
    """Why tokens may no longer be issued to this user for these scopes (None when they may),
    and the reason to end the grant with the refusal, if it must end."""
    if user is None or user.disabled_at is not None:
        return invalid_grant("the user is no longer active"), None
    if needs_staff(scopes) and not (app.trusted and user.staff):
        # Untrusting or removing staff ends such grants; this holds the rule even so.
        return (invalid_grant("the admin scope is no longer allowed for this grant"),
                "grant.admin_no_longer_allowed")
    return None, None


def _check_code_binding(row, redirect_uri: str | None, verifier: str | None, *, public: bool) -> OAuthError | None:
    if public and row.code_challenge is None:  # issued before the application became public
        return invalid_grant("a public client's code must have been issued with PKCE")
    if row.redirect_uri_explicit or redirect_uri is not None:
        if redirect_uri is None or redirect_uri != row.redirect_uri:
            return invalid_grant("redirect_uri does not match the one of the authorization request")
    if row.code_challenge is not None:
        if verifier is None:
            return invalid_grant("code_verifier is required for this code")
        if not credentials.pkce_matches(verifier, row.code_challenge):
            return invalid_grant("code_verifier does not match the code_challenge")
    elif verifier is not None:
        return invalid_grant("code_verifier sent for a code issued without code_challenge")
    return None


# --- refresh_token --------------------------------------------------------------------------

async def _refresh_token(rt: Runtime, app, params: Params) -> dict:
    token, raw_scope = _read(params, "refresh_token", "scope", required=("refresh_token",))
    requested = None
    if raw_scope is not None:
        try:
            requested = parse_scopes(raw_scope)
        except ScopeError as exc:
            raise OAuthError("invalid_scope", str(exc)) from exc
    token_hash = credentials.stored_token_key(token)
    at = now()
    if requested is None:
        # The common case in one group-committed write; anything else comes back unwritten.
        access, refresh, redemption = _redemption(rt, token_hash, app.id, at)
        scopes = await rt.db.tokens.rotate_refresh(redemption)
        if scopes is not None:
            return _response(rt, access, scopes, refresh_token=refresh)
    failure: OAuthError | None = None
    ending: tuple[int, str] | None = None  # (user id, why) of a grant to end with the refusal
    joined: int | None = None  # a retry within the reuse leeway: the issue its pair joins
    async with rt.db.write() as conn:
        row = await oauth_store.rotate_refresh_token(conn, token_hash, app.id, at)
        if row is None:
            previous = await oauth_store.get_token(conn, token_hash)
            if previous is not None and previous.application_id == app.id and previous.rotated:
                joined = await _retried_within_leeway(rt, conn, app, previous, at)
                if joined is not None:
                    row = previous
                else:
                    ending = (previous.user_id, "refresh_token.reuse_detected")
                    failure = invalid_grant("this refresh token was already used; the grant is revoked")
            else:
                failure = invalid_grant("the refresh token is unknown, expired, revoked or another client's")
        if row is not None:
            granted = row.scopes.split()
            if requested is not None and not covers(granted, requested):
                # Nothing is spent: the rotation rolls back with this error.
                raise OAuthError("invalid_scope", "scope may narrow the grant but not widen it")
            failure, reason = _holder_refusal(app, await user_store.get_user(conn, row.user_id), granted)
            if reason is not None:
                ending = (row.user_id, reason)
            if failure is None:
                if joined is None:  # a retry leaves every pair issued since alive
                    await oauth_store.revoke_issue(conn, row.issue_id, at)
                scopes = format_scopes(requested if requested is not None else granted)
                issued = _new_tokens(
                    rt, app_id=app.id, user_id=row.user_id, grant_id=row.grant_id, family_id=row.family_id,
                    scopes=scopes, guild_id=None, refresh=True, at=at, issue_id=joined,
                )
                await oauth_store.insert_tokens(conn, issued.rows)
                if row.grant_id is not None:
                    await oauth_store.touch_grant(conn, row.grant_id, at)
                if joined is not None:
                    await audit.record(conn, id=rt.ids.next(), now=at, action="refresh_token.reuse_within_leeway",
                                       actor_id=row.user_id, application_id=app.id, target_user_id=row.user_id,
                                       details={"family_id": str(row.family_id),
                                                "seconds_after_rotation": round(at - row.revoked_at, 3)})
    if ending is not None:
        if ending[1] == "refresh_token.reuse_detected":
            metrics.REFRESH_REUSE.labels("detected").inc()
        await endings.end_grant_now(rt, user_id=ending[0], application_id=app.id, by=ending[1], at=at)
    if failure is not None:
        raise failure
    if joined is not None:
        metrics.REFRESH_REUSE.labels("leeway").inc()
    return _response(rt, issued.access_token, scopes, refresh_token=issued.refresh_token)


async def _retried_within_leeway(rt: Runtime, conn, app, previous, at: float) -> int | None:
    """Whether a rotated refresh token presented again by its own client is a retry of a
    refresh whose answer was lost (docs/security.md, "Refresh reuse leeway"), and not
    reuse (None): within FLUXER_REFRESH_REUSE_LEEWAY seconds of its rotation, for a confidential
    client, before the token itself would have expired, while the grant lives and no token
    issued since the rotation has been refreshed in turn. Public clients get no leeway: a
    public client's refresh token is its only secret, so a second holder is always a thief.

    For a retry, the issue its pair joins: that of the pair issued at the rotation, so that
    refreshing any pair of it ends all the others (revoke_issue) and no second line of the
    family outlives the client moving on."""
    leeway = rt.settings.refresh_reuse_leeway
    if (leeway <= 0 or app.public_client or previous.grant_id is None or previous.revoked_at is None
            or at - previous.revoked_at > leeway or previous.expires_at <= at):
        return None
    successors = await oauth_store.refresh_successors(conn, previous.family_id, previous.revoked_at)
    if any(s.rotated for s in successors):
        return None
    return next((s.issue_id for s in successors if s.revoked_at is None and s.expires_at > at), None)


# --- client_credentials ---------------------------------------------------------------------

_client_scopes: dict[str | None, str] = {}  # requested scope text -> canonical scope text


def _client_credentials_scope(raw_scope: str | None) -> str:
    """The canonical scope of a client-credentials request (few distinct values: kept)."""
    scope_text = _client_scopes.get(raw_scope)
    if scope_text is None:
        try:
            scopes = parse_scopes(raw_scope) if raw_scope is not None else ("identify",)
        except ScopeError as exc:
            raise OAuthError("invalid_scope", str(exc)) from exc
        if not set(scopes) <= CLIENT_CREDENTIALS_SCOPES:
            raise OAuthError("invalid_scope", "client_credentials allows only identify and guilds")
        scope_text = format_scopes(scopes)
        if len(_client_scopes) < 64:
            _client_scopes[raw_scope] = scope_text
    return scope_text


async def _client_credentials(rt: Runtime, app, params: Params) -> dict:
    (raw_scope,) = _read(params, "scope")
    if app.public_client:
        raise OAuthError("unauthorized_client", "a public client cannot use client_credentials")
    if app.bot_id is None:
        raise OAuthError("unauthorized_client", "client_credentials needs an application with a bot")
    scope_text = _client_credentials_scope(raw_scope)
    access, issue_id, at, expires_at = _new_client_token(rt)
    # Written only if the application still has this secret and is still enabled (and its
    # owner too): a reset or a disabling committed since the lookup ends this token as well.
    written = await rt.db.tokens.issue_client_token(ClientToken(
        credentials.stored_token_key(access), app.id, app.secret_hash, issue_id, scope_text, at, expires_at))
    if not written:
        raise invalid_client()
    return _response(rt, access, scope_text)


async def _client_credentials_checked_on_insert(rt: Runtime, params: Params, authorization: str | None) -> dict | None:
    """The grant in one statement where the store can check the client while it writes (on
    PostgreSQL the lookup before the insert is a round trip of its own). None when nothing
    was written: a wrong secret, a disabled application, no bot, a bad scope; the caller
    then takes the full path, which gives each of those its usual answer, in its usual order."""
    application_id, secret = presented_client(params, authorization)
    if secret is None:  # a public client: refused on the full path
        return None
    try:
        (raw_scope,) = _read(params, "scope")
        scope_text = _client_credentials_scope(raw_scope)
    except OAuthError:
        return None
    if application_id is None:
        return None
    access, issue_id, at, expires_at = _new_client_token(rt)
    written = await rt.db.tokens.issue_client_token(ClientToken(
        credentials.stored_token_key(access), application_id, presented_secret_hash(rt, secret), issue_id,
        scope_text, at, expires_at))
    return _response(rt, access, scope_text) if written else None


def _new_client_token(rt: Runtime) -> tuple[str, int, float, float]:
    """A client-credentials access token: (token, issue id, created, expires). One access
    token, no refresh token, no grant: its own issuance is its family."""
    at = now()
    return credentials.new_stored_token(), rt.ids.next(), at, at + rt.settings.access_token_ttl


# --- device_code (RFC 8628 §3.4, §3.5) -------------------------------------------------------

DEVICE_CODE = "urn:ietf:params:oauth:grant-type:device_code"


async def _device_code(rt: Runtime, app, params: Params) -> dict:
    """Tokens for an approved device code, exactly once: redeeming is one conditional
    UPDATE (approved, not consumed, not denied, not expired, its grant still there, and on
    PostgreSQL under the application's shared lock, as a code). A poll that does not redeem
    is told why (RFC 8628 §3.5). A device code presented again after its tokens were issued
    is a replay, ended as a replayed code is (its family): the code travelled somewhere it
    should not have, and whoever polled first may be the one who stole it."""
    (device_code,) = _read(params, "device_code", required=("device_code",))
    code_hash = credentials.sha256(device_code)
    at = now()
    failure: OAuthError | None = None
    replayed = None
    ending: str | None = None
    signer = await id_token.signer_for(rt, app)
    async with rt.db.write() as conn:
        row = await device_store.redeem(conn, code_hash, app.id, at)
        if row is None:
            polled = await device_store.record_poll(conn, code_hash, app.id, at, SLOW_DOWN_STEP)
            if _approved_meanwhile(polled, at):
                # On PostgreSQL each statement sees what committed before it began: an
                # approval that committed between the redeeming UPDATE and this read is
                # redeemed now, not answered as an ended authorization.
                row = await device_store.redeem(conn, code_hash, app.id, at)
        if row is None:
            failure = _unredeemed(polled, at)
            if polled is not None and polled[0].consumed_at is not None:
                replayed = polled[0]
        else:
            user = await user_store.get_user(conn, row.user_id)
            failure, ending = _holder_refusal(app, user, row.scopes.split())
            if failure is None:
                issued = await _issue_redeemed(rt, conn, signer, app, row, guild_id=None, at=at)
    if replayed is not None:
        await endings.end_code_family(rt, replayed, at=at, action="device_code.replay_detected")
    if ending is not None:
        await endings.end_grant_now(rt, user_id=row.user_id, application_id=app.id, by=ending, at=at)
    if failure is not None:
        raise failure
    body = _response(rt, issued.access_token, row.scopes, refresh_token=issued.refresh_token)
    # No nonce: a device flow has no authorization request to carry one.
    return _with_id_token(rt, body, signer, app=app, user=user, row=row, access_token=issued.access_token,
                          nonce=None, at=at)


def _approved_meanwhile(polled, at: float) -> bool:
    if polled is None:
        return False
    row = polled[0]
    return (row.approved_at is not None and row.consumed_at is None and row.denied_at is None
            and row.expires_at > at)


def _unredeemed(polled, at: float) -> OAuthError:
    """Why a poll got no tokens, from the code's row after the poll (None: no code of this
    client): spent, denied or ended, expired, approved but its grant gone, or still pending."""
    if polled is None:
        return invalid_grant("the device code is unknown, expired, or was issued to another client")
    row, too_soon = polled
    if row.consumed_at is not None:
        return invalid_grant("this device code has already been used; the tokens it issued are revoked")
    if row.denied_at is not None:
        return OAuthError("access_denied", "the user denied the request, or the authorization has ended")
    if row.expires_at <= at:
        return OAuthError("expired_token", "the device code has expired; start again")
    if row.approved_at is not None:
        return OAuthError("access_denied", "the authorization has ended")
    if too_soon:
        return OAuthError("slow_down", f"poll at most every {row.interval} seconds", interval=row.interval)
    return OAuthError("authorization_pending", "the user has not decided yet")


_GRANTS = {
    "authorization_code": _authorization_code,
    "refresh_token": _refresh_token,
    "client_credentials": _client_credentials,
    DEVICE_CODE: _device_code,
}
GRANT_TYPES = tuple(_GRANTS)  # what the metadata advertises is exactly what is dispatched
