"""The typed store interface of the hot paths, one object per aggregate:

- ``db.tokens`` (``TokenStore``): find an access token, find a live token of any kind,
  insert a token, issue a client-credentials token (checked against the client as it is
  written), redeem a code or rotate a refresh token when nothing stands in the way
  (store/redemptions.py);
- ``db.clients`` (``ClientStore``): an application by id, a bot's login by id.

Each is backed by the engine of the database's backend (store/hot.py: ``SqliteHot`` or
``PostgresHot``), which keeps what makes it fast out of sight: on SQLite the row cache
checked against ``PRAGMA data_version``, on PostgreSQL the batching of one loop turn's
lookups into one statement per kind, and on both the group commit of writes. Records
(store/records.py) are immutable NamedTuples; on SQLite one cached record is shared by
every request that finds it.

The methods are plain functions returning the engine's awaitable (no coroutine frame of
their own on the hottest paths); ``await`` them like coroutines. Failures: ``StoreUnavailable``
when the database cannot be reached; a duplicate key on insert is the driver's integrity
error, and fails only the request whose row it was (its batch is written again row by row).
"""

from __future__ import annotations

from typing import Awaitable

from fluxer_oauth.store.hot import (
    ACCESS_TOKEN, APPLICATION, BOT, INSERT_TOKEN, ISSUE_CLIENT_TOKEN, LIVE_TOKEN, PostgresHot, SqliteHot,
)
from fluxer_oauth.store.records import (AccessToken, Application, BotLogin, ClientToken, LiveToken, NewToken,
                                        Redemption)
from fluxer_oauth.store.redemptions import REDEEM_CODE, ROTATE_REFRESH


class TokenStore:
    """Access and refresh tokens on the hot paths (bearer checks, introspection, client
    credentials). ``key`` is a token's stored key (``credentials.stored_token_key``)."""

    def __init__(self, engine: SqliteHot | PostgresHot) -> None:
        self._lookup = engine.lookup
        self._write = engine.write
        # Whether ``issue_client_token`` should be tried before any lookup of the client:
        # True where a lookup costs a round trip of its own (PostgreSQL); on SQLite the
        # lookup is an in-process cache and the grant looks the client up first.
        self.checks_clients_on_insert: bool = engine.checks_clients_on_insert

    def find_access(self, key: bytes, now: float) -> Awaitable[AccessToken | None]:
        """The access token, with its user, when it is unrevoked, unexpired at ``now``, and
        its user and application are enabled; else None."""
        return self._lookup(ACCESS_TOKEN, (key, now))

    def find_live(self, key: bytes, now: float) -> Awaitable[LiveToken | None]:
        """An access or refresh token under the same conditions as ``find_access``."""
        return self._lookup(LIVE_TOKEN, (key, now))

    def insert(self, token: NewToken) -> Awaitable[None]:
        """Stores a new token; returns once it is committed (group commit: it may share its
        transaction with other inserts, and a batch fails or commits whole)."""
        return self._write(INSERT_TOKEN, token)

    def issue_client_token(self, token: ClientToken) -> Awaitable[bool]:
        """Stores a client-credentials access token for the application's bot, only if the
        application still has ``token.secret_hash``, is enabled, has an enabled owner and
        has a bot; whether it was written. The check and the write are one statement, and
        on PostgreSQL it reads the application and owner ``FOR SHARE``, so a reset or a
        disabling under way is waited for, and one committed before is never missed.
        Group-committed like ``insert``."""
        return self._write(ISSUE_CLIENT_TOKEN, token)

    def redeem_code(self, redemption: Redemption) -> Awaitable[str | None]:
        """Spends the code ``redemption.key`` (a code's hash) and stores the new pair, only if
        the code is live and this client's, its redirect_uri and PKCE binding match, its
        user is enabled, and it is a plain code (no guild, no openid, no staff scope): the
        scopes of the pair, once committed. None: nothing was written; the grant's full path
        decides. Group-committed like ``insert``."""
        return self._write(REDEEM_CODE, redemption)

    def rotate_refresh(self, redemption: Redemption) -> Awaitable[str | None]:
        """Spends the refresh token ``redemption.key`` (rotated), ends the access token issued
        with it and stores the new pair, only if the token is live and this client's, its
        user is enabled and it carries no staff scope: the scopes, once committed; None when
        nothing was written. Group-committed like ``insert``."""
        return self._write(ROTATE_REFRESH, redemption)


class ClientStore:
    """Applications as OAuth2 clients and bots, looked up by id."""

    def __init__(self, engine: SqliteHot | PostgresHot) -> None:
        self._lookup = engine.lookup

    def application(self, application_id: int) -> Awaitable[Application | None]:
        """The application, disabled or not, or None when it is unknown or its owner is
        disabled (such an application authenticates nowhere)."""
        return self._lookup(APPLICATION, (application_id,))

    def bot(self, bot_id: int) -> Awaitable[BotLogin | None]:
        """The bot's stored token hash and user, when its application, the application's
        owner and the bot user are enabled; else None. A bot's id is its application's id
        (the id a bot token carries)."""
        return self._lookup(BOT, (bot_id,))
