"""Declaring JSON API routes once: each declaration mounts the handler under ``/api/v1``
and ``/v1``, enforces its policy, and describes it for the OpenAPI document at
``/api/v1/openapi.json``.

A route's policy is what it declares: ``auth`` (the credential kinds it takes), ``scope``
(the scope a bearer token needs, from ``core.scopes.SCOPES``) and ``bucket`` (its rate-limit
bucket and how the key is formed). ``Operation.admit`` applies it, in this order: 401 for a
missing or bad credential, 403 for a kind the route does not take, 403 for a bearer token
without the scope, 403 for a user who is not staff on a staff-only scope's route, then the
bucket's count (429). The handler runs after and receives the caller:
``handler(request, caller)``; a route without ``auth`` keeps ``handler(request)``."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field, replace

import msgspec
from starlette.routing import Route

from fluxer_oauth import __version__
from fluxer_oauth.core.errors import access_denied, missing_scope
from fluxer_oauth.core.scopes import SCOPE, SCOPES
from fluxer_oauth.platform.two_factor import staff_mfa_missing
from fluxer_oauth.web import schemas
from fluxer_oauth.web.caller import BEARER, BOT, SESSION, Caller, authenticate_header, runtime
from fluxer_oauth.web.edge import API_PREFIXES, Call, as_starlette
from fluxer_oauth.web.ratelimit import client_ip, limit

PREFIXES = API_PREFIXES

# Security requirement names used in the document.
SESSION_AUTH, BEARER_AUTH, BOT_AUTH, CLIENT_AUTH = "session", "oauth2", "bot", "client"
# The caller kinds (web/caller.py) behind them; a client (CLIENT_AUTH) authenticates in the
# OAuth2 form endpoints themselves (oauth/client_auth.py).
_CALLER_KINDS = {SESSION_AUTH: SESSION, BEARER_AUTH: BEARER, BOT_AUTH: BOT}

# How a bucket's key is formed: the client's address, the authenticated user, or the
# authenticated OAuth2 client (counted by the form endpoint once the client authenticates).
PER_IP, PER_USER, PER_CLIENT = "ip", "user", "client"


@dataclass(frozen=True)
class Bucket:
    """A rate-limit bucket (its limit is the setting ``rate_limit_<name>``) and its key."""

    name: str
    per: str

    def key(self, scope, caller: Caller | None) -> str:
        if self.per == PER_IP:
            return f"ip:{client_ip(scope)}"
        if self.per == PER_USER:
            return f"user:{caller.user.id}"
        raise ValueError(f"the {self.name} bucket is counted per {self.per} by its endpoint")


def per_ip(name: str) -> Bucket:
    return Bucket(name, PER_IP)


def per_user(name: str) -> Bucket:
    return Bucket(name, PER_USER)


def per_client(name: str) -> Bucket:
    return Bucket(name, PER_CLIENT)


@dataclass
class Operation:
    method: str
    path: str
    summary: str
    auth: tuple[str, ...]
    request: type | None = None
    form: bool = False
    response: object | None = None  # a type, or a tuple of them: the body is one of those (oneOf)
    status: int = 200
    errors: tuple[int, ...] = ()
    also: tuple[int, ...] = ()  # other success statuses, answered without a body (a 204 beside a 201)
    scope: str | None = None
    tags: tuple[str, ...] = ()
    bucket: Bucket | None = None
    # Its body may carry an image (FLUXER_IMAGE_MAX_BYTES in base64): the edge takes bodies up
    # to settings.image_body_bytes on it, FLUXER_MAX_BODY_BYTES elsewhere.
    large_body: bool = False
    handler: object | None = None  # what was declared
    endpoint: object | None = None  # what the router mounts: the handler behind the policy
    kinds: tuple[str, ...] = field(init=False)  # the caller kinds (web/caller.py) it takes
    staff_only: bool = field(init=False)  # its scope is for staff members only

    def __post_init__(self) -> None:
        self.kinds = tuple(_CALLER_KINDS[name] for name in self.auth if name in _CALLER_KINDS)
        if self.scope is not None and self.scope not in SCOPE:
            raise ValueError(f"{self.method} {self.path}: undeclared scope {self.scope}")
        self.staff_only = self.scope is not None and SCOPE[self.scope].staff_only
        if self.bucket is not None and self.bucket.per == PER_USER and not self.kinds:
            raise ValueError(f"{self.method} {self.path}: a per-user bucket needs an authenticated caller")
        # A declaration the table could not enforce is refused, not mounted open.
        if self.scope is not None and BEARER not in self.kinds:
            raise ValueError(f"{self.method} {self.path}: a scope is checked on bearer tokens; declare BEARER_AUTH")
        if (CLIENT_AUTH in self.auth) != self.form:
            raise ValueError(f"{self.method} {self.path}: client authentication belongs to the form endpoints")
        if self.bucket is not None and (self.bucket.per == PER_CLIENT) != self.form:
            raise ValueError(f"{self.method} {self.path}: a per-client bucket is counted by a form endpoint")

    async def admit(self, rt, authorization: str | None, scope=None) -> Caller | None:
        """This route's declared policy applied to an ``Authorization`` header value (None:
        no header): the authenticated caller (None for a route without ``auth``), or the
        ``ApiError`` the route answers with. ``scope`` (an ASGI-style scope with ``app`` and
        ``state``) is needed only when the route declares a bucket counted here."""
        caller = None
        if self.kinds:
            caller = await authenticate_header(rt, authorization, self.kinds)
            if self.scope is not None:
                self.check_scope(caller, rt.settings)
        if self.bucket is not None and self.bucket.per != PER_CLIENT:
            if scope is None:
                raise TypeError(f"{self.method} {self.path} counts its {self.bucket.name} bucket: pass the scope")
            await limit(scope, self.bucket.name, self.bucket.key(scope, caller))
        return caller

    def check_scope(self, caller: Caller, settings) -> None:
        """The route's scope: a bearer token must carry it; a staff-only one, staff to use it
        (with two-factor sign-in on, where FLUXER_REQUIRE_STAFF_MFA asks for it)."""
        if caller.kind == BEARER and self.scope not in caller.scopes:
            raise missing_scope(self.scope)
        if self.staff_only and not caller.user.staff:
            raise access_denied(f"only staff members may use the {self.scope} API")
        if self.staff_only and staff_mfa_missing(settings, caller.user):
            raise access_denied(f"staff members must turn on two-factor sign-in to use the {self.scope} API")

    def enforced(self, handler):
        """``handler`` behind this route's policy, as the router mounts it (and the edge, for a
        hot route: marked ``hot_route``). A form endpoint authenticates its client and counts
        its per-client bucket itself, once the client is known: it is told which bucket."""
        hot = getattr(handler, "hot_route", None)
        if self.form:
            hot.handler.bucket = self.bucket.name if self.bucket is not None else None
            return handler
        if hot is not None:
            return self._enforced_hot(hot)
        if not self.kinds and (self.bucket is None or self.bucket.per == PER_CLIENT):
            return handler  # nothing to apply
        operation = self
        if self.kinds:
            async def endpoint(request):
                caller = await operation.admit(runtime(request), request.headers.get("authorization"), request.scope)
                return await handler(request, caller)
        else:
            async def endpoint(request):
                await operation.admit(runtime(request), None, request.scope)
                return await handler(request)
        return functools.wraps(handler, updated=())(endpoint)

    def _enforced_hot(self, hot):
        """A hot route's handler behind the policy: ``handler(call, caller)``."""
        operation, handler = self, hot.handler

        if operation.kinds and operation.bucket is None:  # admit's steps, written out: a coroutine less
            async def admitted(call: Call):
                caller = await authenticate_header(call.app.runtime, call.headers.get("authorization"),
                                                   operation.kinds)
                if operation.scope is not None:
                    operation.check_scope(caller, call.app.runtime.settings)
                return await handler(call, caller)
        else:
            async def admitted(call: Call):
                caller = await operation.admit(call.app.runtime, call.headers.get("authorization"), call.scope)
                return await handler(call, caller)

        admitted.__name__ = handler.__name__
        return as_starlette(replace(hot, handler=admitted))


