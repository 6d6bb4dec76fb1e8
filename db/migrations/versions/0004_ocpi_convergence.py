"""OCPI convergence: a per-location version, what each eMSP was last sent, declared capabilities
and opening times

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('ocpi_locations', sa.Column('version', sa.BigInteger(), server_default='1', nullable=False),
                  schema='ocpp')
    op.add_column('ocpi_locations', sa.Column('twentyfourseven', sa.Boolean(), nullable=True), schema='ocpp')
    op.add_column('ocpi_evses', sa.Column('capabilities', postgresql.JSONB(), nullable=True), schema='ocpp')
    op.create_table(
        'ocpi_deliveries',
        sa.Column('partner_id', sa.BigInteger(), nullable=False),
        sa.Column('location_id', sa.String(length=36), nullable=False),
        sa.Column('version', sa.BigInteger(), nullable=False),
        sa.Column('object', postgresql.JSONB(), nullable=False),
        sa.Column('method', sa.String(length=8), nullable=False),
        sa.Column('in_doubt', sa.Boolean(), server_default='false', nullable=False),
        sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['partner_id'], ['ocpp.ocpi_partners.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['location_id'], ['ocpp.ocpi_locations.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('partner_id', 'location_id'),
        schema='ocpp',
    )
    op.create_index('ix_ocpi_deliveries_location_id', 'ocpi_deliveries', ['location_id'], schema='ocpp')


def downgrade() -> None:
    op.drop_index('ix_ocpi_deliveries_location_id', table_name='ocpi_deliveries', schema='ocpp')
    op.drop_table('ocpi_deliveries', schema='ocpp')
    op.drop_column('ocpi_evses', 'capabilities', schema='ocpp')
    op.drop_column('ocpi_locations', 'twentyfourseven', schema='ocpp')
    op.drop_column('ocpi_locations', 'version', schema='ocpp')
