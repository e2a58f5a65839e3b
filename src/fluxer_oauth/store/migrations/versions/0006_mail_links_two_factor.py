"""mail links and two-factor sign-in

Links mailed to verify an email address or reset a password (mail_links, hashed, single use,
expiring), the sealed TOTP secret and the last accepted time step of each user, and the
hashed two-factor recovery codes.

Revision ID: 0006
Revises: 0005
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('totp_secret', sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column('totp_last_step', sa.BigInteger(), nullable=True))
    op.create_table(
        'mail_links',
        sa.Column('token_hash', sa.LargeBinary(length=32), nullable=False),
        sa.Column('purpose', sa.SmallInteger(), nullable=False),
        sa.Column('user_id', sa.BigInteger(), nullable=False),
        sa.Column('email', sa.String(length=254), nullable=False),
        sa.Column('created_at', sa.Float(), nullable=False),
        sa.Column('expires_at', sa.Float(), nullable=False),
        sa.Column('used_at', sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], name='fk_mail_links_user_id_users', ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('token_hash', name='pk_mail_links'),
    )
    op.create_index('ix_mail_links_user_id', 'mail_links', ['user_id'], unique=False)
    op.create_index('ix_mail_links_expires_at', 'mail_links', ['expires_at'], unique=False)
    op.create_table(
        'recovery_codes',
        sa.Column('user_id', sa.BigInteger(), nullable=False),
        sa.Column('code_hash', sa.LargeBinary(length=32), nullable=False),
        sa.Column('used_at', sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], name='fk_recovery_codes_user_id_users',
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('user_id', 'code_hash', name='pk_recovery_codes'),
    )


def downgrade() -> None:
    op.drop_table('recovery_codes')
    op.drop_index('ix_mail_links_expires_at', table_name='mail_links')
    op.drop_index('ix_mail_links_user_id', table_name='mail_links')
    op.drop_table('mail_links')
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('totp_last_step')
        batch_op.drop_column('totp_secret')
