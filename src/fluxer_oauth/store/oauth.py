"""Grants, authorization codes and tokens: every write here is a single conditional
statement, so that two parallel requests can never both consume the same code or
rotate the same refresh token.

The statements of the code and refresh grants are built once with bind parameters:
building a statement costs more than running it."""

from __future__ import annotations

from sqlalchemy import Text, bindparam, cast, delete, func, literal, or_, select, text, union, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from fluxer_oauth.store.tables import REFRESH, authorization_codes, device_codes, grants, tokens

# --- grants (remembered consent) -----------------------------------------------------------

_GET_GRANT = select(grants).where(
    grants.c.user_id == bindparam("p_user_id"), grants.c.application_id == bindparam("p_application_id")
)
# "Last used" is kept to the minute: a grant's row is written at most once a minute, because
# every token issuance of the grant would otherwise update that one row, and on PostgreSQL
# each such transaction waits for the previous one's commit to take the row lock (a busy
# application's refreshes for one user ran one commit at a time). The condition is checked
# on the committed row first, so a fresh touch makes the others skip without waiting.
GRANT_TOUCH_INTERVAL = 60.0
_TOUCH_GRANT = (
    update(grants)
    .where(grants.c.id == bindparam("p_grant_id"),
           or_(grants.c.last_used_at.is_(None), grants.c.last_used_at <= bindparam("p_stale_before")))
    .values(last_used_at=bindparam("p_now"))
)


# Issuing and ending meet on a lock per application (on PostgreSQL an advisory lock, keyed by
# the application's id; SQLite writes one transaction at a time anyway). Issuance (a code
# approved or redeemed, a refresh) holds it shared, so issuances never wait for each other;
# an ending holds it exclusively, so it waits for the issuances under way to commit and then
# sees what they wrote, and issuances that come later wait for the ending and then find
# their code or token ended. Endings take their locks in ascending order, before any row,
# and never while holding a shared one. (A row lock on the grant would do the same, but
# many refreshes of one grant would each rewrite the row's lockers; a statement of its own
# for the lock would cost a round trip: bench/RESULTS.md, eighth round.)
_LOCK_SHARED = text("SELECT pg_advisory_xact_lock_shared(:p_application_id)")
_LOCK_EXCLUSIVE = text("SELECT pg_advisory_xact_lock(:p_key)")
# Every ending takes its locks before it writes any row (a row written first, then a lock
# waited for, deadlocks against an ending that locked first and then writes that row).
#
# The shared lock as a condition of the statement that consumes a code or rotates a refresh
# token: an uncorrelated scalar subquery is evaluated once, before any row is read (a
# one-time filter), so the lock is taken first, without a round trip of its own. A row the
# ending changed meanwhile is then re-read (PostgreSQL's recheck of an updated row) and
# fails the statement's other conditions. (Not EXISTS: the planner drops an EXISTS
# subquery's select list, and the lock with it.)
HOLDING_APPLICATION = select(
    cast(func.pg_advisory_xact_lock_shared(bindparam("p_application_id")), Text)).scalar_subquery() == ""


# A user's key is the negative of their id (ids are positive), beside the applications'.
# Locks are taken users first, then applications, each in ascending order.
_LOCK_USER_SHARED = text("SELECT pg_advisory_xact_lock_shared(-CAST(:p_user_id AS bigint))")


async def hold_for_approval(conn: AsyncConnection, user_id: int, application_id: int) -> None:
    """A consent being recorded: no ending of the user or of the application is under way
    until commit (a first approval is in no ending's list of what to lock yet)."""
    if conn.dialect.name == "postgresql":
        await conn.execute(_LOCK_USER_SHARED, {"p_user_id": user_id})
        await conn.execute(_LOCK_SHARED, {"p_application_id": application_id})


async def lock_user_for_ending(conn: AsyncConnection, user_id: int) -> None:
    """No approval by the user is under way, or begins, until commit. Taken before the locks
    of the user's applications."""
    if conn.dialect.name == "postgresql":
        await conn.execute(_LOCK_EXCLUSIVE, {"p_key": -user_id})


