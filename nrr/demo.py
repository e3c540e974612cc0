"""The newcomer's demo: the whole pipeline on a bundled demo Stripe account, on one machine.

``run_demo`` does, in an output folder (default ``./demo-output``):

1. generate the demo account (deterministic for the seed and the day: hundreds of
   customers, two years of history, every kind of change) and serve it with the local
   Stripe emulator on 127.0.0.1 (a free port);
2. point the settings at it (``STRIPE_API_BASE``, a test key) and at a SQLite database in
   the output folder; the user's own ``DATABASE_URL`` is never touched unless the caller
   passes it on purpose (``database_url``); ``REDIS_URL`` is ignored: the tasks run in this
   process, so no broker, worker or lock server is needed;
3. run the real pipeline through the worker's own Celery tasks, called in-process with
   ``.apply()`` (eager): sync (a full backfill from the emulator), recompute, the
   retention snapshots of every closed month, and the alerts (to ``SLACK_WEBHOOK_URL``
   when it is set, printed otherwise);
4. read the month-by-month retention series from the report service and write the
   self-contained HTML report (``report.html``).

Progress goes to the ``progress`` callback (the CLI draws it on stderr). Every step is
timed; the total is in the result.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from nrr.domain.months import add_months, current_month, month_range
from nrr.logs import redact

DEMO_SEED = 20240101
DEMO_CUSTOMERS = 300
DEMO_MONTHS = 24
DEMO_API_KEY = "sk_test_nrrdemo0000000000000000"
DATABASE_NAME = "nrr-demo.db"
REPORT_NAME = "report.html"
RATES_NAME = "rates.csv"

# The environment the demo sets for its own run; everything else (policies, time zone,
# reporting currency, SLACK_WEBHOOK_URL) is the user's.
_OVERRIDDEN = ("DATABASE_URL", "STRIPE_API_BASE", "STRIPE_API_KEY", "REDIS_URL",
               "NRR_STRIPE_RATE_LIMIT")

Progress = Callable[[str], None]


class DemoError(Exception):
    """The demo could not finish; the message says which step and why."""


@dataclass
class DemoOptions:
    output: Path = Path("demo-output")
    customers: int = DEMO_CUSTOMERS
    months: int = DEMO_MONTHS
    seed: int = DEMO_SEED
    database_url: str | None = None  # None: a fresh SQLite file in the output folder
    now: datetime | None = None  # None: today (00:00 UTC), so a day's runs agree


@dataclass
class DemoResult:
    output: Path
    report_path: Path
    database_url: str
    emulator_url: str
    first_month: str | None
    last_closed_month: str | None
    months: list[dict[str, Any]]
    snapshots: int
    alerts: dict[str, Any]
    sync: dict[str, Any]
    recompute: dict[str, Any]
    steps: dict[str, float] = field(default_factory=dict)
    elapsed_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "output": str(self.output),
            "report": str(self.report_path),
            "database_url": redact(self.database_url),
            "emulator_url": self.emulator_url,
            "first_month": self.first_month,
            "last_closed_month": self.last_closed_month,
            "months": self.months,
            "snapshots": self.snapshots,
            "alerts": self.alerts,
            "sync": self.sync,
            "recompute": self.recompute,
            "steps_seconds": {k: round(v, 3) for k, v in self.steps.items()},
            "elapsed_seconds": round(self.elapsed_seconds, 3),
            "next_steps": next_steps(self.report_path),
        }


def next_steps(report_path: Path) -> list[str]:
    return [
        f"Open the report: {report_path}",
        "Connect your own account: export STRIPE_API_KEY=rk_live_... (a restricted read-only "
        "key), then `nrr sync` and `nrr report --month YYYY-MM`",
        "Keep it current: `nrr worker` (sync every 15 minutes, nightly recompute, monthly "
        "snapshot, alerts); set SLACK_WEBHOOK_URL for alerts in Slack",
        "Production: `docker compose up -d` (Redis, PostgreSQL, worker, beat, webhooks); "
        "see README.md",
    ]


@contextmanager
def demo_environment(values: dict[str, str]) -> Iterator[None]:
    """Set the demo's variables (and drop REDIS_URL) for the run, then restore the user's."""
    from nrr.settings import get_settings

    names = set(_OVERRIDDEN) | set(values)
    saved = {name: os.environ.get(name) for name in names}
    try:
        for name in _OVERRIDDEN:
            os.environ.pop(name, None)
        os.environ.update(values)
        get_settings.cache_clear()
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        get_settings.cache_clear()


@contextmanager
def eager_worker(database_url: str, say: Progress, steps: dict[str, float]) -> Iterator[Any]:
    """The worker's Celery app in eager mode: ``.apply()`` and the follow-ups each task queues
    (sync -> recompute -> snapshot -> alerts) run in this process, with no broker. Each task's
    start and end is reported to ``say`` and its time added to ``steps``."""
    from celery.signals import task_postrun, task_prerun

    from worker import celery_app

    if celery_app.settings.database_url != database_url:
        raise DemoError("the worker was loaded before the demo set its environment; "
                        "run `nrr demo` in a fresh process")
    started: dict[str, float] = {}

    def before(task_id: str | None = None, task: Any = None, kwargs: Any = None,
               **_: Any) -> None:
        started[task_id or ""] = time.monotonic()
        shown = {k: v for k, v in (kwargs or {}).items() if k in ("month", "scope", "full")}
        say(f"task {task.name} {' '.join(f'{k}={v}' for k, v in shown.items())}".rstrip())

    def after(task_id: str | None = None, task: Any = None, state: str | None = None,
              **_: Any) -> None:
        seconds = time.monotonic() - started.pop(task_id or "", time.monotonic())
        name = task.name.removeprefix("nrr.")
        steps[name] = steps.get(name, 0.0) + seconds
        say(f"task {task.name} {str(state).lower()} in {seconds:.1f} s")

    app = celery_app.app
    saved = (app.conf.task_always_eager, app.conf.task_eager_propagates)
    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = True
    task_prerun.connect(before, weak=False)
    task_postrun.connect(after, weak=False)
    try:
        yield app
    finally:
        task_prerun.disconnect(before)
        task_postrun.disconnect(after)
        app.conf.task_always_eager, app.conf.task_eager_propagates = saved


def _fresh_sqlite(path: Path) -> str:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return f"sqlite:///{path.resolve()}"


# US dollars per unit, before the monthly drift below; the demo account bills in these.
_USD_PER_UNIT = {"usd": Decimal("1"), "eur": Decimal("1.08"), "gbp": Decimal("1.27"),
                 "jpy": Decimal("0.0068")}


def demo_rates(first_month: str, last_month: str, reporting_currency: str,
               currencies: tuple[str, ...]) -> list[tuple[str, str, str]]:
    """Monthly exchange rates (date, currency, rate) for the demo, drifting a little so the
    report shows FX impact; rate = reporting-currency units per unit, on each month's 1st."""
    reporting = reporting_currency.lower()
    if reporting not in _USD_PER_UNIT:
        raise DemoError(f"the demo account bills in {', '.join(sorted(_USD_PER_UNIT))}; "
                        f"NRR_REPORTING_CURRENCY={reporting} is not one of them")
    rows = []
    for index, month in enumerate(month_range(first_month, last_month)):
        drift = {c: Decimal(1) + Decimal(((index * (3 + n)) % 11) - 5) / Decimal(400)
                 for n, c in enumerate(sorted(_USD_PER_UNIT))}
        drift["usd"] = Decimal(1)
        for currency in currencies:
            if currency == reporting or currency not in _USD_PER_UNIT:
                continue
            rate = (_USD_PER_UNIT[currency] * drift[currency]
                    / (_USD_PER_UNIT[reporting] * drift[reporting]))
            rows.append((f"{month}-01", currency, f"{rate:.8f}"))
    return rows


