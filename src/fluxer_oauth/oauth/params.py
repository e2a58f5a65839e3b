"""Reading OAuth2 parameters: each at most once, trimmed, 1-256 characters (SPEC §1)."""

from __future__ import annotations

import re
from typing import Mapping, Sequence

MAX_PARAM_LENGTH = 256
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_BUT_NEWLINES = re.compile(r"[\x00-\x09\x0b\x0c\x0e-\x1f\x7f]")


class ParamError(ValueError):
    """A parameter is repeated, too long or malformed; the message names it."""


class Params:
    """A read-only view over a multi-valued mapping (query string or form)."""

    __slots__ = ("_multi", "basic", "on_client_authenticated")

    def __init__(self, multi: Mapping[str, Sequence[str]]) -> None:
        self._multi = multi
        # The request's parsed Basic credentials, once read (client_auth.presented_basic): a
        # client-credentials request that the checked insert did not settle reads them again.
        self.basic = None
        # What the edge runs once the request's client has authenticated, before the grant
        # does any work: its per-client rate limit. ``f(application_id)`` returns None, or an
        # awaitable to await; it raises to refuse the request.
        self.on_client_authenticated = None

    @classmethod
    def from_pairs(cls, pairs) -> "Params":
        multi: dict[str, list[str]] = {}
        for key, value in pairs:
            multi.setdefault(key, []).append(value)
        return cls(multi)

    def get(self, name: str, *, required: bool = False, max_length: int = MAX_PARAM_LENGTH,
            multiline: bool = False) -> str | None:
        values = self._multi.get(name) or []
        if len(values) > 1:
            raise ParamError(f"{name} is repeated")
        if not values or not values[0].strip():
            if required:
                raise ParamError(f"{name} is required")
            return None
        value = values[0].strip()
        if len(value) > max_length:
            raise ParamError(f"{name} is longer than {max_length} characters")
        if (_CONTROL_BUT_NEWLINES if multiline else _CONTROL).search(value):
            raise ParamError(f"{name} contains control characters")
        return value

    def exact(self, name: str, *, max_length: int) -> str | None:
        """The value as sent, untrimmed (a password: its spaces are part of it); None when
        it is missing, repeated or longer than ``max_length``."""
        values = self._multi.get(name) or []
        if len(values) != 1 or len(values[0]) > max_length:
            return None
        return values[0]

    def names(self) -> list[str]:
        return list(self._multi)
