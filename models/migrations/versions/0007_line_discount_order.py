"""line discount order: a line's discount ids in the order Stripe applied them

``stripe_invoice_lines.discount_ids`` held a line's discount ids sorted, which lost the order
Stripe applied them in (the line's ``discount_amounts``): the only word left on the order
of discounts removed from the subscription since. The column now keeps that order, as the
domain's record of the line reads it; existing rows are refilled here by the same reading
(``nrr.domain.stripe_shapes``). Only lines with two discounts or more can be in another
order. The downgrade sorts them again.

Revision ID: 0007_line_discount_order
Revises: 0006_mirror_record_columns
Create Date: 2026-12-07 20:00:00.000000
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import sqlalchemy as sa
from alembic import op

from models.base import JSONType
from nrr.domain import stripe_shapes
from nrr.domain.records import Skip

revision = '0007_line_discount_order'
down_revision = '0006_mirror_record_columns'
branch_labels = None
depends_on = None

_CHUNK = 5000

_LINES = sa.table('stripe_invoice_lines', sa.column('id'), sa.column('raw', JSONType),
                  sa.column('invoice_id'), sa.column('currency'),
                  sa.column('discount_ids', JSONType))


def upgrade() -> None:
    _rewrite(op.get_bind(), _stripe_order)


def downgrade() -> None:
    _rewrite(op.get_bind(), lambda row: sorted(_listed(row.discount_ids)))


def _listed(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def _stripe_order(row: Any) -> list[str] | None:
    """The line's discount ids as the mirror writes them now (None: leave the row alone)."""
    if row.raw is None:
        return None
    parsed = stripe_shapes.parse_invoice_line(row.raw, invoice_id=row.invoice_id,
                                              currency=row.currency, one_off=True)
    if parsed is None or isinstance(parsed, Skip):
        return None
    return list(parsed.discount_ids)


def _chunks(bind: sa.Connection) -> Iterator[list[Any]]:
    """Lines with two discount ids or more, in id order, a chunk at a time (keyset paging)."""
    last = ""
    several = sa.cast(_LINES.c.discount_ids, sa.Text).like('%,%')
    while True:
        rows = list(bind.execute(
            sa.select(_LINES.c.id, _LINES.c.raw, _LINES.c.invoice_id, _LINES.c.currency,
                      _LINES.c.discount_ids)
            .where(_LINES.c.id > last, several).order_by(_LINES.c.id).limit(_CHUNK)))
        if not rows:
            return
        yield rows
        last = rows[-1].id


def _rewrite(bind: sa.Connection, read: Callable[[Any], list[str] | None]) -> None:
    for rows in _chunks(bind):
        values = []
        for row in rows:
            found = read(row)
            if found is not None and found != _listed(row.discount_ids):
                values.append({'b_id': row.id, 'b_discount_ids': found})
        if values:
            bind.execute(sa.update(_LINES).where(_LINES.c.id == sa.bindparam('b_id'))
                         .values(discount_ids=sa.bindparam('b_discount_ids')), values)
