"""granian's RSGI interface in front of the edge (what ``fluxer-oauth serve`` runs): it
translates one request into an ``Exchange`` and writes the edge's answer in one call.
Everything a request goes through lives in web/edge.py."""

from __future__ import annotations

from fluxer_oauth.web.edge import Exchange


class RsgiEntry:
    def __init__(self, app) -> None:
        self.app = app
        self.edge = app.edge
        self._lifespan = None

    # granian calls these two in the worker, around serving, with its event loop.
    def __rsgi_init__(self, loop) -> None:
        self._lifespan = self.app.router.lifespan_context(self.app)
        loop.run_until_complete(self._lifespan.__aenter__())

    def __rsgi_del__(self, loop) -> None:
        if self._lifespan is not None:
            loop.run_until_complete(self._lifespan.__aexit__(None, None, None))

    async def __rsgi__(self, scope, proto) -> None:
        if scope.proto != "http":  # granian runs with websockets off; nothing else comes
            return
        status, headers, body = await self.edge.serve(_RsgiExchange(scope, proto))
        proto.response_bytes(status, headers, body)


class _RsgiExchange(Exchange):
    __slots__ = ("_scope", "_proto")

    def __init__(self, scope, proto) -> None:
        self._scope = scope
        self._proto = proto
        self.method = scope.method
        self.path = scope.path
        self.headers = scope.headers  # granian's: get and get_all, lower-case names
        self.peer = _host(scope.client)

    async def read_body(self, limit: int) -> bytes | None:
        if self.headers.get("content-length") is not None:
            return await self._proto()  # declared within the limit already
        chunks, size = [], 0
        async for chunk in self._proto:
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    def asgi_scope(self) -> dict:
        scope = self._scope
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": scope.http_version,
            "method": scope.method,
            "scheme": scope.scheme,
            "path": scope.path,
            "query_string": scope.query_string.encode("latin-1"),
            "root_path": "",
            "headers": [(name.encode("latin-1"), value.encode("latin-1")) for name, value in scope.headers.items()],
            "client": (self.peer, _port(scope.client)),
            "server": (_host(scope.server), _port(scope.server)),
        }


def _host(address: str) -> str:
    """The host of granian's "host:port" (IPv6 in brackets); "unknown" when there is none."""
    host = address.rpartition(":")[0] if address else ""
    return host.strip("[]") or "unknown"


def _port(address: str) -> int:
    port = address.rpartition(":")[2] if address else ""
    return int(port) if port.isdigit() else 0
