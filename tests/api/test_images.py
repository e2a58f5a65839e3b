"""Avatars, application icons and guild icons: uploaded as data URIs, checked and re-encoded,
stored (database or directory), served CDN-style, and deleted by the janitor once unused."""

from __future__ import annotations

import base64
import io
import os
import struct
import time
import zlib

import httpx
import pytest
from PIL import Image
from sqlalchemy import select

from fluxer_oauth.app import build_app
from fluxer_oauth.core.images import ICON, AVATAR, image_url
from fluxer_oauth.ops.janitor import sweep_images
from fluxer_oauth.store.images import ImageDirectory
from fluxer_oauth.store.tables import images as images_table
from tests.conftest import bearer, create_app, register, tokens_for

HASH_LENGTH = 32


def picture(size=(300, 200), color=(200, 40, 40), mode="RGB", fmt="PNG", **save) -> bytes:
    image = Image.new(mode, size, color)
    image.putpixel((0, 0), (0, 0, 255) if mode == "RGB" else (0, 0, 255, 255))
    out = io.BytesIO()
    image.save(out, fmt, **save)
    return out.getvalue()


def data_uri(data: bytes, media: str = "image/png") -> str:
    return f"data:{media};base64,{base64.b64encode(data).decode()}"


def opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def path_of(url: str) -> str:
    return url.removeprefix("http://testserver")


async def _error_code(response) -> str:
    body = response.json()
    assert body["code"] == "INVALID_FORM_BODY", body
    return body["errors"][0]["code"]


@pytest.fixture
async def owner(client):
    return await register(client)


# --- uploads through each route ---------------------------------------------------------------

async def test_application_icon_upload_replace_and_remove(client, owner):
    app = await create_app(client, owner)
    assert app.body["icon"] is None
    url = f"/api/v1/oauth2/applications/{app.id}"
    first = await client.patch(url, json={"icon": data_uri(picture())}, headers=owner.headers)
    assert first.status_code == 200, first.text
    icon = first.json()["icon"]
    assert len(icon) == HASH_LENGTH and all(c in "0123456789abcdef" for c in icon)
    public = (await client.get(f"/api/v1/oauth2/applications/{app.id}/public")).json()
    assert public["icon"] == icon  # the hash in the object, as Discord's
    served = await client.get(f"/icons/{app.id}/{icon}.png")
    assert served.status_code == 200 and served.headers["content-type"] == "image/png"
    assert opened(served.content).size == (300, 200)

    # A field left out keeps the icon; another picture replaces it, and the old URL is gone.
    renamed = await client.patch(url, json={"name": "Renamed"}, headers=owner.headers)
    assert renamed.json()["icon"] == icon
    second = await client.patch(url, json={"icon": data_uri(picture(color=(10, 200, 10)), "image/jpeg")},
                                headers=owner.headers)
    replaced = second.json()["icon"]
    assert replaced != icon
    assert (await client.get(f"/icons/{app.id}/{icon}.png")).status_code == 404
    assert (await client.get(f"/icons/{app.id}/{replaced}.png")).status_code == 200

    removed = await client.patch(url, json={"icon": None}, headers=owner.headers)
    assert removed.status_code == 200 and removed.json()["icon"] is None
    assert (await client.get(f"/icons/{app.id}/{replaced}.png")).status_code == 404

    # Another user's application stays theirs: 404 before the upload is even looked at.
    stranger = await register(client)
    refused = await client.patch(url, json={"icon": data_uri(picture())}, headers=stranger.headers)
    assert refused.status_code == 404


