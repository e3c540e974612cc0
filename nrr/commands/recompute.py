"""``nrr recompute``: rebuild timeline, ledger and monthly facts from the stored Stripe data."""

from __future__ import annotations

from typing import Any

import typer

from nrr.commands.common import (
    CommandFailed,
    OutputFormat,
    UsageError,
    emit_json,
    engine,
    format_option,
    handle_errors,
    settings,
    stdout,
    under_recompute_lock,
)


@handle_errors
def recompute_command(
    customer: list[str] | None = typer.Option(
        None, "--customer", help="Recompute only this customer id (repeat for several); "
                                 "default: every customer."),
    dirty: bool = typer.Option(False, "--dirty", help="Recompute only the customers whose Stripe "
                                                      "data changed since the last recompute."),
    output: OutputFormat = format_option("table", "json", help="Output format: table or json."),
) -> None:
    """Rebuild the MRR timeline, the ledger and the monthly facts from the mirror (no Stripe call).

    Run it after changing a policy, the reporting currency, the time zone or the exchange rates.
    """
    from nrr.db import session_scope
    from nrr.services.recompute import (
        RecomputeError,
        RecomputeResult,
        recompute,
        recompute_dirty,
    )

    if dirty and customer:
        raise UsageError("use either --customer or --dirty, not both")
    cfg = settings()
    db = engine(cfg)

    def work() -> RecomputeResult:
        with session_scope(db) as session:
            if dirty:
                return recompute_dirty(session, cfg)
            return recompute(session, cfg, customer_ids=customer or None)

    try:
        result = under_recompute_lock(
            db, cfg, work, "another recompute of this account held the recompute lock for "
                           "{wait:.0f} s; nothing was changed: run `nrr recompute` again later")
    except RecomputeError as exc:
        raise CommandFailed(str(exc)) from None
    document = result.as_dict()
    document["policies"] = cfg.policies.as_dict()
    document["reporting_currency"] = cfg.reporting_currency
    document["timezone"] = cfg.timezone
    document["skips"] = [{"object_type": s.object_type, "object_id": s.object_id,
                          "reason": s.reason} for s in result.skips]
    document["left_out_customers"] = [
        {"customer_id": left.customer_id, "reason": f"{left.stage}: {left.reason}",
         "stripe_ids": left.stripe_ids} for left in result.left_out]
    if output is OutputFormat.json:
        emit_json(document)
        return
    stdout.print(recompute_summary(document), highlight=False, markup=False, soft_wrap=True)
    for skip in result.skips[:20]:
        typer.echo(f"skipped {skip.object_type} {skip.object_id}: {skip.reason}", err=True)
    for left in result.left_out[:20]:
        typer.echo(f"left out customer {left.customer_id} ({left.stage}): {left.reason}", err=True)
    if result.left_out:
        from nrr.services.isolation import left_out_note

        typer.echo(left_out_note(len(result.left_out)), err=True)


def recompute_summary(document: dict[str, Any]) -> str:
    """A few sentences instead of a 14-column table of the result."""
    from nrr.commands.tables import text

    def count(key: str) -> str:
        return f"{int(document.get(key) or 0):,}"

    lines = [
        f"Recomputed {count('customers')} customer(s) ({text(document.get('kind'))}) in "
        f"{float(document.get('seconds') or 0):,.1f} s: {count('facts')} monthly facts, "
        f"{count('ledger_entries')} ledger entries, {count('timeline_points')} timeline "
        f"points from {count('lines_read')} invoice lines.",
    ]
    if document.get("excluded"):
        lines.append(f"Excluded by policy: {count('excluded')} customer(s).")
    if document.get("skipped"):
        lines.append(f"Skipped: {count('skipped')} object(s), reasons on stderr.")
    lines.append(f"Reporting currency {str(document.get('reporting_currency')).upper()}, "
                 f"months in {document.get('timezone')}; run {text(document.get('run_id'))}.")
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    app.command("recompute", help="Rebuild timeline, ledger and monthly facts from the stored "
                                  "Stripe data (no Stripe call).")(recompute_command)
