"""CPO tokens: label, optional expiry, revocation

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('api_tokens', sa.Column('label', sa.String(length=100), nullable=True), schema='ocpp')
    op.add_column('api_tokens', sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
                  schema='ocpp')
    op.add_column('api_tokens', sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
                  schema='ocpp')


def downgrade() -> None:
    op.drop_column('api_tokens', 'revoked_at', schema='ocpp')
    op.drop_column('api_tokens', 'expires_at', schema='ocpp')
    op.drop_column('api_tokens', 'label', schema='ocpp')
