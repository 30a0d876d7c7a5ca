"""link: the health figures of each lock's last hello

Revision ID: 0008_link_health
Revises: 0007_bridge_queue
Create Date: 2026-12-01 22:10:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0008_link_health'
down_revision = '0007_bridge_queue'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('lock') as b:
        b.add_column(sa.Column('health', sa.JSON(), nullable=True))
        b.add_column(sa.Column('health_at', sa.DateTime(), nullable=True))


def downgrade():
    with op.batch_alter_table('lock') as b:
        b.drop_column('health_at')
        b.drop_column('health')