@dataclass
class ApiRouter:
    operations: list[Operation] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)

    def route(self, method: str, path: str, *, summary: str, auth: tuple[str, ...] = (), **details):
        def register(handler):
            operation = Operation(method, path, summary, auth, handler=handler, **details)
            operation.endpoint = operation.enforced(handler)
            for prefix in PREFIXES:
                self.routes.append(Route(prefix + path, operation.endpoint, methods=[method]))
            self.operations.append(operation)
            return handler

        return register

    def large_bodies(self) -> tuple[tuple[str, re.Pattern], ...]:
        """(method, full path pattern under each prefix) of the routes declared ``large_body``."""
        prefixes = "|".join(re.escape(prefix) for prefix in PREFIXES)
        return tuple(
            (op.method, re.compile(f"(?:{prefixes})" + "[^/]+".join(re.escape(part) for part in re.split(r"{\w+}", op.path))))
            for op in self.operations if op.large_body
        )

    def operation(self, method: str, path: str) -> Operation:
        """The declaration of ``method path`` (path without the prefix, e.g. "/users/@me")."""
        for operation in self.operations:
            if operation.method == method and operation.path == path:
                return operation
        raise KeyError(f"{method} {path}")


def _path_schema(name: str) -> dict:
    if name.endswith("_id") and name != "connection_id":
        return {"type": "string", "pattern": "^[0-9]{1,20}$"}
    return {"type": "string", "minLength": 1, "maxLength": 100}


