"""timeline by instant: the recompute finds the customers a scheduled change made stale

An index on ``mrr_timeline (run_id, effective_at, customer_id)``: every incremental
recompute asks which customers of the live run have a timeline point between the live
rows' instant and now (``nrr.services.recompute.due``); without it that reads every point
of the run.

Revision ID: 0008_timeline_effective_at
Revises: 0007_line_discount_order
Create Date: 2026-12-07 20:05:00.000000
"""
from __future__ import annotations

from alembic import op

revision = '0008_timeline_effective_at'
down_revision = '0007_line_discount_order'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('mrr_timeline', schema=None) as batch_op:
        batch_op.create_index('ix_mrr_timeline_run_effective_at',
                              ['run_id', 'effective_at', 'customer_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('mrr_timeline', schema=None) as batch_op:
        batch_op.drop_index('ix_mrr_timeline_run_effective_at')
