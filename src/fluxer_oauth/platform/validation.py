"""Collecting field errors into one 400 INVALID_FORM_BODY (SPEC §1)."""

from __future__ import annotations

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


def check_text(errors: FormErrors, path: str, value: str | None, *, min_len: int, max_len: int) -> None:
    if value is None:
        return
    if not min_len <= len(value) <= max_len:
        errors.add(path, "BASE_TYPE_BAD_LENGTH", f"must be between {min_len} and {max_len} characters")
    elif has_control_characters(value):
        errors.add(path, "CONTROL_CHARACTERS", "must not contain control characters")