async def lock_applications_for_ending(conn: AsyncConnection, application_ids) -> None:
    """No issuance for these applications is under way, or begins, until commit."""
    if conn.dialect.name == "postgresql":
        for application_id in sorted(set(application_ids)):
            await conn.execute(_LOCK_EXCLUSIVE, {"p_key": application_id})


async def applications_of_user(conn: AsyncConnection, user_id: int) -> list[int]:
    """Every application the user granted anything (consent, a code, a token)."""
    query = union(select(grants.c.application_id).where(grants.c.user_id == user_id),
                  select(authorization_codes.c.application_id).where(authorization_codes.c.user_id == user_id),
                  select(tokens.c.application_id).where(tokens.c.user_id == user_id))
    return list((await conn.execute(query)).scalars())


async def get_grant(conn: AsyncConnection, user_id: int, application_id: int):
    return (await conn.execute(_GET_GRANT, {"p_user_id": user_id, "p_application_id": application_id})).first()


async def upsert_grant(conn: AsyncConnection, grant_id: int, user_id: int, application_id: int, scopes: str, now: float):
    """Record consent to ``scopes``; returns the grant's id. One grant per (user, application)
    even when approvals race: the insert yields to an existing row, which is then updated."""
    insert = postgresql_insert if conn.dialect.name == "postgresql" else sqlite_insert
    await conn.execute(
        insert(grants)
        .values(id=grant_id, user_id=user_id, application_id=application_id, scopes=scopes, created_at=now)
        .on_conflict_do_update(index_elements=[grants.c.user_id, grants.c.application_id], set_={"scopes": scopes})
    )
    return (await get_grant(conn, user_id, application_id)).id


async def touch_grant(conn: AsyncConnection, grant_id: int, now: float) -> None:
    """Record that the grant was used now, unless it was within the last minute."""
    await conn.execute(_TOUCH_GRANT, {"p_grant_id": grant_id, "p_now": now,
                                      "p_stale_before": now - GRANT_TOUCH_INTERVAL})


def _live_tokens(now: float, *conditions):
    """Tokens still usable (expired ones are left to the janitor, whose deletions then never
    touch the rows an ending locks)."""
    return update(tokens).where(*conditions, tokens.c.revoked_at.is_(None), tokens.c.expires_at > now)


def _end_device_codes(now: float, *conditions):
    """Device codes not yet redeemed (undecided or approved) end as denied: the device's
    next poll hears access_denied and stops (expired ones are left to the janitor)."""
    return update(device_codes).where(*conditions, device_codes.c.consumed_at.is_(None),
                                      device_codes.c.denied_at.is_(None),
                                      device_codes.c.expires_at > now).values(denied_at=now)


async def end_device_codes(conn: AsyncConnection, application_id: int, now: float) -> None:
    """End the application's device codes not yet redeemed (its client type changed)."""
    await conn.execute(_end_device_codes(now, device_codes.c.application_id == application_id))


def _has_scope(column, scope: str):
    """``scope`` is one of the space-separated scopes in ``column`` (the same on both backends)."""
    return (literal(" ") + column + literal(" ")).like(f"% {scope} %")


async def end_grant(conn: AsyncConnection, user_id: int, application_id: int, now: float) -> bool:
    """End what a user granted an application: the remembered consent, the codes and device
    codes not yet redeemed and every token. Whether there was anything to end. (The caller
    holds the application's ending lock: lock_applications_for_ending.)"""
    ended = (await conn.execute(
        delete(grants).where(grants.c.user_id == user_id, grants.c.application_id == application_id)
    )).rowcount
    ended += (await conn.execute(
        delete(authorization_codes).where(authorization_codes.c.user_id == user_id,
                                          authorization_codes.c.application_id == application_id,
                                          authorization_codes.c.consumed_at.is_(None))
    )).rowcount
    ended += (await conn.execute(
        _end_device_codes(now, device_codes.c.user_id == user_id, device_codes.c.application_id == application_id)
    )).rowcount
    ended += (await conn.execute(
        _live_tokens(now, tokens.c.user_id == user_id, tokens.c.application_id == application_id).values(revoked_at=now)
    )).rowcount
    return ended > 0