def _alternatives(response) -> tuple:
    return response if isinstance(response, tuple) else (response,)


def openapi_document(router: ApiRouter, issuer: str) -> dict:
    types = {op.request for op in router.operations if op.request is not None}
    types |= {kind for op in router.operations if op.response is not None for kind in _alternatives(op.response)}
    types |= {schemas.ApiErrorBody, schemas.OAuthErrorBody, schemas.RateLimitedBody}
    ordered = sorted(types, key=lambda t: repr(t))
    refs, components = msgspec.json.schema_components(ordered, ref_template="#/components/schemas/{name}")
    by_type = dict(zip(ordered, refs))
    buckets = sorted({op.bucket.name for op in router.operations if op.bucket is not None})
    rate_limit_headers = {
        **_RATE_LIMIT_HEADERS,
        "X-RateLimit-Bucket": {"description": f"the bucket: {', '.join(buckets)} or global",
                               "schema": {"type": "string"}},
    }
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
            alternatives = [by_type[kind] for kind in _alternatives(op.response)]
            schema = alternatives[0] if len(alternatives) == 1 else {"oneOf": alternatives}
            success["content"] = {"application/json": {"schema": schema}}
        item["responses"][str(op.status)] = success
        for status in op.also:
            item["responses"][str(status)] = {"description": "success, no body"}
        error_schema = by_type[schemas.OAuthErrorBody if op.form else schemas.ApiErrorBody]
        for status in sorted({*op.errors, 400 if op.request else None} - {None}):
            item["responses"][str(status)] = {
                "description": "error",
                "content": {"application/json": {"schema": error_schema}},
            }
        # Every route counts against the global limit per IP; a route that declares a bucket
        # against that bucket too, whose X-RateLimit-* headers every answer carries.
        if op.bucket is not None:
            item["x-rate-limit-bucket"] = {"name": op.bucket.name, "per": op.bucket.per}
        item["responses"]["429"] = {
            "description": "rate limited",
            "headers": rate_limit_headers,
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
                            "scopes": {scope.name: f"{scope.description} ({scope.unlocks})" for scope in SCOPES},
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
}

router = ApiRouter()
