"""automation: reservation feeds (calendar_feed, code source/reservation_uid/feed_absent), webhooks, alerts

Revision ID: 0006_feeds_automation
Revises: 0005_site_accounts
Create Date: 2026-12-01 21:23:19.595666

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0006_feeds_automation'
down_revision = '0005_site_accounts'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('lock_watch',
    sa.Column('lock_id', sa.String(length=12), nullable=False),
    sa.Column('online', sa.Boolean(), nullable=True),
    sa.Column('changed_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('lock_id', name=op.f('pk_lock_watch'))
    )
    op.create_table('webhook_endpoint',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('agency_id', sa.Integer(), nullable=False),
    sa.Column('url', sa.String(length=2000), nullable=False),
    sa.Column('secret', sa.String(length=64), nullable=False),
    sa.Column('events', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['agency_id'], ['agency.id'], name=op.f('fk_webhook_endpoint_agency_id_agency')),
    sa.ForeignKeyConstraint(['created_by_id'], ['user_account.id'], name=op.f('fk_webhook_endpoint_created_by_id_user_account')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_endpoint'))
    )
    with op.batch_alter_table('webhook_endpoint', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_webhook_endpoint_agency_id'), ['agency_id'], unique=False)

    op.create_table('alert',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('agency_id', sa.Integer(), nullable=False),
    sa.Column('lock_id', sa.String(length=12), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('opened_at', sa.DateTime(), nullable=False),
    sa.Column('last_at', sa.DateTime(), nullable=False),
    sa.Column('closed_at', sa.DateTime(), nullable=True),
    sa.Column('detail', sa.JSON(), nullable=True),
    sa.ForeignKeyConstraint(['agency_id'], ['agency.id'], name=op.f('fk_alert_agency_id_agency')),
    sa.ForeignKeyConstraint(['lock_id'], ['lock.id'], name=op.f('fk_alert_lock_id_lock')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_alert'))
    )
    with op.batch_alter_table('alert', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_alert_agency_id'), ['agency_id'], unique=False)
        batch_op.create_index('ix_alert_open', ['lock_id', 'kind', 'closed_at'], unique=False)

    op.create_table('calendar_feed',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('lock_id', sa.String(length=12), nullable=False),
    sa.Column('agency_id', sa.Integer(), nullable=False),
    sa.Column('url', sa.String(length=2000), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('etag', sa.String(length=255), nullable=True),
    sa.Column('last_modified', sa.String(length=100), nullable=True),
    sa.Column('last_attempt_at', sa.DateTime(), nullable=True),
    sa.Column('last_sync_at', sa.DateTime(), nullable=True),
    sa.Column('last_error', sa.String(length=500), nullable=True),
    sa.Column('events_seen', sa.Integer(), nullable=False),
    sa.Column('reservations_seen', sa.Integer(), nullable=False),
    sa.Column('claimed_until', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['agency_id'], ['agency.id'], name=op.f('fk_calendar_feed_agency_id_agency')),
    sa.ForeignKeyConstraint(['lock_id'], ['lock.id'], name=op.f('fk_calendar_feed_lock_id_lock')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_calendar_feed')),
    sa.UniqueConstraint('lock_id', name=op.f('uq_calendar_feed_lock_id'))
    )
    with op.batch_alter_table('calendar_feed', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_calendar_feed_agency_id'), ['agency_id'], unique=False)

    op.create_table('webhook_delivery',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('endpoint_id', sa.Integer(), nullable=False),
    sa.Column('event_id', sa.String(length=36), nullable=False),
    sa.Column('event_type', sa.String(length=40), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(), nullable=False),
    sa.Column('claimed_at', sa.DateTime(), nullable=True),
    sa.Column('last_status', sa.Integer(), nullable=True),
    sa.Column('last_error', sa.String(length=500), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('delivered_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['endpoint_id'], ['webhook_endpoint.id'], name=op.f('fk_webhook_delivery_endpoint_id_webhook_endpoint'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_delivery'))
    )
    with op.batch_alter_table('webhook_delivery', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_webhook_delivery_endpoint_id'), ['endpoint_id'], unique=False)
        batch_op.create_index('ix_webhook_due', ['status', 'next_attempt_at'], unique=False)

    with op.batch_alter_table('agency', schema=None) as batch_op:
        batch_op.add_column(sa.Column('alerts_off', sa.JSON(), nullable=True))

    with op.batch_alter_table('code', schema=None) as batch_op:
        batch_op.add_column(sa.Column('source', sa.String(length=10), server_default='manual', nullable=False))
        batch_op.add_column(sa.Column('reservation_uid', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('feed_absent', sa.Integer(), server_default='0', nullable=False))
        batch_op.create_index('ix_code_lock_reservation', ['lock_id', 'reservation_uid'], unique=False)



def downgrade():
    with op.batch_alter_table('code', schema=None) as batch_op:
        batch_op.drop_index('ix_code_lock_reservation')
        batch_op.drop_column('feed_absent')
        batch_op.drop_column('reservation_uid')
        batch_op.drop_column('source')

    with op.batch_alter_table('agency', schema=None) as batch_op:
        batch_op.drop_column('alerts_off')

    with op.batch_alter_table('webhook_delivery', schema=None) as batch_op:
        batch_op.drop_index('ix_webhook_due')
        batch_op.drop_index(batch_op.f('ix_webhook_delivery_endpoint_id'))

    op.drop_table('webhook_delivery')
    with op.batch_alter_table('calendar_feed', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_calendar_feed_agency_id'))

    op.drop_table('calendar_feed')
    with op.batch_alter_table('alert', schema=None) as batch_op:
        batch_op.drop_index('ix_alert_open')
        batch_op.drop_index(batch_op.f('ix_alert_agency_id'))

    op.drop_table('alert')
    with op.batch_alter_table('webhook_endpoint', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_webhook_endpoint_agency_id'))

    op.drop_table('webhook_endpoint')
    op.drop_table('lock_watch')
