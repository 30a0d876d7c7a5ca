"""the change queue (state_change outbox) and the bridge's counter window; published_revision goes (the queue
replaces the scan that compared it)

Revision ID: 0007_bridge_queue
Revises: 0006_feeds_automation
Create Date: 2026-12-01 21:50:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0007_bridge_queue'
down_revision = '0006_feeds_automation'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('state_change',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('lock_id', sa.String(length=12), nullable=False),
    sa.Column('queued_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_state_change')),
    sa.UniqueConstraint('lock_id', name=op.f('uq_state_change_lock_id'))
    )
    with op.batch_alter_table('bridge_lock_state') as batch:
        batch.add_column(sa.Column('seen_window', sa.BigInteger(), server_default='0', nullable=False))
        batch.drop_column('published_revision')
    # whatever the old bridge had not published yet: publish every lock's state once
    op.execute("INSERT INTO state_change (lock_id, queued_at) SELECT id, CURRENT_TIMESTAMP FROM lock")


def downgrade():
    with op.batch_alter_table('bridge_lock_state') as batch:
        batch.add_column(sa.Column('published_revision', sa.Integer(), server_default='0', nullable=False))
        batch.drop_column('seen_window')
    op.drop_table('state_change')
