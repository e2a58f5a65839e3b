"""openid-client (panva's certified OpenID Connect relying party for Node.js), used
unchanged, against a running server: tests/interop/node/relying_party.mjs does discovery,
the authorization URL with PKCE and a nonce, the code grant with the id_token validated
(claims and, with its non-repudiation checks, the signature against the JWKS), userinfo,
refresh of a public client, and the device authorization grant. The user's part is played
here: act_as_user for the consent, the /activate page for the device's user code.

The Node project's dependencies are pinned in tests/interop/node/package.json and installed
on first use (npm's cache makes later installs work offline)."""

from __future__ import annotations

import json
import queue
import re
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from tests.conftest import PASSWORD
from tests.node_packages import ensure_installed, needs_node
from tests.interop.conftest import running_server
from tests.interop.conftest import act_as_user

NODE_DIR = Path(__file__).parent / "node"
SCRIPT = NODE_DIR / "relying_party.mjs"
REDIRECT = "http://127.0.0.1:9/callback"

pytestmark = needs_node


@pytest.fixture(scope="session")
def node_project():
    return ensure_installed(NODE_DIR)


class RelyingParty:
    """relying_party.mjs as a child process: JSON lines out, JSON lines in."""

    def __init__(self, tmp_path: Path, **options) -> None:
        self.stderr_path = tmp_path / f"node-{time.monotonic_ns()}.log"
        self.process = subprocess.Popen(["node", str(SCRIPT), json.dumps(options)], cwd=NODE_DIR, text=True,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=open(self.stderr_path, "w"))
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def read(self, step: str, timeout: float = 60) -> dict:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"openid-client said nothing for {timeout}s (waiting for {step})") from None
        if line is None:
            raise AssertionError(f"openid-client exited without {step}: {self.stderr_path.read_text()}")
        message = json.loads(line)
        assert message["step"] == step, f"openid-client failed: {json.dumps(message, indent=1)}"
        return message

    def send(self, message: dict) -> None:
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)


@pytest.fixture
def relying_party(node_project, tmp_path):
    started: list[RelyingParty] = []

    def start(**options) -> RelyingParty:
        party = RelyingParty(tmp_path, **options)
        started.append(party)
        return party

    yield start
    for party in started:
        party.close()


@pytest.fixture(scope="module")
def oidc_server(tmp_path_factory, backend):
    # A one-second polling interval keeps the device flow quick; openid-client honours it.
    with running_server(tmp_path_factory.mktemp("openid-client"), backend,
                        FLUXER_DEVICE_POLL_INTERVAL="1") as base:
        yield base


@pytest.fixture(scope="module")
def oidc_account(oidc_server):
    response = requests.post(f"{oidc_server}/api/v1/auth/register", timeout=10,
                             json={"username": "interop", "email": "interop@example.com",
                                   "password": PASSWORD})
    assert response.status_code == 201, response.text
    return response.json()


def new_app(base: str, account: dict, name: str, **fields) -> dict:
    response = requests.post(f"{base}/api/v1/oauth2/applications", headers={"Authorization": account["token"]},
                             json={"name": name, "redirect_uris": [REDIRECT], **fields}, timeout=10)
    assert response.status_code == 201, response.text
    return response.json()


def client_options(base: str, app: dict, **options) -> dict:
    return {"issuer": base, "client_id": app["id"], "client_secret": app.get("client_secret"),
            "redirect_uri": REDIRECT, "scope": "openid email", **options}


def code_flow(party: RelyingParty) -> dict:
    authorize = party.read("authorize")
    party.send({"callback": act_as_user(authorize["url"], "interop")})
    return party.read("result")


