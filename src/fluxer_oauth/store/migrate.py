"""Create or upgrade the schema with Alembic, on either backend."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from fluxer_oauth.store.database import Database

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


async def migrate(db: Database, revision: str = "head") -> None:
    def upgrade(sync_connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = sync_connection
        command.upgrade(config, revision)

    await db.run_sync(upgrade)


async def autogenerate(db: Database, message: str) -> None:
    """Developer helper: write a new revision from the difference to tables.py."""
    def revise(sync_connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = sync_connection
        command.revision(config, message=message, autogenerate=True)

    await db.run_sync(revise)