async def test_avatar_username_and_global_name_with_patch_users_me(client, owner):
    response = await client.patch("/api/v1/users/@me", headers=owner.headers, json={
        "username": "New.Name_1", "global_name": "  Shown Name ", "avatar": data_uri(picture((64, 64)))})
    assert response.status_code == 200, response.text
    user = response.json()
    assert (user["username"], user["global_name"], user["email"]) == ("New.Name_1", "Shown Name", owner.user["email"])
    avatar = user["avatar"]
    assert len(avatar) == HASH_LENGTH
    me = (await client.get("/api/v1/users/@me", headers=owner.headers)).json()
    assert me["avatar"] == avatar and me["username"] == "New.Name_1"
    served = await client.get(f"/avatars/{owner.id}/{avatar}.webp?size=32")
    assert served.status_code == 200 and served.headers["content-type"] == "image/webp"
    assert opened(served.content).size == (32, 32)
    # The new name logs in; the avatar is not an icon.
    login = await client.post("/api/v1/auth/login", json={"login": "new.name_1", "password": "correct horse battery"})
    assert login.status_code == 200
    assert (await client.get(f"/icons/{owner.id}/{avatar}.png")).status_code == 404

    # Only what is sent changes; null and blank remove.
    kept = (await client.patch("/api/v1/users/@me", json={"global_name": ""}, headers=owner.headers)).json()
    assert kept["global_name"] is None and kept["avatar"] == avatar and kept["username"] == "New.Name_1"
    cleared = (await client.patch("/api/v1/users/@me", json={"avatar": None}, headers=owner.headers)).json()
    assert cleared["avatar"] is None
    assert (await client.get(f"/avatars/{owner.id}/{avatar}.png")).status_code == 404


async def test_guild_icon_at_creation_and_with_patch(client, owner):
    created = await client.post("/api/v1/guilds", json={"name": "Guild", "icon": data_uri(picture((50, 50)))},
                                headers=owner.headers)
    assert created.status_code == 201, created.text
    guild = created.json()
    icon = guild["icon"]
    assert len(icon) == HASH_LENGTH
    assert (await client.get(f"/icons/{guild['id']}/{icon}.png")).status_code == 200
    listed = (await client.get("/api/v1/users/@me/guilds", headers=owner.headers)).json()
    assert [g["icon"] for g in listed if g["id"] == guild["id"]] == [icon]

    url = f"/api/v1/guilds/{guild['id']}"
    patched = await client.patch(url, json={"name": "Renamed", "icon": data_uri(picture((40, 40), color=(1, 2, 3)))},
                                 headers=owner.headers)
    assert patched.status_code == 200, patched.text
    assert patched.json()["name"] == "Renamed" and patched.json()["icon"] not in (None, icon)
    assert (await client.get(f"/icons/{guild['id']}/{icon}.png")).status_code == 404
    removed = await client.patch(url, json={"icon": None}, headers=owner.headers)
    assert removed.json()["icon"] is None and removed.json()["name"] == "Renamed"

    # A member without MANAGE_GUILD is refused, a stranger finds no guild.
    member = await register(client)
    invite = (await client.post(f"{url}/invites", json={}, headers=owner.headers)).json()
    assert (await client.post(f"/api/v1/invites/{invite['code']}", headers=member.headers)).status_code == 200
    refused = await client.patch(url, json={"icon": data_uri(picture())}, headers=member.headers)
    assert refused.status_code == 403 and refused.json()["code"] == "MISSING_PERMISSIONS"
    stranger = await register(client)
    assert (await client.patch(url, json={"name": "x"}, headers=stranger.headers)).status_code == 404
    no_guild = await client.patch("/api/v1/guilds/4242", json={"name": "x"}, headers=owner.headers)
    assert no_guild.status_code == 404


# --- serving --------------------------------------------------------------------------------

async def _icon(client, owner, data: bytes, media: str = "image/png"):
    app = await create_app(client, owner)
    response = await client.patch(f"/api/v1/oauth2/applications/{app.id}", json={"icon": data_uri(data, media)},
                                  headers=owner.headers)
    assert response.status_code == 200, response.text
    return app.id, response.json()["icon"]


