"""JSON responses and the rendering of the two error envelopes."""

from __future__ import annotations

import re
from collections.abc import Sequence
from itertools import accumulate
from urllib.parse import parse_qsl

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from fluxer_oauth.core.errors import ApiError, OAuthError
from fluxer_oauth.oauth.params import Params
from fluxer_oauth.platform.validation import invalid_form_body
from fluxer_oauth.store.errors import StoreUnavailable

_encoder = msgspec.json.Encoder()
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def has_header(headers, name) -> bool:
    """Whether a list of (name, value) pairs has ``name`` (str or bytes, as the pairs are).
    A plain loop: the edge asks it of every answer."""
    for key, _ in headers:
        if key == name:
            return True
    return False


class JSONResponse(Response):
    """``Content-Type: application/json`` exactly, without a charset (SPEC §1)."""

    media_type = "application/json"

    def render(self, content) -> bytes:
        return _encoder.encode(content)


def json_response(body, status: int = 200, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers)


def header_pairs(headers: dict | None) -> list[tuple[str, str]]:
    """Response headers as (lower-case name, text) pairs."""
    return [(name.lower(), str(value)) for name, value in headers.items()] if headers else []


def error_answer(exc: ApiError | OAuthError, first_headers: Sequence[tuple[str, str]] = ()) -> tuple[int, list, bytes]:
    """An error as an answer of the edge: (status, header pairs, JSON body)."""
    return exc.status, [*first_headers, *header_pairs(exc.headers)], _encoder.encode(exc.body())


def no_content() -> Response:
    return Response(status_code=204)


async def api_error_handler(_request: Request, exc: ApiError) -> JSONResponse:
    return json_response(exc.body(), exc.status, exc.headers)


def database_unavailable() -> ApiError:
    """What the web answers when the store raises ``StoreUnavailable``: 503."""
    return ApiError(503, "SERVICE_UNAVAILABLE", "the database is unreachable; try again shortly")


async def store_unavailable_handler(_request: Request, _exc: StoreUnavailable) -> JSONResponse:
    error = database_unavailable()
    return json_response(error.body(), error.status, error.headers)


async def oauth_error_handler(_request: Request, exc: OAuthError) -> JSONResponse:
    return json_response(exc.body(), exc.status, {**NO_STORE, **exc.headers})


MAX_JSON_DEPTH = 32
# A JSON string, or an unterminated one up to the end (so that a scan never goes quadratic).
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKETS = bytes(byte for byte in range(256) if byte not in b"[]{}")
_DEPTH_STEP = tuple(1 if byte in b"[{" else -1 if byte in b"]}" else 0 for byte in range(256))


def json_too_deep(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether the JSON text nests arrays and objects more than ``limit`` levels deep."""
    if body.count(b"[") + body.count(b"{") <= limit:  # every real body: two C scans
        return False
    brackets = _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    return max(accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0) > limit


async def decode_json(request: Request, schema: type):
    """A request body decoded and validated into ``schema``; 400 INVALID_FORM_BODY otherwise."""
    body = await request.body()
    # msgspec recurses once per level, also through fields it skips: deep enough, it raises
    # RecursionError (a 500). Nothing in this API nests more than a few levels.
    if json_too_deep(body):
        raise invalid_form_body([{"path": "", "code": "JSON_TOO_DEEP",
                                  "message": f"the body nests more than {MAX_JSON_DEPTH} levels deep"}])
    try:
        return msgspec.json.decode(body, type=schema)
    except msgspec.ValidationError as exc:
        raise invalid_form_body([_validation_error(str(exc))]) from None
    except (msgspec.DecodeError, UnicodeDecodeError):
        raise invalid_form_body([{"path": "", "code": "JSON_INVALID", "message": "the body is not valid JSON"}]) from None


def _validation_error(text: str) -> dict:
    # msgspec says e.g. "Expected `str`, got `int` - at `$.username`".
    message, _, where = text.partition(" - at `")
    path = where.rstrip("`").removeprefix("$").lstrip(".")
    return {"path": path, "code": "BASE_TYPE_INVALID", "message": message}


def form_params(content_type: str, body: bytes) -> Params:
    """An application/x-www-form-urlencoded body as ``Params``; invalid_request otherwise."""
    if content_type.split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
        raise OAuthError("invalid_request", "the body must be application/x-www-form-urlencoded")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise OAuthError("invalid_request", "the body is not valid UTF-8") from None
    if "%" not in text and "+" not in text:
        return Params.from_pairs(_plain_pairs(text))
    try:
        return Params.from_pairs(parse_qsl(text, keep_blank_values=True, errors="strict"))
    except (ValueError, UnicodeDecodeError):
        raise OAuthError("invalid_request", "the body is not valid form data") from None


def _plain_pairs(text: str):
    """What parse_qsl(text, keep_blank_values=True) gives for a body with nothing to unescape
    (no "%", no "+"), without its per-pair unquoting: most token requests are such bodies."""
    for pair in text.split("&"):
        if pair:
            name, _, value = pair.partition("=")
            yield name, value
