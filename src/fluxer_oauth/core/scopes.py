"""OAuth2 scopes (SPEC §3), each declared once; parsing, ordering and the rules between them.

``SCOPES`` is the one declaration: the consent page, the developer portal, the OpenAPI
document, the server metadata, the client-credentials grant and the scope rules all read
it. A route that needs a scope names it in its declaration (``web/api.py``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Scope:
    name: str
    description: str  # what the consent page says, in plain words
    unlocks: str  # what a token with it may read or do (the OpenAPI document shows it)
    client_credentials: bool = False  # the client-credentials grant (the bot's own token) may ask for it
    requires: str | None = None  # a scope that must be in the same authorization request
    staff_only: bool = False  # trusted applications ask for it, staff users grant it and use its routes
    implies: str | None = None  # a scope granted with it (asking for it asks for that one too)


# In the canonical order: responses list scopes in this order.
SCOPES: tuple[Scope, ...] = (
    Scope("identify", "Know your username, avatar and profile details",
          "the user object without its email (/users/@me, /oauth2/userinfo)", client_credentials=True),
    Scope("email", "Know your email address and whether it is verified",
          "the email and verified fields of the user object", requires="identify"),
    Scope("guilds", "See the servers you are in and your permissions there",
          "the user's guilds and your permissions in them (/users/@me/guilds, /guilds/{guild_id})",
          client_credentials=True),
    Scope("connections", "See the accounts you have connected (GitHub, Bluesky, ...)",
          "the user's connected accounts (/users/@me/connections)"),
    Scope("bot", "Add a bot to a server you manage",
          "adding the application's bot to a guild the user manages (authorization only)"),
    Scope("admin", "Administer Fluxer: all user data and sensitive operations",
          "the admin API (/admin/*), for staff members through trusted applications", staff_only=True),
    Scope("guilds.join", "Join servers for you",
          "the application's bot may add the user to a guild it is in "
          "(PUT /guilds/{guild_id}/members/{user_id} with the bot's token and the user's access_token)"),
    Scope("guilds.members.read", "Read your member info (nickname and roles) in servers you are in",
          "the user's member object in a guild (/users/@me/guilds/{guild_id}/member)"),
    Scope("openid", "Sign you in to the app with your Fluxer account",
          "an id_token in the code and device grants (OpenID Connect); implies identify", implies="identify"),
)

SCOPE = {scope.name: scope for scope in SCOPES}
ALL_SCOPES: tuple[str, ...] = tuple(SCOPE)
_ORDER = {name: index for index, name in enumerate(ALL_SCOPES)}

# Scopes the client-credentials grant may ask for (the token acts as the bot user).
CLIENT_CREDENTIALS_SCOPES = frozenset(scope.name for scope in SCOPES if scope.client_credentials)
# Scopes only trusted applications may ask for, and only staff members grant and use.
STAFF_ONLY_SCOPES = frozenset(scope.name for scope in SCOPES if scope.staff_only)


def needs_staff(scopes) -> bool:
    """Whether any of ``scopes`` is staff-only."""
    return not STAFF_ONLY_SCOPES.isdisjoint(scopes)


class ScopeError(ValueError):
    """The scope string breaks a rule; the message is safe to show to the client."""


def parse_scopes(raw: str) -> tuple[str, ...]:
    """Split on spaces (and '+', which a query string may carry), collapse duplicates,
    reject unknown scopes, add what the named ones imply, and return them in the canonical
    order."""
    names = {part for part in raw.replace("+", " ").split(" ") if part}
    if not names:
        raise ScopeError("scope is empty")
    unknown = sorted(name for name in names if name not in _ORDER)
    if unknown:
        shown = ", ".join(name[:40] for name in unknown[:5])
        raise ScopeError(f"unknown scope: {shown}")
    names |= {SCOPE[name].implies for name in names if SCOPE[name].implies}
    return tuple(sorted(names, key=_ORDER.__getitem__))


def check_scope_rules(scopes: tuple[str, ...]) -> None:
    for name in scopes:
        required = SCOPE[name].requires if name in SCOPE else None
        if required is not None and required not in scopes:
            raise ScopeError(f"the {name} scope requires {required} in the same request")


def format_scopes(scopes) -> str:
    return " ".join(sorted(set(scopes), key=_ORDER.__getitem__))


def covers(granted, requested) -> bool:
    return set(requested) <= set(granted)
