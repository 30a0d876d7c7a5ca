"""codes: a partial index on the end time of the codes expire_due still has to note

Revision ID: 0009_scale_expiry
Revises: 0008_link_health
Create Date: 2026-12-02 00:40:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0009_scale_expiry'
down_revision = '0008_link_health'
branch_labels = None
depends_on = None

_DUE = "revoked_at IS NULL AND expired_noted_at IS NULL"


def upgrade():
    op.create_index('ix_code_expiry_due', 'code', ['valid_until'], postgresql_where=sa.text(_DUE),
                    sqlite_where=sa.text(_DUE))


def downgrade():
    op.drop_index('ix_code_expiry_due', table_name='code')