def _as_dict(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    for method in ("as_dict", "model_dump", "_asdict"):
        convert = getattr(value, method, None)
        if callable(convert):
            converted = convert()
            if isinstance(converted, dict):
                return converted
    return {"result": str(value)}


def run_demo(options: DemoOptions, *, progress: Progress | None = None) -> DemoResult:
    """Run the whole pipeline on the demo account (see the module docstring)."""
    say = progress or (lambda _message: None)
    if options.customers < 1:
        raise ValueError("--customers must be at least 1")
    if not 2 <= options.months <= 120:
        raise ValueError("--months must be between 2 and 120")
    started = time.monotonic()
    steps: dict[str, float] = {}

    def step(name: str, began: float, quiet: bool = False) -> None:
        steps[name] = time.monotonic() - began
        if not quiet:
            say(f"{name} done in {steps[name]:.1f} s")

    output = options.output.expanduser()
    output.mkdir(parents=True, exist_ok=True)
    database_url = options.database_url or _fresh_sqlite(output / DATABASE_NAME)
    now = options.now or datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)

    from integrations.emulator import EmulatorServer, generate_account

    began = time.monotonic()
    say(f"generating the demo account: {options.customers} customers, {options.months} months "
        f"(seed {options.seed})")
    account = generate_account(seed=options.seed, customers=options.customers,
                               months=options.months, now=int(now.timestamp()))
    step("generate", began)

    with EmulatorServer(account, port=0) as server, demo_environment({
        "DATABASE_URL": database_url,
        "STRIPE_API_BASE": server.url,
        "STRIPE_API_KEY": DEMO_API_KEY,
        # the emulator is local: no reason to pace requests like the real API
        "NRR_STRIPE_RATE_LIMIT": "10000",
    }):
        say(f"local Stripe emulator at {server.url}; database {redact(database_url)}")
        result = _pipeline(options, database_url, server.url, now, say, step)
    result.steps.update(steps)
    result.elapsed_seconds = time.monotonic() - started
    return result


