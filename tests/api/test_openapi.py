"""The OpenAPI document covers every JSON route the server mounts."""

from __future__ import annotations

from starlette.routing import Route


async def test_document_lists_every_api_route(client, app):
    document = (await client.get("/api/v1/openapi.json")).json()
    assert document["openapi"].startswith("3.1")
    documented = {(path, method.upper()) for path, item in document["paths"].items() for method in item}
    mounted = {
        (route.path, method)
        for route in app.routes
        if isinstance(route, Route) and route.path.startswith("/api/v1/") and route.path != "/api/v1/openapi.json"
        for method in route.methods - {"HEAD"}
    }
    assert mounted == documented
    token = document["paths"]["/api/v1/oauth2/token"]["post"]
    assert "application/x-www-form-urlencoded" in token["requestBody"]["content"]
    for item in document["paths"].values():
        for operation in item.values():
            for ref in _refs(operation):
                assert ref.split("/")[-1] in document["components"]["schemas"]


def _refs(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)
