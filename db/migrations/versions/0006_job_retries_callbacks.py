"""Jobs of a CPO's day two: the jobs list's index, retries, completion callbacks

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-10
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('jobs', sa.Column('retry_of', sa.String(length=64), nullable=True), schema='ocpp')
    op.create_foreign_key('fk_jobs_retry_of', 'jobs', 'jobs', ['retry_of'], ['id'],
                          source_schema='ocpp', referent_schema='ocpp', ondelete='SET NULL')
    op.add_column('jobs', sa.Column('callback_url', sa.String(length=2048), nullable=True), schema='ocpp')
    op.create_index('ix_jobs_cpo_status_created', 'jobs', ['cpo_id', 'status', 'created_at'],
                    schema='ocpp')
    op.create_index('ix_jobs_retry_of', 'jobs', ['retry_of'], schema='ocpp')
    op.add_column('job_locations', sa.Column('origin_index', sa.Integer(), nullable=True), schema='ocpp')
    op.create_table(
        'job_callbacks',
        sa.Column('job_id', sa.String(length=64), nullable=False),
        sa.Column('event_id', sa.String(length=64), nullable=False),
        sa.Column('url', sa.String(length=2048), nullable=False),
        sa.Column('payload', sa.Text(), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('last_status', sa.String(length=100), nullable=True),
        sa.Column('last_attempt_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['job_id'], ['ocpp.jobs.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('job_id'),
        schema='ocpp',
    )
    op.create_table(
        'cpo_webhooks',
        sa.Column('cpo_id', sa.BigInteger(), nullable=False),
        sa.Column('url', sa.String(length=2048), nullable=False),
        sa.Column('secret', sa.String(length=100), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['cpo_id'], ['ocpp.partner_operations.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('cpo_id'),
        schema='ocpp',
    )


def downgrade() -> None:
    op.drop_table('cpo_webhooks', schema='ocpp')
    op.drop_table('job_callbacks', schema='ocpp')
    op.drop_column('job_locations', 'origin_index', schema='ocpp')
    op.drop_index('ix_jobs_retry_of', table_name='jobs', schema='ocpp')
    op.drop_index('ix_jobs_cpo_status_created', table_name='jobs', schema='ocpp')
    op.drop_column('jobs', 'callback_url', schema='ocpp')
    op.drop_constraint('fk_jobs_retry_of', 'jobs', schema='ocpp', type_='foreignkey')
    op.drop_column('jobs', 'retry_of', schema='ocpp')
