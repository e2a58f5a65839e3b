"""The OAuth2 form endpoints (token, revocation, introspection) as hot routes of the edge.

Each is one function of the request (``FormEndpoint.__call__``), mounted in the router as
well (for the OpenAPI document and 405s), and renders its own errors in the OAuth2
envelope."""

from __future__ import annotations

import msgspec

from fluxer_oauth.core.errors import ApiError, OAuthError
from fluxer_oauth.web.edge import JSON, Answer, Call
from fluxer_oauth.web.ratelimit import GLOBAL_PENDING, admit_client, count_failed_client_auth, count_pending_global
from fluxer_oauth.web.responses import NO_STORE, error_answer, form_params

_encode = msgspec.json.Encoder().encode
NO_STORE_HEADERS = [(name.lower(), value) for name, value in NO_STORE.items()]


class FormEndpoint:
    """``handler(runtime, params, authorization) -> dict`` behind a POST form endpoint. Its
    per-client rate-limit ``bucket`` (None: only the global limit) is the one its route
    declares (web/api.py sets it)."""

    def __init__(self, handler) -> None:
        self.bucket: str | None = None
        self.handler = handler
        self.__name__ = handler.__name__

    async def __call__(self, call: Call) -> Answer:
        scope = call.scope
        try:
            try:
                params = form_params(call.headers.get("content-type") or "", call.body)
            except OAuthError:
                await count_pending_global(scope)  # counted all the same, and its 429 comes first
                raise
            result = await self._limited(scope, params, call.headers.get("authorization"))
            return 200, [JSON, *NO_STORE_HEADERS], _encode(result)
        except OAuthError as exc:
            return error_answer(exc, (JSON, *NO_STORE_HEADERS))
        except ApiError as exc:  # rate limited
            return error_answer(exc, (JSON,))

    async def _limited(self, scope, params, authorization: str | None):
        """The handler under the endpoint's per-client limit (if it has one), counted once the
        client has authenticated; a failed authentication counts against the address instead
        (on every form endpoint); a request that stops before either still makes its global
        count."""
        bucket = self.bucket
        if bucket is not None and scope["app"].limits.enabled:
            params.on_client_authenticated = lambda application_id, public: admit_client(scope, bucket, application_id,
                                                                                           public=public)
        try:
            return await self.handler(scope["app"].runtime, params, authorization)
        except OAuthError as exc:
            if exc.error == "invalid_client":
                await count_failed_client_auth(scope)  # over its failures: the 429 replaces the 401
            raise
        finally:
            if GLOBAL_PENDING in scope.get("state", ()):
                await count_pending_global(scope)
