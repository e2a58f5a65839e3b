"""Collecting field errors into one 400 INVALID_FORM_BODY (SPEC §1)."""

from __future__ import annotations

from unicodedata import category
from urllib.parse import urlsplit

from fluxer_oauth.core.errors import ApiError
from fluxer_oauth.core.redirect_uris import plain_url_text


class FormErrors:
    def __init__(self) -> None:
        self.errors: list[dict] = []

    def add(self, path: str, code: str, message: str, **more) -> None:
        """One field's error; ``more``: what else a client may show (a weak password's reason)."""
        self.errors.append({"path": path, "code": code, "message": message, **more})

    def has(self, path: str) -> bool:
        return any(error["path"] == path for error in self.errors)

    def raise_if_any(self) -> None:
        if self.errors:
            raise invalid_form_body(self.errors)


def invalid_form_body(errors: list[dict]) -> ApiError:
    return ApiError(400, "INVALID_FORM_BODY", "invalid form body", errors=errors)


def has_control_characters(value: str) -> bool:
    return any(ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 for ch in value)


# Letters and symbols that render as blank space, which a name could be made of to look empty
# or like another: the Hangul fillers and the blank Braille pattern.
_BLANK_CHARACTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")
# Format characters, and the line and paragraph separators, which break a name's line.
_INVISIBLE_CATEGORIES = frozenset(("Cf", "Zl", "Zp"))


def has_format_characters(value: str) -> bool:
    """Invisible characters: Unicode format characters (category Cf: bidirectional controls
    U+202A-U+202E, U+2066-U+2069, U+200E/F, zero-width characters, soft hyphen, tags), line
    and paragraph separators, and blank letters. They reorder, hide or fake what a name
    shows, e.g. on the consent page."""
    return not value.isascii() and any(category(ch) in _INVISIBLE_CATEGORIES or ch in _BLANK_CHARACTERS
                                       for ch in value)


def check_text(errors: FormErrors, path: str, value: str | None, *, min_len: int, max_len: int,
               allow_format_characters: bool = False) -> None:
    """Length and characters of user-chosen text (names, descriptions). Only a password,
    which nobody else sees, may hold format characters."""
    if value is None:
        return
    if not min_len <= len(value) <= max_len:
        errors.add(path, "BASE_TYPE_BAD_LENGTH", f"must be between {min_len} and {max_len} characters")
    elif has_control_characters(value):
        errors.add(path, "CONTROL_CHARACTERS", "must not contain control characters")
    elif not allow_format_characters and has_format_characters(value):
        errors.add(path, "FORMAT_CHARACTERS",
                   "must not contain invisible formatting characters (bidirectional controls, zero-width characters)")


MAX_LINK_LENGTH = 2048
_HOST_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-")


def _link_problem(url: str) -> tuple[str, str] | None:
    """(code, message) of what makes ``url`` no link to show people, or None. Absolute https
    only (never http, javascript: or a relative path), printable ASCII (internationalized
    names are punycoded, other characters percent-encoded), a host name or IP literal, no
    user information (``https://fluxer.app@evil.example``)."""
    if len(url) > MAX_LINK_LENGTH:
        return "BASE_TYPE_MAX_LENGTH", f"must be {MAX_LINK_LENGTH} or fewer in length"
    if not plain_url_text(url):
        return "URL_TYPE_INVALID_URL", "must be printable ASCII without spaces or backslashes (percent-encode the rest)"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "URL_TYPE_INVALID_URL", "is not a well formed URL"
    if parts.scheme != "https":
        return "URL_TYPE_INVALID_SCHEME", "must be an absolute https URL"
    if not url[len("https:"):].startswith("//") or "@" in parts.netloc:
        return "URL_TYPE_INVALID_URL", "must be an absolute https URL without user information"
    host = parts.hostname or ""
    if host.startswith("[") or ":" in host:  # an IPv6 literal: urlsplit took the brackets off
        valid_host = all(ch in "0123456789abcdef:." for ch in host)
    else:
        valid_host = bool(host) and set(host) <= _HOST_CHARACTERS and ".." not in host
    if not valid_host or (port is None and parts.netloc.endswith(":")) or port == 0:
        return "URL_TYPE_INVALID_URL", "is not a well formed URL"
    return None


def check_link(errors: FormErrors, path: str, value: str | None) -> str | None:
    """An application's public link (terms of service, privacy policy): None for null or
    empty (the link is removed), else the URL without surrounding whitespace, when it is an
    absolute https URL (``_link_problem``); otherwise the error is added and None returned."""
    if value is None or not value.strip():
        return None
    url = value.strip()
    problem = _link_problem(url)
    if problem is not None:
        errors.add(path, *problem)
        return None
    return url
