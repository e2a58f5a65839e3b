"""scripts/example, the example client's one command: on other ports (EXAMPLE_PORT for the
example, PORT for the demo server, as scripts/demo takes it) the links it prints and the
sign-in it starts follow them (it used to say and serve 8000 whatever was set); and the
example starts without a deprecation warning from its OAuth library."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import requests

from tests.interop.conftest import free_port, stop_server

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = "examples.sign_in_with_fluxer.app:app"


def wait_for(url: str, process: subprocess.Popen, what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            requests.get(url, timeout=2, allow_redirects=False)
            return
        except requests.ConnectionError:
            assert process.poll() is None, f"{what} ended early"
            assert time.monotonic() < deadline, f"{what} did not start"
            time.sleep(0.3)


def test_the_example_starts_without_a_deprecation_warning(tmp_path):
    """Authlib warns when it has to fall back to the old httpx; the example depends on httpx2,
    which it uses. (Authlib keeps its own warnings "always" shown, ahead of -W error, so the
    output is what is checked.)"""
    port = free_port()
    log = tmp_path / "example.log"
    env = {**os.environ, "EXAMPLE_URL": f"http://127.0.0.1:{port}", "FLUXER_CLIENT_ID": "1",
           "FLUXER_CLIENT_SECRET": "s", "EXAMPLE_SESSION_KEY": "k" * 32}
    process = subprocess.Popen(
        [sys.executable, "-W", "error::DeprecationWarning", "-m", "uvicorn", EXAMPLE, "--port", str(port)],
        cwd=ROOT, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(f"http://127.0.0.1:{port}/", process, "the example")
        home = requests.get(f"http://127.0.0.1:{port}/", timeout=5)
        assert home.status_code == 200 and 'id=sign-in' in home.text
        login = requests.get(f"http://127.0.0.1:{port}/login", timeout=5, allow_redirects=False)
        assert login.status_code == 302  # Authlib built the authorize redirect
    finally:
        stop_server(process)
    printed = log.read_text()
    assert "Warning" not in printed, printed


def test_example_script_follows_example_port_and_the_demo_servers_port(tmp_path):
    server_port, example_port = free_port(), free_port()
    env = {**os.environ, "PORT": str(server_port), "EXAMPLE_PORT": str(example_port),
           "FLUXER_DATABASE_URL": f"sqlite:///{tmp_path / 'demo.db'}",
           "FLUXER_DEV_SECRET_FILE": str(tmp_path / "secret"), "FLUXER_LOG_LEVEL": "WARNING"}
    for name in ("FLUXER_PUBLIC_URL", "FLUXER_URL", "EXAMPLE_URL", "FLUXER_CLIENT_ID", "FLUXER_CLIENT_SECRET"):
        env.pop(name, None)
    server_log = open(tmp_path / "demo.log", "wb")
    demo = subprocess.Popen(["bash", str(ROOT / "scripts" / "demo")], cwd=tmp_path, env=env, stdout=server_log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    example = None
    try:
        server = f"http://127.0.0.1:{server_port}"
        wait_for(f"{server}/.well-known/openid-configuration", demo, "the demo server")
        example = subprocess.Popen(["bash", str(ROOT / "scripts" / "example")], cwd=tmp_path, env=env, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        printed = []
        for line in example.stdout:
            printed.append(line)
            if line.startswith("Example app on"):
                break
        here = f"http://localhost:{example_port}"
        assert printed[-1].startswith(f"Example app on {here} "), printed
        assert f"the Fluxer server at {server}" in printed[-1] and "8000" not in printed[-1]
        wait_for(f"http://127.0.0.1:{example_port}/", example, "the example")

        for path in ("/login", "/login/oidc"):
            start = requests.get(f"http://127.0.0.1:{example_port}{path}", timeout=10, allow_redirects=False)
            assert start.status_code == 302, start.text
            authorize = start.headers["location"]
            assert authorize.startswith(f"{server}/oauth2/authorize?"), authorize
            assert parse_qs(urlsplit(authorize).query)["redirect_uri"] == [f"{here}/callback"]
            # The demo application takes that callback: the server asks the user to log in
            # (an unregistered redirect_uri would be an error page).
            answer = requests.get(authorize, timeout=10, allow_redirects=False)
            assert answer.status_code in (200, 302, 303), answer.text[:500]
            if answer.status_code != 200:
                assert "/login" in answer.headers["location"], answer.headers
    finally:
        for process in (example, demo):
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=30)
