"""POST /auth/register, /auth/login, /auth/logout (SPEC §4.5), and PATCH /users/@me. The
second step of a two-factor sign-in, mailed links and two-factor enrolment are in
routes/account_security.py."""

from __future__ import annotations

from msgspec import UNSET
from starlette.requests import Request

from fluxer_oauth.platform import accounts
from fluxer_oauth.web.api import SESSION_AUTH, router
from fluxer_oauth.web.caller import Caller, runtime
from fluxer_oauth.web.ratelimit import PasswordThrottle, limit_registration
from fluxer_oauth.web.responses import decode_json, json_response, no_content
from fluxer_oauth.web.schemas import LoginBody, MfaRequired, RegisterBody, SessionResponse, User, UserUpdateBody

# What PATCH /users/@me hands to accounts.update_profile when sent.
PROFILE_FIELDS = ("username", "global_name", "avatar", "email", "password", "new_password")


@router.route("POST", "/auth/register", summary="Create an account and a session", request=RegisterBody,
              response=SessionResponse, status=201, errors=(400,), tags=("accounts",))
async def register(request: Request):
    body = await decode_json(request, RegisterBody)
    await limit_registration(request.scope)
    token, user = await accounts.register(runtime(request), body.username, body.email, body.password)
    return json_response({"token": token, "user": accounts.user_json(user, with_email=True)}, 201)


@router.route("POST", "/auth/login", summary="Log in with username or email (two-factor: a ticket, no session yet)",
              request=LoginBody, response=(SessionResponse, MfaRequired), errors=(400,), tags=("accounts",))
async def login(request: Request):
    body = await decode_json(request, LoginBody)
    signed_in = await accounts.login(runtime(request), body.login, body.password, PasswordThrottle(request.scope))
    return sign_in_response(signed_in)


def sign_in_response(signed_in: accounts.SignIn):
    """A session ({token, user}), or with two-factor sign-in on, the ticket that POST
    /auth/mfa/totp takes with a code (Discord's answer: mfa, ticket, totp, backup)."""
    if signed_in.ticket is not None:
        return json_response({"mfa": True, "ticket": signed_in.ticket, "totp": True, "backup": True,
                              "user_id": str(signed_in.user.id)})
    return json_response({"token": signed_in.session, "user": accounts.user_json(signed_in.user, with_email=True)})


@router.route("POST", "/auth/logout", summary="End the calling session", auth=(SESSION_AUTH,), status=204,
              errors=(401, 403), tags=("accounts",))
async def logout(request: Request, caller: Caller):
    await accounts.logout(runtime(request), caller.session_token)
    return no_content()


@router.route("PATCH", "/users/@me",
              summary="Change the calling user's username, display name, avatar, email or password",
              auth=(SESSION_AUTH,), request=UserUpdateBody, response=User, errors=(400, 401, 403, 413),
              large_body=True, tags=("users",))
async def update_me(request: Request, caller: Caller):
    """The user's own session only: a bearer token (whatever its scopes) or a bot is 403.
    A new email or password needs the current ``password`` (checked as a login's is); a new
    password ends every session but this one."""
    body = await decode_json(request, UserUpdateBody)
    changes = {name: getattr(body, name) for name in PROFILE_FIELDS if getattr(body, name) is not UNSET}
    user = await accounts.update_profile(runtime(request), caller.user, changes,
                                         throttle=PasswordThrottle(request.scope), session_token=caller.session_token)
    return json_response(accounts.user_json(user, with_email=True))
