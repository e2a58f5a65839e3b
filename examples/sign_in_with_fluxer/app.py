"""A small third-party web app that offers "Sign in with Fluxer": the authorization code
flow with PKCE (Authlib), the user's profile and guilds, a token refresh and revocation;
and, beside it, "Sign in with Fluxer (OpenID Connect)": the server's discovery document,
scope ``openid email``, and the id_token validated by Authlib (signature against the
server's JWKS, issuer, audience, expiry, nonce, at_hash) before the app believes who signed in.

Configuration (environment): FLUXER_URL (default http://127.0.0.1:8080), FLUXER_CLIENT_ID,
FLUXER_CLIENT_SECRET (for a public client, leave it unset: the OpenID Connect sign-in then
authenticates with client_id alone), EXAMPLE_URL (where this app is reached, default
http://localhost:8000). Both sign-ins come back to EXAMPLE_URL/callback.

HTTP goes through httpx2, the successor of httpx that Authlib uses (with only the old httpx
installed, Authlib falls back to it and warns that this is deprecated).

The tokens live in the signed session cookie to keep the example short; a real app keeps
them on its server."""

from __future__ import annotations

import base64
import html
import json
import os
import secrets

import httpx2
from authlib.integrations.starlette_client import OAuth, OAuthError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse
from starlette.routing import Route

FLUXER = os.environ.get("FLUXER_URL", "http://127.0.0.1:8080").rstrip("/")
HERE = os.environ.get("EXAMPLE_URL", "http://localhost:8000").rstrip("/")
CLIENT_ID = os.environ.get("FLUXER_CLIENT_ID", "")
CLIENT_SECRET = os.environ.get("FLUXER_CLIENT_SECRET", "")

oauth = OAuth()
oauth.register(
    "fluxer",
    client_id=CLIENT_ID,
    client_secret=CLIENT_SECRET,
    authorize_url=f"{FLUXER}/oauth2/authorize",
    access_token_url=f"{FLUXER}/api/v1/oauth2/token",
    api_base_url=f"{FLUXER}/api/v1/",
    client_kwargs={"scope": "identify email guilds", "code_challenge_method": "S256",
                   "token_endpoint_auth_method": "client_secret_basic"},
)
# OpenID Connect: everything (endpoints, JWKS, issuer) comes from the discovery document.
oauth.register(
    "fluxer_oidc",
    client_id=CLIENT_ID,
    client_secret=CLIENT_SECRET or None,
    server_metadata_url=f"{FLUXER}/.well-known/openid-configuration",
    client_kwargs={"scope": "openid email", "code_challenge_method": "S256",
                   "token_endpoint_auth_method": "client_secret_basic" if CLIENT_SECRET else "none"},
)
TOKEN_FIELDS = ("access_token", "refresh_token", "token_type", "expires_at")


def page(body: str) -> HTMLResponse:
    return HTMLResponse(
        "<!doctype html><meta charset=utf-8><meta name=viewport content='width=device-width'>"
        "<title>Example app</title><body style='font-family:system-ui;max-width:40rem;margin:2rem auto'>"
        f"<h1>Example app</h1>{body}</body>"
    )


def form(action: str, label: str) -> str:
    return f"<form method=post action='{action}' style='display:inline'><button>{label}</button></form> "


async def home(request: Request):
    if request.session.get("identity"):
        return await openid_home(request)
    token = request.session.get("token")
    if not token:
        error = request.query_params.get("error")
        note = f"<p role=alert>Sign-in failed: {html.escape(error)}</p>" if error else ""
        return page(f"{note}<p><a id=sign-in href='/login'>Sign in with Fluxer</a></p>"
                    "<p><a id=sign-in-oidc href='/login/oidc'>Sign in with Fluxer (OpenID Connect)</a></p>")
    client = oauth.fluxer
    me = await client.get("users/@me", token=token)
    if me.status_code == 401:
        request.session.clear()
        return page("<p id=expired>Your Fluxer access ended. <a href='/login'>Sign in again</a></p>")
    user = me.json()
    guilds = (await client.get("users/@me/guilds", token=token)).json()
    items = "".join(f"<li>{html.escape(g['name'])}</li>" for g in guilds) or "<li>(no guilds)</li>"
    notice = html.escape(request.query_params.get("notice", ""))
    return page(
        f"<p id=notice>{notice}</p>"
        f"<p>Signed in as <strong id=username>{html.escape(user['username'])}</strong>"
        f" (<span id=email>{html.escape(user.get('email') or '')}</span>)</p>"
        f"<h2>Your guilds</h2><ul id=guilds>{items}</ul>"
        + form("/refresh", "Refresh token") + form("/revoke", "Revoke access") + form("/logout", "Sign out")
    )


