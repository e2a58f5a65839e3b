"""The schema, in SQLAlchemy Core. Alembic migrations in ``migrations/`` create and change it.

Times are Unix seconds (double precision) so that both backends compare them the same way.
Credentials are stored only as 32-byte hashes (``*_hash`` columns).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    text,
    UniqueConstraint,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

Id = BigInteger  # snowflakes
Hash = LargeBinary(32)
# Access and refresh tokens: their issue time, then their SHA-256 (credentials.stored_token_key).
# Neither backend enforces a binary column's length (BLOB, bytea), so no migration changes it.
TokenKey = LargeBinary(38)
Time = Float

users = Table(
    "users", metadata,
    Column("id", Id, primary_key=True, autoincrement=False),
    Column("username", String(32), nullable=False),
    # Lower-cased username of a person; NULL for bots, whose names need not be unique.
    Column("username_key", String(32), unique=True),
    Column("discriminator", String(4), nullable=False),
    Column("global_name", String(32)),
    Column("email", String(254)),
    Column("email_key", String(254), unique=True),
    Column("verified", Boolean, nullable=False, default=False),
    Column("password_hash", String(200)),
    Column("avatar", String(64)),
    Column("banner", String(64)),
    Column("accent_color", Integer),
    Column("locale", String(16), nullable=False, default="en-US"),
    Column("flags", BigInteger, nullable=False, default=0),
    Column("bot", Boolean, nullable=False, default=False),
    Column("system", Boolean, nullable=False, default=False),
    Column("mfa_enabled", Boolean, nullable=False, default=False),
    # Two-factor sign-in (platform/two_factor.py): the TOTP secret sealed under the server
    # secret (NULL without two-factor), and the last time step a code was accepted for, so
    # that no code works twice.
    Column("totp_secret", LargeBinary),
    Column("totp_last_step", BigInteger),
    Column("staff", Boolean, nullable=False, default=False),
    Column("disabled_at", Time),
    Column("created_at", Time, nullable=False),
    Index("ix_users_avatar", "avatar", sqlite_where=text("avatar IS NOT NULL"),
          postgresql_where=text("avatar IS NOT NULL")),
)

# Links mailed to a user (platform/mail_links.py): one to verify an email address, one to set
# a new password. Only the token's hash is kept; a link works once (used_at) and until
# expires_at. A verification link names the address it verifies: after an email change, the
# links sent to the old address verify nothing.
EMAIL_VERIFICATION, PASSWORD_RESET = 1, 2

mail_links = Table(
    "mail_links", metadata,
    Column("token_hash", Hash, primary_key=True),
    Column("purpose", SmallInteger, nullable=False),  # EMAIL_VERIFICATION or PASSWORD_RESET
    Column("user_id", Id, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("email", String(254), nullable=False),  # where it was sent
    Column("created_at", Time, nullable=False),
    Column("expires_at", Time, nullable=False, index=True),
    Column("used_at", Time),
)

# Two-factor recovery codes: ten per enrolment, each usable once in place of a TOTP code.
recovery_codes = Table(
    "recovery_codes", metadata,
    Column("user_id", Id, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("code_hash", Hash, primary_key=True),
    Column("used_at", Time),
)

sessions = Table(
    "sessions", metadata,
    Column("token_hash", Hash, primary_key=True),
    Column("user_id", Id, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("created_at", Time, nullable=False),
    Column("expires_at", Time, nullable=False, index=True),
)

applications = Table(
    "applications", metadata,
    Column("id", Id, primary_key=True, autoincrement=False),
    Column("owner_id", Id, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("name", String(100), nullable=False),
    Column("description", String(400), nullable=False, default=""),
    Column("icon", String(64)),
    Column("secret_hash", Hash, nullable=False),
    Column("redirect_uris", Text, nullable=False, default="[]"),  # JSON list
    # The bot user has the application's ID; NULL when the application has no bot.
    Column("bot_id", Id, ForeignKey("users.id", ondelete="SET NULL")),
    Column("bot_token_hash", Hash),
    Column("bot_public", Boolean, nullable=False, default=True),
    Column("bot_require_code_grant", Boolean, nullable=False, default=False),
    Column("trusted", Boolean, nullable=False, default=False),
    Column("disabled_at", Time),
    Column("verify_key", String(64), nullable=False),
    Column("created_at", Time, nullable=False),
    Column("updated_at", Time, nullable=False),
    # A public client (an app that cannot keep a secret: mobile, desktop, single-page, CLI)
    # authenticates with its client_id alone, must use PKCE S256, and has no client_credentials.
    Column("public_client", Boolean, nullable=False, default=False, server_default=text("false")),
    # How its id_tokens are signed (OpenID Connect Dynamic Registration's name): RS256 or ES256.
    Column("id_token_signed_response_alg", String(8), nullable=False, default="RS256",
           server_default=text("'RS256'")),
    # Shown on the consent page, as Discord does (https only).
    Column("terms_of_service_url", String(2048)),
    Column("privacy_policy_url", String(2048)),
    Index("ix_applications_icon", "icon", sqlite_where=text("icon IS NOT NULL"),
          postgresql_where=text("icon IS NOT NULL")),
)

# One remembered consent per (user, application): what prompt=none and the
# authorized-apps page read, and the unit that revocation ends.
grants = Table(
    "grants", metadata,
    Column("id", Id, primary_key=True, autoincrement=False),
    Column("user_id", Id, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("application_id", Id, ForeignKey("applications.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("scopes", String(200), nullable=False),
    Column("created_at", Time, nullable=False),
    Column("last_used_at", Time),
    UniqueConstraint("user_id", "application_id"),
)

authorization_codes = Table(
    "authorization_codes", metadata,
    Column("code_hash", Hash, primary_key=True),
    # Every token issued from this code carries this id as its family.
    Column("family_id", Id, nullable=False),
    Column("application_id", Id, ForeignKey("applications.id", ondelete="CASCADE"), nullable=False),
    Column("user_id", Id, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("grant_id", Id, nullable=False),
    Column("redirect_uri", String(256)),
    Column("redirect_uri_explicit", Boolean, nullable=False, default=True),
    Column("scopes", String(200), nullable=False),
    Column("code_challenge", String(128)),
    Column("guild_id", Id),
    Column("permissions", BigInteger),
    Column("created_at", Time, nullable=False),
    Column("expires_at", Time, nullable=False, index=True),
    Column("consumed_at", Time),
    # OpenID Connect: the request's nonce and when the user last signed in, for the id_token.
    Column("nonce", String(256)),
    Column("auth_time", Time),
)

# The device authorization grant (RFC 8628): a device asks for a code pair, the user approves
# the user_code at /activate, the device polls with the device_code until it gets its tokens.
device_codes = Table(
    "device_codes", metadata,
    Column("device_code_hash", Hash, primary_key=True),
    # Normalized (upper case, no hyphen); unique so that typing it names one request.
    Column("user_code", String(16), nullable=False, unique=True),
    Column("application_id", Id, ForeignKey("applications.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("scopes", String(200), nullable=False),
    Column("created_at", Time, nullable=False),
    Column("expires_at", Time, nullable=False, index=True),
    Column("interval", Integer, nullable=False),  # seconds between polls; slow_down adds 5
    Column("last_polled_at", Time),
    # Set once the user decides: who approved (and the grant and family of the tokens), or denied.
    Column("user_id", Id, ForeignKey("users.id", ondelete="CASCADE"), index=True),
    Column("grant_id", Id),
    Column("family_id", Id),
    Column("auth_time", Time),
    Column("approved_at", Time),
    Column("denied_at", Time),
    Column("consumed_at", Time),
)

# OpenID Connect signing keys. A key is published (JWKS) from its creation, signs from
# signs_from, stops signing when its successor starts (retires_at), and leaves the JWKS at
# published_until, once every id_token it signed has expired. The private key is encrypted
# under the server secret (oidc/keys.py); the public half is a JWK.
signing_keys = Table(
    "signing_keys", metadata,
    Column("kid", String(64), primary_key=True),
    Column("alg", String(8), nullable=False),
    Column("public_jwk", Text, nullable=False),
    Column("private_key", LargeBinary, nullable=False),
    Column("created_at", Time, nullable=False),
    Column("signs_from", Time, nullable=False),
    Column("retires_at", Time),
    Column("published_until", Time),
)

ACCESS, REFRESH = 1, 2

tokens = Table(
    "tokens", metadata,
    Column("token_hash", TokenKey, primary_key=True),
    Column("kind", SmallInteger, nullable=False),  # ACCESS or REFRESH
    Column("application_id", Id, ForeignKey("applications.id", ondelete="CASCADE"), nullable=False),
    Column("user_id", Id, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("grant_id", Id),  # NULL for client-credentials tokens
    Column("family_id", Id, nullable=False),  # the code (or issuance) it descends from
    Column("issue_id", Id, nullable=False),  # shared by an access/refresh pair
    Column("scopes", String(200), nullable=False),
    Column("guild_id", Id),
    Column("created_at", Time, nullable=False),
    Column("expires_at", Time, nullable=False, index=True),
    Column("revoked_at", Time),
    Column("rotated", Boolean, nullable=False, default=False),  # refresh token spent by rotation
    Index("ix_tokens_user_application", "user_id", "application_id"),
    # Only tokens with a grant are ever revoked by family or issue (migration 0002): the
    # queries say "grant_id IS NOT NULL" too, so the partial indexes serve them.
    Index("ix_tokens_family_id", "family_id", sqlite_where=text("grant_id IS NOT NULL"),
          postgresql_where=text("grant_id IS NOT NULL")),
    Index("ix_tokens_issue_id", "issue_id", sqlite_where=text("grant_id IS NOT NULL"),
          postgresql_where=text("grant_id IS NOT NULL")),
)

guilds = Table(
    "guilds", metadata,
    Column("id", Id, primary_key=True, autoincrement=False),
    Column("name", String(100), nullable=False),
    Column("icon", String(64)),
    Column("owner_id", Id, ForeignKey("users.id"), nullable=False, index=True),
    Column("features", Text, nullable=False, default="[]"),
    Column("created_at", Time, nullable=False),
    Index("ix_guilds_icon", "icon", sqlite_where=text("icon IS NOT NULL"), postgresql_where=text("icon IS NOT NULL")),
)

# Uploaded images (core/images.py), one row per content hash: users.avatar, applications.icon
# and guilds.icon name them. ``data`` is the stored PNG, NULL when it is a file under
# FLUXER_IMAGE_DIR. A row nobody names is deleted by the janitor once its last upload is an
# hour old (ops/janitor.py, sweep_images); each upload of the same image moves uploaded_at.
images = Table(
    "images", metadata,
    Column("hash", String(64), primary_key=True),
    Column("width", Integer, nullable=False),
    Column("height", Integer, nullable=False),
    Column("size", Integer, nullable=False),  # bytes of the stored PNG
    Column("data", LargeBinary),
    Column("uploaded_at", Time, nullable=False, index=True),
)

# The @everyone role of a guild has the guild's ID.
roles = Table(
    "roles", metadata,
    Column("id", Id, primary_key=True, autoincrement=False),
    Column("guild_id", Id, ForeignKey("guilds.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("name", String(100), nullable=False),
    Column("permissions", BigInteger, nullable=False, default=0),
    Column("position", Integer, nullable=False, default=0),
    Column("managed", Boolean, nullable=False, default=False),
    Column("created_at", Time, nullable=False),
)

guild_members = Table(
    "guild_members", metadata,
    Column("guild_id", Id, ForeignKey("guilds.id", ondelete="CASCADE"), primary_key=True),
    Column("user_id", Id, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True),
    Column("joined_at", Time, nullable=False),
    Column("nick", String(32)),  # the member's name in this guild (NULL: their global name)
)

member_roles = Table(
    "member_roles", metadata,
    Column("guild_id", Id, ForeignKey("guilds.id", ondelete="CASCADE"), primary_key=True),
    Column("user_id", Id, primary_key=True),
    Column("role_id", Id, ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True),
)

invites = Table(
    "invites", metadata,
    Column("code", String(16), primary_key=True),
    Column("guild_id", Id, ForeignKey("guilds.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("inviter_id", Id, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("uses", Integer, nullable=False, default=0),
    Column("created_at", Time, nullable=False),
    Column("expires_at", Time),
)

connections = Table(
    "connections", metadata,
    Column("user_id", Id, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("type", String(32), primary_key=True),
    Column("id", String(100), primary_key=True),
    Column("name", String(100), nullable=False),
    Column("verified", Boolean, nullable=False, default=False),
    Column("visibility", SmallInteger, nullable=False, default=1),
    Column("created_at", Time, nullable=False),
)

audit_log = Table(
    "audit_log", metadata,
    Column("id", Id, primary_key=True, autoincrement=False),
    Column("created_at", Time, nullable=False, index=True),
    Column("action", String(64), nullable=False),
    Column("actor_id", Id),  # the user who acted; NULL for the server itself
    Column("application_id", Id, index=True),
    Column("target_user_id", Id),
    Column("details", Text, nullable=False, default="{}"),  # JSON, never a credential
)
