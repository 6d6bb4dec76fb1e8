"""OCPI credentials lifecycle: token A expiry and revocation; an eMSP's pending token
(rotation) and who registered it

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('ocpi_token_a', sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
                  schema='ocpp')
    op.add_column('ocpi_token_a', sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
                  schema='ocpp')
    # tokens A issued before this lived forever: they get the default lifetime from their issue
    op.execute("UPDATE ocpp.ocpi_token_a SET expires_at = created_at + interval '7 days'")
    op.add_column('ocpi_partners', sa.Column('pending_token_hash', sa.String(length=64), nullable=True),
                  schema='ocpp')
    op.create_index('ix_ocpp_ocpi_partners_pending_token_hash', 'ocpi_partners', ['pending_token_hash'],
                    unique=False, schema='ocpp')
    op.add_column('ocpi_partners', sa.Column('registered_by', sa.String(length=8), nullable=False,
                                             server_default='EMSP'), schema='ocpp')


def downgrade() -> None:
    op.drop_column('ocpi_partners', 'registered_by', schema='ocpp')
    op.drop_index('ix_ocpp_ocpi_partners_pending_token_hash', table_name='ocpi_partners', schema='ocpp')
    op.drop_column('ocpi_partners', 'pending_token_hash', schema='ocpp')
    op.drop_column('ocpi_token_a', 'revoked_at', schema='ocpp')
    op.drop_column('ocpi_token_a', 'expires_at', schema='ocpp')
