"""Every way access ends, in one place: the grant aggregate's "end this grant".

Each event that ends access calls one of these inside its own write transaction, and each
ends everything derived from what it ends: the codes not yet redeemed, the device codes
not yet redeemed (pending or approved: marked denied, so the device's next poll hears
access_denied), the access and refresh tokens, the remembered consent and, where a bot goes
away, its guild memberships with their managed roles. Callers raise their errors only after
the transaction has committed, so an error never rolls an ending back. Nothing ended comes
back: re-enabling a user or an application leaves their old credentials dead.

Each ending first takes the ending lock of every application it touches (store/oauth.py,
lock_applications_for_ending), and an ending of a user the user's own lock before those,
so it waits for the issuances under way and the later ones wait for it: nothing issued
beside an ending outlives it. Callers end before they write rows of their own (disabling,
untrusting, removing staff): a lock waited for after a row was written could deadlock
against another ending.

| event                                  | function                 |
|----------------------------------------|--------------------------|
| user or staff revokes, token revoked   | end_grant                |
| refresh token reused                   | end_grant_now            |
| code or device code replayed           | end_code_family          |
| application disabled or deleted        | end_application          |
| application untrusted, staff removed   | end_admin_access         |
| client secret or bot token reset       | end_client_credentials   |
| user disabled (as user and as owner)   | end_user                 |

A reset client secret ends no device code: every poll authenticates the client with its
current secret, so a code requested with the old one is redeemable only with the new one.
"""

from __future__ import annotations

from fluxer_oauth.core.scopes import STAFF_ONLY_SCOPES
from fluxer_oauth.runtime import Runtime
from fluxer_oauth.store import applications as app_store
from fluxer_oauth.store import audit
from fluxer_oauth.store import guilds as guild_store
from fluxer_oauth.store import oauth as oauth_store
from fluxer_oauth.store import users as user_store


async def _lock_application(conn, application_id: int) -> None:
    await oauth_store.lock_applications_for_ending(conn, [application_id])


async def _lock_user(conn, user_id: int) -> list:
    """The user's lock, then those of every application they granted or own; the owned ones."""
    await oauth_store.lock_user_for_ending(conn, user_id)
    owned = await app_store.list_owned(conn, user_id)
    await oauth_store.lock_applications_for_ending(
        conn, [*await oauth_store.applications_of_user(conn, user_id), *(app.id for app in owned)])
    return owned


async def end_grant(rt: Runtime, conn, *, user_id: int, application_id: int, by: str, actor_id: int | None,
                    at: float) -> bool:
    """What the user granted the application: consent, unredeemed codes and device codes,
    tokens. Whether there was anything to end."""
    await _lock_application(conn, application_id)
    ended = await oauth_store.end_grant(conn, user_id, application_id, at)
    await audit.record(
        conn, id=rt.ids.next(), now=at, action="grant.revoked", actor_id=actor_id, application_id=application_id,
        target_user_id=user_id, details={"by": by},
    )
    return ended


async def end_grant_now(rt: Runtime, *, user_id: int, application_id: int, by: str, at: float) -> None:
    """``end_grant`` in a transaction of its own, for what an issuance detected (a reused
    refresh token): an ending must not wait for the other issuances' shared locks while the
    issuance holds its own. ``by`` is also the audited event."""
    async with rt.db.write() as conn:
        await end_grant(rt, conn, user_id=user_id, application_id=application_id, by=by, actor_id=None, at=at)
        await audit.record(conn, id=rt.ids.next(), now=at, action=by, application_id=application_id,
                           target_user_id=user_id)


async def end_code_family(rt: Runtime, code, *, at: float, action: str = "code.replay_detected") -> None:
    """A replayed code (or device code): every token issued from it (its family, refreshed
    ones included). ``action`` is the audited event."""
    async with rt.db.write() as conn:
        await _lock_application(conn, code.application_id)
        revoked = await oauth_store.revoke_family(conn, code.family_id, at)
        await audit.record(
            conn, id=rt.ids.next(), now=at, action=action, application_id=code.application_id,
            target_user_id=code.user_id, details={"tokens_revoked": revoked},
        )


async def end_application(rt: Runtime, conn, application_id: int, *, by: str, actor_id: int | None, at: float,
                          bot_id: int | None = None) -> None:
    """Everything every user granted the application and its client-credentials tokens; with
    ``bot_id`` (the application is going away) its bot leaves every guild, managed roles and all."""
    await _lock_application(conn, application_id)
    await oauth_store.end_application_access(conn, application_id, at)
    details: dict = {"by": by}
    if bot_id is not None:
        details["bot_left_guilds"] = [str(guild_id) for guild_id in
                                      await guild_store.remove_from_every_guild(conn, bot_id)]
    await audit.record(conn, id=rt.ids.next(), now=at, action="application.access_ended", actor_id=actor_id,
                       application_id=application_id, details=details)


async def end_admin_access(rt: Runtime, conn, *, by: str, actor_id: int | None, at: float,
                           application_id: int | None = None, user_id: int | None = None) -> None:
    """Every grant carrying the admin scope, of an application (untrusted) or of a user (no
    longer staff): the whole grant ends, since a narrower one was never consented to alone."""
    if user_id is not None:
        await _lock_user(conn, user_id)
    if application_id is not None:
        await _lock_application(conn, application_id)
    holders = set()
    for scope in sorted(STAFF_ONLY_SCOPES):
        holders.update(await oauth_store.users_granting_scope(conn, scope, application_id=application_id,
                                                              user_id=user_id))
    for grant_user_id, grant_application_id in sorted(holders):
        await end_grant(rt, conn, user_id=grant_user_id, application_id=grant_application_id, by=by,
                        actor_id=actor_id, at=at)


async def end_client_type_change(rt: Runtime, conn, application_id: int, *, actor_id: int | None,
                                 at: float) -> None:
    """A client made public or confidential: what its old secret protected. Its client-
    credentials tokens (as a reset secret), and its device codes not yet redeemed, which a
    confidential client's secret alone could redeem and a public client's id now would.
    (Its users' refresh tokens stay: each is a secret of its own holder, still rotated with
    reuse detection; docs/api.md, Public clients.)"""
    await _lock_application(conn, application_id)
    await oauth_store.end_device_codes(conn, application_id, at)
    await end_client_credentials(rt, conn, application_id, by="client_type_changed", actor_id=actor_id, at=at)


async def end_client_credentials(rt: Runtime, conn, application_id: int, *, by: str, actor_id: int | None,
                                 at: float) -> None:
    """The tokens the application issued itself (client credentials): a reset secret or bot
    token means the old one may be known to someone else, who may hold such tokens too."""
    await oauth_store.end_client_tokens(conn, application_id, at)
    await audit.record(conn, id=rt.ids.next(), now=at, action="application.client_tokens_ended",
                       actor_id=actor_id, application_id=application_id, details={"by": by})


async def end_user(rt: Runtime, conn, user_id: int, *, by: str, actor_id: int | None, at: float) -> None:
    """A disabled user: their sessions, everything they granted, and everything granted to
    the applications they own (which stop authenticating while the owner is disabled)."""
    owned = await _lock_user(conn, user_id)
    await user_store.end_sessions(conn, user_id)
    await oauth_store.end_user_access(conn, user_id, at)
    for app in owned:
        await end_application(rt, conn, app.id, by=by, actor_id=actor_id, at=at)
