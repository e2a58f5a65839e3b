"""A small third-party web app that offers "Sign in with Fluxer": the authorization code
flow with PKCE (Authlib), the user's profile and guilds, a token refresh and revocation.

Configuration (environment): FLUXER_URL (default http://127.0.0.1:8080), FLUXER_CLIENT_ID,
FLUXER_CLIENT_SECRET, EXAMPLE_URL (where this app is reached, default http://localhost:8000).

The tokens live in the signed session cookie to keep the example short; a real app keeps
them on its server."""

from __future__ import annotations

import html
import os
import secrets

import httpx
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


def page(body: str) -> HTMLResponse:
    return HTMLResponse(
        "<!doctype html><meta charset=utf-8><meta name=viewport content='width=device-width'>"
        "<title>Example app</title><body style='font-family:system-ui;max-width:40rem;margin:2rem auto'>"
        f"<h1>Example app</h1>{body}</body>"
    )


def form(action: str, label: str) -> str:
    return f"<form method=post action='{action}' style='display:inline'><button>{label}</button></form> "


async def home(request: Request):
    token = request.session.get("token")
    if not token:
        error = request.query_params.get("error")
        note = f"<p role=alert>Sign-in failed: {html.escape(error)}</p>" if error else ""
        return page(f"{note}<p><a id=sign-in href='/login'>Sign in with Fluxer</a></p>")
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


async def login(request: Request):
    return await oauth.fluxer.authorize_redirect(request, f"{HERE}/callback", state=secrets.token_urlsafe(16))


async def callback(request: Request):
    try:
        token = await oauth.fluxer.authorize_access_token(request)
    except OAuthError as exc:
        return RedirectResponse(f"/?error={exc.error}", status_code=303)
    request.session["token"] = {k: token[k] for k in ("access_token", "refresh_token", "token_type", "expires_at")}
    return RedirectResponse("/", status_code=303)


async def refresh(request: Request):
    token = request.session.get("token") or {}
    fresh = await oauth.fluxer.fetch_access_token(grant_type="refresh_token", refresh_token=token.get("refresh_token"))
    request.session["token"] = {k: fresh[k] for k in ("access_token", "refresh_token", "token_type", "expires_at")}
    return RedirectResponse("/?notice=Token+refreshed", status_code=303)


async def revoke(request: Request):
    token = request.session.pop("token", None)
    if token:
        async with httpx.AsyncClient() as http:
            await http.post(f"{FLUXER}/api/v1/oauth2/token/revoke", auth=(CLIENT_ID, CLIENT_SECRET),
                            data={"token": token["refresh_token"], "token_type_hint": "refresh_token"})
    return RedirectResponse("/?notice=Access+revoked", status_code=303)


async def logout(request: Request):
    request.session.clear()
    return RedirectResponse("/", status_code=303)


app = Starlette(
    routes=[
        Route("/", home), Route("/login", login), Route("/callback", callback),
        Route("/refresh", refresh, methods=["POST"]), Route("/revoke", revoke, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
    ],
    middleware=[Middleware(SessionMiddleware, secret_key=os.environ.get("EXAMPLE_SESSION_KEY", secrets.token_hex(32)),
                           same_site="lax")],
)
