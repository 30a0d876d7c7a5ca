"""site: session versions, staff removal, token labels, code removal/locale, retired locks, mail sender

Revision ID: 0005_site_accounts
Revises: 0004_ota_firmware
Create Date: 2026-12-01 21:30:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0005_site_accounts'
down_revision = '0004_ota_firmware'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('user_account') as b:
        b.add_column(sa.Column('session_version', sa.Integer(), server_default='0', nullable=False))
        b.add_column(sa.Column('removed_at', sa.DateTime(), nullable=True))
    with op.batch_alter_table('api_token') as b:
        b.add_column(sa.Column('label', sa.String(length=80), server_default='', nullable=False))
    with op.batch_alter_table('lock') as b:
        b.add_column(sa.Column('decommissioned_at', sa.DateTime(), nullable=True))
        b.add_column(sa.Column('decommissioned_mac', sa.String(length=12), nullable=True))
    with op.batch_alter_table('code') as b:
        b.add_column(sa.Column('revoked_revision', sa.Integer(), nullable=True))
        b.add_column(sa.Column('removed_at', sa.DateTime(), nullable=True))
        b.add_column(sa.Column('locale', sa.String(length=5), server_default='en', nullable=False))
    with op.batch_alter_table('outbox_mail') as b:
        b.add_column(sa.Column('sender_name', sa.String(length=120), nullable=True))
        b.add_column(sa.Column('reply_to', sa.String(length=254), nullable=True))


def downgrade():
    with op.batch_alter_table('outbox_mail') as b:
        b.drop_column('reply_to')
        b.drop_column('sender_name')
    with op.batch_alter_table('code') as b:
        b.drop_column('locale')
        b.drop_column('removed_at')
        b.drop_column('revoked_revision')
    with op.batch_alter_table('lock') as b:
        b.drop_column('decommissioned_mac')
        b.drop_column('decommissioned_at')
    with op.batch_alter_table('api_token') as b:
        b.drop_column('label')
    with op.batch_alter_table('user_account') as b:
        b.drop_column('removed_at')
        b.drop_column('session_version')
