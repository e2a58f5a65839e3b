"""Authorization server metadata (RFC 8414) and OpenID Connect Discovery 1.0, built from
the settings and tables the server enforces: one document, served at both addresses."""

from __future__ import annotations

from fluxer_oauth.core.scopes import SCOPES
from fluxer_oauth.oauth.authorize import CODE_CHALLENGE_METHODS, PROMPTS, RESPONSE_MODES
from fluxer_oauth.core.signing import SIGNING_ALGORITHMS
from fluxer_oauth.oauth.token import GRANT_TYPES
from fluxer_oauth.settings import Settings

# OpenID Connect Discovery 1.0 §4: where a relying party finds the document, under the issuer.
DISCOVERY_PATH = "/.well-known/openid-configuration"
# "none" is a public client's: client_id alone (it is refused at introspection).
CLIENT_AUTH_METHODS = ("client_secret_basic", "client_secret_post", "none")
CONFIDENTIAL_AUTH_METHODS = ("client_secret_basic", "client_secret_post")
# The claims an id_token or userinfo may carry (oauth/id_token.py).
CLAIMS = ("sub", "iss", "aud", "azp", "exp", "iat", "auth_time", "nonce", "at_hash",
          "preferred_username", "name", "locale", "email", "email_verified")


def metadata(settings: Settings) -> dict:
    base = settings.public_url
    api = f"{base}/api/v1"
    return {
        "issuer": settings.issuer,
        "authorization_endpoint": f"{base}/oauth2/authorize",
        "token_endpoint": f"{api}/oauth2/token",
        "device_authorization_endpoint": f"{api}/oauth2/device/authorize",
        "revocation_endpoint": f"{api}/oauth2/token/revoke",
        "introspection_endpoint": f"{api}/oauth2/introspect",
        "userinfo_endpoint": f"{api}/oauth2/userinfo",
        "jwks_uri": f"{api}/oauth2/keys",
        "service_documentation": f"{api}/openapi.json",
        "scopes_supported": [scope.name for scope in SCOPES],
        "response_types_supported": ["code"],
        "response_modes_supported": list(RESPONSE_MODES),
        "grant_types_supported": list(GRANT_TYPES),
        "code_challenge_methods_supported": list(CODE_CHALLENGE_METHODS),
        "token_endpoint_auth_methods_supported": list(CLIENT_AUTH_METHODS),
        "revocation_endpoint_auth_methods_supported": list(CLIENT_AUTH_METHODS),
        "introspection_endpoint_auth_methods_supported": list(CONFIDENTIAL_AUTH_METHODS),
        "authorization_response_iss_parameter_supported": True,
        "prompt_values_supported": sorted(PROMPTS),
        # OpenID Connect Discovery 1.0 §3
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": list(SIGNING_ALGORITHMS),
        "claims_supported": list(CLAIMS),
        "claims_parameter_supported": False,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
        "require_request_uri_registration": False,
        "ui_locales_supported": ["en-US"],
    }