async def openid_home(request: Request):
    """Who the validated id_token says signed in, and what userinfo says with the access token."""
    identity = request.session["identity"]
    info = await oauth.fluxer_oidc.get((await oauth.fluxer_oidc.load_server_metadata())["userinfo_endpoint"],
                                       token=request.session["oidc_token"])
    if info.status_code == 401:
        request.session.clear()
        return page("<p id=expired>Your Fluxer access ended. <a href='/login/oidc'>Sign in again</a></p>")
    verified = "yes" if identity.get("email_verified") else "no"
    return page(
        f"<p>Signed in with OpenID Connect as <strong id=oidc-username>{html.escape(identity['preferred_username'])}"
        f"</strong> (<span id=oidc-email>{html.escape(identity.get('email') or '')}</span>, verified: "
        f"<span id=oidc-email-verified>{verified}</span>)</p>"
        "<p>From the id_token, whose signature, issuer, audience, expiry, nonce and at_hash were checked: "
        f"subject <code id=oidc-sub>{html.escape(identity['sub'])}</code>, issuer "
        f"<code id=oidc-iss>{html.escape(identity['iss'])}</code>, audience "
        f"<code id=oidc-aud>{html.escape(identity['aud'])}</code>, signed with "
        f"<code id=oidc-alg>{html.escape(identity['alg'])}</code>.</p>"
        f"<h2>userinfo</h2><pre id=userinfo>{html.escape(json.dumps(info.json(), indent=2, sort_keys=True))}</pre>"
        + form("/logout", "Sign out")
    )


async def login(request: Request):
    request.session["flow"] = "oauth2"
    return await oauth.fluxer.authorize_redirect(request, f"{HERE}/callback", state=secrets.token_urlsafe(16))


async def login_oidc(request: Request):
    # Authlib adds a nonce (the scope has openid) and keeps it with the state and the PKCE
    # verifier in the session, to check it against the id_token on the way back.
    request.session["flow"] = "oidc"
    return await oauth.fluxer_oidc.authorize_redirect(request, f"{HERE}/callback", state=secrets.token_urlsafe(16))


async def callback(request: Request):
    if request.session.pop("flow", None) == "oidc":
        return await callback_oidc(request)
    try:
        token = await oauth.fluxer.authorize_access_token(request)
    except OAuthError as exc:
        return RedirectResponse(f"/?error={exc.error}", status_code=303)
    request.session["token"] = {k: token[k] for k in TOKEN_FIELDS}
    return RedirectResponse("/", status_code=303)


async def callback_oidc(request: Request):
    client = oauth.fluxer_oidc
    issuer = (await client.load_server_metadata())["issuer"]
    # Authlib checks the signature (JWKS), exp, iat, azp, the nonce it sent and the at_hash;
    # these options add the issuer and the audience (this client), and require what the
    # server promises.
    claims_options = {"iss": {"essential": True, "values": [issuer]}, "aud": {"essential": True, "values": [CLIENT_ID]},
                      "nonce": {"essential": True}, "at_hash": {"essential": True}}
    try:
        token = await client.authorize_access_token(request, claims_options=claims_options)
    except OAuthError as exc:
        return RedirectResponse(f"/?error={exc.error}", status_code=303)
    except Exception as exc:  # noqa: BLE001 - an id_token that does not validate (the JOSE library's errors)
        return RedirectResponse(f"/?error=invalid_id_token:{type(exc).__name__}", status_code=303)
    claims = token.get("userinfo")  # the id_token's claims, once validated
    if claims is None:
        return RedirectResponse("/?error=no_id_token", status_code=303)
    alg = json.loads(base64url_decode(token["id_token"].split(".")[0]))["alg"]
    request.session["identity"] = {**{k: claims.get(k) for k in ("sub", "iss", "aud", "preferred_username", "email",
                                                                 "email_verified")}, "alg": alg}
    request.session["oidc_token"] = {k: token[k] for k in TOKEN_FIELDS}
    return RedirectResponse("/", status_code=303)


def base64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


async def refresh(request: Request):
    token = request.session.get("token") or {}
    fresh = await oauth.fluxer.fetch_access_token(grant_type="refresh_token", refresh_token=token.get("refresh_token"))
    request.session["token"] = {k: fresh[k] for k in TOKEN_FIELDS}
    return RedirectResponse("/?notice=Token+refreshed", status_code=303)


async def revoke(request: Request):
    token = request.session.pop("token", None)
    if token:
        async with httpx2.AsyncClient() as http:
            await http.post(f"{FLUXER}/api/v1/oauth2/token/revoke", auth=(CLIENT_ID, CLIENT_SECRET),
                            data={"token": token["refresh_token"], "token_type_hint": "refresh_token"})
    return RedirectResponse("/?notice=Access+revoked", status_code=303)


async def logout(request: Request):
    request.session.clear()
    return RedirectResponse("/", status_code=303)


app = Starlette(
    routes=[
        Route("/", home), Route("/login", login), Route("/login/oidc", login_oidc), Route("/callback", callback),
        Route("/refresh", refresh, methods=["POST"]), Route("/revoke", revoke, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
    ],
    middleware=[Middleware(SessionMiddleware, secret_key=os.environ.get("EXAMPLE_SESSION_KEY", secrets.token_hex(32)),
                           same_site="lax")],
)
