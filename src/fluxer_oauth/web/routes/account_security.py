"""Keeping an account: the second step of a two-factor sign-in, the mailed links (email
verification, password reset) and two-factor enrolment, with Discord's paths where it has
them. The logic is the platform's (accounts, mail_links, two_factor); these routes decode,
throttle and answer.

The links and tickets are the proof on the routes without ``auth``; the enrolment routes take
the user's own session only (a bearer token, whatever its scopes, or a bot is 403), as
PATCH /users/@me does: an application never changes how its user signs in."""

from __future__ import annotations

from starlette.requests import Request

from fluxer_oauth.platform import accounts, mail_links, two_factor
from fluxer_oauth.web.api import SESSION_AUTH, router
from fluxer_oauth.web.caller import Caller, runtime
from fluxer_oauth.web.ratelimit import (
    PasswordThrottle,
    limit_password_reset,
    limit_verification_resend,
    password_reset_account_counter,
)
from fluxer_oauth.web.responses import decode_json, json_response, no_content
from fluxer_oauth.web.routes.accounts import sign_in_response
from fluxer_oauth.web.schemas import (
    BackupCodes,
    ForgotPasswordBody,
    MfaConfirmBody,
    MfaLoginBody,
    MfaRequired,
    ResetPasswordBody,
    SessionResponse,
    TotpEnableBody,
    TotpSetup,
    User,
    VerifyEmailBody,
)

ACCOUNTS, MFA = ("accounts",), ("users", "mfa")


# --- signing in with a second factor ----------------------------------------------------------

@router.route("POST", "/auth/mfa/totp", summary="Finish a two-factor sign-in with a TOTP or recovery code",
              request=MfaLoginBody, response=SessionResponse, errors=(400,), tags=ACCOUNTS)
async def mfa_totp_login(request: Request):
    body = await decode_json(request, MfaLoginBody)
    signed_in = await accounts.complete_sign_in(runtime(request), body.ticket, body.code,
                                                PasswordThrottle(request.scope))
    return json_response({"token": signed_in.session, "user": accounts.user_json(signed_in.user, with_email=True)})


# --- mailed links ---------------------------------------------------------------------------

@router.route("POST", "/auth/forgot", summary="Mail a password-reset link (the same answer for any login)",
              request=ForgotPasswordBody, status=204, errors=(400, 503), tags=ACCOUNTS)
async def forgot_password(request: Request):
    """204 whether or not an account has that email or username: the answer never says."""
    body = await decode_json(request, ForgotPasswordBody)
    await limit_password_reset(request.scope)
    await mail_links.request_password_reset(runtime(request), body.login,
                                            count_for_account=password_reset_account_counter(request.scope))
    return no_content()


@router.route("POST", "/auth/reset", summary="Set a new password with a mailed reset link, and sign in",
              request=ResetPasswordBody, response=(SessionResponse, MfaRequired), errors=(400,), tags=ACCOUNTS)
async def reset_password(request: Request):
    """Every session of the account ends; the answer is a new one, as a login's (SPEC §8), or
    with two-factor sign-in on, the ticket for the code: a mailed link is no second factor."""
    body = await decode_json(request, ResetPasswordBody)
    return sign_in_response(await accounts.reset_password(runtime(request), body.token, body.password))


@router.route("POST", "/auth/verify", summary="Verify an email address with a mailed link",
              request=VerifyEmailBody, response=User, errors=(400,), tags=ACCOUNTS)
async def verify_email(request: Request):
    body = await decode_json(request, VerifyEmailBody)
    user = await mail_links.verify_email(runtime(request), body.token)
    return json_response(accounts.user_json(user, with_email=True))


@router.route("POST", "/auth/verify/resend", summary="Mail the email verification link again",
              auth=(SESSION_AUTH,), status=204, errors=(400, 401, 403, 503), tags=ACCOUNTS)
async def resend_verification(request: Request, caller: Caller):
    await mail_links.resend_verification(runtime(request), caller.user,
                                         count=lambda: limit_verification_resend(request.scope, caller.user.id))
    return no_content()


# --- two-factor enrolment -----------------------------------------------------------------

@router.route("POST", "/users/@me/mfa/totp/setup", summary="A new TOTP secret to enrol (nothing is stored)",
              auth=(SESSION_AUTH,), response=TotpSetup, errors=(401, 403), tags=MFA)
async def totp_setup(request: Request, caller: Caller):
    secret = two_factor.new_secret()
    account_name = caller.user.email or caller.user.username
    return json_response({"secret": secret, "uri": two_factor.provisioning_uri(secret, account_name)})


@router.route("POST", "/users/@me/mfa/totp/enable", summary="Turn two-factor sign-in on; the recovery codes",
              auth=(SESSION_AUTH,), request=TotpEnableBody, response=BackupCodes, errors=(400, 401, 403),
              tags=MFA)
async def totp_enable(request: Request, caller: Caller):
    body = await decode_json(request, TotpEnableBody)
    codes = await two_factor.enable(runtime(request), caller.user, secret=body.secret, code=body.code,
                                    password=body.password, throttle=PasswordThrottle(request.scope))
    return json_response({"backup_codes": codes})


@router.route("POST", "/users/@me/mfa/totp/disable", summary="Turn two-factor sign-in off (password and a code)",
              auth=(SESSION_AUTH,), request=MfaConfirmBody, status=204, errors=(400, 401, 403), tags=MFA)
async def totp_disable(request: Request, caller: Caller):
    body = await decode_json(request, MfaConfirmBody)
    await two_factor.disable(runtime(request), caller.user, password=body.password, code=body.code,
                             throttle=PasswordThrottle(request.scope))
    return no_content()


@router.route("POST", "/users/@me/mfa/codes", summary="New recovery codes; the old ones stop working",
              auth=(SESSION_AUTH,), request=MfaConfirmBody, response=BackupCodes, errors=(400, 401, 403),
              tags=MFA)
async def regenerate_backup_codes(request: Request, caller: Caller):
    body = await decode_json(request, MfaConfirmBody)
    codes = await two_factor.regenerate_recovery_codes(runtime(request), caller.user, password=body.password,
                                                       code=body.code, throttle=PasswordThrottle(request.scope))
    return json_response({"backup_codes": codes})