async def test_formats_sizes_and_caching_headers(client, owner):
    app_id, icon = await _icon(client, owner, picture((300, 200)))
    for ext, media, fmt in (("png", "image/png", "PNG"), ("jpg", "image/jpeg", "JPEG"), ("jpeg", "image/jpeg", "JPEG"),
                            ("webp", "image/webp", "WEBP"), ("gif", "image/gif", "GIF")):
        response = await client.get(f"/icons/{app_id}/{icon}.{ext}")
        assert response.status_code == 200, (ext, response.text)
        assert response.headers["content-type"] == media
        assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert opened(response.content).format == fmt
        assert opened(response.content).size == (300, 200)
    for size, expected in ((16, (16, 11)), (64, (64, 43)), (256, (256, 171)), (512, (300, 200)), (1024, (300, 200))):
        response = await client.get(f"/icons/{app_id}/{icon}.png", params={"size": size})
        assert response.status_code == 200
        assert opened(response.content).size == expected, size  # never enlarged
    for bad in ("100", "8", "2048", "abc", "", "64.0", "-64", "０６４"):
        response = await client.get(f"/icons/{app_id}/{icon}.png", params={"size": bad})
        assert response.status_code == 400 and response.json()["code"] == "INVALID_IMAGE_SIZE", bad

    # ETag per variant; If-None-Match answers 304 without the bytes.
    first = await client.get(f"/icons/{app_id}/{icon}.webp?size=64")
    tag = first.headers["etag"]
    assert tag.startswith('"') and icon in tag
    assert tag != (await client.get(f"/icons/{app_id}/{icon}.webp?size=128")).headers["etag"]
    assert tag != (await client.get(f"/icons/{app_id}/{icon}.png?size=64")).headers["etag"]
    again = await client.get(f"/icons/{app_id}/{icon}.webp?size=64", headers={"If-None-Match": f'"x", {tag}'})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == tag
    assert again.headers["cache-control"] == "public, max-age=31536000, immutable"
    other = await client.get(f"/icons/{app_id}/{icon}.webp?size=64", headers={"If-None-Match": '"other"'})
    assert other.status_code == 200 and other.content == first.content


async def test_unknown_images_are_404(client, owner):
    app_id, icon = await _icon(client, owner, picture())
    other = await create_app(client, owner)
    for path in (f"/icons/{app_id}/{'0' * 32}.png",  # unknown hash
                 f"/icons/{other.id}/{icon}.png",  # another owner's image
                 f"/avatars/{app_id}/{icon}.png",  # the bot's avatar is not the application's icon
                 f"/icons/{app_id}/{icon}.bmp", f"/icons/{app_id}/{icon}.svg", f"/icons/{app_id}/{icon}",
                 f"/icons/{app_id}/{icon.upper()}.png", f"/icons/nope/{icon}.png", f"/icons/{app_id}/{icon}.png/x"):
        response = await client.get(path)
        assert response.status_code == 404, path
        assert response.headers.get("cache-control") != "public, max-age=31536000, immutable"


async def test_image_url_builds_the_served_urls(client, owner, settings):
    app_id, icon = await _icon(client, owner, picture())
    url = image_url(settings.public_url, ICON, app_id, icon, size=64, ext="webp")
    assert url == f"http://testserver/icons/{app_id}/{icon}.webp?size=64"
    assert (await client.get(path_of(url))).status_code == 200
    avatar = (await client.patch("/api/v1/users/@me", json={"avatar": data_uri(picture())},
                                 headers=owner.headers)).json()["avatar"]
    assert (await client.get(path_of(image_url(settings.public_url, AVATAR, owner.id, avatar)))).status_code == 200
    assert image_url(settings.public_url, AVATAR, owner.id, None) is None


async def test_metadata_is_stripped_and_orientation_applied(client, owner):
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to show
    exif[0x010F] = "Camera Maker"
    exif[0x8825] = {2: (1.0, 2.0, 3.0)}  # GPS
    photo = picture((40, 20), fmt="JPEG", exif=exif.tobytes(), quality=95)
    app_id, icon = await _icon(client, owner, photo, "image/jpeg")
    for ext in ("png", "jpg", "webp"):
        served = opened((await client.get(f"/icons/{app_id}/{icon}.{ext}")).content)
        assert served.size == (20, 40), ext  # turned upright, then written without the EXIF
        assert not served.getexif() and "exif" not in served.info and "icc_profile" not in served.info, ext
    from PIL import PngImagePlugin
    text = PngImagePlugin.PngInfo()
    text.add_text("Comment", "secret location")
    app_id, icon = await _icon(client, owner, picture(pnginfo=text))
    served = (await client.get(f"/icons/{app_id}/{icon}.png")).content
    assert b"secret location" not in served and not opened(served).text


