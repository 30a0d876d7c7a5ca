"""feeds: when a reservation was first missing from its feed, and when a good sync first found the whole feed
emptied (a vanished reservation is revoked only after an absence of CALENDAR_POLL_S)

Revision ID: 0010_feed_absence_time
Revises: 0009_scale_expiry
Create Date: 2026-12-02 04:10:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0010_feed_absence_time'
down_revision = '0009_scale_expiry'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('code') as b:
        b.add_column(sa.Column('feed_absent_since', sa.DateTime(), nullable=True))
    with op.batch_alter_table('calendar_feed') as b:
        b.add_column(sa.Column('emptied_since', sa.DateTime(), nullable=True))


def downgrade():
    with op.batch_alter_table('calendar_feed') as b:
        b.drop_column('emptied_since')
    with op.batch_alter_table('code') as b:
        b.drop_column('feed_absent_since')
