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


async def test_every_operation_documents_the_429_it_can_answer(settings):
    import httpx
    import msgspec

    from fluxer_oauth.app import build_app
    from fluxer_oauth.web.schemas import RateLimitedBody

    limited = build_app(settings.model_copy(update={"rate_limits": "on", "rate_limit_global": "3/minute"}))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=limited), base_url="http://testserver") as http:
        document = (await http.get("/api/v1/openapi.json")).json()
        answers = [await http.post("/api/v1/oauth2/token", data={"grant_type": "client_credentials"},
                                   auth=("1", "x")) for _ in range(3)]
    await limited.state.runtime.db.close()
    for item in document["paths"].values():
        for operation in item.values():
            documented = operation["responses"]["429"]
            assert {"Retry-After", "X-RateLimit-Bucket"} <= set(documented["headers"])
            assert documented["content"]["application/json"]["schema"]["$ref"].endswith("/RateLimitedBody")
    refused = answers[-1]
    assert refused.status_code == 429
    body = msgspec.json.decode(refused.content, type=RateLimitedBody)  # the body is what the document says
    assert body.global_ is True and body.retry_after > 0
    assert refused.headers["x-ratelimit-bucket"] == "global" and int(refused.headers["retry-after"]) >= 1
