"""OAuth2 scopes (SPEC §3): parsing, ordering and the rules between them."""

from __future__ import annotations

# The table's order; responses list scopes in this order.
ALL_SCOPES: tuple[str, ...] = ("identify", "email", "guilds", "connections", "bot", "admin")
_ORDER = {name: index for index, name in enumerate(ALL_SCOPES)}

# What the consent page says for each scope.
SCOPE_DESCRIPTIONS: dict[str, str] = {
    "identify": "Know your username, avatar and profile details",
    "email": "Know your email address and whether it is verified",
    "guilds": "See the servers you are in and your permissions there",
    "connections": "See the accounts you have connected (GitHub, Bluesky, ...)",
    "bot": "Add a bot to a server you manage",
    "admin": "Administer Fluxer: all user data and sensitive operations",
}

# Scopes the client-credentials grant may ask for (the token acts as the bot user).
CLIENT_CREDENTIALS_SCOPES = frozenset({"identify", "guilds"})


class ScopeError(ValueError):
    """The scope string breaks a rule; the message is safe to show to the client."""


def parse_scopes(raw: str) -> tuple[str, ...]:
    """Split on spaces (and '+', which a query string may carry), collapse duplicates,
    reject unknown scopes, and return them in the canonical order."""
    names = {part for part in raw.replace("+", " ").split(" ") if part}
    if not names:
        raise ScopeError("scope is empty")
    unknown = sorted(name for name in names if name not in _ORDER)
    if unknown:
        shown = ", ".join(name[:40] for name in unknown[:5])
        raise ScopeError(f"unknown scope: {shown}")
    return tuple(sorted(names, key=_ORDER.__getitem__))


def check_scope_rules(scopes: tuple[str, ...]) -> None:
    if "email" in scopes and "identify" not in scopes:
        raise ScopeError("the email scope requires identify in the same request")


def format_scopes(scopes) -> str:
    return " ".join(sorted(set(scopes), key=_ORDER.__getitem__))


def covers(granted, requested) -> bool:
    return set(requested) <= set(granted)
