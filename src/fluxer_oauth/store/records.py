"""The rows of the typed store interface (store/interfaces.py), as NamedTuples: read by
name (``user.email``), immutable (the SQLite cache shares one instance between requests)
and hashable (an encoded user can be cached under the user itself)."""

from __future__ import annotations

from typing import NamedTuple


class User(NamedTuple):
    """A user as the bearer and bot lookups give it (no password hash)."""

    id: int
    username: str
    discriminator: str
    global_name: str | None
    email: str | None
    verified: bool
    avatar: str | None
    banner: str | None
    accent_color: int | None
    locale: str | None
    flags: int
    bot: bool
    system: bool
    mfa_enabled: bool
    staff: bool
    disabled_at: float | None
    created_at: float


class Application(NamedTuple):
    """An application whose owner is enabled (the application itself may be disabled)."""

    id: int
    owner_id: int
    name: str
    description: str | None
    icon: str | None
    secret_hash: bytes
    redirect_uris: str  # a JSON list
    bot_id: int | None
    bot_token_hash: bytes | None
    bot_public: bool
    bot_require_code_grant: bool
    trusted: bool
    disabled_at: float | None
    verify_key: str
    created_at: float
    updated_at: float
    public_client: bool
    id_token_signed_response_alg: str
    terms_of_service_url: str | None
    privacy_policy_url: str | None


class AccessToken(NamedTuple):
    """A live access token of an enabled user and application, with its user."""

    application_id: int
    scopes: str
    expires_at: float
    created_at: float
    user: User


class LiveToken(NamedTuple):
    """A live access or refresh token (kind: tables.ACCESS or tables.REFRESH)."""

    application_id: int
    user_id: int
    scopes: str
    kind: int
    expires_at: float
    created_at: float


class BotLogin(NamedTuple):
    """What a bot token is checked against: the stored hash (None before the first reset)
    and the bot's user."""

    token_hash: bytes | None
    user: User


class NewToken(NamedTuple):
    """An access or refresh token to insert."""

    token_hash: bytes
    kind: int
    application_id: int
    user_id: int
    grant_id: int | None
    family_id: int
    issue_id: int
    scopes: str
    guild_id: int | None
    created_at: float
    expires_at: float
    rotated: bool = False


class ClientToken(NamedTuple):
    """A client-credentials token to write if the client still checks out: the application
    ``application_id`` has ``secret_hash``, is enabled, has an enabled owner and a bot (the
    token's user)."""

    token_hash: bytes
    application_id: int
    secret_hash: bytes
    issue_id: int
    scopes: str
    created_at: float
    expires_at: float


class Redemption(NamedTuple):
    """A code to redeem or a refresh token to rotate (``key``: the code's hash or the token's
    stored key), with the access/refresh pair to issue if it goes through
    (store/redemptions.py). The last three fields bind a code: the redirect_uri sent, the
    S256 challenge of the code_verifier sent, and whether the client is public."""

    key: bytes
    application_id: int
    now: float
    access_hash: bytes
    refresh_hash: bytes
    issue_id: int
    access_expires_at: float
    refresh_expires_at: float
    redirect_uri: str | None = None
    challenge: str | None = None
    public_client: bool = False


USER_FIELDS = User._fields
APPLICATION_FIELDS = Application._fields


class SigningKey(NamedTuple):
    """An OpenID Connect signing key as stored: its public JWK (JSON text) and its private
    key encrypted under the server secret (oauth/keys.py decrypts it)."""

    kid: str
    alg: str
    public_jwk: str
    private_key: bytes
    created_at: float
    signs_from: float
    retires_at: float | None
    published_until: float | None