def _pipeline(options: DemoOptions, database_url: str, emulator_url: str, now: datetime,
              say: Progress, step: Callable[..., None]) -> DemoResult:
    from sqlalchemy import func, select

    from integrations.emulator.generator import CURRENCIES
    from models.derived import AlertDelivery, CustomerMonthFact, RetentionSnapshot
    from nrr.db import ready_engine, session_scope
    from nrr.html_report import render_html_report
    from nrr.services.fx import import_rates_file
    from nrr.services.report import report_series
    from nrr.settings import get_settings

    settings = get_settings()
    output = options.output.expanduser().resolve()
    began = time.monotonic()
    engine = ready_engine(database_url)
    step("migrate", began)

    began = time.monotonic()
    rates_path = output / RATES_NAME
    this_month = current_month(settings.tz, now)
    rates = demo_rates(add_months(this_month, -options.months - 2), this_month,
                       settings.reporting_currency, CURRENCIES)
    rates_path.write_text("date,currency,rate\n" + "".join(f"{d},{c},{r}\n" for d, c, r in rates),
                          encoding="utf-8")
    with session_scope(engine) as session:
        imported = import_rates_file(session, rates_path,
                                     reporting_currency=settings.reporting_currency)
    say(f"exchange rates: {imported.rows} monthly rates for {', '.join(imported.currencies)} "
        f"(as `nrr fx import {rates_path.name}` would)")
    step("rates", began)

    steps: dict[str, float] = {}
    say("alerts go to " + ("SLACK_WEBHOOK_URL" if settings.slack_webhook_url is not None
                           else "this terminal (SLACK_WEBHOOK_URL is unset)"))
    with eager_worker(database_url, say, steps):
        from worker import tasks

        # The worker's own chain: a full backfill, then the recompute of what it touched,
        # the snapshot of the last closed month and the alerts, each queued by the task before.
        sync = _as_dict(tasks.sync.apply(kwargs={"full": True}).get())
        with session_scope(engine) as session:
            first, last = session.execute(select(func.min(CustomerMonthFact.month),
                                                 func.max(CustomerMonthFact.month))).one()
        if first is None:
            raise DemoError("the pipeline stored no monthly facts: see the log above")
        last_closed = min(last, add_months(this_month, -1))
        # History: a snapshot of every earlier closed month (as the monthly beat would have
        # taken), then the alerts again so month-over-month rules see the month before.
        for month in month_range(first, add_months(last_closed, -1)):
            tasks.snapshot.apply(kwargs={"month": month, "follow_up": False}).get()
        tasks.evaluate_alerts.apply(kwargs={"month": last_closed}).get()
    for name, seconds in steps.items():
        step(name, time.monotonic() - seconds, quiet=True)  # already reported per task
    with session_scope(engine) as session:
        snapshots = session.scalar(select(func.count(func.distinct(RetentionSnapshot.month))))
        alerts = {"month": last_closed, "messages": {
            status: count for status, count in session.execute(
                select(AlertDelivery.status, func.count())
                .where(AlertDelivery.month == last_closed).group_by(AlertDelivery.status))}}
        recompute = {"customers": session.scalar(
            select(func.count(func.distinct(CustomerMonthFact.customer_id)))),
            "facts": session.scalar(select(func.count()).select_from(CustomerMonthFact))}

    began = time.monotonic()
    report_path = output / REPORT_NAME
    with session_scope(engine) as session:
        series = report_series(session, settings, first, min(last, this_month), now=now)
        page = render_html_report(session, settings, now=now, title="NRR demo report")
    report_path.write_text(page, encoding="utf-8")
    step("report", began)
    return DemoResult(
        output=output, report_path=report_path, database_url=database_url,
        emulator_url=emulator_url, first_month=first, last_closed_month=last_closed,
        months=list(series["months"]), snapshots=int(snapshots or 0), alerts=alerts, sync=sync,
        recompute=recompute)


__all__ = ["DemoError", "DemoOptions", "DemoResult", "next_steps", "run_demo"]
