"""mirror record columns: what the recompute read out of raw payloads becomes columns

The customer's discount id, a subscription's billing cycle anchor and inclusive tax of its
default tax rates, an item's inclusive tax, and a line's credited flag and included tax
were read by the recompute straight out of ``raw`` (JSON paths in SQL, a second reading
of Stripe's shapes). The mirror now writes them from the domain's records; existing rows
are filled here by the same reading (``nrr.domain.stripe_shapes``).

Revision ID: 0006_mirror_record_columns
Revises: 0005_segment_totals
Create Date: 2026-12-02 19:30:00.000000
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from alembic import op

from models.base import JSONType
from nrr.domain import stripe_shapes
from nrr.domain.records import Skip

revision = '0006_mirror_record_columns'
down_revision = '0005_segment_totals'
branch_labels = None
depends_on = None

_CHUNK = 5000


def upgrade() -> None:
    with op.batch_alter_table('stripe_customers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('discount_id', sa.String(length=255), nullable=True))
    with op.batch_alter_table('stripe_subscriptions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('billing_cycle_anchor', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('default_inclusive_tax_percent', sa.String(length=64),
                                      nullable=True))
    with op.batch_alter_table('stripe_subscription_items', schema=None) as batch_op:
        batch_op.add_column(sa.Column('inclusive_tax_percent', sa.String(length=64), nullable=True))
    with op.batch_alter_table('stripe_invoice_lines', schema=None) as batch_op:
        batch_op.add_column(sa.Column('credited', sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column('tax_inclusive_amount', sa.BigInteger(), nullable=True))
    _fill(op.get_bind())


def downgrade() -> None:
    with op.batch_alter_table('stripe_invoice_lines', schema=None) as batch_op:
        batch_op.drop_column('tax_inclusive_amount')
        batch_op.drop_column('credited')
    with op.batch_alter_table('stripe_subscription_items', schema=None) as batch_op:
        batch_op.drop_column('inclusive_tax_percent')
    with op.batch_alter_table('stripe_subscriptions', schema=None) as batch_op:
        batch_op.drop_column('default_inclusive_tax_percent')
        batch_op.drop_column('billing_cycle_anchor')
    with op.batch_alter_table('stripe_customers', schema=None) as batch_op:
        batch_op.drop_column('discount_id')


# --------------------------------------------------------------------------- filling


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _chunks(bind: sa.Connection, table: sa.TableClause, columns: list[str],
            where: Any = None) -> Iterator[list[Any]]:
    """Rows in id order, a chunk at a time (keyset paging: no long-lived cursor)."""
    last = ""
    while True:
        stmt = sa.select(*(table.c[c] for c in columns)).where(table.c.id > last)
        if where is not None:
            stmt = stmt.where(where)
        rows = list(bind.execute(stmt.order_by(table.c.id).limit(_CHUNK)))
        if not rows:
            return
        yield rows
        last = rows[-1].id


def _update(bind: sa.Connection, table: sa.TableClause, values: list[dict[str, Any]],
            columns: tuple[str, ...]) -> None:
    if values:
        bind.execute(sa.update(table).where(table.c.id == sa.bindparam('b_id'))
                     .values({c: sa.bindparam(f'b_{c}') for c in columns}), values)


def _fill_table(bind: sa.Connection, table: sa.TableClause, columns: list[str],
                read: Callable[[Any], dict[str, Any] | None], filled: tuple[str, ...],
                where: Any = None) -> None:
    for rows in _chunks(bind, table, columns, where):
        values = []
        for row in rows:
            found = read(row) if row.raw is not None else None
            if found is not None:
                values.append({'b_id': row.id, **{f'b_{c}': found[c] for c in filled}})
        _update(bind, table, values, filled)


def _customer(row: Any) -> dict[str, Any] | None:
    parsed = stripe_shapes.parse_customer(row.raw)
    if isinstance(parsed, Skip) or not parsed.discount_ids:
        return None
    return {'discount_id': parsed.discount_ids[0]}


def _subscription(row: Any) -> dict[str, Any] | None:
    parsed = stripe_shapes.parse_subscription(row.raw)
    if isinstance(parsed, Skip):
        return None
    sub = parsed[0]
    return {'billing_cycle_anchor': sub.billing_cycle_anchor,
            'default_inclusive_tax_percent': _text(sub.default_inclusive_tax_percent)}


def _item(row: Any) -> dict[str, Any] | None:
    parsed = stripe_shapes.parse_subscription_item(row.raw, row.subscription_id)
    if isinstance(parsed, Skip):
        return None
    return {'inclusive_tax_percent': _text(parsed.inclusive_tax_percent)}


def _line(row: Any) -> dict[str, Any] | None:
    parsed = stripe_shapes.parse_invoice_line(row.raw, invoice_id=row.invoice_id,
                                              currency=row.currency, one_off=True)
    if parsed is None or isinstance(parsed, Skip):
        return None
    return {'credited': parsed.credited, 'tax_inclusive_amount': parsed.tax_inclusive_amount}


def _fill(bind: sa.Connection) -> None:
    customers = sa.table('stripe_customers', sa.column('id'), sa.column('raw', JSONType),
                         sa.column('discount_id'))
    _fill_table(bind, customers, ['id', 'raw'], _customer, ('discount_id',))
    subscriptions = sa.table('stripe_subscriptions', sa.column('id'), sa.column('raw', JSONType),
                             sa.column('billing_cycle_anchor'),
                             sa.column('default_inclusive_tax_percent'))
    _fill_table(bind, subscriptions, ['id', 'raw'], _subscription,
                ('billing_cycle_anchor', 'default_inclusive_tax_percent'))
    items = sa.table('stripe_subscription_items', sa.column('id'), sa.column('raw', JSONType),
                     sa.column('subscription_id'), sa.column('inclusive_tax_percent'))
    _fill_table(bind, items, ['id', 'raw', 'subscription_id'], _item, ('inclusive_tax_percent',),
                where=sa.cast(items.c.raw, sa.Text).like('%tax_rates%'))
    lines = sa.table('stripe_invoice_lines', sa.column('id'), sa.column('raw', JSONType),
                     sa.column('invoice_id'), sa.column('currency'),
                     sa.column('proration', sa.Boolean),
                     sa.column('credited'), sa.column('tax_inclusive_amount'))
    # Only proration lines have a credited flag, only lines with taxes an included tax.
    _fill_table(bind, lines, ['id', 'raw', 'invoice_id', 'currency'], _line,
                ('credited', 'tax_inclusive_amount'),
                where=sa.or_(lines.c.proration.is_(True),
                             sa.cast(lines.c.raw, sa.Text).like('%inclusive%')))
