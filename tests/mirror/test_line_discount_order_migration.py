"""Migration 0007 refills a line's discount ids in the order Stripe applied them."""

from __future__ import annotations

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from integrations.stripe_mirror import store_objects, table_for
from nrr.db import upgrade
from tests.mirror.migrations import downgrade_to
from tests.mirror.payloads import invoice, line


def _discount_ids(session: Session) -> dict[str, list[str]]:
    table = table_for("invoice_line")
    return {row.id: list(row.discount_ids)
            for row in session.execute(select(table.c.id, table.c.discount_ids))}


def test_the_migration_puts_back_stripes_order(db_engine: Engine) -> None:
    # Stripe took 10.00 off first, then 50 %: ids whose sorted order is the other one.
    stacked = line("il_stacked", amount=4500, discount_amounts=[
        {"amount": 1000, "discount": "di_zz"}, {"amount": 4500, "discount": "di_aa"},
        {"amount": 200, "discount": "di_mm"}])
    single = line("il_single", discount_amounts=[{"amount": 300, "discount": "di_zz"}])
    plain = line("il_plain")
    with Session(db_engine) as session:
        store_objects(session, "invoice", [invoice("in_1", lines=[stacked, single, plain])],
                      state_at=1)
        session.commit()
        written = _discount_ids(session)
    assert written == {"il_stacked": ["di_zz", "di_aa", "di_mm"], "il_single": ["di_zz"],
                       "il_plain": []}

    # Rows as the mirror stored them before: the ids sorted.
    downgrade_to(db_engine, "0006_mirror_record_columns")
    with Session(db_engine) as session:
        assert _discount_ids(session)["il_stacked"] == ["di_aa", "di_mm", "di_zz"]
    upgrade(db_engine)
    with Session(db_engine) as session:
        assert _discount_ids(session) == written
