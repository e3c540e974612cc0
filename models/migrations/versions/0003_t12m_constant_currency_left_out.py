"""T12M opening in constant currency; customers left out of a recompute

Revision ID: 0003_t12m_left_out
Revises: 0002_live_run
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import models.base

revision = '0003_t12m_left_out'
down_revision = '0002_live_run'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('customer_month_facts', sa.Column('opening_t12m_micro', sa.BigInteger(), nullable=True))
    op.create_table(
        'left_out_customers',
        sa.Column('customer_id', sa.String(length=255), nullable=False),
        sa.Column('reason', sa.Text(), nullable=False),
        sa.Column('stripe_ids', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'),
                  nullable=False),
        sa.Column('run_id', sa.BigInteger(), nullable=True),
        sa.Column('left_out_at', models.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('customer_id', name=op.f('pk_left_out_customers')),
    )


def downgrade() -> None:
    op.drop_table('left_out_customers')
    op.drop_column('customer_month_facts', 'opening_t12m_micro')
