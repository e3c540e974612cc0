"""facts: the covering month index becomes a partial index of the facts with a movement

``ix_customer_month_facts_run_month_movement`` (run, month, movement and three amounts)
served the month's report as a GROUP BY over the facts. The reports now read
``segment_month_totals`` (kept beside the facts since 0005); what still reads the facts of
a month (the outlook's scheduled customers, a database upgraded before its first full
run) finds them through the primary key (run, month, customer). The drill-down lists the
customers of one movement: ``ix_customer_month_facts_run_month_moved`` indexes only the
facts that have a movement (about one in six). A full recompute wrote and deleted an
entry of the covering index for every fact: about a third of its writing at 100,000
customers.

Revision ID: 0010_facts_no_covering_index
Revises: 0009_recompute_read_indexes
Create Date: 2026-12-08 01:50:00.000000
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0010_facts_no_covering_index'
down_revision = '0009_recompute_read_indexes'
branch_labels = None
depends_on = None

_MOVED = sa.text('movement IS NOT NULL')


def upgrade() -> None:
    op.drop_index('ix_customer_month_facts_run_month_movement',
                  table_name='customer_month_facts')
    op.create_index('ix_customer_month_facts_run_month_moved', 'customer_month_facts',
                    ['run_id', 'month', 'movement'], sqlite_where=_MOVED,
                    postgresql_where=_MOVED)


def downgrade() -> None:
    op.drop_index('ix_customer_month_facts_run_month_moved', table_name='customer_month_facts')
    op.create_index('ix_customer_month_facts_run_month_movement', 'customer_month_facts',
                    ['run_id', 'month', 'movement', 'opening_mrr_micro', 'closing_mrr_micro',
                     'fx_impact_micro'])
