"""event customer and recompute indexes: an event's customer as a column; a customer's
invoices and lines indexed with what the recompute filters and groups them by

The recompute reads the events that date changes exactly per customer. It found an event's
customer with a JSON path (``data.object.customer``) evaluated on every stored event of
those types, once per chunk of customers: a whole-table JSON scan per chunk. The column is
written with the event (``record_event``) and indexed with the event's time; existing rows
are filled here by the same reading of the payload.

The single-column customer indexes of invoices and lines become wider ones that start with
the customer (so they serve every lookup the old ones did): the recompute's chunk of
customers filters invoices (unpaid, or paid late) and groups cycle lines from the index
instead of reading every row (an invoice row with its payload fills about a page).

Revision ID: 0009_recompute_read_indexes
Revises: 0008_timeline_effective_at
Create Date: 2026-12-07 21:00:00.000000
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from alembic import op

from models.base import JSONType
from nrr.domain import stripe_shapes

revision = '0009_recompute_read_indexes'
down_revision = '0008_timeline_effective_at'
branch_labels = None
depends_on = None

_CHUNK = 5000

_EVENTS = sa.table('stripe_events', sa.column('id'), sa.column('raw', JSONType),
                   sa.column('customer_id'))


def upgrade() -> None:
    with op.batch_alter_table('stripe_events') as batch:
        batch.add_column(sa.Column('customer_id', sa.String(length=255), nullable=True))
    bind = op.get_bind()
    for rows in _chunks(bind):
        values = [{'b_id': row.id, 'b_customer_id': found} for row in rows
                  if (found := stripe_shapes.event_customer_id(row.raw)) is not None]
        if values:
            bind.execute(sa.update(_EVENTS).where(_EVENTS.c.id == sa.bindparam('b_id'))
                         .values(customer_id=sa.bindparam('b_customer_id')), values)
    op.create_index('ix_stripe_events_customer', 'stripe_events', ['customer_id', 'created'])
    op.drop_index('ix_stripe_invoices_customer_id', table_name='stripe_invoices')
    op.create_index('ix_stripe_invoices_customer_status', 'stripe_invoices',
                    ['customer_id', 'status', 'paid_at', 'finalized_at'])
    op.drop_index('ix_stripe_invoice_lines_customer_id', table_name='stripe_invoice_lines')
    op.create_index('ix_stripe_invoice_lines_customer_state', 'stripe_invoice_lines',
                    _LINE_STATE_COLUMNS)


_LINE_STATE_COLUMNS = ['customer_id', 'proration', 'livemode', 'subscription_item_id',
                       'price_id', 'quantity', 'discount_ids', 'invoice_status',
                       'period_start', 'period_end']


def downgrade() -> None:
    op.drop_index('ix_stripe_invoice_lines_customer_state', table_name='stripe_invoice_lines')
    op.create_index('ix_stripe_invoice_lines_customer_id', 'stripe_invoice_lines',
                    ['customer_id'])
    op.drop_index('ix_stripe_invoices_customer_status', table_name='stripe_invoices')
    op.create_index('ix_stripe_invoices_customer_id', 'stripe_invoices', ['customer_id'])
    op.drop_index('ix_stripe_events_customer', table_name='stripe_events')
    with op.batch_alter_table('stripe_events') as batch:
        batch.drop_column('customer_id')


def _chunks(bind: sa.Connection) -> Iterator[list[Any]]:
    """Every event, in id order, a chunk at a time (keyset paging)."""
    last = ''
    while True:
        rows = list(bind.execute(sa.select(_EVENTS.c.id, _EVENTS.c.raw)
                                 .where(_EVENTS.c.id > last).order_by(_EVENTS.c.id)
                                 .limit(_CHUNK)))
        if not rows:
            return
        yield rows
        last = rows[-1].id
