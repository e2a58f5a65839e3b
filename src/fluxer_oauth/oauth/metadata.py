"""Authorization server metadata (RFC 8414), built from the settings the server enforces."""

from __future__ import annotations

from fluxer_oauth.core.scopes import SCOPES
from fluxer_oauth.oauth.token import GRANT_TYPES
from fluxer_oauth.settings import Settings

CODE_CHALLENGE_METHODS = ("S256",)
CLIENT_AUTH_METHODS = ("client_secret_basic", "client_secret_post")


def metadata(settings: Settings) -> dict:
    base = settings.public_url
    return {
        "issuer": settings.issuer,
        "authorization_endpoint": f"{base}/oauth2/authorize",
        "token_endpoint": f"{base}/api/v1/oauth2/token",
        "revocation_endpoint": f"{base}/api/v1/oauth2/token/revoke",
        "introspection_endpoint": f"{base}/api/v1/oauth2/introspect",
        "userinfo_endpoint": f"{base}/api/v1/oauth2/userinfo",
        "service_documentation": f"{base}/api/v1/openapi.json",
        "scopes_supported": [scope.name for scope in SCOPES],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": list(GRANT_TYPES),
        "code_challenge_methods_supported": list(CODE_CHALLENGE_METHODS),
        "token_endpoint_auth_methods_supported": list(CLIENT_AUTH_METHODS),
        "revocation_endpoint_auth_methods_supported": list(CLIENT_AUTH_METHODS),
        "introspection_endpoint_auth_methods_supported": list(CLIENT_AUTH_METHODS),
        "authorization_response_iss_parameter_supported": True,
        "prompt_values_supported": ["none", "consent"],
    }
