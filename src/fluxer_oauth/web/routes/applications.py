"""Application management (SPEC §5): the owner's session only, never bearer tokens."""

from __future__ import annotations

from msgspec import UNSET
from starlette.requests import Request

from fluxer_oauth.core.ids import parse_snowflake
from fluxer_oauth.platform import applications
from fluxer_oauth.platform.applications import UNKNOWN_APPLICATION
from fluxer_oauth.web.api import BOT_AUTH, SESSION_AUTH, router
from fluxer_oauth.web.caller import Caller, runtime
from fluxer_oauth.web.ratelimit import PasswordThrottle
from fluxer_oauth.web.responses import decode_json, json_response, no_content
from fluxer_oauth.web.schemas import (
    Application,
    ApplicationCreateBody,
    ApplicationUpdateBody,
    BotToken,
    ClientSecret,
    CreatedApplication,
    PasswordBody,
)

OWNER = (SESSION_AUTH,)


def _application_id(request: Request) -> int:
    application_id = parse_snowflake(request.path_params["application_id"])
    if application_id is None:
        raise UNKNOWN_APPLICATION
    return application_id


@router.route("POST", "/oauth2/applications", summary="Create an application (and its bot)", auth=OWNER,
              request=ApplicationCreateBody, response=CreatedApplication, status=201, errors=(400, 401, 403),
              tags=("applications",))
async def create_application(request: Request, caller: Caller):
    owner = caller.user
    body = await decode_json(request, ApplicationCreateBody)
    created = await applications.create(
        runtime(request), owner, name=body.name, description=body.description, redirect_uris=body.redirect_uris,
        bot_public=body.bot_public, bot_require_code_grant=body.bot_require_code_grant, bot=body.bot,
        public_client=body.public_client, id_token_signed_response_alg=body.id_token_signed_response_alg,
        terms_of_service_url=body.terms_of_service_url, privacy_policy_url=body.privacy_policy_url,
    )
    return json_response(created, 201)


@router.route("GET", "/oauth2/applications/@me", summary="The calling bot's own application", auth=(BOT_AUTH,),
              response=Application, errors=(401, 403), tags=("applications",))
async def bot_application(request: Request, caller: Caller):
    return json_response(await applications.bot_view(runtime(request), caller.user.id))


@router.route("GET", "/users/@me/applications", summary="The caller's applications", auth=OWNER,
              response=list[Application], errors=(401, 403), tags=("applications",))
async def list_applications(request: Request, caller: Caller):
    owner = caller.user
    return json_response(await applications.list_owned(runtime(request), owner))


@router.route("GET", "/oauth2/applications/{application_id}", summary="One of the caller's applications",
              auth=OWNER, response=Application, errors=(401, 403, 404), tags=("applications",))
async def get_application(request: Request, caller: Caller):
    owner = caller.user
    app, bot_user = await applications.owned(runtime(request), owner, _application_id(request))
    return json_response(applications.application_json(app, owner=owner, bot_user=bot_user, private=True))


@router.route("PATCH", "/oauth2/applications/{application_id}", summary="Change an application", auth=OWNER,
              request=ApplicationUpdateBody, response=Application, errors=(400, 401, 403, 404, 413),
              large_body=True, tags=("applications",))
async def update_application(request: Request, caller: Caller):
    owner = caller.user
    application_id = _application_id(request)
    body = await decode_json(request, ApplicationUpdateBody)
    changes = {
        "name": body.name, "description": body.description, "redirect_uris": body.redirect_uris,
        "bot_public": body.bot_public, "bot_require_code_grant": body.bot_require_code_grant,
        "public_client": body.public_client, "id_token_signed_response_alg": body.id_token_signed_response_alg,
    }
    if body.icon is not UNSET:  # a data URI, or null to remove the icon
        changes["icon"] = body.icon
    for field in applications.LINK_FIELDS:  # only those sent: null removes a link, absent keeps it
        if getattr(body, field) is not UNSET:
            changes[field] = getattr(body, field)
    return json_response(await applications.update(runtime(request), owner, application_id, changes))


@router.route("DELETE", "/oauth2/applications/{application_id}", summary="Delete an application", auth=OWNER,
              status=204, errors=(401, 403, 404), tags=("applications",))
async def delete_application(request: Request, caller: Caller):
    owner = caller.user
    await applications.delete(runtime(request), owner, _application_id(request))
    return no_content()


@router.route("POST", "/oauth2/applications/{application_id}/client-secret/reset",
              summary="Replace the client secret (password confirmation)", auth=OWNER, request=PasswordBody,
              response=ClientSecret, errors=(400, 401, 403, 404), tags=("applications",))
async def reset_client_secret(request: Request, caller: Caller):
    owner = caller.user
    application_id = _application_id(request)
    body = await decode_json(request, PasswordBody)
    return json_response(await applications.reset_client_secret(runtime(request), owner, application_id, body.password,
                                                      PasswordThrottle(request.scope)))


@router.route("POST", "/oauth2/applications/{application_id}/bot/reset-token",
              summary="Replace the bot token (password confirmation)", auth=OWNER, request=PasswordBody,
              response=BotToken, errors=(400, 401, 403, 404), tags=("applications",))
async def reset_bot_token(request: Request, caller: Caller):
    owner = caller.user
    application_id = _application_id(request)
    body = await decode_json(request, PasswordBody)
    return json_response(await applications.reset_bot_token(runtime(request), owner, application_id, body.password,
                                                      PasswordThrottle(request.scope)))


@router.route("GET", "/oauth2/applications/{application_id}/public", summary="An application's public profile",
              response=Application, errors=(404,), tags=("applications",))
async def public_application(request: Request):
    return json_response(await applications.public_view(runtime(request), _application_id(request)))
