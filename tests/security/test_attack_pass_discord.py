"""Attack pass on issue 20 (guilds.join, guilds.members.read, images, application links):
each test names the behaviour it protects and fails while the weakness is there."""

from __future__ import annotations

import asyncio
import io
import struct
import time

import httpx
from PIL import Image
from sqlalchemy import delete

from fluxer_oauth.app import build_app
from fluxer_oauth.core.permissions import PERMISSIONS
from fluxer_oauth.ops.janitor import sweep_images
from fluxer_oauth.platform import guilds as guild_platform
from fluxer_oauth.store.tables import member_roles
from tests.api.test_bots import add_member, make_guild
from tests.api.test_images import data_uri, picture
from tests.conftest import bearer, create_app, register, tokens_for

MANAGE_GUILD = PERMISSIONS["MANAGE_GUILD"]


# --- JPEG structure: decoding cost is not bounded by pixels alone ------------------------------

def _segment(marker: int, payload: bytes) -> bytes:
    return b"\xff" + bytes([marker]) + struct.pack(">H", len(payload) + 2) + payload


class _Bits:
    def __init__(self) -> None:
        self.out, self.acc, self.count = bytearray(), 0, 0

    def put(self, value: int, width: int) -> None:
        for shift in range(width - 1, -1, -1):
            self.acc = (self.acc << 1) | ((value >> shift) & 1)
            self.count += 1
            if self.count == 8:
                self.out.append(self.acc)
                if self.acc == 0xFF:
                    self.out.append(0)  # byte stuffing
                self.acc = self.count = 0

    def done(self) -> bytes:
        while self.count:
            self.put(1, 1)
        return bytes(self.out)


def progressive_jpeg_with_many_scans(scans: int, side: int = 4096) -> bytes:
    """A grey 4096 x 4096 progressive JPEG (within the pixel limit) whose one DC scan is
    followed by ``scans`` AC scans of ~30 bytes each (end-of-band runs): libjpeg walks every
    block of the image for each of them."""
    blocks = ((side + 7) // 8) ** 2
    out = b"\xff\xd8" + _segment(0xDB, b"\x00" + bytes([1] * 64))
    out += _segment(0xC2, struct.pack(">BHHB", 8, side, side, 1) + bytes([1, 0x11, 0]))
    out += _segment(0xC4, b"\x00" + bytes([1] + [0] * 15) + b"\x00")  # DC: one code, category 0
    out += _segment(0xC4, b"\x10" + bytes([1] + [0] * 15) + b"\xe0")  # AC: one code, EOB14
    dc = _Bits()
    for _ in range(blocks):
        dc.put(0, 1)
    out += _segment(0xDA, bytes([1, 1, 0x00, 0, 0, 0x00])) + dc.done()
    ac, left = _Bits(), blocks
    while left > 0:
        run = min(left, 32767)
        ac.put(0, 1)
        ac.put(max(run, 16384) - 16384, 14)
        left -= max(run, 16384)
    scan = _segment(0xDA, bytes([1, 1, 0x00, 1, 63, 0x00])) + ac.done()
    return out + scan * scans + b"\xff\xd9"


async def test_a_progressive_jpeg_with_thousands_of_scans_is_refused_before_decoding(client):
    # 3000 scans, 100 KB: about 3 s of an image worker (there are two per process) on this
    # machine, growing linearly: an 8 MiB upload holds a worker for minutes.
    user = await register(client)
    bomb = progressive_jpeg_with_many_scans(3000)
    assert len(bomb) < 150_000
    started = time.monotonic()
    response = await client.patch("/api/v1/users/@me", json={"avatar": data_uri(bomb, "image/jpeg")},
                                  headers=user.headers)
    elapsed = time.monotonic() - started
    assert response.status_code == 400, (response.status_code, round(elapsed, 2))
    assert response.json()["errors"][0]["path"] == "avatar"


async def test_a_jpeg_of_countless_marker_segments_is_refused(client):
    # Empty APP1 segments: Pillow keeps each in a list (about 300 MB of Python objects and
    # 3 s for 8 MiB of them); no real image has more than a handful.
    user = await register(client)
    tiny = io.BytesIO()
    Image.new("RGB", (16, 16)).save(tiny, "JPEG")
    tiny = tiny.getvalue()
    bomb = tiny[:2] + b"\xff\xe1\x00\x02" * 200_000 + tiny[2:]
    response = await client.patch("/api/v1/users/@me", json={"avatar": data_uri(bomb, "image/jpeg")},
                                  headers=user.headers)
    assert response.status_code == 400, response.text[:200]
    assert response.json()["errors"][0]["path"] == "avatar"


# --- the large body limit and credentials that authenticate nobody ------------------------------

async def _bytes_read(app, method: str, path: str, authorization: str, total: int) -> tuple[int, int]:
    """(status, bytes the server pulled) for a body of ``total`` bytes sent in 64 KiB parts."""
    sent = 0

    async def receive():
        nonlocal sent
        if sent >= total:
            await asyncio.sleep(3600)
        part = min(65536, total - sent)
        sent += part
        return {"type": "http.request", "body": b" " * part, "more_body": sent < total}

    status = {}

    async def send(message):
        if message["type"] == "http.response.start":
            status["code"] = message["status"]

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"host", b"testserver"), (b"content-type", b"application/json"),
                    (b"content-length", str(total).encode()), (b"authorization", authorization.encode())],
        "client": ("127.0.0.1", 1), "server": ("testserver", 80),
    }
    await app(scope, receive, send)
    return status["code"], sent


