"""Request bodies (decoded and validated with msgspec) and response shapes (used for the
OpenAPI document). Field names follow Discord's where Fluxer has none of its own."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import UNSET, Struct, UnsetType

Snowflake = str  # decimal string on the wire
# An uploaded image (docs/api.md "Images"): png, jpeg, webp or gif, judged by its bytes.
ImageData = Annotated[str, msgspec.Meta(pattern="^data:image/", description=(
    "data:image/<type>;base64,<data>: a PNG, JPEG, WebP or GIF (first frame kept), at most "
    "FLUXER_IMAGE_MAX_BYTES (8 MiB) once decoded; null removes the image"))]


# --- requests -------------------------------------------------------------------------------

class RegisterBody(Struct):
    username: str
    email: str
    password: str


class LoginBody(Struct):
    login: str
    password: str


class MfaLoginBody(Struct):
    """The second step of a two-factor sign-in: the login's ticket and a code."""

    ticket: str
    code: str  # 6 digits from the authenticator app, or a recovery code


class ForgotPasswordBody(Struct):
    login: str  # the account's email address or username


class ResetPasswordBody(Struct):
    token: str  # from the mailed link
    password: str


class VerifyEmailBody(Struct):
    token: str  # from the mailed link


class TotpEnableBody(Struct):
    secret: str  # from POST /users/@me/mfa/totp/setup
    code: str
    password: str


class MfaConfirmBody(Struct):
    """Turning two-factor sign-in off, or new recovery codes: the password and a code."""

    password: str
    code: str  # a current code, or a recovery code


class ApplicationCreateBody(Struct):
    name: str
    description: str = ""
    redirect_uris: list[str] = []
    bot_public: bool = True
    bot_require_code_grant: bool = False
    bot: bool = True
    public_client: bool = False  # no secret, PKCE required, no client_credentials
    id_token_signed_response_alg: Literal["RS256", "ES256"] = "RS256"
    terms_of_service_url: str | None = None  # absolute https, at most 2048 characters
    privacy_policy_url: str | None = None


class ApplicationUpdateBody(Struct):
    name: str | None = None
    description: str | None = None
    redirect_uris: list[str] | None = None
    bot_public: bool | None = None
    bot_require_code_grant: bool | None = None
    public_client: bool | None = None
    id_token_signed_response_alg: Literal["RS256", "ES256"] | None = None
    icon: ImageData | None | UnsetType = UNSET  # absent: unchanged; null: removed
    # Absent: unchanged; null or "": removed; else an absolute https URL (2048 characters at most).
    terms_of_service_url: str | None | UnsetType = UNSET
    privacy_policy_url: str | None | UnsetType = UNSET


class PasswordBody(Struct):
    password: str


class ConsentBody(Struct):
    client_id: str
    scope: str
    authorize: bool
    response_type: str | None = None
    redirect_uri: str | None = None
    state: str | None = None
    code_challenge: str | None = None
    code_challenge_method: str | None = None
    prompt: str | None = None
    permissions: str | int | None = None
    # The user's choice, as on the consent page: which of the requested permissions the bot
    # gets (the bits outside ``permissions`` are ignored); all requested ones when left out.
    granted_permissions: str | int | None = None
    guild_id: str | None = None
    disable_guild_select: bool | None = None
    nonce: str | None = None
    max_age: int | None = None
    id_token_hint: str | None = None


class TokenRequest(Struct):
    """The token endpoint's form fields (application/x-www-form-urlencoded)."""

    grant_type: Literal["authorization_code", "refresh_token", "client_credentials",
                        "urn:ietf:params:oauth:grant-type:device_code"]
    code: str | UnsetType = UNSET
    device_code: str | UnsetType = UNSET  # the device grant (RFC 8628 §3.4)
    redirect_uri: str | UnsetType = UNSET
    code_verifier: str | UnsetType = UNSET
    refresh_token: str | UnsetType = UNSET
    scope: str | UnsetType = UNSET
    client_id: str | UnsetType = UNSET
    client_secret: str | UnsetType = UNSET


