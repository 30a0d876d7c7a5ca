"""bridge-owned per-lock MQTT state (cloud/bridge.py: counters, will, published revision, online)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 15:20:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('bridge_lock_state',
    sa.Column('lock_id', sa.String(length=12), nullable=False),
    sa.Column('last_counter', sa.BigInteger(), nullable=False),
    sa.Column('will_counter', sa.BigInteger(), nullable=True),
    sa.Column('published_revision', sa.Integer(), nullable=False),
    sa.Column('online', sa.Boolean(), nullable=False),
    sa.Column('online_changed_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('lock_id', name=op.f('pk_bridge_lock_state'))
    )


def downgrade():
    op.drop_table('bridge_lock_state')