def approve_device(verification_uri_complete: str, user_code: str, username: str, *,
                   action: str = "authorize") -> None:
    """The person with the device's code: opens verification_uri_complete, signs in, checks
    the code the consent page shows, then presses ``action`` (authorize or cancel)."""
    base = verification_uri_complete.split("/activate")[0]
    browser = requests.Session()
    page = browser.get(verification_uri_complete, timeout=10)  # signed out: to the login page first
    assert "/login" in page.url, page.url
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    next_url = re.search(r'name="next" value="([^"]+)"', page.text).group(1).replace("&amp;", "&")
    form = browser.post(f"{base}/login", data={"csrf_token": csrf, "login": username, "password": PASSWORD,
                                               "next": next_url}, timeout=10)
    assert form.status_code == 200 and urlsplit(form.url).path == "/activate", form.url
    assert f'value="{user_code}"' in form.text  # the code came along, prefilled
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
    consent = browser.post(f"{base}/activate", data={"csrf_token": csrf, "user_code": user_code,
                                                     "action": "continue"}, timeout=10)
    assert consent.status_code == 200 and 'id="device-code">' + user_code in consent.text, consent.text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', consent.text).group(1)
    done = browser.post(f"{base}/activate", data={"csrf_token": csrf, "user_code": user_code, "action": action},
                        timeout=10)
    assert done.status_code == 200
    assert f'data-approved="{"true" if action == "authorize" else "false"}"' in done.text, done.text


def check_identity(result: dict, base: str, app: dict, account: dict) -> None:
    claims = result["claims"]
    assert result["issuer"] == base and claims["iss"] == base
    assert claims["aud"] == app["id"] and claims["azp"] == app["id"]
    assert claims["sub"] == account["user"]["id"] == result["userinfo"]["sub"]
    assert claims["preferred_username"] == "interop" == result["userinfo"]["preferred_username"]
    assert claims["email"] == "interop@example.com" and claims["email_verified"] is False
    assert result["userinfo"]["email"] == "interop@example.com"
    assert claims["exp"] > claims["iat"] and isinstance(claims["auth_time"], int)
    assert result["scope"] == "identify email openid" and result["token_type"].lower() == "bearer"
    # The non-repudiation checks fetched the JWKS to verify the id_token's signature.
    assert "/api/v1/oauth2/keys" in result["fetched"]


def test_openid_client_code_flow_confidential_client(oidc_server, oidc_account, relying_party):
    app = new_app(oidc_server, oidc_account, "openid-client Confidential")
    result = code_flow(relying_party(**client_options(oidc_server, app)))
    check_identity(result, oidc_server, app, oidc_account)
    assert result["claims"]["nonce"] == result["nonce"]
    header = result["id_token_header"]
    assert header["alg"] == "RS256" and header["kid"]
    assert result["token_endpoint_answers"] == ["ok"]


def test_openid_client_public_client_signs_in_and_refreshes(oidc_server, oidc_account, relying_party):
    app = new_app(oidc_server, oidc_account, "openid-client Public", public_client=True)
    assert "client_secret" not in app
    result = code_flow(relying_party(**client_options(oidc_server, app, refresh=True, max_age=300)))
    check_identity(result, oidc_server, app, oidc_account)
    assert time.time() - 300 <= result["claims"]["auth_time"] <= time.time() + 5  # openid-client checked max_age
    refresh = result["refresh"]
    assert refresh["rotated"] is True and refresh["scope"] == "identify email openid"
    assert refresh["userinfo_sub"] == result["claims"]["sub"]
    # Reuse detection: the replayed token is refused and the grant ends with it.
    assert refresh["replayed"] == "invalid_grant" and refresh["after_replay"] == "invalid_grant"
    assert result["token_endpoint_answers"] == ["ok", "ok", "invalid_grant", "invalid_grant"]


def test_openid_client_validates_an_es256_id_token(oidc_server, oidc_account, relying_party):
    app = new_app(oidc_server, oidc_account, "openid-client ES256", id_token_signed_response_alg="ES256")
    result = code_flow(relying_party(**client_options(oidc_server, app, id_token_signed_response_alg="ES256")))
    check_identity(result, oidc_server, app, oidc_account)
    assert result["id_token_header"]["alg"] == "ES256"


