"""Device codes (RFC 8628): issued to a client, approved or denied by a user at /activate,
redeemed once by the client's poll.

Every change of state is one conditional ``UPDATE ... RETURNING`` (or a rowcount), as for
authorization codes (store/oauth.py): of parallel approvals, denials or polls exactly one
wins. A code is pending until one of approved_at, denied_at, consumed_at is set; endings
(store/oauth.py, ``end_*``) set denied_at on the codes they end."""

from __future__ import annotations

from sqlalchemy import bindparam, exists, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from fluxer_oauth.store.errors import AlreadyExists
from fluxer_oauth.store.oauth import HOLDING_APPLICATION
from fluxer_oauth.store.tables import device_codes, grants

_CODE = device_codes.c.device_code_hash == bindparam("p_hash")
_UNDECIDED = (device_codes.c.approved_at.is_(None), device_codes.c.denied_at.is_(None),
              device_codes.c.consumed_at.is_(None))
_LIVE = device_codes.c.expires_at > bindparam("p_now")

_FIND_PENDING = select(device_codes).where(device_codes.c.user_code == bindparam("p_user_code"), *_UNDECIDED, _LIVE)
_APPROVE = (update(device_codes).where(_CODE, *_UNDECIDED, _LIVE)
            .values(approved_at=bindparam("p_now"), user_id=bindparam("p_user_id"),
                    family_id=bindparam("p_family_id"), auth_time=bindparam("p_auth_time")))
_ATTACH_GRANT = update(device_codes).where(_CODE).values(grant_id=bindparam("p_grant_id"))
_DENY = update(device_codes).where(_CODE, *_UNDECIDED, _LIVE).values(denied_at=bindparam("p_now"))

# Redeemed only while approved, not denied or ended, not yet redeemed, not expired, and its
# grant still there (an ending that revoked the grant also marked the code denied: this
# holds the rule whatever ended it).
_REDEEM_SQLITE = (
    update(device_codes)
    .where(_CODE, device_codes.c.application_id == bindparam("p_application_id"),
           device_codes.c.approved_at.is_not(None), device_codes.c.denied_at.is_(None),
           device_codes.c.consumed_at.is_(None), _LIVE,
           exists().where(grants.c.id == device_codes.c.grant_id))
    .values(consumed_at=bindparam("p_now"))
    .returning(*device_codes.c)
)
_REDEEM_POSTGRES = _REDEEM_SQLITE.where(HOLDING_APPLICATION)  # see store/oauth.py, HOLDING_APPLICATION

_OF_CLIENT = (_CODE, device_codes.c.application_id == bindparam("p_application_id"))
# A poll of an undecided code sooner than its interval after the last one: the interval
# grows (RFC 8628 §3.5, slow_down). Otherwise the poll is only recorded.
_SLOW_DOWN = (
    update(device_codes)
    .where(*_OF_CLIENT, *_UNDECIDED, device_codes.c.last_polled_at + device_codes.c.interval > bindparam("p_now"))
    .values(interval=device_codes.c.interval + bindparam("p_step"), last_polled_at=bindparam("p_now"))
    .returning(*device_codes.c)
)
_POLLED = update(device_codes).where(*_OF_CLIENT).values(last_polled_at=bindparam("p_now")).returning(*device_codes.c)


async def insert(conn: AsyncConnection, **values) -> None:
    """Raises ``AlreadyExists`` when the user code is taken (the caller retries with
    another, in a new transaction: PostgreSQL has aborted this one)."""
    try:
        await conn.execute(device_codes.insert().values(**values))
    except IntegrityError as exc:
        raise AlreadyExists("user code") from exc


async def find_pending(conn: AsyncConnection, user_code: str, now: float):
    """The undecided, unexpired code with this (normalized) user code, or None."""
    return (await conn.execute(_FIND_PENDING, {"p_user_code": user_code, "p_now": now})).first()


async def approve(conn: AsyncConnection, device_code_hash: bytes, *, user_id: int, family_id: int,
                  auth_time: float | None, now: float) -> bool:
    """Mark an undecided, unexpired code approved by ``user_id``; whether it was (exactly one
    of parallel decisions is). Its grant follows in the same transaction (``attach_grant``)."""
    result = await conn.execute(_APPROVE, {"p_hash": device_code_hash, "p_user_id": user_id, "p_family_id": family_id,
                                           "p_auth_time": auth_time, "p_now": now})
    return result.rowcount == 1


async def attach_grant(conn: AsyncConnection, device_code_hash: bytes, grant_id: int) -> None:
    await conn.execute(_ATTACH_GRANT, {"p_hash": device_code_hash, "p_grant_id": grant_id})


async def deny(conn: AsyncConnection, device_code_hash: bytes, now: float) -> bool:
    """Mark an undecided, unexpired code denied; whether it was."""
    return (await conn.execute(_DENY, {"p_hash": device_code_hash, "p_now": now})).rowcount == 1


async def redeem(conn: AsyncConnection, device_code_hash: bytes, application_id: int, now: float):
    """Mark an approved code of this client consumed and return it; None when it is not
    redeemable (exactly one of parallel polls gets the row)."""
    params = {"p_hash": device_code_hash, "p_application_id": application_id, "p_now": now}
    statement = _REDEEM_POSTGRES if conn.dialect.name == "postgresql" else _REDEEM_SQLITE
    return (await conn.execute(statement, params)).first()


async def record_poll(conn: AsyncConnection, device_code_hash: bytes, application_id: int, now: float,
                      step: int) -> tuple[object, bool] | None:
    """Record a poll of this client's code that did not redeem it: the row after the poll
    and whether the poll came too soon (its interval then grew by ``step`` seconds). None
    for an unknown code or another client's (nothing is written to it)."""
    params = {"p_hash": device_code_hash, "p_application_id": application_id, "p_now": now}
    row = (await conn.execute(_SLOW_DOWN, {**params, "p_step": step})).first()
    if row is not None:
        return row, True
    row = (await conn.execute(_POLLED, params)).first()
    return (row, False) if row is not None else None
