"""POST /auth/register, /auth/login, /auth/logout (SPEC §4.5)."""

from __future__ import annotations

from starlette.requests import Request

from fluxer_oauth.platform import accounts
from fluxer_oauth.web.api import SESSION_AUTH, router
from fluxer_oauth.web.caller import Caller, runtime
from fluxer_oauth.web.ratelimit import PasswordThrottle, limit_registration
from fluxer_oauth.web.responses import decode_json, json_response, no_content
from fluxer_oauth.web.schemas import LoginBody, RegisterBody, SessionResponse


@router.route("POST", "/auth/register", summary="Create an account and a session", request=RegisterBody,
              response=SessionResponse, status=201, errors=(400,), tags=("accounts",))
async def register(request: Request):
    body = await decode_json(request, RegisterBody)
    await limit_registration(request.scope)
    token, user = await accounts.register(runtime(request), body.username, body.email, body.password)
    return json_response({"token": token, "user": accounts.user_json(user, with_email=True)}, 201)


@router.route("POST", "/auth/login", summary="Log in with username or email", request=LoginBody,
              response=SessionResponse, errors=(400,), tags=("accounts",))
async def login(request: Request):
    body = await decode_json(request, LoginBody)
    token, user = await accounts.login(runtime(request), body.login, body.password, PasswordThrottle(request.scope))
    return json_response({"token": token, "user": accounts.user_json(user, with_email=True)})


@router.route("POST", "/auth/logout", summary="End the calling session", auth=(SESSION_AUTH,), status=204,
              errors=(401, 403), tags=("accounts",))
async def logout(request: Request, caller: Caller):
    await accounts.logout(runtime(request), caller.session_token)
    return no_content()
