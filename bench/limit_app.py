"""The limit: a raw app that answers every request with the same JSON body as
GET /api/v1/users/@me, served by granian like the real server: ``app`` over ASGI (the
reference the issue names) and ``rsgi_app`` over RSGI, the interface ``fluxer-oauth serve``
uses, so "of limit" compares like with like."""

import json

BODY = json.dumps({
    "id": "1576254422646784000", "username": "bench", "discriminator": "0001", "global_name": None, "avatar": None,
    "banner": None, "accent_color": None, "bot": False, "system": False, "mfa_enabled": False, "locale": "en-US",
    "flags": 0, "public_flags": 0,
}, separators=(",", ":")).encode()
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:  # drain the request body, as a real endpoint must
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


RSGI_HEADERS = [(name.decode(), value.decode()) for name, value in HEADERS]


async def rsgi_app(scope, proto):
    await proto()  # the whole request body, as a real endpoint must read it
    proto.response_bytes(200, RSGI_HEADERS, BODY)
