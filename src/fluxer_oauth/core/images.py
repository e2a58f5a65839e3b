"""Images (avatars, application and guild icons): the rules, without I/O.

An upload is a ``data:image/...;base64,`` string in a JSON body. What it holds is decided
from its bytes, never from the media type it claims (``sniff``): PNG, JPEG, WebP or GIF,
nothing else (no SVG, BMP, TIFF, ICO...). Its dimensions are read from its header before
any pixel is decoded (``declared_size``), so a file that declares a huge canvas (a
decompression bomb) is refused before it costs memory; Pillow then decodes only the first
frame, and the image is re-encoded from its pixels alone (``canonicalize``): no EXIF, no
ICC profile, no text chunks, no trailing bytes survive. An animated GIF, APNG or WebP keeps
its first frame. The stored image is a PNG that fits in ``STORED_SIDE`` pixels; its hash
(``content_hash``: 32 hex digits of its SHA-256) names it in the API objects and URLs, as
Discord's image hashes do.

Served variants (``render``) are that PNG in another format and/or smaller (``SIZES``).
``image_url`` builds the URL of an image from ``FLUXER_PUBLIC_URL``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import re
import struct
from dataclasses import dataclass

from PIL import Image, ImageOps

# --- kinds and URLs -------------------------------------------------------------------------

AVATAR = "avatar"  # users.avatar: /avatars/{user_id}/{hash}.png
ICON = "icon"      # applications.icon and guilds.icon: /icons/{application_or_guild_id}/{hash}.png
KIND_PATHS = {AVATAR: "avatars", ICON: "icons"}

# ?size= of a served image: a power of two, 16 to 1024 (Discord's CDN's range, up to what is stored).
SIZES = (16, 32, 64, 128, 256, 512, 1024)
# The file extension of a URL and the format served for it.
EXTENSIONS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP", "gif": "GIF"}
MEDIA_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}
ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF")  # what an upload may be, by its bytes

STORED_SIDE = 1024  # the stored image fits in a square of this side (the largest size served)
MAX_SIDE = 8192  # neither side of an upload may be longer, whatever its pixel count
HASH = re.compile(r"[0-9a-f]{32}")
_FILE_NAME = re.compile(r"([0-9a-f]{32})\.([a-z]{3,4})")


def image_url(public_url: str, kind: str, owner_id: int | str, image_hash: str | None,
              size: int | None = None, ext: str = "png") -> str | None:
    """The URL of an image: ``{public_url}/avatars/{user_id}/{hash}.png`` for a user's
    avatar (``kind`` AVATAR), ``{public_url}/icons/{id}/{hash}.png`` for an application's
    or a guild's icon (ICON); ``?size=`` when ``size`` is given (one of ``SIZES``). None
    when ``image_hash`` is None (no image set), so a template can write
    ``{% if url %}<img src="{{ url }}">{% endif %}``."""
    if image_hash is None:
        return None
    if kind not in KIND_PATHS:
        raise ValueError(f"unknown image kind {kind!r}")
    if ext not in EXTENSIONS:
        raise ValueError(f"unknown image extension {ext!r}")
    if size is not None and size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}")
    url = f"{public_url.rstrip('/')}/{KIND_PATHS[kind]}/{int(owner_id)}/{image_hash}.{ext}"
    return url if size is None else f"{url}?size={size}"


def parse_file_name(name: str) -> tuple[str, str] | None:
    """``{hash}.{ext}`` of a URL as (hash, format), or None when it names no image."""
    match = _FILE_NAME.fullmatch(name)
    if match is None or match.group(2) not in EXTENSIONS:
        return None
    return match.group(1), EXTENSIONS[match.group(2)]


def parse_size(value: str | None) -> int | None:
    """The ``size`` query parameter: None when absent, else one of ``SIZES``; ValueError otherwise."""
    if value is None:
        return None
    if not (value.isascii() and value.isdigit() and len(value) <= 4) or int(value) not in SIZES:
        raise ValueError(f"size must be a power of two from {SIZES[0]} to {SIZES[-1]}")
    return int(value)


def etag(image_hash: str, fmt: str, size: int | None) -> str:
    """A strong validator of one variant: its hash, format and size decide its bytes."""
    return f'"{image_hash}-{fmt.lower()}-{size or STORED_SIDE}"'


# --- uploads --------------------------------------------------------------------------------

class ImageError(ValueError):
    """An upload refused: ``code`` for the API's error, ``message`` for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Limits:
    max_bytes: int  # decoded bytes of an upload
    max_pixels: int  # width x height of an upload
    max_side: int = MAX_SIDE


