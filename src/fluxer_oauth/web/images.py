"""Serving images as a CDN does: ``/avatars/{user_id}/{hash}.{ext}`` and
``/icons/{application_or_guild_id}/{hash}.{ext}`` (png, jpg, jpeg, webp, gif), ``?size=`` a
power of two from 16 to 1024. A URL names one image's bytes forever (its hash is of them),
so answers are ``public, max-age=31536000, immutable`` with a strong ETag; a hash that is
not the owner's avatar or icon now (replaced, removed, unknown) is 404.

Variants are rendered on first request and kept in a per-process LRU bounded in bytes
(``VariantCache``); requests for one variant not yet rendered wait for one rendering."""

from __future__ import annotations

import asyncio
from collections import OrderedDict

from starlette.requests import Request
from starlette.responses import Response

from fluxer_oauth.core.ids import parse_snowflake
from fluxer_oauth.core.images import AVATAR, ICON, MEDIA_TYPES, etag, parse_file_name, parse_size
from fluxer_oauth.platform import images
from fluxer_oauth.web.caller import runtime
from fluxer_oauth.web.responses import json_response

IMMUTABLE = "public, max-age=31536000, immutable"
_ERROR_HEADERS = {"Cache-Control": "no-store"}


class VariantCache:
    """Rendered variants by (hash, format, size), least recently used first out, at most
    ``capacity`` bytes in all (0: none kept)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.size = 0
        self._entries: OrderedDict[tuple, bytes] = OrderedDict()
        self._rendering: dict[tuple, asyncio.Future] = {}

    def get(self, key: tuple) -> bytes | None:
        body = self._entries.get(key)
        if body is not None:
            self._entries.move_to_end(key)
        return body

    def put(self, key: tuple, body: bytes) -> None:
        if len(body) > self.capacity:
            return
        previous = self._entries.pop(key, None)
        if previous is not None:
            self.size -= len(previous)
        self._entries[key] = body
        self.size += len(body)
        while self.size > self.capacity:
            _, evicted = self._entries.popitem(last=False)
            self.size -= len(evicted)

    async def get_or_render(self, key: tuple, render) -> bytes | None:
        """The cached variant, or ``await render()``, once for all the requests that want it
        meanwhile."""
        while True:
            body = self.get(key)
            if body is not None:
                return body
            pending = self._rendering.get(key)
            if pending is None:
                break
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                if not pending.cancelled():
                    raise  # this request was cancelled
                # the request that was rendering it went away: render it here
        pending = self._rendering[key] = asyncio.get_running_loop().create_future()
        try:
            body = await render()
        except asyncio.CancelledError:
            pending.cancel()
            raise
        except Exception as exc:
            pending.set_exception(exc)
            pending.exception()  # marked retrieved: nobody may be waiting
            raise
        finally:
            self._rendering.pop(key, None)
        pending.set_result(body)
        if body is not None:
            self.put(key, body)
        return body


def _error(status: int, code: str, message: str) -> Response:
    return json_response({"code": code, "message": message}, status, _ERROR_HEADERS)


def _not_found() -> Response:
    return _error(404, "UNKNOWN_IMAGE", "unknown image")


def _matches(if_none_match: str | None, tag: str) -> bool:
    if not if_none_match:
        return False
    candidates = [value.strip().removeprefix("W/") for value in if_none_match.split(",")]
    return "*" in candidates or tag in candidates


async def _serve(request: Request, kind: str) -> Response:
    owner_id = parse_snowflake(request.path_params["owner_id"])
    parsed = parse_file_name(request.path_params["file"])
    if owner_id is None or parsed is None:
        return _not_found()
    try:
        size = parse_size(request.query_params.get("size"))
    except ValueError as exc:
        return _error(400, "INVALID_IMAGE_SIZE", str(exc))
    image_hash, fmt = parsed
    rt = runtime(request)
    found = await images.find(rt, kind, owner_id, image_hash)
    if found is None:
        return _not_found()
    tag = etag(image_hash, fmt, size)
    headers = {"Cache-Control": IMMUTABLE, "ETag": tag, "Access-Control-Allow-Origin": "*",
               "Cross-Origin-Resource-Policy": "cross-origin"}
    if _matches(request.headers.get("if-none-match"), tag):
        return Response(status_code=304, headers=headers)
    cache: VariantCache = request.app.state.image_variants
    body = await cache.get_or_render((image_hash, fmt, size), lambda: images.variant(rt, found, fmt, size))
    if body is None:
        return _not_found()
    return Response(body, media_type=MEDIA_TYPES[fmt], headers=headers)


async def avatar(request: Request) -> Response:
    """GET /avatars/{owner_id}/{file}: a user's avatar."""
    return await _serve(request, AVATAR)


async def icon(request: Request) -> Response:
    """GET /icons/{owner_id}/{file}: an application's or a guild's icon."""
    return await _serve(request, ICON)
