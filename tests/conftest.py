"""Shared fixtures: a migrated SQLite database per test (copied from a template migrated
once), the ASGI app with an httpx client, and helpers that walk the real flows."""

from __future__ import annotations

import base64
import hashlib
import re
from contextlib import asynccontextmanager
from html import unescape
import io
import json
import secrets
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from fluxer_oauth.app import build_app
from fluxer_oauth.settings import Settings
from tests.backends import POSTGRES, Backend, backend_settings, drop_redis_prefix, new_redis_prefix

SECRET_KEY = "test-secret-key-" + "x" * 40
PASSWORD = "correct horse battery"


def make_settings(database_url: str, **overrides) -> Settings:
    values = dict(
        database_url=database_url,
        secret_key=SECRET_KEY,
        public_url="http://testserver",
        argon2_time_cost=1,
        argon2_memory_kib=1024,
        argon2_parallelism=1,
        rate_limits="off",
        log_level="WARNING",
    )
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="session")
def backend(tmp_path_factory) -> Backend:
    instance = Backend(tmp_path_factory.mktemp("template"))
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture
def database_url(backend, tmp_path) -> str:
    url = backend.new_database(tmp_path)
    yield url
    backend.drop_database(url)


@pytest.fixture
def redis_prefix():
    prefix = new_redis_prefix()
    yield prefix
    if POSTGRES:
        drop_redis_prefix(prefix)


@pytest.fixture
def settings(request, database_url, redis_prefix) -> Settings:
    """The test's settings; ``@pytest.mark.settings(name=value, ...)`` changes some for one test."""
    marker = request.node.get_closest_marker("settings")
    overrides = marker.kwargs if marker is not None else {}
    return make_settings(database_url, redis_prefix=redis_prefix, **{**backend_settings(), **overrides})


@pytest.fixture
def mail_server():
    """A real SMTP server on loopback (tests/mail_server.py) that the ``mail_app`` sends to."""
    from tests.mail_server import MailServer

    server = MailServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def mail_app(settings, mail_server):
    """The app with mail configured: it submits to ``mail_server``."""
    application = build_app(settings.model_copy(update=mail_server.settings()))
    yield application
    await application.state.runtime.mail.close(timeout=1)
    await application.state.runtime.db.close()


@pytest.fixture
async def mail_client(mail_app):
    transport = httpx.ASGITransport(app=mail_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


@pytest.fixture
async def app(settings):
    application = build_app(settings)
    yield application
    await application.state.runtime.db.close()


def csrf_of(html: str) -> str:
    """The CSRF token of a page's (first) form."""
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def shown(html: str, element_id: str) -> str | None:
    """The text of a page's <code id=...> (a credential shown once, an endpoint)."""
    match = re.search(rf'<code id="{element_id}">([^<]+)</code>', html)
    return unescape(match.group(1)) if match else None


def database_out_of_reach(app, monkeypatch) -> None:
    """Every read of ``app``'s store raises StoreUnavailable, as when the database is down."""
    from fluxer_oauth.store.errors import StoreUnavailable

    @asynccontextmanager
    async def unreachable():
        raise StoreUnavailable()
        yield  # pragma: no cover

    monkeypatch.setattr(app.runtime.db, "read", unreachable)


class AccessLines:
    """The app's access log, written to memory instead of stderr."""

    def __init__(self, app) -> None:
        from fluxer_oauth.ops.access_log import AccessLog

        self.stream = io.BytesIO()
        app.edge.access_log = self.log = AccessLog(stream=self.stream)

    def lines(self) -> list[dict]:
        self.log.flush()
        return [json.loads(line) for line in self.stream.getvalue().splitlines()]


@pytest.fixture
def access_lines(app):
    """The access log of ``app`` in memory, requests logged (level INFO) while the test runs."""
    import logging

    logger = logging.getLogger("fluxer")
    level = logger.level
    logger.setLevel(logging.INFO)
    yield AccessLines(app)
    logger.setLevel(level)


@pytest.fixture
async def client(app):
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


@pytest.fixture
def rt(app):
    return app.state.runtime


# --- flow helpers -------------------------------------------------------------------------

@dataclass
class Account:
    token: str
    user: dict

    @property
    def headers(self) -> dict:
        return {"Authorization": self.token}

    @property
    def id(self) -> str:
        return self.user["id"]


@dataclass
class Client:
    id: str
    secret: str
    body: dict

    @property
    def basic(self) -> tuple[str, str]:
        return (self.id, self.secret)


async def register(client: httpx.AsyncClient, username: str | None = None) -> Account:
    username = username or "user_" + secrets.token_hex(4)
    response = await client.post(
        "/api/v1/auth/register",
        json={"username": username, "email": f"{username}@example.com", "password": PASSWORD},
    )
    assert response.status_code == 201, response.text
    body = response.json()
    return Account(body["token"], body["user"])


async def create_app(client: httpx.AsyncClient, owner: Account, **fields) -> Client:
    payload = {"name": "Test App", "redirect_uris": ["https://client.example/callback"], **fields}
    response = await client.post("/api/v1/oauth2/applications", json=payload, headers=owner.headers)
    assert response.status_code == 201, response.text
    body = response.json()
    return Client(body["id"], body.get("client_secret", ""), body)  # a public client has none


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def query_of(url: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}


async def consent(client, user: Account, app: Client, *, scope="identify", authorize=True, **extra) -> dict:
    payload = {"client_id": app.id, "scope": scope, "authorize": authorize, "response_type": "code",
               "redirect_uri": "https://client.example/callback", **extra}
    response = await client.post("/api/v1/oauth2/authorize/consent", json=payload, headers=user.headers)
    assert response.status_code == 200, response.text
    return query_of(response.json()["redirect_to"])


async def get_code(client, user, app, **kwargs) -> str:
    params = await consent(client, user, app, **kwargs)
    assert "code" in params, params
    return params["code"]


async def exchange(client, app: Client, code: str, **fields) -> httpx.Response:
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": "https://client.example/callback", **fields}
    data = {key: value for key, value in data.items() if value is not None}
    return await client.post("/api/v1/oauth2/token", data=data, auth=app.basic)


async def tokens_for(client, user, app, scope="identify") -> dict:
    code = await get_code(client, user, app, scope=scope)
    response = await exchange(client, app, code)
    assert response.status_code == 200, response.text
    return response.json()


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}
