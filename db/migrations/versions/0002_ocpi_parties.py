"""OCPI 2.2.1 parties: token A per CPO, registered eMSPs; AC_3_PHASE voltage line-to-neutral

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('ocpi_token_a',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('cpo_id', sa.BigInteger(), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('used_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['cpo_id'], ['ocpp.partner_operations.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('token_hash'),
    schema='ocpp'
    )
    op.create_index(op.f('ix_ocpp_ocpi_token_a_cpo_id'), 'ocpi_token_a', ['cpo_id'], unique=False, schema='ocpp')
    op.create_table('ocpi_partners',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('cpo_id', sa.BigInteger(), nullable=False),
    sa.Column('country_code', sa.String(length=2), nullable=True),
    sa.Column('party_id', sa.String(length=3), nullable=True),
    sa.Column('role', sa.String(length=8), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=True),
    sa.Column('roles', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('versions_url', sa.String(length=255), nullable=False),
    sa.Column('version', sa.String(length=8), nullable=False),
    sa.Column('endpoints', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('token_hash', sa.String(length=64), nullable=True),
    sa.Column('their_token', sa.String(length=255), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['cpo_id'], ['ocpp.partner_operations.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('cpo_id', 'country_code', 'party_id', name='uq_ocpi_partners_party'),
    sa.UniqueConstraint('token_hash'),
    schema='ocpp'
    )
    op.create_index(op.f('ix_ocpp_ocpi_partners_cpo_id'), 'ocpi_partners', ['cpo_id'], unique=False, schema='ocpp')
    # the eMSPs' incremental pulls filter and order on last_updated
    op.create_index('ix_ocpi_locations_network_updated', 'ocpi_locations',
                    ['network_id', 'last_updated', 'id'], unique=False, schema='ocpp')
    # OCPI 2.2.1: max_voltage of AC_3_PHASE is line to neutral (230 V, not 400 V line to line)
    op.execute("UPDATE ocpp.ocpi_connectors SET max_voltage = 230"
               " WHERE power_type = 'AC_3_PHASE' AND max_voltage = 400")
    # OCPI 2.2.1: an EVSE that is not yet in service is PLANNED
    op.execute("UPDATE ocpp.ocpi_evses e SET status = 'PLANNED' FROM ocpp.ocpi_locations l"
               " WHERE l.id = e.location_id AND l.status = 'PROVISIONING' AND e.status = 'UNKNOWN'")


def downgrade() -> None:
    op.drop_index('ix_ocpi_locations_network_updated', table_name='ocpi_locations', schema='ocpp')
    op.drop_index(op.f('ix_ocpp_ocpi_partners_cpo_id'), table_name='ocpi_partners', schema='ocpp')
    op.drop_table('ocpi_partners', schema='ocpp')
    op.drop_index(op.f('ix_ocpp_ocpi_token_a_cpo_id'), table_name='ocpi_token_a', schema='ocpp')
    op.drop_table('ocpi_token_a', schema='ocpp')
