"""lock default check-in / check-out times (wall clock at the property)

Revision ID: 0003_feeds_checkin
Revises: 0002
Create Date: 2026-12-01 21:30:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0003_feeds_checkin'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('lock') as batch:
        batch.add_column(sa.Column('checkin_time', sa.Time(), nullable=False, server_default='15:00:00'))
        batch.add_column(sa.Column('checkout_time', sa.Time(), nullable=False, server_default='11:00:00'))


def downgrade():
    with op.batch_alter_table('lock') as batch:
        batch.drop_column('checkout_time')
        batch.drop_column('checkin_time')
