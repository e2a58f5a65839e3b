"""The image rules of core/images.py (no I/O), and the variant cache of web/images.py."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import struct

import pytest
from PIL import Image

from fluxer_oauth.core import images
from fluxer_oauth.core.images import (
    AVATAR,
    ICON,
    ImageError,
    Limits,
    canonicalize,
    check_dimensions,
    declared_size,
    encoded_limit,
    etag,
    image_url,
    parse_data_uri,
    parse_file_name,
    parse_size,
    render,
    sniff,
)
from fluxer_oauth.web.images import VariantCache

pytestmark = pytest.mark.backend_independent  # pure code: no store

LIMITS = Limits(max_bytes=8 * 1024 * 1024, max_pixels=4096 * 4096)


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def noise(size=(50, 30), mode="RGB") -> Image.Image:
    return Image.frombytes(mode, size, os.urandom(size[0] * size[1] * len(mode)))


def test_image_url():
    url = image_url("https://id.fluxer.example/", AVATAR, 123, "a" * 32)
    assert url == f"https://id.fluxer.example/avatars/123/{'a' * 32}.png"
    assert image_url("https://x", ICON, "456", "b" * 32, size=64, ext="webp") == f"https://x/icons/456/{'b' * 32}.webp?size=64"
    assert image_url("https://x", ICON, 1, None) is None
    for bad in ({"kind": "banner"}, {"size": 100}, {"ext": "svg"}):
        arguments = {"public_url": "https://x", "kind": ICON, "owner_id": 1, "image_hash": "c" * 32, **bad}
        with pytest.raises(ValueError):
            image_url(**arguments)


def test_file_names_sizes_and_etags():
    h = "0123456789abcdef" * 2
    assert parse_file_name(f"{h}.png") == (h, "PNG")
    assert parse_file_name(f"{h}.jpg") == parse_file_name(f"{h}.jpeg") == (h, "JPEG")
    assert parse_file_name(f"{h}.webp") == (h, "WEBP") and parse_file_name(f"{h}.gif") == (h, "GIF")
    for bad in (f"{h}.bmp", f"{h}.PNG", f"{h.upper()}.png", f"{h}", f"a_{h}.png", f"{h[:-1]}.png", f"{h}.png.png",
                f"../{h}.png"):
        assert parse_file_name(bad) is None, bad
    assert parse_size(None) is None
    assert [parse_size(str(size)) for size in images.SIZES] == [16, 32, 64, 128, 256, 512, 1024]
    assert parse_size("064") == 64  # a leading zero: the same number, the same variant
    for bad in ("", "0", "8", "100", "2048", "4096", "1e3", " 64", "٦٤", "64 ", "12345"):
        with pytest.raises(ValueError):
            parse_size(bad)
    assert etag(h, "PNG", None) == f'"{h}-png-1024"' and etag(h, "WEBP", 64) == f'"{h}-webp-64"'


def test_data_uris():
    png = encoded(noise(), "PNG")
    assert parse_data_uri("data:image/png;base64," + base64.b64encode(png).decode(), LIMITS.max_bytes) == png
    # The media type is not believed (sniff decides), but it must say image.
    assert parse_data_uri("data:image/gif;base64," + base64.b64encode(png).decode(), LIMITS.max_bytes) == png
    refusals = {
        "https://example.com/a.png": "IMAGE_INVALID",
        "data:text/plain;base64,aGk=": "IMAGE_INVALID",
        "data:image/png,rawbytes": "IMAGE_INVALID",
        "data:image/png;base64,a b c": "IMAGE_INVALID",
        "data:image/png;base64,": "IMAGE_INVALID",
        "data:image/png;base64,aGk": "IMAGE_INVALID",  # padding missing
    }
    for value, code in refusals.items():
        with pytest.raises(ImageError) as refused:
            parse_data_uri(value, LIMITS.max_bytes)
        assert refused.value.code == code, value
    with pytest.raises(ImageError) as refused:  # too large: known from the text's length, before decoding
        parse_data_uri("data:image/png;base64," + "A" * (encoded_limit(1000) + 8), 1000)
    assert refused.value.code == "IMAGE_TOO_LARGE"
    with pytest.raises(ImageError) as refused:
        parse_data_uri("data:image/png;base64," + base64.b64encode(b"x" * 1001).decode(), 1000)
    assert refused.value.code == "IMAGE_TOO_LARGE"


@pytest.mark.parametrize("fmt,options", [("PNG", {}), ("JPEG", {}), ("JPEG", {"progressive": True}), ("GIF", {}),
                                         ("WEBP", {}), ("WEBP", {"lossless": True}),
                                         ("WEBP", {"save_all": True, "append_images": [Image.new("RGB", (37, 21))]})])
def test_sniffed_types_and_declared_sizes(fmt, options):
    data = encoded(noise((37, 21)), fmt, **options)
    assert sniff(data) == fmt
    assert declared_size(data, fmt) == (37, 21)
    assert declared_size(data[:8], fmt) is None  # cut before the header's end


def test_other_types_are_not_sniffed():
    for fmt in ("BMP", "TIFF", "ICO", "PPM"):
        assert sniff(encoded(noise((16, 16)), fmt)) is None, fmt
    assert sniff(b"<svg xmlns='http://www.w3.org/2000/svg'/>") is None
    assert sniff(b"") is None and sniff(b"RIFF\0\0\0\0WAVE") is None


def test_dimension_limits():
    check_dimensions(4096, 4096, LIMITS)
    check_dimensions(8192, 2048, LIMITS)
    for width, height in ((4097, 4096), (8193, 1), (1, 8193), (100_000, 100_000)):
        with pytest.raises(ImageError) as refused:
            check_dimensions(width, height, LIMITS)
        assert refused.value.code == "IMAGE_DIMENSIONS_TOO_LARGE"
    with pytest.raises(ImageError):
        check_dimensions(0, 10, LIMITS)


def test_canonical_form():
    image = noise((2000, 1000))
    first = canonicalize(encoded(image, "PNG"), LIMITS)
    assert (first.width, first.height) == (1024, 512) and sniff(first.data) == "PNG"
    assert first.hash == images.content_hash(first.data) and len(first.hash) == 32
    assert canonicalize(encoded(image, "PNG"), LIMITS) == first  # the same pixels, the same hash
    # Metadata in the file is not in the result, so the same pixels with other metadata hash alike.
    small = noise((40, 40))
    exif = Image.Exif()
    exif[0x010F] = "Maker"
    plain, tagged = canonicalize(encoded(small, "WEBP", lossless=True), LIMITS), canonicalize(
        encoded(small, "WEBP", lossless=True, exif=exif.tobytes(), icc_profile=b"not really a profile"), LIMITS)
    assert plain.hash == tagged.hash
    stored = Image.open(io.BytesIO(tagged.data))
    assert not stored.getexif() and "icc_profile" not in stored.info
    # An alpha channel that hides nothing is dropped; one that hides something is kept.
    assert Image.open(io.BytesIO(canonicalize(encoded(noise(mode="RGB").convert("RGBA"), "PNG"), LIMITS).data)).mode == "RGB"
    assert Image.open(io.BytesIO(canonicalize(encoded(noise(mode="RGBA"), "PNG"), LIMITS).data)).mode == "RGBA"
    # Modes a PNG may have decode to RGB(A): palette, grey, 16-bit, 1-bit, CMYK JPEG.
    for source, fmt in ((noise().convert("P"), "PNG"), (noise().convert("L"), "PNG"), (noise().convert("1"), "PNG"),
                        (Image.new("I;16", (20, 20), 4000), "PNG"), (noise().convert("CMYK"), "JPEG"),
                        (noise().convert("LA"), "PNG")):
        assert Image.open(io.BytesIO(canonicalize(encoded(source, fmt), LIMITS).data)).mode in ("RGB", "RGBA")


def test_canonicalize_refuses():
    def code(data, limits=LIMITS):
        with pytest.raises(ImageError) as refused:
            canonicalize(data, limits)
        return refused.value.code

    png = encoded(noise((100, 100)), "PNG")
    assert code(png, Limits(max_bytes=100, max_pixels=LIMITS.max_pixels)) == "IMAGE_TOO_LARGE"
    assert code(png, Limits(max_bytes=LIMITS.max_bytes, max_pixels=99 * 99)) == "IMAGE_DIMENSIONS_TOO_LARGE"
    assert code(png[: len(png) // 2]) == "IMAGE_INVALID"
    assert code(png[:12]) == "IMAGE_INVALID"  # not even the header
    assert code(b"GIF89a" + b"\0" * 20) == "IMAGE_INVALID"
    assert code(encoded(noise(), "BMP")) == "IMAGE_TYPE_UNSUPPORTED"
    corrupt = bytearray(encoded(noise((64, 64)), "JPEG"))
    corrupt[-200:-2] = b"\xff" * 198
    try:  # a JPEG decoder may draw what it can of broken scan data; it must not raise anything else
        canonicalize(bytes(corrupt), LIMITS)
    except ImageError as exc:
        assert exc.code == "IMAGE_INVALID"


def gif_with_a_larger_frame(width: int, height: int) -> bytes:
    """A GIF whose header says 10 x 10 and whose first frame is width x height."""
    screen = b"GIF89a" + struct.pack("<HHBBB", 10, 10, 0, 0, 0)
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00"
    return screen + frame + b"\x3b"


def test_a_gif_frame_larger_than_its_screen_is_checked_too():
    for width, height in ((5000, 5000), (20000, 20000), (60000, 60000)):
        data = gif_with_a_larger_frame(width, height)
        assert declared_size(data, "GIF") == (10, 10)
        with pytest.raises(ImageError) as refused:
            canonicalize(data, LIMITS)
        assert refused.value.code == "IMAGE_DIMENSIONS_TOO_LARGE", (width, height)


def test_render_variants():
    stored = canonicalize(encoded(noise((300, 150), mode="RGBA"), "PNG"), LIMITS).data
    assert render(stored, "PNG", None) is stored and render(stored, "PNG", 512) is stored
    for fmt in ("PNG", "JPEG", "WEBP", "GIF"):
        variant = Image.open(io.BytesIO(render(stored, fmt, 64)))
        assert variant.format == fmt and variant.size == (64, 32), fmt
    assert Image.open(io.BytesIO(render(stored, "JPEG", None))).mode == "RGB"  # flattened on white
    assert Image.open(io.BytesIO(render(stored, "WEBP", None))).mode == "RGBA"


async def test_variant_cache_is_bounded_and_renders_once():
    cache = VariantCache(capacity=10)
    cache.put(("a",), b"12345")
    cache.put(("b",), b"12345")
    assert cache.get(("a",)) == b"12345"  # now the most recent
    cache.put(("c",), b"123")
    assert cache.get(("b",)) is None and cache.get(("a",)) and cache.get(("c",)) and cache.size == 8
    cache.put(("big",), b"x" * 11)  # larger than the whole cache: not kept
    assert cache.get(("big",)) is None and cache.size == 8

    calls = []

    async def slow_render():
        calls.append(1)
        await asyncio.sleep(0.01)
        return b"rendered"

    results = await asyncio.gather(*(cache.get_or_render(("d",), slow_render) for _ in range(5)))
    assert results == [b"rendered"] * 5 and len(calls) == 1
    assert await cache.get_or_render(("d",), slow_render) == b"rendered" and len(calls) == 1

    async def failing():
        await asyncio.sleep(0.01)
        raise RuntimeError("broken")

    outcomes = await asyncio.gather(*(cache.get_or_render(("e",), failing) for _ in range(3)), return_exceptions=True)
    assert all(isinstance(outcome, RuntimeError) for outcome in outcomes)
    assert await cache.get_or_render(("e",), slow_render) == b"rendered"  # a failure is not kept
