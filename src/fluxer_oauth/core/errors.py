"""The two error envelopes of the API (SPEC §1), as exceptions the web layer renders."""

from __future__ import annotations


class ApiError(Exception):
    """``{"code": ..., "message": ..., **details}`` with an HTTP status."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None, **details):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.details = details

    def body(self) -> dict:
        return {"code": self.code, "message": self.message, **self.details}


class OAuthError(Exception):
    """``{"error": ..., "error_description": ..., **details}``: protocol errors (RFC 6749
    §5.2); ``details`` are the members an extension adds (RFC 8628's ``interval``)."""

    def __init__(self, error: str, description: str, status: int = 400, headers: dict | None = None, **details):
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status
        self.headers = headers or {}
        self.details = details

    def body(self) -> dict:
        return {"error": self.error, "error_description": self.description, **self.details}


def invalid_client(description: str = "client authentication failed") -> OAuthError:
    return OAuthError("invalid_client", description, 401, {"WWW-Authenticate": 'Basic realm="fluxer"'})


def unauthorized(message: str = "401: Unauthorized") -> ApiError:
    return ApiError(401, "UNAUTHORIZED", message, {"WWW-Authenticate": 'Bearer error="invalid_token"'})


def missing_scope(scope: str) -> ApiError:
    return ApiError(
        403,
        "MISSING_OAUTH_SCOPE",
        f"this token lacks the {scope} scope",
        {"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope}"'},
        required_scope=scope,
    )


def access_denied(message: str = "this credential may not use this route") -> ApiError:
    return ApiError(403, "ACCESS_DENIED", message)


def not_found(what: str) -> ApiError:
    return ApiError(404, f"UNKNOWN_{what.upper()}", f"unknown {what}")