async def end_application_access(conn: AsyncConnection, application_id: int, now: float) -> None:
    """End everything any user granted an application (device codes not yet approved too),
    and its client-credentials tokens."""
    await conn.execute(delete(grants).where(grants.c.application_id == application_id))
    await conn.execute(delete(authorization_codes).where(authorization_codes.c.application_id == application_id,
                                                         authorization_codes.c.consumed_at.is_(None)))
    await conn.execute(_end_device_codes(now, device_codes.c.application_id == application_id))
    await conn.execute(_live_tokens(now, tokens.c.application_id == application_id).values(revoked_at=now))


async def end_client_tokens(conn: AsyncConnection, application_id: int, now: float) -> None:
    """End the client-credentials tokens of an application (those without a grant)."""
    await conn.execute(
        _live_tokens(now, tokens.c.application_id == application_id, tokens.c.grant_id.is_(None)).values(revoked_at=now)
    )


async def users_granting_scope(conn: AsyncConnection, scope: str, *, application_id: int | None = None,
                               user_id: int | None = None) -> list[tuple[int, int]]:
    """(user id, application id) of every grant or live token carrying ``scope``, of one
    application or of one user."""
    grant_where = [_has_scope(grants.c.scopes, scope)]
    token_where = [_has_scope(tokens.c.scopes, scope), tokens.c.revoked_at.is_(None)]
    if application_id is not None:
        grant_where.append(grants.c.application_id == application_id)
        token_where.append(tokens.c.application_id == application_id)
    if user_id is not None:
        grant_where.append(grants.c.user_id == user_id)
        token_where.append(tokens.c.user_id == user_id)
    query = union(select(grants.c.user_id, grants.c.application_id).where(*grant_where),
                  select(tokens.c.user_id, tokens.c.application_id).where(*token_where))
    return [(row[0], row[1]) for row in (await conn.execute(query)).all()]


async def end_user_access(conn: AsyncConnection, user_id: int, now: float) -> None:
    """End everything a user granted any application."""
    await conn.execute(delete(grants).where(grants.c.user_id == user_id))
    await conn.execute(delete(authorization_codes).where(authorization_codes.c.user_id == user_id,
                                                         authorization_codes.c.consumed_at.is_(None)))
    await conn.execute(_end_device_codes(now, device_codes.c.user_id == user_id))
    await conn.execute(_live_tokens(now, tokens.c.user_id == user_id).values(revoked_at=now))


async def list_user_grants(conn: AsyncConnection, user_id: int):
    query = select(grants).where(grants.c.user_id == user_id).order_by(grants.c.created_at)
    return (await conn.execute(query)).all()


# --- authorization codes ------------------------------------------------------------------

_CONSUME_CODE_SQLITE = (
    update(authorization_codes)
    .where(
        authorization_codes.c.code_hash == bindparam("p_code_hash"),
        authorization_codes.c.application_id == bindparam("p_application_id"),
        authorization_codes.c.consumed_at.is_(None),
        authorization_codes.c.expires_at > bindparam("p_now"),
    )
    .values(consumed_at=bindparam("p_now"))
    .returning(*authorization_codes.c)
)
_CONSUME_CODE_POSTGRES = _CONSUME_CODE_SQLITE.where(HOLDING_APPLICATION)  # see HOLDING_APPLICATION
_GET_CODE = select(authorization_codes).where(authorization_codes.c.code_hash == bindparam("p_code_hash"))


async def insert_code(conn: AsyncConnection, **values) -> None:
    await conn.execute(authorization_codes.insert().values(**values))


async def consume_code(conn: AsyncConnection, code_hash: bytes, application_id: int, now: float):
    """Mark a live code consumed and return it; None when it is unknown, expired, another
    client's, or already consumed (exactly one of parallel callers gets the row)."""
    params = {"p_code_hash": code_hash, "p_application_id": application_id, "p_now": now}
    statement = _CONSUME_CODE_POSTGRES if conn.dialect.name == "postgresql" else _CONSUME_CODE_SQLITE
    return (await conn.execute(statement, params)).first()


async def get_code(conn: AsyncConnection, code_hash: bytes):
    return (await conn.execute(_GET_CODE, {"p_code_hash": code_hash})).first()


# --- tokens --------------------------------------------------------------------------------

