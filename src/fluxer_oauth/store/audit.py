"""The audit log: who did what to which application or user. Never holds a credential."""

from __future__ import annotations

import json

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from fluxer_oauth.store.tables import audit_log


async def record(
    conn: AsyncConnection,
    *,
    id: int,
    now: float,
    action: str,
    actor_id: int | None = None,
    application_id: int | None = None,
    target_user_id: int | None = None,
    details: dict | None = None,
) -> None:
    await conn.execute(
        audit_log.insert().values(
            id=id,
            created_at=now,
            action=action,
            actor_id=actor_id,
            application_id=application_id,
            target_user_id=target_user_id,
            details=json.dumps(details or {}, separators=(",", ":")),
        )
    )


async def entries(conn: AsyncConnection, *, action: str | None = None, limit: int = 100):
    query = select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
    if action:
        query = query.where(audit_log.c.action == action)
    return (await conn.execute(query)).all()
