"""Redirect URI rules (SPEC §4.1, RFC 9700 §4.1, RFC 8252 §7.3).

Registration: absolute https URIs, or http for loopback hosts; no fragment, no userinfo.
Matching: exact string comparison; the only exception is the port of a registered
loopback IP literal (127.0.0.1 or [::1]), which native apps pick at run time.
"""

from __future__ import annotations

from urllib.parse import urlsplit

MAX_REDIRECT_URI_LENGTH = 256
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]"})
LOOPBACK_IPS = frozenset({"127.0.0.1", "[::1]"})


class RedirectUriError(ValueError):
    pass


def plain_url_text(text: str) -> bool:
    """Printable ASCII without spaces or backslashes: what a URL a person registers or
    publishes may hold (anything else is percent-encoded, internationalized hosts punycoded)."""
    return text.isascii() and text.isprintable() and " " not in text and "\\" not in text


def _valid_port(port: str) -> bool:
    # ASCII digits only: str.isdigit() also takes "²", "９" and "١", which int() then
    # refuses or reads as another number than a browser would.
    return 0 < len(port) <= 5 and port.isascii() and port.isdigit() and 0 < int(port) < 65536


def _host_and_port(netloc: str) -> tuple[str, str | None]:
    if netloc.startswith("["):
        end = netloc.find("]")
        host, rest = netloc[: end + 1], netloc[end + 1:]
    else:
        host, _, port = netloc.partition(":")
        rest = ":" + port if _ else ""
    if rest and not rest.startswith(":"):
        raise RedirectUriError("malformed host")
    return host.lower(), (rest[1:] if rest else None)


def validate_for_registration(uri: str) -> str:
    """Return the URI unchanged when it may be registered, else raise with the reason."""
    if not uri or len(uri) > MAX_REDIRECT_URI_LENGTH:
        raise RedirectUriError(f"must be 1-{MAX_REDIRECT_URI_LENGTH} characters")
    if not plain_url_text(uri):
        raise RedirectUriError("must be printable ASCII without spaces or backslashes")
    try:
        parts = urlsplit(uri)
        host, port = _host_and_port(parts.netloc)
    except ValueError as exc:
        raise RedirectUriError("is not a valid URL") from exc
    if "#" in uri:
        raise RedirectUriError("must not contain a fragment")
    if "@" in parts.netloc:
        raise RedirectUriError("must not contain user information")
    if not host or host == "[]":
        raise RedirectUriError("must have a host")
    if port is not None and not _valid_port(port):
        raise RedirectUriError("has an invalid port")
    if parts.scheme == "https":
        return uri
    if parts.scheme == "http" and host in LOOPBACK_HOSTS:
        return uri
    if parts.scheme == "http":
        raise RedirectUriError("http is allowed only for localhost, 127.0.0.1 and [::1]")
    raise RedirectUriError("must use https (or http on a loopback host)")


def matches(registered: str, requested: str) -> bool:
    """Whether ``requested`` selects the ``registered`` URI."""
    if registered == requested:
        return True
    try:
        reg, req = urlsplit(registered), urlsplit(requested)
        reg_host, _ = _host_and_port(reg.netloc)
        req_host, req_port = _host_and_port(req.netloc)
    except (ValueError, RedirectUriError):
        return False
    if reg.scheme != "http" or req.scheme != "http" or reg_host not in LOOPBACK_IPS:
        return False
    # Registered URIs are printable ASCII, and only the port may differ: so must this one be
    # (urlsplit silently drops tabs and newlines, which must not make a match).
    if not plain_url_text(requested):
        return False
    if not requested.startswith("http://") or "@" in req.netloc or "#" in requested:
        return False
    if req_port is not None and not _valid_port(req_port):
        return False
    # Host literal, path and query must be identical, character for character.
    return reg_host == req_host and reg.path == req.path and reg.query == req.query


def find_registered(registered: list[str], requested: str) -> str | None:
    """The registered URI the request selects, or None."""
    for candidate in registered:
        if matches(candidate, requested):
            return candidate
    return None


def is_loopback(uri: str) -> bool:
    try:
        host, _ = _host_and_port(urlsplit(uri).netloc)
    except ValueError:
        return False
    return host in LOOPBACK_HOSTS
