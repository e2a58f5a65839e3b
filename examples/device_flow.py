"""Sign in on a device without a browser: the device authorization grant (RFC 8628).

    python examples/device_flow.py --client-id <id> [--server URL]

A confidential client also gives its secret: FLUXER_CLIENT_SECRET=<secret> in the
environment (--client-secret works too, but lands in the shell history).

It asks Fluxer for a code pair, prints where to go and the code to type (open
verification_uri_complete on a phone or computer, sign in, approve), polls the token
endpoint at the interval the server asks for (slower after each slow_down), and prints the
user that userinfo returns. A public client (a CLI, a TV app: nothing can keep a secret
there) needs only --client-id. Standard library only.

The endpoints come from the server's discovery document. The tokens are only printed in
part: a real device keeps the refresh token in its secure storage."""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
SLOW_DOWN_STEP = 5  # seconds RFC 8628 §3.5 tells a client to add on slow_down


class DeviceFlowError(Exception):
    """The flow ended without tokens; the message says why."""


def request_json(url: str, *, form: dict | None = None, headers: dict | None = None) -> tuple[int, dict]:
    """GET (or POST ``form``) and the decoded JSON answer, with its status even for an error."""
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    request = urllib.request.Request(url, data=data, headers={"Accept": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        try:
            return error.code, json.load(error)
        except ValueError:
            return error.code, {"error": f"HTTP {error.code}"}


class Client:
    def __init__(self, server: str, client_id: str, client_secret: str | None) -> None:
        status, self.metadata = request_json(f"{server.rstrip('/')}/.well-known/openid-configuration")
        if status != 200 or "device_authorization_endpoint" not in self.metadata:
            raise DeviceFlowError(f"{server} does not offer the device flow (discovery answered {status})")
        self.client_id = client_id
        self.client_secret = client_secret

    def post(self, url: str, form: dict) -> tuple[int, dict]:
        """A client-authenticated POST: HTTP Basic with a secret, client_id in the body without."""
        if self.client_secret:
            pair = f"{urllib.parse.quote(self.client_id, safe='')}:{urllib.parse.quote(self.client_secret, safe='')}"
            headers = {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}
            return request_json(url, form=form, headers=headers)
        return request_json(url, form={**form, "client_id": self.client_id})

    def start(self, scope: str) -> dict:
        status, body = self.post(self.metadata["device_authorization_endpoint"], {"scope": scope})
        if status != 200:
            raise DeviceFlowError(f"device authorization refused: {body.get('error')}: "
                                  f"{body.get('error_description', '')}")
        return body

    def poll(self, device: dict, *, sleep=time.sleep, clock=time.monotonic) -> dict:
        """Poll until the user decides or the code expires (RFC 8628 §3.4, §3.5)."""
        interval = int(device.get("interval", 5))
        deadline = clock() + int(device["expires_in"])
        while clock() < deadline:
            sleep(interval)
            status, body = self.post(self.metadata["token_endpoint"],
                                     {"grant_type": DEVICE_GRANT, "device_code": device["device_code"]})
            if status == 200:
                return body
            error = body.get("error")
            if error == "authorization_pending":
                continue
            if error == "slow_down":
                interval += SLOW_DOWN_STEP
                continue
            if error == "access_denied":
                raise DeviceFlowError("the request was denied")
            if error == "expired_token":
                break
            raise DeviceFlowError(f"the token endpoint answered {error}: {body.get('error_description', '')}")
        raise DeviceFlowError("the code expired before it was approved")

    def userinfo(self, access_token: str) -> dict:
        status, body = request_json(self.metadata["userinfo_endpoint"],
                                    headers={"Authorization": f"Bearer {access_token}"})
        if status != 200:
            raise DeviceFlowError(f"userinfo answered {status}: {body.get('error') or body.get('message')}")
        return body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default=os.environ.get("FLUXER_URL", "http://127.0.0.1:8080"))
    parser.add_argument("--client-id", default=os.environ.get("FLUXER_CLIENT_ID"),
                        required="FLUXER_CLIENT_ID" not in os.environ)
    parser.add_argument("--client-secret", default=os.environ.get("FLUXER_CLIENT_SECRET") or None,
                        help="a confidential client's secret; leave out for a public client. It lands in "
                             "your shell history: FLUXER_CLIENT_SECRET in the environment does not")
    parser.add_argument("--scope", default="openid email")
    args = parser.parse_args(argv)

    try:
        client = Client(args.server, args.client_id, args.client_secret)
        device = client.start(args.scope)
        print(f"To sign in, open {device['verification_uri_complete']}", flush=True)
        print(f"or go to {device['verification_uri']} and enter the code {device['user_code']}", flush=True)
        print(f"Waiting for approval (the code expires in {device['expires_in'] // 60} minutes)...", flush=True)
        tokens = client.poll(device)
        user = client.userinfo(tokens["access_token"])
    except DeviceFlowError as exc:
        print(f"Sign-in failed: {exc}", file=sys.stderr, flush=True)
        return 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"Could not reach {args.server}: {exc}", file=sys.stderr, flush=True)
        return 2
    name = user.get("preferred_username") or user.get("username")
    email = f" <{user['email']}>" if user.get("email") else ""
    print(f"Signed in as {name}{email} (sub {user['sub']})", flush=True)
    print(f"Granted scopes: {tokens.get('scope', '')}; id_token: {'yes' if 'id_token' in tokens else 'no'}; "
          f"refresh token: {'yes' if 'refresh_token' in tokens else 'no'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
