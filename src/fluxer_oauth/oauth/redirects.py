"""Building the redirect back to the client: the registered URI's own query is kept."""

from __future__ import annotations

from urllib.parse import urlencode


def with_query(uri: str, params: dict[str, str | None]) -> str:
    extra = urlencode({key: value for key, value in params.items() if value is not None})
    if not extra:
        return uri
    return f"{uri}{'&' if '?' in uri else '?'}{extra}"
