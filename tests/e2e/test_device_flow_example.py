"""The device-flow example (examples/device_flow.py) against a real server: it prints the
link and the code, a person approves (or cancels) in a real browser at /activate, and the
example polls until it has tokens and prints the user; and its polling loop slows down when
the server says slow_down. In a module of its own so that its server, whose devices poll
every second, is made before the browser (a PostgreSQL database cannot be made inside
Playwright's loop)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from examples import device_flow
from tests.e2e.conftest import api_user, log_in, shoot
from tests.interop.conftest import running_server

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def device_server(tmp_path_factory, backend):
    """A server whose devices poll every second (openid-client and the example honour it)."""
    with running_server(tmp_path_factory.mktemp("device"), backend, FLUXER_DEVICE_POLL_INTERVAL="1") as base:
        yield base


def device_app(base: str, owner_name: str, name: str, **fields) -> dict:
    owner = api_user(base, owner_name)
    response = requests.post(f"{base}/api/v1/oauth2/applications", headers={"Authorization": owner["token"]},
                             json={"name": name, "redirect_uris": ["http://127.0.0.1:9/callback"], **fields},
                             timeout=10)
    assert response.status_code == 201, response.text
    return response.json()


def run_device_flow(base: str, tmp_path: Path, *args: str) -> tuple[subprocess.Popen, list[str]]:
    """examples/device_flow.py as a child process; returns it and the lines it printed
    before it started waiting (read as they come)."""
    process = subprocess.Popen([sys.executable, str(ROOT / "examples" / "device_flow.py"), "--server", base, *args],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={key: value for key, value in os.environ.items()
                                    if not key.startswith("FLUXER_CLIENT_")})
    lines = []
    while not lines or not lines[-1].startswith("Waiting for approval"):
        line = process.stdout.readline()
        assert line, f"device_flow.py ended early: {process.stderr.read()}"
        lines.append(line.rstrip("\n"))
    return process, lines


def finish(process: subprocess.Popen) -> tuple[str, str]:
    try:
        return process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def approve_in_browser(page, verification_uri_complete: str, username: str, user_code: str, button: str) -> None:
    page.goto(verification_uri_complete)  # signed out: the login page, then back with the code
    log_in(page, username)
    page.wait_for_selector("#user_code")
    assert page.input_value("#user_code") == user_code
    page.click("button[value=continue]")
    assert page.inner_text("#device-code") == user_code
    page.click(f"button[value={button}]")
    page.wait_for_selector("#activate-result")


def test_device_flow_example_signs_in_a_public_client(device_server, page, tmp_path):
    """examples/device_flow.py with only --client-id: it prints the link and the code, the
    person approves in a browser, it polls until the tokens come and prints the user."""
    base = device_server
    app = device_app(base, "devicedev", "Device CLI", public_client=True)
    device_user = api_user(base, "deviceuser")
    process, lines = run_device_flow(base, tmp_path, "--client-id", app["id"])
    try:
        link = lines[0].removeprefix("To sign in, open ")
        user_code = lines[1].rsplit(" ", 1)[1]
        assert link == f"{base}/activate?user_code={user_code}"
        assert lines[1] == f"or go to {base}/activate and enter the code {user_code}"
        time.sleep(1.5)  # it polls (authorization_pending) while nobody has approved yet
        approve_in_browser(page, link, "deviceuser", user_code, "authorize")
        assert page.get_attribute("#activate-result", "data-approved") == "true"
        shoot(page, "device-flow-approved")
    finally:
        out, err = finish(process)
    assert process.returncode == 0, err
    assert f"Signed in as deviceuser <deviceuser@example.com> (sub {device_user['user']['id']})" in out
    assert "Granted scopes: identify email openid; id_token: yes; refresh token: yes" in out


def test_device_flow_example_reports_a_denial(device_server, page, tmp_path):
    app = device_app(device_server, "devicetvdev", "Device TV")
    process, lines = run_device_flow(device_server, tmp_path, "--client-id", app["id"], "--client-secret",
                                     app["client_secret"], "--scope", "identify")
    try:
        user_code = lines[1].rsplit(" ", 1)[1]
        approve_in_browser(page, lines[0].removeprefix("To sign in, open "), "devicetvdev", user_code, "cancel")
        assert page.get_attribute("#activate-result", "data-approved") == "false"
    finally:
        out, err = finish(process)
    assert process.returncode == 1 and "Signed in" not in out
    assert "Sign-in failed: the request was denied" in err


def test_device_flow_example_slows_down_when_told(device_server, page):
    """The example's polling loop against the server's slow_down: polled with no real wait,
    the server says slow_down and the example adds five seconds to its interval each time
    (RFC 8628 §3.5); once approved, the next poll gets the tokens."""
    app = device_app(device_server, "deviceeagerdev", "Device Eager", public_client=True)
    client = device_flow.Client(device_server, app["id"], None)
    device = client.start("identify")
    waits: list[int] = []

    def sleep(seconds: int) -> None:  # no real wait: every poll comes too early
        waits.append(seconds)
        if len(waits) == 4:
            approve_in_browser(page, device["verification_uri_complete"], "deviceeagerdev", device["user_code"],
                               "authorize")

    tokens = client.poll(device, sleep=sleep)
    assert tokens["scope"] == "identify" and tokens["access_token"]
    assert waits[0] == device["interval"] == 1
    steps = [later - earlier for earlier, later in zip(waits, waits[1:])]
    assert set(steps) <= {0, device_flow.SLOW_DOWN_STEP} and device_flow.SLOW_DOWN_STEP in steps, waits
    assert client.userinfo(tokens["access_token"])["username"] == "deviceeagerdev"
