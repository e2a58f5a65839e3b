"""images: uploaded avatars and icons

The images table (one row per content hash: the stored PNG, or NULL when it is a file under
FLUXER_IMAGE_DIR), and partial indexes on the columns that name an image (users.avatar,
applications.icon, guilds.icon), which the janitor reads to find images nobody uses.

Revision ID: 0005
Revises: 0004
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def _set(column: str):
    return sa.text(f'{column} IS NOT NULL')


def upgrade() -> None:
    op.create_table(
        'images',
        sa.Column('hash', sa.String(length=64), nullable=False),
        sa.Column('width', sa.Integer(), nullable=False),
        sa.Column('height', sa.Integer(), nullable=False),
        sa.Column('size', sa.Integer(), nullable=False),
        sa.Column('data', sa.LargeBinary(), nullable=True),
        sa.Column('uploaded_at', sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint('hash', name=op.f('pk_images')),
    )
    op.create_index(op.f('ix_images_uploaded_at'), 'images', ['uploaded_at'], unique=False)
    op.create_index('ix_users_avatar', 'users', ['avatar'], unique=False,
                    sqlite_where=_set('avatar'), postgresql_where=_set('avatar'))
    op.create_index('ix_applications_icon', 'applications', ['icon'], unique=False,
                    sqlite_where=_set('icon'), postgresql_where=_set('icon'))
    op.create_index('ix_guilds_icon', 'guilds', ['icon'], unique=False,
                    sqlite_where=_set('icon'), postgresql_where=_set('icon'))


def downgrade() -> None:
    op.drop_index('ix_guilds_icon', table_name='guilds')
    op.drop_index('ix_applications_icon', table_name='applications')
    op.drop_index('ix_users_avatar', table_name='users')
    op.drop_index(op.f('ix_images_uploaded_at'), table_name='images')
    op.drop_table('images')