def test_openid_client_refuses_an_id_token_of_an_unexpected_algorithm(oidc_server, oidc_account, relying_party):
    """The checks are real: an RS256 application's id_token is refused by a relying party
    registered for ES256 (openid-client compares the header with its metadata)."""
    app = new_app(oidc_server, oidc_account, "openid-client Mismatch")
    party = relying_party(**client_options(oidc_server, app, id_token_signed_response_alg="ES256"))
    party.send({"callback": act_as_user(party.read("authorize")["url"], "interop")})
    failed = party.read("error")
    check = failed["cause"]
    assert check["message"] == 'unexpected JWT "alg" header parameter', failed
    assert check["cause"]["header"]["alg"] == "RS256" and check["cause"]["expected"] == "ES256"


def start_device_flow(party: RelyingParty, base: str) -> dict:
    device = party.read("device")
    assert device["verification_uri"] == f"{base}/activate"
    assert re.fullmatch(r"[B-DF-HJ-NP-TV-XZ]{4}-[B-DF-HJ-NP-TV-XZ]{4}", device["user_code"])
    assert urlsplit(device["verification_uri_complete"]).path == "/activate"
    assert device["user_code"] in device["verification_uri_complete"]
    assert device["interval"] == 1 and device["expires_in"] > 60
    time.sleep(2.5)  # openid-client polls while the person has not decided yet
    return device


def test_openid_client_device_flow_public_client(oidc_server, oidc_account, relying_party):
    app = new_app(oidc_server, oidc_account, "openid-client Device", public_client=True)
    party = relying_party(**client_options(oidc_server, app, flow="device", refresh=True))
    device = start_device_flow(party, oidc_server)
    approve_device(device["verification_uri_complete"], device["user_code"], "interop")
    result = party.read("result")
    check_identity(result, oidc_server, app, oidc_account)
    assert "nonce" not in result["claims"]  # the device flow has none to echo
    answers = result["token_endpoint_answers"]
    # Pending while the person decided, then the tokens; a client that keeps to the interval
    # is never told to slow down. Then the refresh, the replay and the refusal after it.
    assert answers[0] == "authorization_pending" and "slow_down" not in answers, answers
    assert answers[-4:] == ["ok", "ok", "invalid_grant", "invalid_grant"], answers
    assert set(answers[:-4]) == {"authorization_pending"}
    refresh = result["refresh"]
    assert refresh["rotated"] is True and refresh["userinfo_sub"] == result["claims"]["sub"]
    assert refresh["replayed"] == "invalid_grant" and refresh["after_replay"] == "invalid_grant"


def test_openid_client_device_flow_confidential_es256(oidc_server, oidc_account, relying_party):
    app = new_app(oidc_server, oidc_account, "openid-client Device ES256", id_token_signed_response_alg="ES256")
    party = relying_party(**client_options(oidc_server, app, flow="device", id_token_signed_response_alg="ES256"))
    device = start_device_flow(party, oidc_server)
    approve_device(device["verification_uri_complete"], device["user_code"], "interop")
    result = party.read("result")
    check_identity(result, oidc_server, app, oidc_account)
    assert result["id_token_header"]["alg"] == "ES256"
    assert result["token_endpoint_answers"][-1] == "ok"


def test_openid_client_device_flow_denied(oidc_server, oidc_account, relying_party):
    app = new_app(oidc_server, oidc_account, "openid-client Device Denied", public_client=True)
    party = relying_party(**client_options(oidc_server, app, flow="device"))
    device = start_device_flow(party, oidc_server)
    approve_device(device["verification_uri_complete"], device["user_code"], "interop", action="cancel")
    failed = party.read("error")
    assert failed["error"] == "access_denied", failed
    assert failed["token_endpoint_answers"][-1] == "access_denied"