async def test_image_routes_read_no_large_body_for_a_credential_that_authenticates_nobody(app, settings):
    # Any Authorization header, even "x", lets an anonymous client make the edge read up to
    # ~11.2 MiB (image_body_bytes) before the route answers 401.
    for method, path in (("POST", "/api/v1/guilds"), ("PATCH", "/api/v1/users/@me"),
                         ("PATCH", "/v1/oauth2/applications/4242")):
        for authorization in ("x", "Bearer nope", "Bot nope"):
            status, read = await _bytes_read(app, method, path, authorization, 4 * 1024 * 1024)
            assert status in (401, 413), (path, authorization, status)
            assert read <= settings.max_body_bytes + 65536, (path, authorization, read)


# --- image files of a refused change ----------------------------------------------------------------

async def test_a_refused_icon_change_leaves_no_file_in_the_image_directory(settings, tmp_path, monkeypatch):
    # PATCH /guilds/{id} checks MANAGE_GUILD, processes the upload (seconds for a heavy one),
    # writes the file, then checks again in its transaction. Losing the role meanwhile makes
    # it 403 after the file is written; no row names that file, so the janitor never removes
    # it: each round leaves a file of up to a few MB on the shared disk for good.
    directory = tmp_path / "images"
    app = build_app(settings.model_copy(update={"image_dir": directory}))
    rt = app.state.runtime
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as http:
            owner, editor = await register(http), await register(http)
            guild_id = await make_guild(http, owner)
            await add_member(http, owner, guild_id, editor, MANAGE_GUILD)
            process = guild_platform.images.process

            async def process_then_lose_the_role(rt_, field, value):
                processed = await process(rt_, field, value)
                async with rt.db.write() as conn:  # the owner takes the role back meanwhile
                    await conn.execute(delete(member_roles).where(member_roles.c.user_id == int(editor.id)))
                return processed

            monkeypatch.setattr(guild_platform.images, "process", process_then_lose_the_role)
            response = await http.patch(f"/api/v1/guilds/{guild_id}", headers=editor.headers,
                                        json={"icon": data_uri(picture((90, 90), color=(3, 99, 7)))})
            assert response.status_code == 403, response.text
            await sweep_images(rt, at=time.time() + 7200)
            left = [p.name for p in directory.rglob("*.png")] if directory.exists() else []
            assert left == [], left
    finally:
        await rt.db.close()


# --- guilds.members.read -----------------------------------------------------------------------------

async def test_the_member_read_shows_no_identify_only_fields_to_a_token_without_identify(client):
    # GET /users/@me needs `identify`; a token with only guilds.members.read must not read
    # the user's mfa_enabled and locale through the member object (Discord's member user is
    # the public user).
    owner = await register(client)
    app = await create_app(client, owner)
    guild_id = await make_guild(client, owner)
    token = (await tokens_for(client, owner, app, scope="guilds.members.read"))["access_token"]
    assert (await client.get("/api/v1/users/@me", headers=bearer(token))).status_code == 403
    response = await client.get(f"/api/v1/users/@me/guilds/{guild_id}/member", headers=bearer(token))
    assert response.status_code == 200, response.text
    user = response.json()["user"]
    assert "mfa_enabled" not in user and "locale" not in user, user
