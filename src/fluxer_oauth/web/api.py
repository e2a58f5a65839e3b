"""Declaring JSON API routes once: each declaration mounts the handler under ``/api/v1``
and ``/v1`` and describes it for the OpenAPI document at ``/api/v1/openapi.json``."""

from __future__ import annotations

from dataclasses import dataclass, field

import re

import msgspec
from starlette.routing import Route

from fluxer_oauth import __version__
from fluxer_oauth.web import schemas

PREFIXES = ("/api/v1", "/v1")

# Security requirement names used in the document.
SESSION_AUTH, BEARER_AUTH, BOT_AUTH, CLIENT_AUTH = "session", "oauth2", "bot", "client"


@dataclass
class Operation:
    method: str
    path: str
    summary: str
    auth: tuple[str, ...]
    request: type | None = None
    form: bool = False
    response: object | None = None
    status: int = 200
    errors: tuple[int, ...] = ()
    scope: str | None = None
    tags: tuple[str, ...] = ()


@dataclass
class ApiRouter:
    operations: list[Operation] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)

    def route(self, method: str, path: str, *, summary: str, auth: tuple[str, ...] = (), **details):
        def register(handler):
            for prefix in PREFIXES:
                self.routes.append(Route(prefix + path, handler, methods=[method]))
            self.operations.append(Operation(method, path, summary, auth, **details))
            return handler

        return register


def _path_schema(name: str) -> dict:
    if name.endswith("_id") and name != "connection_id":
        return {"type": "string", "pattern": "^[0-9]{1,20}$"}
    return {"type": "string", "minLength": 1, "maxLength": 100}


def openapi_document(router: ApiRouter, issuer: str) -> dict:
    types = {op.request for op in router.operations if op.request is not None}
    types |= {op.response for op in router.operations if op.response is not None}
    types |= {schemas.ApiErrorBody, schemas.OAuthErrorBody, schemas.RateLimitedBody}
    ordered = sorted(types, key=lambda t: repr(t))
    refs, components = msgspec.json.schema_components(ordered, ref_template="#/components/schemas/{name}")
    by_type = dict(zip(ordered, refs))
    paths: dict = {}
    for op in router.operations:
        item = {
            "summary": op.summary,
            "operationId": f"{op.method.lower()}_{op.path.strip('/').replace('/', '_').replace('@', '').replace('{', '').replace('}', '').replace('-', '_').replace('.', '_')}",
            "tags": list(op.tags),
            "responses": {},
        }
        names = re.findall(r"{(\w+)}", op.path)
        if names:
            item["parameters"] = [
                {"name": name, "in": "path", "required": True, "schema": _path_schema(name)} for name in names
            ]
        if op.auth:
            item["security"] = [{name: [op.scope] if op.scope and name == BEARER_AUTH else []} for name in op.auth]
        if op.request is not None:
            media = "application/x-www-form-urlencoded" if op.form else "application/json"
            item["requestBody"] = {"required": True, "content": {media: {"schema": by_type[op.request]}}}
        success = {"description": "success"}
        if op.response is not None:
            success["content"] = {"application/json": {"schema": by_type[op.response]}}
        item["responses"][str(op.status)] = success
        error_schema = by_type[schemas.OAuthErrorBody if op.form else schemas.ApiErrorBody]
        for status in sorted({*op.errors, 400 if op.request else None} - {None}):
            item["responses"][str(status)] = {
                "description": "error",
                "content": {"application/json": {"schema": error_schema}},
            }
        # Every route counts against the global limit per IP; the token, revoke and authorize
        # routes against their own bucket too, whose X-RateLimit-* headers every answer carries.
        item["responses"]["429"] = {
            "description": "rate limited",
            "headers": _RATE_LIMIT_HEADERS,
            "content": {"application/json": {"schema": by_type[schemas.RateLimitedBody]}},
        }
        paths.setdefault("/api/v1" + op.path, {})[op.method.lower()] = item
    return {
        "openapi": "3.1.0",
        "info": {"title": "Fluxer OAuth2 API", "version": __version__},
        "servers": [{"url": issuer}],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                SESSION_AUTH: {"type": "apiKey", "in": "header", "name": "Authorization",
                               "description": "a session token (flx_...), bare or after Bearer"},
                BEARER_AUTH: {
                    "type": "oauth2",
                    "flows": {
                        "authorizationCode": {
                            "authorizationUrl": f"{issuer}/oauth2/authorize",
                            "tokenUrl": f"{issuer}/api/v1/oauth2/token",
                            "refreshUrl": f"{issuer}/api/v1/oauth2/token",
                            "scopes": {s: s for s in ("identify", "email", "guilds", "connections", "bot", "admin")},
                        }
                    },
                },
                BOT_AUTH: {"type": "apiKey", "in": "header", "name": "Authorization",
                           "description": "Bot <token>"},
                CLIENT_AUTH: {"type": "http", "scheme": "basic"},
            },
        },
    }

_RATE_LIMIT_HEADERS = {
    "Retry-After": {"description": "whole seconds until the next request fits", "schema": {"type": "integer"}},
    "X-RateLimit-Limit": {"description": "requests allowed per period", "schema": {"type": "integer"}},
    "X-RateLimit-Remaining": {"description": "requests left now", "schema": {"type": "integer"}},
    "X-RateLimit-Reset": {"description": "Unix seconds", "schema": {"type": "integer"}},
    "X-RateLimit-Reset-After": {"description": "seconds, three decimals", "schema": {"type": "number"}},
    "X-RateLimit-Bucket": {"description": "the bucket: authorize, token, revoke or global",
                           "schema": {"type": "string"}},
}

router = ApiRouter()