_INSERT_TOKENS = tokens.insert()
_REVOKE_FAMILY = (
    update(tokens)
    .where(tokens.c.family_id == bindparam("p_family_id"), tokens.c.grant_id.is_not(None),
           tokens.c.revoked_at.is_(None))
    .values(revoked_at=bindparam("p_now"))
)
# A refresh ends the rest of its token's issue: the access token issued with it, and the pairs
# of retries within the reuse leeway, whose refresh tokens count as rotated (presented again,
# they are reuse, oauth/token.py). On PostgreSQL a row another transaction holds (a sibling
# pair being refreshed at this instant) is skipped, not waited for: two such waits deadlock.
_REVOKE_ISSUE = (
    update(tokens)
    .where(tokens.c.issue_id == bindparam("p_issue_id"), tokens.c.grant_id.is_not(None),
           tokens.c.revoked_at.is_(None))
    .values(revoked_at=bindparam("p_now"), rotated=tokens.c.kind == REFRESH)
)
_REVOKE_ISSUE_POSTGRES = _REVOKE_ISSUE.where(tokens.c.token_hash.in_(
    select(tokens.c.token_hash)
    .where(tokens.c.issue_id == bindparam("p_issue_id"), tokens.c.grant_id.is_not(None),
           tokens.c.revoked_at.is_(None))
    .with_for_update(skip_locked=True)))
_ROTATE_REFRESH_SQLITE = (
    update(tokens)
    .where(
        tokens.c.token_hash == bindparam("p_token_hash"),
        tokens.c.kind == REFRESH,
        tokens.c.application_id == bindparam("p_application_id"),
        tokens.c.revoked_at.is_(None),
        tokens.c.expires_at > bindparam("p_now"),
    )
    .values(revoked_at=bindparam("p_now"), rotated=True)
    .returning(*tokens.c)
)
_ROTATE_REFRESH_POSTGRES = _ROTATE_REFRESH_SQLITE.where(HOLDING_APPLICATION)  # see HOLDING_APPLICATION
_GET_TOKEN = select(tokens).where(tokens.c.token_hash == bindparam("p_token_hash"))


async def insert_tokens(conn: AsyncConnection, rows: list[dict]) -> None:
    await conn.execute(_INSERT_TOKENS, rows)


async def revoke_family(conn: AsyncConnection, family_id: int, now: float) -> int:
    return (await conn.execute(_REVOKE_FAMILY, {"p_family_id": family_id, "p_now": now})).rowcount


async def revoke_issue(conn: AsyncConnection, issue_id: int, now: float) -> None:
    statement = _REVOKE_ISSUE_POSTGRES if conn.dialect.name == "postgresql" else _REVOKE_ISSUE
    await conn.execute(statement, {"p_issue_id": issue_id, "p_now": now})


async def rotate_refresh_token(conn: AsyncConnection, token_hash: bytes, application_id: int, now: float):
    """Spend a live refresh token; returns its row, or None when it is not live."""
    params = {"p_token_hash": token_hash, "p_application_id": application_id, "p_now": now}
    statement = _ROTATE_REFRESH_POSTGRES if conn.dialect.name == "postgresql" else _ROTATE_REFRESH_SQLITE
    return (await conn.execute(statement, params)).first()


_REFRESH_SUCCESSORS = (
    select(tokens.c.token_hash, tokens.c.issue_id, tokens.c.rotated, tokens.c.revoked_at, tokens.c.expires_at)
    .where(tokens.c.family_id == bindparam("p_family_id"), tokens.c.grant_id.is_not(None),
           tokens.c.kind == REFRESH, tokens.c.created_at >= bindparam("p_since"))
)


async def refresh_successors(conn: AsyncConnection, family_id: int, since: float) -> list:
    """The refresh tokens of a family issued at or after ``since`` (a rotation's time): the
    successors of the token rotated then. On PostgreSQL they are locked, so a successor
    being refreshed at this moment is seen refreshed (the lock waits for its commit)."""
    query = _REFRESH_SUCCESSORS.with_for_update() if conn.dialect.name == "postgresql" else _REFRESH_SUCCESSORS
    return (await conn.execute(query, {"p_family_id": family_id, "p_since": since})).all()


async def get_token(conn: AsyncConnection, token_hash: bytes):
    return (await conn.execute(_GET_TOKEN, {"p_token_hash": token_hash})).first()
