"""token indexes for cheaper inserts

Every stored token paid for five secondary indexes. ix_tokens_grant_id served no query and
goes. Family and issue ids are looked up only to revoke what a code or a refresh token
issued, and those tokens always carry a grant; client-credentials tokens (grant_id NULL,
the bulk of the writes under machine traffic) now stay out of both indexes.

Revision ID: 0002
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

_WITH_GRANT = sa.text('grant_id IS NOT NULL')


def upgrade() -> None:
    with op.batch_alter_table('tokens', schema=None) as batch_op:
        batch_op.drop_index('ix_tokens_grant_id')
        batch_op.drop_index('ix_tokens_family_id')
        batch_op.drop_index('ix_tokens_issue_id')
        batch_op.create_index('ix_tokens_family_id', ['family_id'], unique=False,
                              sqlite_where=_WITH_GRANT, postgresql_where=_WITH_GRANT)
        batch_op.create_index('ix_tokens_issue_id', ['issue_id'], unique=False,
                              sqlite_where=_WITH_GRANT, postgresql_where=_WITH_GRANT)


def downgrade() -> None:
    with op.batch_alter_table('tokens', schema=None) as batch_op:
        batch_op.drop_index('ix_tokens_issue_id')
        batch_op.drop_index('ix_tokens_family_id')
        batch_op.create_index('ix_tokens_issue_id', ['issue_id'], unique=False)
        batch_op.create_index('ix_tokens_family_id', ['family_id'], unique=False)
        batch_op.create_index('ix_tokens_grant_id', ['grant_id'], unique=False)
