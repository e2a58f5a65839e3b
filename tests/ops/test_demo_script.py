"""scripts/demo, the newcomer's first command: on another port, the links it prints and the
issuer follow the port (they used to say 8080 whatever PORT was), and the server it starts
answers them."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import requests

from tests.interop.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_demo_on_another_port_prints_links_to_that_port(tmp_path):
    port = free_port()
    env = {**os.environ, "PORT": str(port), "FLUXER_DATABASE_URL": f"sqlite:///{tmp_path / 'demo.db'}",
           "FLUXER_DEV_SECRET_FILE": str(tmp_path / "secret"), "FLUXER_LOG_LEVEL": "WARNING"}
    env.pop("FLUXER_PUBLIC_URL", None)
    process = subprocess.Popen(["bash", str(ROOT / "scripts" / "demo")], cwd=tmp_path, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        printed = []
        for line in process.stdout:
            printed.append(line)
            if line.startswith("Open this URL:"):
                break
        authorize_url = printed[-1].split(":", 1)[1].strip()
        assert authorize_url.startswith(f"http://127.0.0.1:{port}/oauth2/authorize?"), printed
        assert f"127.0.0.1%3A{port}%2Fdemo%2Fcallback" in authorize_url or f"127.0.0.1:{port}/demo/callback" in \
            "".join(printed), printed
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                discovery = requests.get(f"{base}/.well-known/openid-configuration", timeout=2)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "the demo server did not start"
                time.sleep(0.3)
        assert discovery.json()["issuer"] == base
        favicon = requests.get(f"{base}/favicon.ico", timeout=5)
        assert favicon.status_code == 200 and favicon.headers["content-type"] == "image/x-icon"
        assert favicon.content.startswith(b"\x00\x00\x01\x00")  # an ICO file
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
