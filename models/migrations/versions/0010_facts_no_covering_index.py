"""facts without the covering month index: the reports read the segment totals

``ix_customer_month_facts_run_month_movement`` (run, month, movement and three amounts)
served the month's report as a GROUP BY over the facts. The reports now read
``segment_month_totals`` (kept beside the facts since 0005); what still reads the facts by
month (the drill-down, the outlook's scheduled customers, a database upgraded before its
first full run) finds the month through the primary key (run, month, customer). The index
cost every full recompute a fourth b-tree over every fact written and deleted: about a
sixth of the writing at 100,000 customers.

Revision ID: 0010_facts_no_covering_index
Revises: 0009_recompute_read_indexes
Create Date: 2026-12-08 01:50:00.000000
"""
from __future__ import annotations

from alembic import op

revision = '0010_facts_no_covering_index'
down_revision = '0009_recompute_read_indexes'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index('ix_customer_month_facts_run_month_movement',
                  table_name='customer_month_facts')


def downgrade() -> None:
    op.create_index('ix_customer_month_facts_run_month_movement', 'customer_month_facts',
                    ['run_id', 'month', 'movement', 'opening_mrr_micro', 'closing_mrr_micro',
                     'fx_impact_micro'])
