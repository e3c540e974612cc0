"""derived rows by recompute run; the live run pointer; recompute shards

A full recompute writes its rows beside the live run's and switches readers by run id
(``live_run``) instead of emptying the tables under them. Rows already stored become run 0,
the live one.

Revision ID: 0002_live_run
Revises: 0001_initial
"""
from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import models.base

revision = '0002_live_run'
down_revision = '0001_initial'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('mrr_timeline', schema=None) as batch_op:
        batch_op.add_column(sa.Column('run_id', sa.BigInteger(), server_default='0', nullable=False))
        batch_op.drop_index(batch_op.f('ix_mrr_timeline_customer_id'))
        batch_op.drop_constraint('uq_mrr_timeline_customer_id_currency_effective_at', type_='unique')
        batch_op.create_unique_constraint(
            batch_op.f('uq_mrr_timeline_run_id_customer_id_currency_effective_at'),
            ['run_id', 'customer_id', 'currency', 'effective_at'])

    with op.batch_alter_table('mrr_ledger', schema=None) as batch_op:
        batch_op.add_column(sa.Column('run_id', sa.BigInteger(), server_default='0', nullable=False))
        batch_op.drop_index('ix_mrr_ledger_month_customer')
        batch_op.drop_index('ix_mrr_ledger_customer')
        batch_op.create_index('ix_mrr_ledger_run_month_customer', ['run_id', 'month', 'customer_id'], unique=False)
        batch_op.create_index('ix_mrr_ledger_run_customer', ['run_id', 'customer_id'], unique=False)

    with op.batch_alter_table('customer_month_facts', schema=None, recreate='always') as batch_op:
        batch_op.add_column(sa.Column('run_id', sa.BigInteger(), server_default='0', nullable=False))
        batch_op.drop_index('ix_customer_month_facts_customer')
        batch_op.drop_index('ix_customer_month_facts_month_movement')
        batch_op.drop_constraint('pk_customer_month_facts', type_='primary')
        batch_op.create_primary_key('pk_customer_month_facts', ['run_id', 'month', 'customer_id'])
    with op.batch_alter_table('customer_month_facts', schema=None) as batch_op:
        batch_op.create_index('ix_customer_month_facts_run_customer', ['run_id', 'customer_id'], unique=False)
        batch_op.create_index('ix_customer_month_facts_run_month_movement', ['run_id', 'month', 'movement', 'opening_mrr_micro', 'closing_mrr_micro', 'fx_impact_micro'], unique=False)

    with op.batch_alter_table('recompute_runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('status', sa.String(length=16), server_default='done', nullable=False))
        batch_op.add_column(sa.Column('shards', sa.Integer(), nullable=True))

    live_run = op.create_table('live_run',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('run_id', sa.BigInteger(), nullable=False),
    sa.Column('previous_run_id', sa.BigInteger(), nullable=True),
    sa.Column('switched_at', models.base.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_live_run'))
    )
    op.bulk_insert(live_run, [{'id': 1, 'run_id': 0, 'previous_run_id': None,
                               'switched_at': datetime.now(UTC)}])
    op.create_table('recompute_shards',
    sa.Column('run_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('shard', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('from_customer', sa.String(length=255), nullable=False),
    sa.Column('to_customer', sa.String(length=255), nullable=True),
    sa.Column('customers', sa.Integer(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('finished_at', models.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('result', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.PrimaryKeyConstraint('run_id', 'shard', name=op.f('pk_recompute_shards'))
    )


def downgrade() -> None:
    op.drop_table('recompute_shards')
    op.drop_table('live_run')
    with op.batch_alter_table('recompute_runs', schema=None) as batch_op:
        batch_op.drop_column('shards')
        batch_op.drop_column('status')
    # Only the live run's rows fit the old keys.
    for table in ('customer_month_facts', 'mrr_ledger', 'mrr_timeline'):
        op.execute(f"DELETE FROM {table} WHERE run_id <> (SELECT COALESCE(MAX(run_id), 0) FROM {table})")
    with op.batch_alter_table('customer_month_facts', schema=None) as batch_op:
        batch_op.drop_index('ix_customer_month_facts_run_month_movement')
        batch_op.drop_index('ix_customer_month_facts_run_customer')
    with op.batch_alter_table('customer_month_facts', schema=None, recreate='always') as batch_op:
        batch_op.drop_constraint('pk_customer_month_facts', type_='primary')
        batch_op.create_primary_key('pk_customer_month_facts', ['month', 'customer_id'])
        batch_op.drop_column('run_id')
    with op.batch_alter_table('customer_month_facts', schema=None) as batch_op:
        batch_op.create_index('ix_customer_month_facts_month_movement', ['month', 'movement', 'opening_mrr_micro', 'closing_mrr_micro', 'fx_impact_micro'], unique=False)
        batch_op.create_index('ix_customer_month_facts_customer', ['customer_id'], unique=False)
    with op.batch_alter_table('mrr_ledger', schema=None) as batch_op:
        batch_op.drop_index('ix_mrr_ledger_run_customer')
        batch_op.drop_index('ix_mrr_ledger_run_month_customer')
        batch_op.create_index('ix_mrr_ledger_customer', ['customer_id'], unique=False)
        batch_op.create_index('ix_mrr_ledger_month_customer', ['month', 'customer_id'], unique=False)
        batch_op.drop_column('run_id')
    with op.batch_alter_table('mrr_timeline', schema=None) as batch_op:
        batch_op.drop_constraint('uq_mrr_timeline_run_id_customer_id_currency_effective_at', type_='unique')
        batch_op.create_unique_constraint(
            batch_op.f('uq_mrr_timeline_customer_id_currency_effective_at'),
            ['customer_id', 'currency', 'effective_at'])
        batch_op.create_index(batch_op.f('ix_mrr_timeline_customer_id'), ['customer_id'], unique=False)
        batch_op.drop_column('run_id')
