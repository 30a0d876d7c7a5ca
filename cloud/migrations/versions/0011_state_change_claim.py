"""state_change: the SQLite bridge worker's claim of a row it publishes (claimed_by, claimed_until), so that two
workers never publish the same row and none deletes a row it did not publish

Revision ID: 0011_state_change_claim
Revises: 0010_feed_absence_time
Create Date: 2026-12-02 17:00:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0011_state_change_claim'
down_revision = '0010_feed_absence_time'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('state_change') as b:
        b.add_column(sa.Column('claimed_by', sa.String(length=32), nullable=True))
        b.add_column(sa.Column('claimed_until', sa.DateTime(), nullable=True))


def downgrade():
    with op.batch_alter_table('state_change') as b:
        b.drop_column('claimed_until')
        b.drop_column('claimed_by')