class DeviceAuthorizationRequest(Struct):
    """The device authorization endpoint's form fields (RFC 8628 §3.1)."""

    scope: str
    client_id: str | UnsetType = UNSET
    client_secret: str | UnsetType = UNSET


class GuildCreateBody(Struct):
    name: str
    icon: ImageData | None = None


class GuildUpdateBody(Struct):
    name: str | UnsetType = UNSET
    icon: ImageData | None | UnsetType = UNSET  # absent: unchanged; null: removed


class UserUpdateBody(Struct):
    """PATCH /users/@me: what is sent changes, what is left out stays."""

    username: str | UnsetType = UNSET
    global_name: str | None | UnsetType = UNSET  # null or blank: none (the username shows)
    avatar: ImageData | None | UnsetType = UNSET  # null: removed
    email: str | UnsetType = UNSET  # unverified until its mailed link is followed
    new_password: str | UnsetType = UNSET  # ends every other session of the account
    password: str | UnsetType = UNSET  # the current one: required with email or new_password


class RoleCreateBody(Struct):
    name: str
    permissions: str | int = "0"


class InviteCreateBody(Struct):
    max_age: int = 86400


class ConnectionCreateBody(Struct):
    type: str
    name: str


class GuildMemberAddBody(Struct):
    """Discord's "Add Guild Member" body (``guilds.join``): the user's OAuth2 access token,
    and what the bot gives the new member (ignored when the user already is one)."""

    access_token: str
    nick: str | None = None  # MANAGE_NICKNAMES; 1-32 characters, blank for none
    roles: list[Snowflake | int] | None = None  # MANAGE_ROLES; each below the bot's highest role
    mute: bool = False  # no voice on Fluxer: only false is accepted
    deaf: bool = False


# --- responses ------------------------------------------------------------------------------

class User(Struct):
    id: Snowflake
    username: str
    discriminator: str
    global_name: str | None
    avatar: str | None
    banner: str | None
    accent_color: int | None
    bot: bool
    system: bool
    mfa_enabled: bool
    locale: str
    flags: int
    public_flags: int
    email: str | None | UnsetType = UNSET
    verified: bool | UnsetType = UNSET


class UserInfo(User):
    """The user object with the OpenID Connect standard claims the token's scopes allow."""

    sub: Snowflake = ""
    preferred_username: str | UnsetType = UNSET
    name: str | UnsetType = UNSET
    email_verified: bool | UnsetType = UNSET


class SessionResponse(Struct):
    token: str
    user: User


class MfaRequired(Struct):
    """POST /auth/login for an account with two-factor sign-in: no session yet. The ticket
    goes to POST /auth/mfa/totp with a code."""

    mfa: Literal[True]
    ticket: str
    totp: bool
    backup: bool  # a recovery code is accepted in place of a TOTP code
    user_id: Snowflake


class TotpSetup(Struct):
    """A new TOTP secret and its otpauth:// URI (for a QR code); nothing is stored until
    POST /users/@me/mfa/totp/enable confirms a code of it."""

    secret: str
    uri: str


class BackupCodes(Struct):
    """Recovery codes, each usable once in place of a TOTP code; shown only this once."""

    backup_codes: list[str]


class Application(Struct):
    id: Snowflake
    name: str
    icon: str | None
    description: str
    bot_public: bool
    bot_require_code_grant: bool
    verify_key: str
    flags: int
    terms_of_service_url: str | None
    privacy_policy_url: str | None
    bot: User | UnsetType = UNSET
    owner: User | UnsetType = UNSET
    redirect_uris: list[str] | UnsetType = UNSET
    trusted: bool | UnsetType = UNSET
    disabled: bool | UnsetType = UNSET
    public_client: bool | UnsetType = UNSET
    id_token_signed_response_alg: str | UnsetType = UNSET


class BotWithToken(User):
    token: str | UnsetType = UNSET


class CreatedApplication(Application):
    client_secret: str = ""


class ClientSecret(Struct):
    client_secret: str


class BotToken(Struct):
    token: str