async def test_transparency_kept_and_animation_reduced_to_its_first_frame(client, owner):
    clear = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    clear.putpixel((5, 5), (255, 0, 0, 255))
    out = io.BytesIO()
    clear.save(out, "PNG")
    app_id, icon = await _icon(client, owner, out.getvalue())
    served = opened((await client.get(f"/icons/{app_id}/{icon}.png")).content)
    assert served.mode == "RGBA" and served.getpixel((0, 0))[3] == 0 and served.getpixel((5, 5)) == (255, 0, 0, 255)

    frames = [Image.new("RGB", (16, 16), color) for color in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert getattr(opened(out.getvalue()), "n_frames", 1) == 3
    app_id, icon = await _icon(client, owner, out.getvalue(), "image/gif")
    gif = Image.open(io.BytesIO((await client.get(f"/icons/{app_id}/{icon}.gif")).content))
    assert getattr(gif, "n_frames", 1) == 1 and gif.convert("RGB").getpixel((8, 8)) == (255, 0, 0)


async def test_same_picture_shared_by_owners(client, owner):
    data = picture((30, 30))
    first_app, first = await _icon(client, owner, data)
    second_app, second = await _icon(client, owner, data)
    assert first == second  # the hash is of the re-encoded pixels
    await client.patch(f"/api/v1/oauth2/applications/{first_app}", json={"icon": None}, headers=owner.headers)
    assert (await client.get(f"/icons/{first_app}/{first}.png")).status_code == 404
    assert (await client.get(f"/icons/{second_app}/{second}.png")).status_code == 200


# --- what is refused ------------------------------------------------------------------------

def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def bomb_png(width: int, height: int) -> bytes:
    """A PNG of a few dozen bytes whose header declares width x height pixels: decoding it
    would allocate width x height x 3 bytes."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + _png_chunk(b"IEND", b""))


async def _refused(client, owner, value) -> str:
    response = await client.patch("/api/v1/users/@me", json={"avatar": value}, headers=owner.headers)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["errors"][0]["path"] == "avatar", body
    return body["errors"][0]["code"]


async def test_banned_types_and_broken_uploads_are_400(client, owner):
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><script>alert(1)</script></svg>'
    assert await _refused(client, owner, data_uri(svg, "image/svg+xml")) == "IMAGE_TYPE_UNSUPPORTED"
    assert await _refused(client, owner, data_uri(picture(fmt="BMP"), "image/bmp")) == "IMAGE_TYPE_UNSUPPORTED"
    assert await _refused(client, owner, data_uri(picture(fmt="TIFF"), "image/png")) == "IMAGE_TYPE_UNSUPPORTED"
    assert await _refused(client, owner, data_uri(b"just some text, not a picture", "image/png")) == "IMAGE_TYPE_UNSUPPORTED"
    assert await _refused(client, owner, data_uri(b"", "image/png")) == "IMAGE_INVALID"
    assert await _refused(client, owner, "data:image/png;base64,not base64!!") == "IMAGE_INVALID"
    assert await _refused(client, owner, "data:image/png," + "x" * 10) == "IMAGE_INVALID"  # not base64 at all
    # Not a data URI of an image: refused by the body's schema.
    for value in ("https://example.com/a.png", "data:text/plain;base64,aGVsbG8=", 42):
        response = await client.patch("/api/v1/users/@me", json={"avatar": value}, headers=owner.headers)
        assert response.status_code == 400 and response.json()["errors"][0]["path"] == "avatar", value
    # Cut short: every format.
    for fmt, media in (("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp"), ("GIF", "image/gif")):
        whole = Image.frombytes("RGB", (120, 120), os.urandom(120 * 120 * 3))
        out = io.BytesIO()
        whole.save(out, fmt)
        data = out.getvalue()
        assert await _refused(client, owner, data_uri(data[: len(data) // 2], media)) == "IMAGE_INVALID", fmt
        assert await _refused(client, owner, data_uri(data[:20], media)) == "IMAGE_INVALID", fmt
    me = (await client.get("/api/v1/users/@me", headers=owner.headers)).json()
    assert me["avatar"] is None  # nothing was stored


async def test_decompression_bombs_are_refused_before_decoding(client, owner):
    bomb = bomb_png(100_000, 100_000)
    assert len(bomb) < 100
    assert await _refused(client, owner, data_uri(bomb)) == "IMAGE_DIMENSIONS_TOO_LARGE"
    # Under Pillow's own bomb limit, over ours: 5000 x 5000 is 25 M pixels (at most 16.7 M).
    assert await _refused(client, owner, data_uri(bomb_png(5000, 5000))) == "IMAGE_DIMENSIONS_TOO_LARGE"
    # A side longer than 8192 pixels, whatever the pixel count.
    assert await _refused(client, owner, data_uri(bomb_png(10_000, 1))) == "IMAGE_DIMENSIONS_TOO_LARGE"
    # A real picture of 4096 x 4096 (16.7 M pixels: the limit) is fine and stored at 1024.
    big = Image.new("RGB", (4096, 4096), (9, 9, 9))
    out = io.BytesIO()
    big.save(out, "JPEG", quality=50)
    response = await client.patch("/api/v1/users/@me", json={"avatar": data_uri(out.getvalue(), "image/jpeg")},
                                  headers=owner.headers)
    assert response.status_code == 200, response.text
    served = await client.get(f"/avatars/{owner.id}/{response.json()['avatar']}.png")
    assert opened(served.content).size == (1024, 1024)


async def test_a_10_mb_upload_is_413_and_other_bodies_keep_their_limit(client, owner):
    huge = data_uri(os.urandom(10 * 1024 * 1024))
    for method, url in (("PATCH", "/api/v1/users/@me"), ("PATCH", "/v1/users/@me"), ("POST", "/api/v1/guilds")):
        response = await client.request(method, url, json={"name": "g", "avatar": huge, "icon": huge},
                                         headers=owner.headers)
        assert response.status_code == 413 and response.json()["code"] == "PAYLOAD_TOO_LARGE", url
    # A body beyond 64 KiB is still 413 on the routes that take no image.
    padded = {"name": "app", "description": "x" * (70 * 1024)}
    response = await client.post("/api/v1/oauth2/applications", json=padded, headers=owner.headers)
    assert response.status_code == 413
    # Within the image routes' limit a 1 MB upload goes through (random bytes: not an image).
    response = await client.patch("/api/v1/users/@me", json={"avatar": data_uri(os.urandom(1024 * 1024))},
                                  headers=owner.headers)
    assert response.status_code == 400 and (await _error_code(response)) == "IMAGE_TYPE_UNSUPPORTED"
    assert (await client.get("/api/v1/users/@me", headers=owner.headers)).status_code == 200
    # Without a credential the edge reads no more than 64 KiB, whatever the route.
    anonymous = await client.patch("/api/v1/users/@me", json={"avatar": data_uri(os.urandom(1024 * 1024))})
    assert anonymous.status_code == 413


async def test_the_decoded_size_limit_is_a_setting(settings):
    app = build_app(settings.model_copy(update={"image_max_bytes": 4096}))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as http:
        user = await register(http)
        noisy = Image.frombytes("RGB", (64, 64), os.urandom(64 * 64 * 3))
        out = io.BytesIO()
        noisy.save(out, "PNG")
        assert len(out.getvalue()) > 4096
        response = await http.patch("/api/v1/users/@me", json={"avatar": data_uri(out.getvalue())},
                                    headers=user.headers)
        assert response.status_code == 400 and await _error_code(response) == "IMAGE_TOO_LARGE"
        small = await http.patch("/api/v1/users/@me", json={"avatar": data_uri(picture((16, 16)))},
                                 headers=user.headers)
        assert small.status_code == 200
    await app.state.runtime.db.close()


# --- PATCH /users/@me: who may, and the username's rules -------------------------------------

async def test_patch_users_me_refuses_bearer_tokens_and_bots(client, owner):
    app = await create_app(client, owner)
    token = (await tokens_for(client, owner, app, scope="identify email"))["access_token"]
    for headers in (bearer(token), {"Authorization": f"Bot {app.body['bot']['token']}"}):
        response = await client.patch("/api/v1/users/@me", json={"username": "taken_over"}, headers=headers)
        assert response.status_code == 403, response.text
        assert response.json() == {"code": "ACCESS_DENIED", "message": "this route needs a user session"}
    assert (await client.patch("/api/v1/users/@me", json={"username": "x_x"})).status_code == 401
    me = (await client.get("/api/v1/users/@me", headers=owner.headers)).json()
    assert me["username"] == owner.user["username"]


async def test_username_rules_and_uniqueness(client, owner):
    other = await register(client)
    taken = await client.patch("/api/v1/users/@me", json={"username": other.user["username"].upper()},
                               headers=owner.headers)
    assert taken.status_code == 400
    assert taken.json()["errors"] == [{"path": "username", "code": "USERNAME_ALREADY_TAKEN",
                                       "message": "this username is already registered"}]
    for bad in ("a", "x" * 33, "with space", "émile", ""):
        response = await client.patch("/api/v1/users/@me", json={"username": bad}, headers=owner.headers)
        assert response.status_code == 400 and await _error_code(response) == "USERNAME_INVALID", bad
    bad_name = await client.patch("/api/v1/users/@me", json={"global_name": "x" * 33}, headers=owner.headers)
    assert bad_name.status_code == 400
    # One's own name in another case is fine; the old name is free once changed.
    own = await client.patch("/api/v1/users/@me", json={"username": owner.user["username"].upper()},
                             headers=owner.headers)
    assert own.status_code == 200 and own.json()["username"] == owner.user["username"].upper()
    freed = await client.patch("/api/v1/users/@me", json={"username": "fresh_name"}, headers=owner.headers)
    assert freed.status_code == 200
    took = await client.patch("/api/v1/users/@me", json={"username": owner.user["username"]}, headers=other.headers)
    assert took.status_code == 200


# --- storage ----------------------------------------------------------------------------------

async def _rows(rt) -> dict:
    async with rt.db.read() as conn:
        rows = (await conn.execute(select(images_table.c.hash, images_table.c.data.is_(None)))).all()
    return {row[0]: bool(row[1]) for row in rows}


async def test_the_janitor_deletes_images_nobody_uses(client, owner, rt):
    app_id, old = await _icon(client, owner, picture(color=(1, 1, 1)))
    await client.patch(f"/api/v1/oauth2/applications/{app_id}", json={"icon": data_uri(picture(color=(2, 2, 2)))},
                       headers=owner.headers)
    current = (await client.get(f"/api/v1/oauth2/applications/{app_id}", headers=owner.headers)).json()["icon"]
    assert set(await _rows(rt)) == {old, current}
    assert await sweep_images(rt) == 0  # within the hour an unused image is kept
    assert await sweep_images(rt, at=time.time() + 3700) == 1
    assert set(await _rows(rt)) == {current}
    assert (await client.get(f"/icons/{app_id}/{current}.png")).status_code == 200


async def test_directory_storage(settings, tmp_path):
    directory = tmp_path / "images"
    app = build_app(settings.model_copy(update={"image_dir": directory}))
    rt = app.state.runtime
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as http:
        user = await register(http)
        response = await http.patch("/api/v1/users/@me", json={"avatar": data_uri(picture((70, 70)))},
                                    headers=user.headers)
        avatar = response.json()["avatar"]
        stored = directory / avatar[:2] / f"{avatar}.png"
        assert stored.is_file() and opened(stored.read_bytes()).size == (70, 70)
        assert await _rows(rt) == {avatar: True}  # the row has no bytes: the file has them
        served = await http.get(f"/avatars/{user.id}/{avatar}.jpg?size=16")
        assert served.status_code == 200 and opened(served.content).size == (16, 16)

        # Unused for an hour: the row and the file go.
        await http.patch("/api/v1/users/@me", json={"avatar": None}, headers=user.headers)
        assert await sweep_images(rt, at=time.time() + 3700) == 1
        assert not stored.exists() and await _rows(rt) == {}
        assert [p.name for p in directory.rglob("*") if p.is_file()] == []

        # Uploaded again while the janitor deletes it: the file is put back.
        again = await http.patch("/api/v1/users/@me", json={"avatar": data_uri(picture((70, 70)))},
                                 headers=user.headers)
        assert again.json()["avatar"] == avatar and stored.is_file()
    await rt.db.close()

    files = ImageDirectory(directory)
    tombstone = files.retire(avatar)
    assert tombstone is not None and not stored.exists()
    files.restore(avatar, tombstone)
    assert stored.is_file() and files.retire("f" * 32) is None
