"""OpenID Connect's public documents: the signing keys (JWKS). Discovery is served beside
the RFC 8414 metadata (app.py), from the same document."""

from __future__ import annotations

from starlette.requests import Request

from fluxer_oauth.oauth import keys
from fluxer_oauth.web.api import router
from fluxer_oauth.web.caller import runtime
from fluxer_oauth.web.responses import json_response
from fluxer_oauth.web.schemas import JsonWebKeySet

# Relying parties may cache the key set briefly; a new key is published long before it signs
# (FLUXER_KEY_PUBLISH_DELAY), and an unknown kid makes them fetch it again anyway.
JWKS_CACHE = {"Cache-Control": "public, max-age=300"}


@router.route("GET", "/oauth2/keys", summary="The id_token signing keys (JWKS, RFC 7517)", response=JsonWebKeySet,
              tags=("oauth2",))
async def jwks(request: Request):
    return json_response(await keys.published(runtime(request)), headers=JWKS_CACHE)
