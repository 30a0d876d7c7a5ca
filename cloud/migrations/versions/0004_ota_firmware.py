"""firmware releases, rollouts and each lock's update state (over-the-air updates)

Revision ID: 0004_ota_firmware
Revises: 0003_feeds_checkin
Create Date: 2026-12-01 22:00:00

"""
from alembic import op
import sqlalchemy as sa



revision = '0004_ota_firmware'
down_revision = '0003_feeds_checkin'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'firmware_release',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('version', sa.String(length=32), nullable=False),
        sa.Column('target', sa.String(length=12), nullable=False),
        sa.Column('size', sa.Integer(), nullable=False),
        sa.Column('sha256', sa.String(length=64), nullable=False),
        sa.Column('signature', sa.String(length=128), nullable=False),
        sa.Column('flags', sa.Integer(), nullable=False),
        sa.Column('data', sa.LargeBinary(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('version', 'target'),
    )
    op.create_table(
        'firmware_rollout',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('release_id', sa.Integer(), nullable=False),
        sa.Column('scope', sa.String(length=80), nullable=False),
        sa.Column('max_rollback_share', sa.Float(), nullable=False),
        sa.Column('state', sa.String(length=12), nullable=False),
        sa.Column('halted_reason', sa.String(length=200), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['release_id'], ['firmware_release.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index(op.f('ix_firmware_rollout_release_id'), 'firmware_rollout', ['release_id'])
    op.create_table(
        'lock_firmware',
        sa.Column('lock_id', sa.String(length=12), nullable=False),
        sa.Column('rollout_id', sa.Integer(), nullable=True),
        sa.Column('release_id', sa.Integer(), nullable=True),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('progress', sa.Integer(), nullable=False),
        sa.Column('last_error', sa.String(length=120), nullable=True),
        sa.Column('rollbacks', sa.Integer(), nullable=False),
        sa.Column('updated_at', sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(['lock_id'], ['lock.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['release_id'], ['firmware_release.id']),
        sa.ForeignKeyConstraint(['rollout_id'], ['firmware_rollout.id']),
        sa.PrimaryKeyConstraint('lock_id'),
    )
    op.create_index(op.f('ix_lock_firmware_rollout_id'), 'lock_firmware', ['rollout_id'])


def downgrade():
    op.drop_index(op.f('ix_lock_firmware_rollout_id'), table_name='lock_firmware')
    op.drop_table('lock_firmware')
    op.drop_index(op.f('ix_firmware_rollout_release_id'), table_name='firmware_rollout')
    op.drop_table('firmware_rollout')
    op.drop_table('firmware_release')
