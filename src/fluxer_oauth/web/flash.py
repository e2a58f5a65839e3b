"""One-time messages carried across a Post/Redirect/Get: the "flash" cookie.

After a POST that made a credential (a new application's client secret and bot token, a
reset), the page answers 303 and the GET it leads to shows the credential once. The
credential travels in a cookie sealed with AES-256-GCM under a key derived from the server
secret (core/sealing.py, as the signing keys are sealed), so the browser holds it
only as ciphertext and nobody can forge or alter one. The sealed data names:

- the session it was made for (a hash of the session token): another session, or the same
  browser after logging out and in again, cannot read it;
- its scope (the application's id, or the list page): a flash of one application is never
  shown on another's page;
- when it expires (``MAX_AGE`` seconds: the redirect is followed at once).

The cookie is HttpOnly, SameSite=Strict, Secure on https, and its Path is the pages that
show it. The GET that reads it deletes it, so a reload no longer shows the credential.
"""

from __future__ import annotations

import base64
import binascii
import json
import time

from starlette.requests import Request
from starlette.responses import Response

from fluxer_oauth.core import credentials, sealing
from fluxer_oauth.web.caller import runtime
from fluxer_oauth.web.cookies import SESSION_COOKIE

COOKIE = "fluxer_flash"
LIST_SCOPE = "list"  # the applications list (its cookie has its own name: its path covers the others')
MAX_AGE = 120  # seconds
MAX_COOKIE = 3000  # characters of a sealed value we read at all
_VERSION = b"f1"
_PURPOSE = b"fluxer page flash"  # the sealing key's HKDF info


def _session_hash(session_token: str | None) -> str:
    return credentials.sha256(session_token or "").hex()


def seal(secret: bytes, session_token: str | None, scope: str, payload: dict, *, now: float | None = None) -> str:
    """The cookie value carrying ``payload`` (JSON-able) to the next page of this session
    and scope."""
    at = time.time() if now is None else now
    plain = json.dumps({"s": _session_hash(session_token), "a": scope, "e": int(at) + MAX_AGE, "p": payload},
                       separators=(",", ":")).encode()
    return credentials.b64url(sealing.seal(secret, _PURPOSE, _VERSION, plain, COOKIE.encode()))


def unseal(secret: bytes, session_token: str | None, scope: str, value: str | None, *,
           now: float | None = None) -> dict | None:
    """The payload of a cookie value sealed for this session and scope, not expired; None
    for anything else (another session or scope, expired, altered, garbage)."""
    if not value or len(value) > MAX_COOKIE or not value.isascii():
        return None
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        return None
    try:  # (Unsealable is a ValueError, as is JSON that does not parse)
        data = json.loads(sealing.unseal(secret, _PURPOSE, _VERSION, raw, COOKIE.encode()))
    except ValueError:
        return None
    at = time.time() if now is None else now
    if (not isinstance(data, dict) or not credentials.constant_time_equal(str(data.get("s")),
                                                                          _session_hash(session_token))
            or data.get("a") != scope or not isinstance(data.get("e"), int) or data["e"] < at
            or not isinstance(data.get("p"), dict)):
        return None
    return data["p"]


def _session(request: Request) -> str | None:
    return request.cookies.get(SESSION_COOKIE)


def cookie_name(scope: str) -> str:
    return COOKIE + "_list" if scope == LIST_SCOPE else COOKIE


def put(request: Request, response: Response, *, path: str, scope: str, payload: dict) -> Response:
    """Attach a flash for the pages under ``path`` to ``response`` (the 303 of a POST)."""
    value = seal(runtime(request).secret, _session(request), scope, payload)
    response.set_cookie(cookie_name(scope), value, max_age=MAX_AGE, path=path, httponly=True, samesite="strict",
                        secure=runtime(request).settings.https)
    return response


def take(request: Request, scope: str) -> dict | None:
    """The flash this request carries for ``scope``, if any (``forget`` must then delete
    the cookie on the answer)."""
    return unseal(runtime(request).secret, _session(request), scope, request.cookies.get(cookie_name(scope)))


def forget(request: Request, response: Response, *, path: str, scope: str | None = None) -> Response:
    """Delete the flash cookie of ``path`` (when the request carried one)."""
    name = cookie_name(scope or "")
    if name in request.cookies:
        response.delete_cookie(name, path=path, httponly=True, samesite="strict",
                               secure=runtime(request).settings.https)
    return response
