"""The OAuth2 JSON endpoints: the authorize redirect, consent for single-page clients,
the token endpoint and the device authorization endpoint."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import RedirectResponse

from fluxer_oauth.core.errors import ApiError, OAuthError
from fluxer_oauth.core.ids import parse_snowflake
from fluxer_oauth.core.permissions import parse_permissions
from fluxer_oauth.oauth import authorize as authz
from fluxer_oauth.oauth import introspection, revocation
from fluxer_oauth.oauth.device import device_authorization
from fluxer_oauth.oauth.params import Params
from fluxer_oauth.oauth.token import token_endpoint
from fluxer_oauth.web.api import CLIENT_AUTH, SESSION_AUTH, per_client, per_ip, per_user, router
from fluxer_oauth.web.caller import Caller, runtime
from fluxer_oauth.platform import authorizations
from fluxer_oauth.platform.validation import invalid_form_body
from fluxer_oauth.web.edge import WITH_CLIENT, hot
from fluxer_oauth.web.form_endpoints import FormEndpoint
from fluxer_oauth.web.responses import decode_json, json_response, no_content
from fluxer_oauth.web.schemas import (
    Authorization,
    ConsentBody,
    DeviceAuthorization,
    DeviceAuthorizationRequest,
    Introspection,
    RedirectTo,
    RevokeRequest,
    TokenRequest,
    TokenResponse,
)


@router.route("GET", "/oauth2/authorize", summary="Redirects to the authorization page with the same query",
              status=302, bucket=per_ip("authorize"), tags=("oauth2",))
async def authorize_redirect(request: Request):
    query = request.url.query
    return RedirectResponse("/oauth2/authorize" + (f"?{query}" if query else ""), status_code=302)


@router.route("POST", "/oauth2/authorize/consent", summary="Approve or deny an authorization request",
              auth=(SESSION_AUTH,), request=ConsentBody, response=RedirectTo, errors=(400, 401, 403),
              bucket=per_user("authorize"), tags=("oauth2",))
async def consent(request: Request, caller: Caller):
    body = await decode_json(request, ConsentBody)
    rt = runtime(request)
    params = Params.from_pairs(_consent_pairs(body))
    try:
        auth_request = await authz.parse_request(rt, params)
    except authz.UnsafeRequest as exc:
        raise OAuthError("invalid_request", str(exc)) from None
    except authz.RedirectError as exc:
        return json_response({"redirect_to": authz.error_redirect(rt, exc.redirect, exc.error, exc.description, exc.state)})
    try:
        if not body.authorize:
            url = authz.deny(rt, auth_request) if auth_request.redirect_uri else None
        else:
            if auth_request.needs_fresh_login(caller.user.signed_in_at, time.time()):
                # No login form here: the client sends the user to the authorization page.
                raise authz.RedirectError("login_required", "the user must sign in again")
            await authz.check_hinted_user(rt, auth_request, caller.user)
            # The body's guild_id is the user's choice (or the locked preselection).
            url = await authz.approve(rt, auth_request, caller.user, guild_id=auth_request.guild_id,
                                      permissions=_granted(body.granted_permissions),
                                      signed_in_at=caller.user.signed_in_at)
    except authz.RedirectError as exc:
        url = authz.error_redirect(rt, auth_request.redirect_uri, exc.error, exc.description, auth_request.state)
    return json_response({"redirect_to": url})


def _granted(value: str | int | None) -> int | None:
    """The user's ticked permissions (granted_permissions): a non-negative integer, as a
    number or a decimal string; anything else is a 400 like a malformed permissions value."""
    if value is None:
        return None
    granted = parse_permissions(str(value))
    if granted is None:
        raise invalid_form_body([{"path": "granted_permissions", "code": "PERMISSIONS_INVALID",
                                  "message": "must be a non-negative integer"}])
    return granted


def _consent_pairs(body: ConsentBody):
    fields = {
        "client_id": body.client_id,
        "scope": body.scope,
        "response_type": body.response_type,
        "redirect_uri": body.redirect_uri,
        "state": body.state,
        "code_challenge": body.code_challenge,
        "code_challenge_method": body.code_challenge_method,
        "prompt": body.prompt,
        "permissions": None if body.permissions is None else str(body.permissions),
        "guild_id": body.guild_id,
        "disable_guild_select": None if body.disable_guild_select is None else str(body.disable_guild_select).lower(),
        "nonce": body.nonce,
        "id_token_hint": body.id_token_hint,
        "max_age": None if body.max_age is None else str(body.max_age),
    }
    return [(name, value) for name, value in fields.items() if value is not None]


async def _revoke(rt, params, authorization) -> dict:
    await revocation.revoke(rt, params, authorization)
    return {}


token = router.route(
    "POST", "/oauth2/token", summary="Exchange a code, refresh a token, or get a client-credentials token",
    auth=(CLIENT_AUTH,), request=TokenRequest, response=TokenResponse, errors=(400, 401), form=True,
    bucket=per_client("token"), tags=("oauth2",),
)(hot(FormEndpoint(token_endpoint), global_count=WITH_CLIENT))

device_authorize = router.route(
    "POST", "/oauth2/device/authorize", summary="Start the device flow: a device code and a user code (RFC 8628)",
    auth=(CLIENT_AUTH,), request=DeviceAuthorizationRequest, response=DeviceAuthorization, errors=(400, 401),
    form=True, bucket=per_client("device"), tags=("oauth2",),
)(hot(FormEndpoint(device_authorization), global_count=WITH_CLIENT))

revoke_token = router.route(
    "POST", "/oauth2/token/revoke", summary="Revoke a token and its whole grant (RFC 7009)", auth=(CLIENT_AUTH,),
    request=RevokeRequest, errors=(400, 401), form=True, bucket=per_client("revoke"), tags=("oauth2",),
)(hot(FormEndpoint(_revoke), global_count=WITH_CLIENT))

revoke_alias = router.route(
    "POST", "/oauth2/revoke", summary="Alias of /oauth2/token/revoke", auth=(CLIENT_AUTH,), request=RevokeRequest,
    errors=(400, 401), form=True, bucket=per_client("revoke"), tags=("oauth2",),
)(revoke_token)

introspect_token = router.route(
    "POST", "/oauth2/introspect", summary="Introspect a token (RFC 7662)", auth=(CLIENT_AUTH,),
    request=RevokeRequest, response=Introspection, errors=(400, 401), form=True, tags=("oauth2",),
)(hot(FormEndpoint(introspection.introspect)))


@router.route("GET", "/oauth2/@me/authorizations", summary="Applications the user has authorized",
              auth=(SESSION_AUTH,), response=list[Authorization], errors=(401, 403), tags=("oauth2",))
async def list_authorizations(request: Request, caller: Caller):
    return json_response(await authorizations.list_authorizations(runtime(request), caller.user.id))


@router.route("DELETE", "/oauth2/@me/authorizations/{application_id}", summary="Revoke an application's grant",
              auth=(SESSION_AUTH,), status=204, errors=(401, 403, 404), tags=("oauth2",))
async def delete_authorization(request: Request, caller: Caller):
    application_id = parse_snowflake(request.path_params["application_id"])
    if application_id is None:
        raise ApiError(404, "UNKNOWN_AUTHORIZATION", "you have not authorized this application")
    await authorizations.revoke_authorization(runtime(request), caller.user.id, application_id)
    return no_content()
