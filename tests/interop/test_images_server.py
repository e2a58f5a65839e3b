"""Images through a real server (granian, RSGI: what `fluxer-oauth serve` runs): a body of
megabytes reaches an upload route, a larger one is a 413, and the served variants carry
their caching headers over HTTP."""

from __future__ import annotations

import base64
import io
import os

import pytest
import requests
from PIL import Image

from tests.conftest import PASSWORD
from tests.interop.conftest import running_server


@pytest.fixture(scope="module")
def server(tmp_path_factory, backend):
    with running_server(tmp_path_factory.mktemp("images"), backend) as base:
        yield base


def _data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def test_uploads_of_megabytes_and_served_variants(server):
    session = requests.post(f"{server}/api/v1/auth/register", timeout=10, json={
        "username": "pictured", "email": "pictured@example.com", "password": PASSWORD}).json()
    headers = {"Authorization": session["token"]}
    noisy = Image.frombytes("RGB", (1000, 1000), os.urandom(1000 * 1000 * 3))
    out = io.BytesIO()
    noisy.save(out, "PNG")
    assert len(out.getvalue()) > 2_000_000  # far over the 64 KiB of other routes
    response = requests.patch(f"{server}/api/v1/users/@me", json={"avatar": _data_uri(out.getvalue())},
                              headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    avatar = response.json()["avatar"]

    served = requests.get(f"{server}/avatars/{session['user']['id']}/{avatar}.webp?size=128", timeout=30)
    assert served.status_code == 200 and served.headers["content-type"] == "image/webp"
    assert served.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert Image.open(io.BytesIO(served.content)).size == (128, 128)
    again = requests.get(served.url, headers={"If-None-Match": served.headers["etag"]}, timeout=10)
    assert again.status_code == 304

    too_large = requests.patch(f"{server}/api/v1/users/@me", data=b'{"avatar": "' + b"A" * (12 * 1024 * 1024) + b'"}',
                               headers={**headers, "Content-Type": "application/json"}, timeout=30)
    assert too_large.status_code == 413
    assert requests.get(f"{server}/api/v1/users/@me", headers=headers, timeout=10).status_code == 200
