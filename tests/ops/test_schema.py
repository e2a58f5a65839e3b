"""The migrations build exactly the schema the code declares, and the revocation queries
use the partial token indexes (migration 0002) rather than reading the whole table."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from fluxer_oauth.store import oauth as oauth_store
from fluxer_oauth.store.tables import metadata
from tests.backends import POSTGRES


async def test_migrations_match_the_declared_tables(rt):
    def differences(connection):
        return compare_metadata(MigrationContext.configure(connection), metadata)

    assert await rt.db.run_sync(differences) == []


async def _plan(rt, statement, params: dict) -> str:
    compiled = statement.compile(dialect=rt.db.sync_engine.dialect)
    values = compiled.construct_params(params)
    positional = tuple(values[name] for name in compiled.positiontup)
    async with rt.db.write() as conn:
        if POSTGRES:
            await conn.execute(text("SET LOCAL enable_seqscan = off"))  # tiny tables: ask what it *can* use
        explain = "EXPLAIN " if POSTGRES else "EXPLAIN QUERY PLAN "
        rows = await conn.exec_driver_sql(explain + str(compiled), positional)
        return " ".join(str(value) for row in rows for value in row)


async def test_family_and_issue_revocations_use_their_partial_indexes(rt):
    family_plan = await _plan(rt, oauth_store._REVOKE_FAMILY, {"p_family_id": 1, "p_now": 0.0})
    issue_plan = await _plan(rt, oauth_store._REVOKE_ISSUE, {"p_issue_id": 1, "p_now": 0.0})
    assert "ix_tokens_family_id" in family_plan, family_plan
    assert "ix_tokens_issue_id" in issue_plan, issue_plan
