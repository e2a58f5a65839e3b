"""guild members' nicknames and applications' terms and privacy links

A member's nick (what guilds.members.read answers); an application's terms-of-service and
privacy-policy URLs, shown on the consent page.

Revision ID: 0004
Revises: 0003
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('guild_members', schema=None) as batch_op:
        batch_op.add_column(sa.Column('nick', sa.String(length=32), nullable=True))
    with op.batch_alter_table('applications', schema=None) as batch_op:
        batch_op.add_column(sa.Column('terms_of_service_url', sa.String(length=2048), nullable=True))
        batch_op.add_column(sa.Column('privacy_policy_url', sa.String(length=2048), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('applications', schema=None) as batch_op:
        batch_op.drop_column('privacy_policy_url')
        batch_op.drop_column('terms_of_service_url')
    with op.batch_alter_table('guild_members', schema=None) as batch_op:
        batch_op.drop_column('nick')