class PartialGuild(Struct):
    id: Snowflake
    name: str
    icon: str | None
    owner: bool
    permissions: str
    features: list[str]


class Role(Struct):
    id: Snowflake
    name: str
    permissions: str
    position: int
    managed: bool


class Guild(Struct):
    id: Snowflake
    name: str
    icon: str | None
    owner_id: Snowflake
    features: list[str]
    roles: list[Role]


class Member(Struct):
    """Discord's guild member object; the platform has no guild avatars, boosts, voice or
    timeouts, so those fields are always null or false."""

    user: User
    nick: str | None
    avatar: str | None
    banner: str | None
    roles: list[Snowflake]
    joined_at: str
    premium_since: str | None
    deaf: bool
    mute: bool
    flags: int
    pending: bool
    communication_disabled_until: str | None


class InviteGuild(Struct):
    id: Snowflake
    name: str
    icon: str | None
    owner_id: Snowflake


class Invite(Struct):
    code: str
    guild: InviteGuild
    expires_at: str | None | UnsetType = UNSET


class Connection(Struct):
    type: str
    id: str
    name: str
    verified: bool
    visibility: int


class AuthorizationInfo(Struct):
    application: Application | None
    scopes: list[str]
    expires: str | None
    user: User | UnsetType = UNSET


class RedirectTo(Struct):
    redirect_to: str | None  # None when a bot install without redirect URI was cancelled


class TokenResponse(Struct):
    access_token: str
    token_type: Literal["Bearer"]
    expires_in: int
    scope: str
    refresh_token: str | UnsetType = UNSET
    guild: InviteGuild | UnsetType = UNSET
    id_token: str | UnsetType = UNSET  # with the openid scope (code and device grants)


class DeviceAuthorization(Struct):
    """A device's code pair (RFC 8628 §3.2): the device shows user_code and verification_uri
    (or verification_uri_complete as a QR code) and polls the token endpoint with device_code."""

    device_code: str
    user_code: str  # XXXX-XXXX
    verification_uri: str
    verification_uri_complete: str
    expires_in: int
    interval: int  # seconds to wait between polls


class JsonWebKeySet(Struct):
    """The public signing keys (RFC 7517): RS256 and ES256 keys, current and retiring."""

    keys: list[dict]


class RevokeRequest(Struct):
    """Form fields of revocation and introspection (application/x-www-form-urlencoded)."""

    token: str
    token_type_hint: str | UnsetType = UNSET
    client_id: str | UnsetType = UNSET
    client_secret: str | UnsetType = UNSET


class Introspection(Struct):
    active: bool
    client_id: str | UnsetType = UNSET
    sub: str | UnsetType = UNSET
    scope: str | UnsetType = UNSET
    token_type: str | UnsetType = UNSET
    exp: int | UnsetType = UNSET
    iat: int | UnsetType = UNSET
    iss: str | UnsetType = UNSET


class Authorization(Struct):
    application: Application
    scopes: list[str]
    first_authorized_at: str
    last_used_at: str | None


class AdminUser(User):
    staff: bool = False
    disabled: bool = False
    created_at: str = ""


class AdminUserDetails(Struct):
    user: AdminUser
    guilds: list[PartialGuild]
    connections: list[Connection]
    applications: list[Application]
    authorizations: list[Authorization]


class AuditEntry(Struct):
    id: Snowflake
    created_at: str
    action: str
    actor_id: Snowflake | None
    application_id: Snowflake | None
    target_user_id: Snowflake | None
    details: dict


class ApiErrorBody(Struct):
    code: str
    message: str


class OAuthErrorBody(Struct):
    error: str
    error_description: str
    interval: int | UnsetType = UNSET  # slow_down (device grant): the polling interval from now on


class RateLimitedBody(Struct):
    """429 on any route (SPEC §7), the token endpoints included."""

    code: Literal["RATE_LIMITED"]
    message: str
    retry_after: float  # seconds until the next request fits
    global_: bool = msgspec.field(name="global")


__all__ = [name for name, value in globals().items() if isinstance(value, type) and issubclass(value, Struct)]
_ = msgspec
