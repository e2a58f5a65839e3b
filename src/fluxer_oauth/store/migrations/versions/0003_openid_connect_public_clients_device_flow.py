"""OpenID Connect, public clients and the device flow

Applications can be public (client_id only, PKCE required) and choose how their id_tokens
are signed; authorization codes keep the request's nonce and the sign-in time; device codes
(RFC 8628) and the OpenID Connect signing keys get tables of their own.

Revision ID: 0003
Revises: 0002
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('applications', schema=None) as batch_op:
        batch_op.add_column(sa.Column('public_client', sa.Boolean(), nullable=False,
                                      server_default=sa.text('false')))
        batch_op.add_column(sa.Column('id_token_signed_response_alg', sa.String(length=8), nullable=False,
                                      server_default=sa.text("'RS256'")))
    with op.batch_alter_table('authorization_codes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('nonce', sa.String(length=256), nullable=True))
        batch_op.add_column(sa.Column('auth_time', sa.Float(), nullable=True))
    op.create_table(
        'device_codes',
        sa.Column('device_code_hash', sa.LargeBinary(length=32), nullable=False),
        sa.Column('user_code', sa.String(length=16), nullable=False),
        sa.Column('application_id', sa.BigInteger(), nullable=False),
        sa.Column('scopes', sa.String(length=200), nullable=False),
        sa.Column('created_at', sa.Float(), nullable=False),
        sa.Column('expires_at', sa.Float(), nullable=False),
        sa.Column('interval', sa.Integer(), nullable=False),
        sa.Column('last_polled_at', sa.Float(), nullable=True),
        sa.Column('user_id', sa.BigInteger(), nullable=True),
        sa.Column('grant_id', sa.BigInteger(), nullable=True),
        sa.Column('family_id', sa.BigInteger(), nullable=True),
        sa.Column('auth_time', sa.Float(), nullable=True),
        sa.Column('approved_at', sa.Float(), nullable=True),
        sa.Column('denied_at', sa.Float(), nullable=True),
        sa.Column('consumed_at', sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(['application_id'], ['applications.id'],
                                name='fk_device_codes_application_id_applications', ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], name='fk_device_codes_user_id_users',
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('device_code_hash', name='pk_device_codes'),
        sa.UniqueConstraint('user_code', name='uq_device_codes_user_code'),
    )
    op.create_index('ix_device_codes_application_id', 'device_codes', ['application_id'], unique=False)
    op.create_index('ix_device_codes_expires_at', 'device_codes', ['expires_at'], unique=False)
    op.create_index('ix_device_codes_user_id', 'device_codes', ['user_id'], unique=False)
    op.create_table(
        'signing_keys',
        sa.Column('kid', sa.String(length=64), nullable=False),
        sa.Column('alg', sa.String(length=8), nullable=False),
        sa.Column('public_jwk', sa.Text(), nullable=False),
        sa.Column('private_key', sa.LargeBinary(), nullable=False),
        sa.Column('created_at', sa.Float(), nullable=False),
        sa.Column('signs_from', sa.Float(), nullable=False),
        sa.Column('retires_at', sa.Float(), nullable=True),
        sa.Column('published_until', sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint('kid', name='pk_signing_keys'),
    )


def downgrade() -> None:
    op.drop_table('signing_keys')
    op.drop_index('ix_device_codes_user_id', table_name='device_codes')
    op.drop_index('ix_device_codes_expires_at', table_name='device_codes')
    op.drop_index('ix_device_codes_application_id', table_name='device_codes')
    op.drop_table('device_codes')
    with op.batch_alter_table('authorization_codes', schema=None) as batch_op:
        batch_op.drop_column('auth_time')
        batch_op.drop_column('nonce')
    with op.batch_alter_table('applications', schema=None) as batch_op:
        batch_op.drop_column('id_token_signed_response_alg')
        batch_op.drop_column('public_client')
