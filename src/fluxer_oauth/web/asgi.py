"""The ASGI interface in front of the edge (uvicorn, ``granian --interface asgi``, and the
tests' in-process client): one request becomes an ``Exchange``, the edge's answer two
messages. Everything a request goes through lives in web/edge.py."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect

from fluxer_oauth.web.edge import Edge, Exchange, HeadersView
from fluxer_oauth.web.responses import has_header


async def serve(edge: Edge, scope, receive, send) -> None:
    status, headers, body = await edge.serve(_AsgiExchange(scope, receive))
    raw = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]
    if status >= 200 and status not in (204, 304) and not has_header(raw, b"content-length"):
        raw.append((b"content-length", str(len(body)).encode()))  # none on answers that may not carry a body
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class _AsgiExchange(Exchange):
    __slots__ = ("_scope", "_receive")

    def __init__(self, scope, receive) -> None:
        self._scope = scope
        self._receive = receive
        self.method = scope["method"]
        self.path = scope["path"]
        self.headers = HeadersView(Headers(raw=scope["headers"]))
        client = scope.get("client")
        self.peer = client[0] if client else "unknown"

    async def read_body(self, limit: int) -> bytes | None:
        chunks, size = [], 0
        while True:
            message = await self._receive()
            if message["type"] != "http.request":
                raise ClientDisconnect()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    def asgi_scope(self) -> dict:
        scope = dict(self._scope)
        # The edge collects the framework's answer as body messages: no server extension
        # (such as http.response.pathsend, which files would use) may take their place.
        scope.pop("extensions", None)
        return scope
