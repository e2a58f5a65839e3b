"""Every setting of the server, read from ``FLUXER_*`` environment variables.

This is the only module that reads the environment. Everything else receives a
``Settings`` instance, so tests can build servers with other settings side by side.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ConfigurationError(RuntimeError):
    """The settings cannot run a server; the message says what to change."""


@dataclass(frozen=True)
class SmtpServer:
    host: str
    port: int
    tls: str  # "tls" (implicit), "starttls" or "none"
    username: str | None
    password: str | None


def smtp_server(url: str) -> SmtpServer:
    """FLUXER_SMTP_URL read: smtp:// (plain, or ?starttls=1) or smtps:// (implicit TLS)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("smtp", "smtps") or not parts.hostname:
        raise ValueError("FLUXER_SMTP_URL must be smtp://[user:pass@]host[:port][?starttls=1] or smtps://...")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("FLUXER_SMTP_URL has an invalid port") from None
    options = dict(parse_qsl(parts.query))
    starttls = options.get("starttls", "0").lower() in ("1", "true", "yes", "on")
    if scheme == "smtps" and starttls:
        raise ValueError("FLUXER_SMTP_URL: smtps:// is TLS from the start; starttls=1 is for smtp://")
    tls = "tls" if scheme == "smtps" else "starttls" if starttls else "none"
    default_port = {"tls": 465, "starttls": 587, "none": 25}[tls]
    return SmtpServer(host=parts.hostname, port=port or default_port, tls=tls,
                      username=unquote(parts.username) if parts.username else None,
                      password=unquote(parts.password) if parts.password is not None else None)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLUXER_", extra="ignore")

    # Storage. A bare SQLite path or sqlite:/// URL selects the embedded default.
    database_url: str = "sqlite:///./fluxer.db"
    redis_url: str | None = None
    # PostgreSQL connections each worker keeps open for transactions (the hot lookups have a
    # pool of their own, 1-10). A fixed size: a request beyond it waits for a connection
    # rather than opening one, because opening and closing connections under load (what an
    # overflow does) cost more than the wait.
    database_pool_size: int = Field(default=20, ge=1, le=200)

    # Keys every HMAC (client secrets, bot tokens, CSRF tokens) with this secret.
    # Required unless dev mode is on; dev mode keeps a generated one in a local file.
    secret_key: str | None = None
    dev: bool = False
    dev_secret_file: Path = Path(".fluxer-dev-secret")

    # The issuer, and the base of every link the server prints or redirects to.
    public_url: str = "http://127.0.0.1:8080"

    rate_limits: str = "on"
    # Limits as <count>/[<n>]<second|minute|hour|day> ("10/10seconds", "50/second").
    rate_limit_authorize: str = "10/10seconds"
    rate_limit_token: str = "10/10seconds"
    rate_limit_revoke: str = "10/10seconds"
    rate_limit_global: str = "50/second"
    # Failed client authentication at the token and revocation endpoints, per client IP (a
    # request counts against its client's own bucket only once the client has authenticated).
    rate_limit_client_auth_failures: str = "10/10seconds"
    # Failed password checks (login and the confirmations of sensitive actions): per
    # (account, IP), per IP, and a per-account ceiling that one IP can never reach alone.
    rate_limit_login_failures: str = "10/5minutes"
    rate_limit_password_ip_failures: str = "30/5minutes"
    rate_limit_password_account_failures: str = "100/5minutes"
    # Wrong two-factor codes of one account, from every IP together: its password is known to
    # whoever is at that step, and six digits fall to a hundred guesses per five minutes in
    # weeks, so the second factor's own ceiling is far lower (it stops only such a guesser).
    rate_limit_mfa_code_account_failures: str = "20/hour"
    # Registrations per client IP (each one is an argon2 hash).
    rate_limit_registrations: str = "10/hour"
    # Password-reset mails: per client IP, and per account (the mails one account receives).
    rate_limit_password_reset_ip: str = "10/hour"
    rate_limit_password_reset_account: str = "5/hour"
    # Verification mails a signed-in user asks to be sent again.
    rate_limit_verification_resend: str = "5/hour"
    # Device authorization requests (RFC 8628), per client as the token endpoint counts them.
    rate_limit_device: str = "10/10seconds"
    # Wrong user codes typed at /activate: per (user, IP), per IP, and a per-user ceiling
    # that no single IP can reach alone (as the password limits).
    rate_limit_user_code_failures: str = "5/minute"
    rate_limit_user_code_ip_failures: str = "20/10minutes"
    rate_limit_user_code_account_failures: str = "50/10minutes"
    # Per-application overrides of the token and revoke limits, as JSON:
    # {"<client_id>": "1000/10seconds"} for trusted high-volume applications.
    rate_limit_overrides: dict[str, str] = Field(default_factory=dict)
    # Comma-separated IPs or CIDRs of proxies whose X-Forwarded-For is believed.
    trusted_proxies: str = ""
    # Prefix of every Redis key, so several deployments (or test runs) can share a server.
    redis_prefix: str = "fluxer"

    # SQLite's synchronous mode in WAL: NORMAL survives a crash of the process (the default,
    # SQLite's own recommendation for WAL); FULL also survives power loss, one fsync per write.
    sqlite_synchronous: str = "NORMAL"

    # Snowflake worker id (0-1023); give each process of a cluster its own.
    worker_id: int = Field(default=0, ge=0, le=1023)

    # Lifetimes, in seconds (SPEC §2).
    access_token_ttl: int = 7 * 24 * 3600
    refresh_token_ttl: int = 30 * 24 * 3600
    code_ttl: int = 10 * 60
    # Seconds after a refresh during which the same confidential client may present the
    # rotated refresh token again and get a new pair (its answer was lost), instead of the
    # grant ending as reuse; 0 turns it off (docs/security.md, "Refresh reuse leeway").
    refresh_reuse_leeway: float = Field(default=10.0, ge=0, le=3600)
    session_ttl: int = 30 * 24 * 3600
    id_token_ttl: int = Field(default=3600, ge=60)
    # The device flow (RFC 8628): how long a user code may be entered, and the polling interval.
    device_code_ttl: int = Field(default=10 * 60, ge=60)
    device_poll_interval: int = Field(default=5, ge=1)

    # OpenID Connect signing keys: how long a new key is published before it signs (relying
    # parties that cached the JWKS fetch it again within this), and how long each worker
    # keeps the key set it read before reading it again. The delay must exceed the cache.
    key_publish_delay: int = Field(default=3600, ge=0)
    key_cache_seconds: int = Field(default=60, ge=0)

    # argon2id cost; lowered only by the test suite to keep it quick.
    argon2_time_cost: int = 3
    argon2_memory_kib: int = 65536
    argon2_parallelism: int = 4
    password_hash_concurrency: int = 4

    max_body_bytes: int = 64 * 1024

    # Mail (verification and password-reset links, notices): the SMTP server to submit to, as
    # smtp://user:pass@host:port (plain, or ?starttls=1 to upgrade after connecting; port 25,
    # 587 with starttls) or smtps://user:pass@host:port (implicit TLS, port 465); percent-
    # encode reserved characters of the user and password. Without it, dev mode writes each
    # message to the log instead, and a production server refuses the flows that need mail
    # (MAIL_UNAVAILABLE) rather than pretend.
    smtp_url: str | None = None
    smtp_timeout: float = Field(default=10.0, gt=0)
    mail_from: str = "Fluxer <no-reply@fluxer.localhost>"
    # Delivery attempts of one message before it is dropped (logged and counted).
    mail_attempts: int = Field(default=4, ge=1, le=20)

    # Accounts: how long a mailed link works, how strong a new password must be (the zxcvbn
    # score, 0-4), how long the second step of a two-factor sign-in may take, and whether
    # staff must have two-factor sign-in to approve the admin scope or use the admin API.
    email_verification_ttl: int = Field(default=24 * 3600, ge=60)
    password_reset_ttl: int = Field(default=30 * 60, ge=60)
    password_min_score: int = Field(default=3, ge=0, le=4)
    mfa_ticket_ttl: int = Field(default=5 * 60, ge=30)
    require_staff_mfa: bool = False

    # Images (avatars, application and guild icons; docs/api.md "Images"). An upload is at
    # most image_max_bytes once decoded (its routes alone take bodies of that much in base64
    # plus max_body_bytes: image_body_bytes) and image_max_pixels in all. They are stored in
    # the database, or as files under image_dir when it is set (a directory every node sees:
    # docs/deploy.md). Each process keeps the variants it served (sizes, formats) in an LRU
    # of image_cache_bytes.
    image_max_bytes: int = Field(default=8 * 1024 * 1024, ge=1024, le=32 * 1024 * 1024)
    image_max_pixels: int = Field(default=4096 * 4096, ge=16 * 16, le=8192 * 8192)
    image_dir: Path | None = None
    image_cache_bytes: int = Field(default=32 * 1024 * 1024, ge=0)
    max_applications_per_user: int = 25
    max_redirect_uris: int = 10

    log_level: str = "INFO"

    # Seconds between background sweeps of expired rows; 0 turns the background janitor off.
    janitor_interval: float = 300.0

    @field_validator("public_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("FLUXER_PUBLIC_URL must be an absolute http(s) URL")
        return value.rstrip("/")

    @field_validator("image_dir", mode="before")
    @classmethod
    def _image_dir(cls, value):
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("rate_limits")
    @classmethod
    def _on_off(cls, value: str) -> str:
        value = value.strip().lower()
        if value not in ("on", "off"):
            raise ValueError("FLUXER_RATE_LIMITS must be 'on' or 'off'")
        return value

    @field_validator("smtp_url", mode="before")
    @classmethod
    def _smtp_url(cls, value):
        if isinstance(value, str) and not value.strip():
            return None
        if isinstance(value, str):
            smtp_server(value.strip())  # raises ValueError saying what is expected
            return value.strip()
        return value

    @field_validator("sqlite_synchronous")
    @classmethod
    def _synchronous(cls, value: str) -> str:
        value = value.strip().upper()
        if value not in ("NORMAL", "FULL"):
            raise ValueError("FLUXER_SQLITE_SYNCHRONOUS must be NORMAL or FULL")
        return value

    @field_validator("rate_limit_authorize", "rate_limit_token", "rate_limit_revoke", "rate_limit_global",
                     "rate_limit_client_auth_failures", "rate_limit_login_failures", "rate_limit_password_ip_failures",
                     "rate_limit_password_account_failures", "rate_limit_mfa_code_account_failures", "rate_limit_registrations", "rate_limit_device",
                     "rate_limit_user_code_failures", "rate_limit_user_code_ip_failures",
                     "rate_limit_user_code_account_failures", "rate_limit_password_reset_ip",
                     "rate_limit_password_reset_account", "rate_limit_verification_resend")
    @classmethod
    def _limit(cls, value: str) -> str:
        from fluxer_oauth.core.rate_window import parse_rate

        parse_rate(value)  # raises ValueError saying what is expected
        return value

    @field_validator("rate_limit_overrides")
    @classmethod
    def _overrides(cls, value: dict[str, str]) -> dict[str, str]:
        """Keyed by each application's canonical id (the limiter counts an application under
        that one spelling, whatever the request wrote)."""
        from fluxer_oauth.core.ids import parse_snowflake
        from fluxer_oauth.core.rate_window import parse_rate

        canonical = {}
        for client_id, rate in value.items():
            application_id = parse_snowflake(client_id.strip())
            if application_id is None:
                raise ValueError(f"FLUXER_RATE_LIMIT_OVERRIDES: {client_id!r} is not an application id")
            try:
                parse_rate(rate)
            except ValueError as exc:
                raise ValueError(f"FLUXER_RATE_LIMIT_OVERRIDES[{client_id!r}]: {exc}") from None
            canonical[str(application_id)] = rate
        return canonical

    @property
    def mail_configured(self) -> bool:
        return self.smtp_url is not None

    @property
    def smtp(self) -> "SmtpServer | None":
        """Where mail is submitted, read from FLUXER_SMTP_URL; None without it."""
        return smtp_server(self.smtp_url) if self.smtp_url else None

    @property
    def issuer(self) -> str:
        return self.public_url

    @property
    def image_body_bytes(self) -> int:
        """The body limit of the routes that take an image: the base64 text of the largest
        upload, plus the usual limit for the rest of the JSON."""
        return 4 * -(-self.image_max_bytes // 3) + self.max_body_bytes

    @property
    def https(self) -> bool:
        return self.public_url.startswith("https://")

    @cached_property
    def secret(self) -> bytes:
        """The server secret as bytes; generated and kept in a file in dev mode."""
        if self.secret_key:
            if len(self.secret_key) < 32:
                raise ConfigurationError("FLUXER_SECRET_KEY must be at least 32 characters")
            return self.secret_key.encode()
        if not self.dev:
            raise ConfigurationError(
                "FLUXER_SECRET_KEY is required (at least 32 random characters); "
                "set FLUXER_DEV=1 to run a local development server with a generated key"
            )
        path = self.dev_secret_file
        if not path.exists():
            path.write_text(secrets.token_urlsafe(48))
            path.chmod(0o600)
        return path.read_text().strip().encode()

    @property
    def sqlalchemy_url(self) -> str:
        """The SQLAlchemy URL for the configured database: the standard library's sqlite3
        (run on the event-loop thread, store/database.py) or asyncpg. An old
        ``sqlite+aiosqlite://`` setting still names the same SQLite file."""
        url = self.database_url
        if "://" not in url:
            url = f"sqlite:///{url}"
        scheme, rest = url.split("://", 1)
        if scheme in ("sqlite", "sqlite+aiosqlite"):
            return f"sqlite://{rest}"
        if scheme in ("postgres", "postgresql", "postgresql+asyncpg"):
            return f"postgresql+asyncpg://{rest}"
        raise ConfigurationError(f"unsupported FLUXER_DATABASE_URL scheme {scheme!r}")

    @property
    def is_sqlite(self) -> bool:
        return self.sqlalchemy_url.startswith("sqlite")
