"""A real server process (``fluxer-oauth serve``, granian) on a free loopback port."""

from __future__ import annotations

import os
import re
import signal
import socket
from contextlib import contextmanager
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from tests.backends import POSTGRES, REDIS_URL, new_redis_prefix
from tests.conftest import PASSWORD, SECRET_KEY

BIN = Path(sys.executable).parent / "fluxer-oauth"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(tmp_path: Path, database_url: str, *, port: int | None = None, workers: int = 1,
                 interface: str = "rsgi", **env_overrides) -> tuple[subprocess.Popen, str]:
    port = port or free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "FLUXER_DATABASE_URL": database_url,
        "FLUXER_SECRET_KEY": SECRET_KEY,
        "FLUXER_PUBLIC_URL": base,
        "FLUXER_RATE_LIMITS": "off",
        "FLUXER_ARGON2_MEMORY_KIB": "1024",
        "FLUXER_ARGON2_TIME_COST": "1",
        "FLUXER_ARGON2_PARALLELISM": "1",
        "FLUXER_LOG_LEVEL": "WARNING",
        # A key prefix of its own, so counts left in Redis by an earlier run (limits keep
        # them for two periods) do not carry over; servers that must share pass theirs.
        **({"FLUXER_REDIS_URL": REDIS_URL, "FLUXER_REDIS_PREFIX": new_redis_prefix()} if POSTGRES else {}),
        **env_overrides,
    }
    subprocess.run([str(BIN), "migrate"], env=env, check=True, capture_output=True)
    log = open(tmp_path / "server.log", "wb")
    # A session of its own, so that stopping it can take every worker down with it.
    process = subprocess.Popen([str(BIN), "serve", "--port", str(port), "--workers", str(workers),
                                "--interface", interface], env=env,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            requests.get(f"{base}/api/v1/openapi.json", timeout=1)
            return process, base
        except requests.ConnectionError:
            if process.poll() is not None:
                break
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("server did not start: " + (tmp_path / "server.log").read_text())


def stop_server(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the server and any worker left behind
        process.wait()


@contextmanager
def running_server(tmp_path: Path, backend, **options):
    """A fresh database and a server process on it; both gone afterwards."""
    url = backend.new_database(tmp_path)
    process, base = start_server(tmp_path, url, **options)
    try:
        yield base
    finally:
        stop_server(process)
        backend.drop_database(url)


def register_with_app(base: str, name: str, app_base: str | None = None) -> tuple[dict, dict]:
    """A new account (registered at ``base``) and an application of it (created at
    ``app_base``, the same server unless given): their JSON as the API returns it."""
    username = name.lower().replace(" ", "")
    account = requests.post(f"{base}/api/v1/auth/register", timeout=10, json={
        "username": username, "email": f"{username}@example.com", "password": PASSWORD})
    assert account.status_code == 201, account.text
    app = requests.post(f"{app_base or base}/api/v1/oauth2/applications", timeout=10,
                        headers={"Authorization": account.json()["token"]},
                        json={"name": name, "redirect_uris": [f"https://{username}.example/cb"]})
    assert app.status_code == 201, app.text
    return account.json(), app.json()


@pytest.fixture(scope="module")
def live_server(tmp_path_factory, backend):
    with running_server(tmp_path_factory.mktemp("live"), backend) as base:
        yield base


@pytest.fixture(scope="module")
def live_account(live_server):
    response = requests.post(f"{live_server}/api/v1/auth/register", timeout=10,
                             json={"username": "interop", "email": "interop@example.com", "password": PASSWORD})
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture(scope="module")
def live_app(live_server, live_account):
    response = requests.post(
        f"{live_server}/api/v1/oauth2/applications",
        headers={"Authorization": live_account["token"]},
        json={"name": "Interop Client", "redirect_uris": ["http://127.0.0.1:9/callback"]},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return response.json()


def browser_consent(browser: requests.Session, url: str, username: str) -> tuple[str, int]:
    """A browser (signed in or not) follows an authorize ``url``: signs in when sent to the
    login page, presses Authorize; returns the redirect and how many times it signed in."""
    page = browser.get(url, timeout=10)
    base = url.split("/oauth2/")[0]
    sign_ins = 0
    while "/login" in urlsplit(page.url).path:
        assert sign_ins == 0, "asked to sign in twice for one request"
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        next_url = re.search(r'name="next" value="([^"]+)"', page.text).group(1).replace("&amp;", "&")
        page = browser.post(f"{base}/login", timeout=10,
                            data={"csrf_token": csrf, "login": username, "password": PASSWORD, "next": next_url})
        sign_ins += 1
    assert page.status_code == 200 and "Authorize" in page.text, page.text
    fields = dict(re.findall(r'name="(csrf_token|request)" value="([^"]*)"', page.text))
    fields["request"] = fields["request"].replace("&amp;", "&")
    decided = browser.post(f"{base}/oauth2/authorize", data={**fields, "action": "authorize"},
                           allow_redirects=False, timeout=10)
    assert decided.status_code == 303
    return decided.headers["location"], sign_ins


def act_as_user(authorize_url: str, username: str) -> str:
    """Follow the authorize URL like a new browser: log in, press Authorize; return the redirect."""
    location, sign_ins = browser_consent(requests.Session(), authorize_url, username)
    assert sign_ins == 1
    return location
