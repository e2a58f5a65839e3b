"""Collecting field errors into one 400 INVALID_FORM_BODY (SPEC §1)."""

from __future__ import annotations

from unicodedata import category

from fluxer_oauth.core.errors import ApiError


class FormErrors:
    def __init__(self) -> None:
        self.errors: list[dict] = []

    def add(self, path: str, code: str, message: str) -> None:
        self.errors.append({"path": path, "code": code, "message": message})

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