def encoded_limit(max_bytes: int) -> int:
    """The length of the base64 text of ``max_bytes`` bytes."""
    return 4 * -(-max_bytes // 3)


_DATA_URI = re.compile(r"data:image/[A-Za-z0-9.+-]{1,64}(?:;[A-Za-z0-9=._-]{1,64})*;base64,")


def parse_data_uri(value: str, max_bytes: int) -> bytes:
    """The bytes of a ``data:image/<type>;base64,<data>`` string. The media type says
    nothing about what the bytes are (``sniff`` decides); refused: another form, invalid
    base64, nothing, or more than ``max_bytes`` bytes (``IMAGE_TOO_LARGE``, before decoding)."""
    match = _DATA_URI.match(value)
    if match is None:
        raise ImageError("IMAGE_INVALID", "must be a data URI: data:image/png;base64,... (png, jpeg, webp or gif)")
    payload = value[match.end():]
    if len(payload) > encoded_limit(max_bytes) + 2:  # base64 padding aside
        raise ImageError("IMAGE_TOO_LARGE", f"an image may be at most {max_bytes} bytes")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ImageError("IMAGE_INVALID", "the data URI is not valid base64") from None
    if not data:
        raise ImageError("IMAGE_INVALID", "the image is empty")
    if len(data) > max_bytes:
        raise ImageError("IMAGE_TOO_LARGE", f"an image may be at most {max_bytes} bytes")
    return data


def sniff(data: bytes) -> str | None:
    """The format of ``data`` by its signature: PNG, JPEG, WEBP or GIF; None for anything else."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


# JPEG start-of-frame markers (SOF0-SOF15 but DHT, JPG and DAC), which carry the dimensions.
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def declared_size(data: bytes, fmt: str) -> tuple[int, int] | None:
    """The (width, height) the header of ``data`` declares, read without decoding any pixel;
    None when the header is cut short or malformed."""
    try:
        if fmt == "PNG":
            if data[12:16] != b"IHDR":
                return None
            return struct.unpack(">II", data[16:24])
        if fmt == "GIF":
            return struct.unpack("<HH", data[6:10])
        if fmt == "WEBP":
            chunk = data[12:16]
            if chunk == b"VP8X":
                width = int.from_bytes(data[24:27], "little") + 1
                return width, int.from_bytes(data[27:30], "little") + 1
            if chunk == b"VP8L":
                bits = int.from_bytes(data[21:25], "little")
                return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
            if chunk == b"VP8 ":
                width, height = struct.unpack("<HH", data[26:30])
                return width & 0x3FFF, height & 0x3FFF
            return None
        if fmt == "JPEG":
            return _jpeg_size(data)
    except struct.error:
        return None
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    index = 2
    while index + 4 <= len(data):
        if data[index] != 0xFF:
            return None
        marker = data[index + 1]
        if marker == 0xFF:  # fill byte
            index += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length
            index += 2
            continue
        length = int.from_bytes(data[index + 2:index + 4], "big")
        if marker in _SOF:
            if index + 9 > len(data):
                return None
            height, width = struct.unpack(">HH", data[index + 5:index + 9])
            return width, height
        if marker == 0xDA or length < 2:  # scan data before any frame header
            return None
        index += 2 + length
    return None


# A JPEG's decoding work is not bounded by its pixels: a progressive file may hold thousands
# of tiny scans (each a pass over the whole image), or countless empty marker segments (which
# the decoder keeps in memory). Camera and encoder output has a few dozen at most.
MAX_JPEG_SCANS = 64
MAX_JPEG_SEGMENTS = 512
# The next marker after a scan's entropy-coded data: 0xFF not followed by a stuffed 0x00, a
# restart marker or another fill byte.
_NEXT_MARKER = re.compile(rb"\xff+[^\x00\xd0-\xd7\xff]")


def check_jpeg_structure(data: bytes) -> None:
    """Refuse (``ImageError``) a JPEG with more scans or marker segments than any real one
    has, by walking its markers (entropy-coded data skipped by a regex search), before the
    decoder sees it."""
    index, segments, scans = 2, 0, 0
    while index + 4 <= len(data):
        if data[index] != 0xFF:
            return  # not a marker where one must be: the decoder refuses what follows
        marker = data[index + 1]
        if marker == 0xFF:
            index += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            index += 2
            continue
        if marker == 0xD9:  # end of image
            return
        length = int.from_bytes(data[index + 2:index + 4], "big")
        if length < 2:
            return
        segments += 1
        if segments > MAX_JPEG_SEGMENTS:
            raise ImageError("IMAGE_INVALID", f"the JPEG has more than {MAX_JPEG_SEGMENTS} marker segments")
        index += 2 + length
        if marker == 0xDA:
            scans += 1
            if scans > MAX_JPEG_SCANS:
                raise ImageError("IMAGE_INVALID", f"the JPEG has more than {MAX_JPEG_SCANS} scans")
            following = _NEXT_MARKER.search(data, index)
            if following is None:
                return
            index = following.end() - 2


def check_dimensions(width: int, height: int, limits: Limits) -> None:
    if width < 1 or height < 1:
        raise ImageError("IMAGE_INVALID", "the image has no pixels")
    if width > limits.max_side or height > limits.max_side or width * height > limits.max_pixels:
        raise ImageError("IMAGE_DIMENSIONS_TOO_LARGE",
                         f"an image may be at most {limits.max_side} pixels on a side and "
                         f"{limits.max_pixels} pixels in all (this one is {width}x{height})")


@dataclass(frozen=True)
class Canonical:
    """An upload as stored: a PNG of its first frame's pixels, and its hash."""

    data: bytes
    hash: str
    width: int
    height: int


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


def canonicalize(data: bytes, limits: Limits) -> Canonical:
    """The stored form of an uploaded file, or ``ImageError``: the type from the bytes, the
    declared dimensions checked before decoding, the first frame decoded (a truncated or
    corrupt file is refused), turned upright by its EXIF orientation, made to fit in
    ``STORED_SIDE``, and written anew as PNG (RGB, or RGBA when it has transparency): nothing
    of the file but its pixels is kept."""
    if len(data) > limits.max_bytes:
        raise ImageError("IMAGE_TOO_LARGE", f"an image may be at most {limits.max_bytes} bytes")
    fmt = sniff(data)
    if fmt is None:
        raise ImageError("IMAGE_TYPE_UNSUPPORTED", "only PNG, JPEG, WebP and GIF images are accepted")
    size = declared_size(data, fmt)
    if size is None:
        raise ImageError("IMAGE_INVALID", f"the {fmt} header is cut short or malformed")
    check_dimensions(*size, limits)
    if fmt == "JPEG":
        check_jpeg_structure(data)
    try:
        with Image.open(io.BytesIO(data), formats=(fmt,)) as opened:
            # What the decoder will allocate: a GIF's first frame may be larger than its header says.
            check_dimensions(*opened.size, limits)
            if fmt == "JPEG":
                opened.draft("RGB", (STORED_SIDE, STORED_SIDE))  # decode at 1/2..1/8 scale when it can
            opened.load()
            try:
                ImageOps.exif_transpose(opened, in_place=True)
            except Exception:  # an unreadable orientation is no reason to refuse the pixels
                pass
            image = _pixels(opened)
    except ImageError:
        raise
    except Image.DecompressionBombError:
        raise ImageError("IMAGE_DIMENSIONS_TOO_LARGE", "the image declares too many pixels") from None
    except Exception:  # whatever the decoder says of untrusted bytes: not a usable image
        raise ImageError("IMAGE_INVALID", f"the {fmt} image is truncated or corrupt") from None
    stored = _encode(image, "PNG")
    return Canonical(stored, content_hash(stored), image.width, image.height)


def _pixels(image: Image.Image) -> Image.Image:
    """A new image of the pixels alone (no info: no EXIF, ICC profile or text to write out),
    RGBA when some pixel is transparent, RGB otherwise, fitting in ``STORED_SIDE`` (converted
    before it is scaled: a palette image would be scaled by nearest neighbour)."""
    has_alpha = image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
        image.mode in ("P", "L", "RGB") and "transparency" in image.info)
    mode = "RGBA" if has_alpha else "RGB"
    converted = image if image.mode == mode else image.convert(mode)  # no copy of 64 MiB for nothing
    if max(converted.size) > STORED_SIDE:
        converted.thumbnail((STORED_SIDE, STORED_SIDE), Image.Resampling.LANCZOS)
    if has_alpha and converted.getextrema()[3] == (255, 255):
        converted = converted.convert("RGB")  # an alpha channel that hides nothing
    return Image.frombytes(converted.mode, converted.size, converted.tobytes())


