"""Query helpers shared by the store modules."""

from __future__ import annotations

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncConnection


async def rows_by_id(conn: AsyncConnection, table: Table, ids) -> dict:
    """Rows of ``table`` by their ``id``, in one query (none for no ids)."""
    wanted = list(set(ids))
    if not wanted:
        return {}
    rows = (await conn.execute(select(table).where(table.c.id.in_(wanted)))).all()
    return {row.id: row for row in rows}