def _encode(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    if fmt == "PNG":
        image.save(out, "PNG", compress_level=6)
    elif fmt == "JPEG":
        if image.mode != "RGB":
            background = Image.new("RGB", image.size, (255, 255, 255))
            background.paste(image, mask=image.getchannel("A") if image.mode == "RGBA" else None)
            image = background
        image.save(out, "JPEG", quality=90, optimize=True)
    elif fmt == "WEBP":
        image.save(out, "WEBP", quality=90, method=4)
    elif fmt == "GIF":
        # Pillow's default quantizer took 0.65-0.95 s on a 1024 x 1024 photo; fast octree 16-30 ms.
        paletted = image.convert("RGB").quantize(255, method=Image.Quantize.FASTOCTREE)
        if image.mode == "RGBA":  # GIF has one transparent colour: the index no pixel got
            paletted.paste(255, mask=image.getchannel("A").point(lambda alpha: 255 if alpha < 128 else 0))
            paletted.save(out, "GIF", transparency=255, optimize=False)
        else:
            paletted.save(out, "GIF", optimize=False)
    else:
        raise ValueError(f"cannot encode {fmt}")
    return out.getvalue()


def render(stored: bytes, fmt: str, size: int | None) -> bytes:
    """A served variant of a stored PNG: in ``fmt``, its longer side at most ``size`` pixels
    (never enlarged). The stored PNG itself when nothing changes (known from its header)."""
    if fmt == "PNG" and (size is None or max(declared_size(stored, "PNG") or (size + 1,)) <= size):
        return stored
    with Image.open(io.BytesIO(stored), formats=("PNG",)) as opened:
        opened.load()
        image = opened.copy()
    if size is not None and max(image.size) > size:
        image.thumbnail((size, size), Image.Resampling.LANCZOS)
    return _encode(image, fmt)
