"""The dashboard's HTTP server: read-only pages over the stored facts, behind authentication.

Routes (GET only; every page keeps the filters ``from``, ``to`` and ``segment`` in its
address, so a view can be shared):

* ``/``: the overview, the report page with drill-down links (bars, table cells,
  segments, cohort cells, customers);
* ``/movement?month=M[&movement=K][&segment=DIM:VALUE]``: the customers behind a number;
* ``/cohort?cohort=M&k=N``: a cohort's members and their MRR N months later;
* ``/customer?id=cus_...``: a customer's MRR history and the ledger's causes;
* each table page with ``&format=csv`` or ``&format=json``: the same rows;
* ``/login?token=...``: sets the token as a cookie and goes to the overview.

Authentication: ``NRR_DASHBOARD_TOKEN`` (``Authorization: Bearer``, or the cookie set by
``/login``) or ``NRR_DASHBOARD_USER`` and ``NRR_DASHBOARD_PASSWORD`` (HTTP Basic). Every
request without them gets 401. :func:`check_listen` refuses a non-loopback address when no
credentials are configured; on loopback a random token is made for the session.
"""

from __future__ import annotations

import base64
import csv
import hmac
import io
import ipaddress
import json
import re
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from http import HTTPStatus
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from nrr.html_report.collect import collect_report, report_months
from nrr.html_report.format import money, readable_causes
from nrr.html_report.page import Links, render_document
from nrr.logs import get_logger
from nrr.services.data_version import data_version
from nrr.settings import Settings

log = get_logger(__name__)

COOKIE = "nrr_dashboard"
_MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


class DashboardConfigError(ValueError):
    """Credentials or the listening address are not acceptable."""


def _loopback(host: str) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_listen(settings: Settings, host: str) -> str | None:
    """The session token to print when none is configured (loopback only), else None."""
    has_token = settings.dashboard_token is not None
    has_user = settings.dashboard_user is not None and settings.dashboard_password is not None
    if (settings.dashboard_user is None) != (settings.dashboard_password is None):
        raise DashboardConfigError("set both NRR_DASHBOARD_USER and NRR_DASHBOARD_PASSWORD")
    if has_token or has_user:
        return None
    if not _loopback(host):
        raise DashboardConfigError(
            f"refusing to serve the dashboard on {host} without authentication: set "
            "NRR_DASHBOARD_TOKEN, or NRR_DASHBOARD_USER and NRR_DASHBOARD_PASSWORD")
    return secrets.token_urlsafe(24)


class Credentials:
    def __init__(self, settings: Settings, session_token: str | None) -> None:
        token = settings.dashboard_token.get_secret_value() if settings.dashboard_token else None
        self.token = token or session_token
        self.user = settings.dashboard_user
        self.password = (settings.dashboard_password.get_secret_value()
                         if settings.dashboard_password else None)

    def accepts(self, headers: Any) -> bool:
        header = headers.get("Authorization") or ""
        if self.token:
            if header.startswith("Bearer ") and hmac.compare_digest(
                    header[7:].strip().encode(), self.token.encode()):
                return True
            cookie = SimpleCookie(headers.get("Cookie") or "")
            if COOKIE in cookie and hmac.compare_digest(cookie[COOKIE].value.encode(),
                                                        self.token.encode()):
                return True
        if self.user is not None and self.password is not None and header.startswith("Basic "):
            try:
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return False
            return (hmac.compare_digest(user.encode(), self.user.encode())
                    and hmac.compare_digest(password.encode(), self.password.encode()))
        return False


class BadRequest(ValueError):
    pass


class Filters:
    """``from``, ``to`` and ``segment`` (``DIMENSION:VALUE``) of the address."""

    def __init__(self, query: dict[str, list[str]]) -> None:
        self.first = _month_arg(query, "from")
        self.last = _month_arg(query, "to")
        raw = (query.get("segment") or [""])[0].strip()
        self.segment: tuple[str, str] | None = None
        if raw:
            from nrr.services.report import InvalidDimension, parse_dimension

            dimension, sep, value = raw.rpartition(":")
            if not sep or not dimension:
                raise BadRequest("segment is DIMENSION:VALUE, for example plan:price_123")
            try:
                self.segment = (str(parse_dimension(dimension)), value)
            except InvalidDimension as exc:
                raise BadRequest(str(exc)) from None

    def params(self) -> dict[str, str]:
        found = {}
        if self.first:
            found["from"] = self.first
        if self.last:
            found["to"] = self.last
        if self.segment:
            found["segment"] = f"{self.segment[0]}:{self.segment[1]}"
        return found

    def form(self) -> dict[str, str]:
        params = self.params()
        return {"from": params.get("from", ""), "to": params.get("to", ""),
                "segment": params.get("segment", "")}


def _month_arg(query: dict[str, list[str]], name: str) -> str | None:
    value = (query.get(name) or [""])[0].strip()
    if not value:
        return None
    if not _MONTH.match(value):
        raise BadRequest(f"{name} must be a month YYYY-MM, not {value!r}")
    return value


class DashboardLinks(Links):
    def __init__(self, filters: Filters) -> None:
        self.filters = filters

    def _url(self, path: str, **params: Any) -> str:
        merged = {**self.filters.params(), **{k: str(v) for k, v in params.items()
                                               if v is not None}}
        return path + ("?" + urlencode(merged) if merged else "")

    def movement(self, month: str, movement: str | None, dimension: str | None = None,
                 segment: str | None = None) -> str | None:
        params: dict[str, Any] = {"month": month, "movement": movement}
        if dimension is not None and segment is not None:
            params["segment"] = f"{dimension}:{segment}"
        return self._url("/movement", **params)

    def cohort(self, cohort: str, months_since: int) -> str | None:
        return self._url("/cohort", cohort=cohort, k=months_since)

    def customer(self, customer_id: str) -> str | None:
        return self._url("/customer", id=customer_id)

    def home(self) -> str:
        return self._url("/")


class Dashboard:
    """Renders the pages; the overview is kept per filters and data version
    (``nrr.services.data_version``: every recompute, full, incremental or sharded, and
    every writer of the segment totals changes it), and served only for the version it was
    made from."""

    def __init__(self, settings: Settings, engine: Engine, *, cache_size: int = 32) -> None:
        self.settings = settings
        self.engine = engine
        self._cache: OrderedDict[tuple[Any, ...], tuple[tuple[Any, ...], str]] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    # ----------------------------------------------------------------- pages

    def overview(self, filters: Filters, now: datetime | None = None) -> str:
        """The overview page: the kept page when the data did not change since it was made,
        else a fresh one (after a recompute the first view makes it: a kept page of older
        data is never served)."""
        now = now or datetime.now(UTC)
        key = (filters.first, filters.last, filters.segment, now.strftime("%Y-%m"))
        with Session(self.engine) as session:
            version = data_version(session)
        with self._lock:
            kept = self._cache.get(key)
            if kept is not None and kept[0] == version:
                self._cache.move_to_end(key)
                return kept[1]
        return self._make(filters, now, key)

    def warm(self) -> None:
        """Make the unfiltered overview in the background (called when the server starts)."""
        threading.Thread(target=self._warm, daemon=True).start()

    def _warm(self) -> None:
        try:
            self.overview(Filters({}))
        except Exception:  # noqa: BLE001 - the first view tries again and shows the error
            log.exception("dashboard.warm_failed")

    def _make(self, filters: Filters, now: datetime, key: tuple[Any, ...]) -> str:
        with Session(self.engine) as session:
            # Read first, in the session the numbers are read in: the page is labelled with
            # a version no newer than its data (a write in between makes one more page).
            version = data_version(session)
            months = self._months(session, filters, now)
            doc = collect_report(session, self.settings, months=months, now=now,
                                 segment=filters.segment)
        page = render_document(doc, title=self._title(filters), links=DashboardLinks(filters),
                               template="dashboard.html", **self._frame(filters, [], "/"),
                               body="overview")
        with self._lock:
            self._cache[key] = (version, page)
            self._cache.move_to_end(key)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return page

    def movement(self, filters: Filters, query: dict[str, list[str]],
                 limit: int | None = None) -> dict[str, Any]:
        from nrr.dashboard.queries import movement_customers

        month = _month_arg(query, "month")
        if month is None:
            raise BadRequest("month=YYYY-MM is required")
        movement = (query.get("movement") or [""])[0] or None
        dimension, segment = filters.segment if filters.segment else (None, None)
        try:
            with Session(self.engine) as session:
                return movement_customers(session, self.settings, month, movement,
                                          dimension=dimension, segment=segment, limit=limit)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None

    def cohort(self, query: dict[str, list[str]]) -> dict[str, Any]:
        from nrr.dashboard.queries import cohort_customers

        cohort = _month_arg(query, "cohort")
        k = (query.get("k") or ["0"])[0]
        if cohort is None or not k.isdigit():
            raise BadRequest("cohort=YYYY-MM and k=N (months since) are required")
        with Session(self.engine) as session:
            return cohort_customers(session, self.settings, cohort, int(k))

    def customer(self, query: dict[str, list[str]]) -> dict[str, Any]:
        from nrr.services.report import CustomerNotFound, customer_detail

        customer_id = (query.get("id") or [""])[0]
        if not customer_id:
            raise BadRequest("id=cus_... is required")
        try:
            with Session(self.engine) as session:
                return customer_detail(session, self.settings, customer_id)
        except CustomerNotFound as exc:
            raise LookupError(str(exc)) from None

    # ----------------------------------------------------------------- helpers

    def _months(self, session: Session, filters: Filters, now: datetime) -> list[str]:
        from nrr.domain.months import month_range

        months = report_months(session, self.settings, now=now)
        if not months:
            return []
        first = filters.first or months[0]
        last = filters.last or months[-1]
        if first > last:
            raise BadRequest(f"from {first} is after to {last}")
        return month_range(first, last)

    def _title(self, filters: Filters) -> str:
        title = "Net Revenue Retention"
        if filters.segment:
            title += f" · {filters.segment[0]} {filters.segment[1]}"
        return title

    def _frame(self, filters: Filters, crumbs: list[dict[str, Any]], action: str,
               hidden: list[tuple[str, str]] | None = None) -> dict[str, Any]:
        return {"home": DashboardLinks(filters).home(), "crumbs": crumbs,
                "filters": filters.form(), "form_action": action, "hidden": hidden or []}

    def table_page(self, filters: Filters, *, heading: str, section_id: str,
                   summary: list[str], tables: list[dict[str, Any]], path: str,
                   query: dict[str, list[str]], crumbs: list[dict[str, Any]]) -> str:
        own = {k: v[0] for k, v in query.items() if k not in ("from", "to", "segment", "format")}
        base = {**own, **filters.params()}
        doc = {"currency": self.settings.reporting_currency, "timezone": self.settings.timezone,
               "generated_at": datetime.now(UTC).isoformat(timespec="seconds")}
        return render_document(
            doc, title=heading, template="dashboard.html", body="table",
            heading=heading, section_id=section_id, summary=summary, tables=tables,
            csv_link=f"{path}?{urlencode({**base, 'format': 'csv'})}",
            json_link=f"{path}?{urlencode({**base, 'format': 'json'})}",
            **self._frame(filters, crumbs, path, sorted(own.items())))


def to_csv(rows: list[dict[str, Any]], columns: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in columns})
    return buffer.getvalue()


PAGE_ROWS = 200
MOVEMENT_COLUMNS = ["customer_id", "name", "email", "movement", "amount", "opening_mrr",
                    "closing_mrr", "plan", "country"]
COHORT_COLUMNS = ["customer_id", "name", "email", "starting_mrr", "mrr"]
HISTORY_COLUMNS = ["month", "opening_mrr", "closing_mrr", "movement", "amount", "fx_impact"]


def make_handler(dashboard: Dashboard, credentials: Credentials) -> type[BaseHTTPRequestHandler]:
    settings = dashboard.settings
    cur = settings.reporting_currency
    dash_url = settings.alerts.stripe_dashboard_url.rstrip("/")
    stripe_url = f"{dash_url}{'' if settings.stripe_livemode else '/test'}/"

    class Handler(BaseHTTPRequestHandler):
        server_version = "nrr-dashboard"
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
            log.info("dashboard.request", line=format % args)

        def _send(self, status: int, body: str, content_type: str = "text/html; charset=utf-8",
                  headers: dict[str, str] | None = None) -> None:
            data = body.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Content-Security-Policy",
                             "default-src 'none'; style-src 'unsafe-inline'; "
                             "script-src 'unsafe-inline'; img-src data:; form-action 'self'")
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def do_HEAD(self) -> None:  # noqa: N802 - stdlib name
            self.do_GET()

        def do_GET(self) -> None:  # noqa: N802 - stdlib name
            url = urlparse(self.path)
            query = parse_qs(url.query)
            if url.path == "/login":
                token = (query.get("token") or [""])[0]
                if credentials.token and hmac.compare_digest(token.encode(),
                                                             credentials.token.encode()):
                    self._send(HTTPStatus.SEE_OTHER, "", headers={
                        "Location": "/",
                        "Set-Cookie": f"{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/"})
                    return
                self._send(HTTPStatus.UNAUTHORIZED, "wrong token\n", "text/plain")
                return
            if not credentials.accepts(self.headers):
                self._send(HTTPStatus.UNAUTHORIZED, "authentication required\n", "text/plain",
                           {"WWW-Authenticate": 'Basic realm="nrr dashboard", charset="UTF-8"'})
                return
            try:
                self._route(url.path, query)
            except BadRequest as exc:
                self._send(HTTPStatus.BAD_REQUEST, f"{exc}\n", "text/plain; charset=utf-8")
            except LookupError as exc:
                self._send(HTTPStatus.NOT_FOUND, f"{exc}\n", "text/plain; charset=utf-8")
            except Exception as exc:  # noqa: BLE001 - one line, no trace to the browser
                log.exception("dashboard.failed", path=url.path)
                self._send(HTTPStatus.INTERNAL_SERVER_ERROR,
                           f"failed: {type(exc).__name__}\n", "text/plain")

        def _route(self, path: str, query: dict[str, list[str]]) -> None:
            filters = Filters(query)
            fmt = (query.get("format") or ["html"])[0]
            if path == "/":
                self._send(HTTPStatus.OK, dashboard.overview(filters))
                return
            pages: dict[str, Callable[[], tuple[dict[str, Any], list[str], Callable[..., str]]]] = {
                # The page lists the largest PAGE_ROWS; CSV and JSON hold every customer.
                "/movement": lambda: (dashboard.movement(
                    filters, query, None if fmt in ("csv", "json") else PAGE_ROWS),
                    MOVEMENT_COLUMNS, self._movement_page),
                "/cohort": lambda: (dashboard.cohort(query), COHORT_COLUMNS, self._cohort_page),
                "/customer": lambda: (dashboard.customer(query), HISTORY_COLUMNS,
                                      self._customer_page),
            }
            if path not in pages:
                raise LookupError(f"no page {path}")
            document, columns, page = pages[path]()
            if fmt == "json":
                self._send(HTTPStatus.OK, json.dumps(document, indent=2, default=str) + "\n",
                           "application/json")
            elif fmt == "csv":
                rows = document.get("rows", document.get("history", []))
                name = path.strip("/") or "table"
                self._send(HTTPStatus.OK, to_csv(rows, columns), "text/csv; charset=utf-8",
                           {"Content-Disposition": f'attachment; filename="{name}.csv"'})
            else:
                self._send(HTTPStatus.OK, page(filters, document, query))

        def _customer_cell(self, filters: Filters, row: dict[str, Any]) -> dict[str, Any]:
            return {"link": DashboardLinks(filters).customer(row["customer_id"]),
                    "text": row["customer_id"]}

        def _movement_page(self, filters: Filters, doc: dict[str, Any],
                           query: dict[str, list[str]]) -> str:
            what = doc["movement"] or "every movement"
            where = f" in {doc['dimension']} {doc['segment']}" if doc.get("dimension") else ""
            shown = len(doc["rows"])
            summary = [f"{doc['customers']:,} customer(s), {money(doc['total'], cur)} "
                       f"{cur.upper()} in all" + (f"; the largest {shown:,} listed"
                                                  if shown < doc["customers"] else "")
                       + (" (the CSV and JSON have them all)" if shown < doc["customers"]
                          else "")]
            rows = [[self._customer_cell(filters, r), r["name"] or r["email"] or "",
                     {"movement": r["movement"]}, money(r["amount"], cur),
                     money(r["opening_mrr"], cur), money(r["closing_mrr"], cur),
                     r["plan"] or "", r["country"] or ""] for r in doc["rows"]]
            heading = f"{what.capitalize()}, {doc['month']}{where}"
            return dashboard.table_page(
                filters, heading=heading, section_id="drill", summary=summary,
                tables=[{"heading": "", "name": "customers", "headers": [
                    "customer", "name", "movement", f"amount ({cur.upper()})", "opening",
                    "closing", "plan", "country"], "rows": rows}],
                path="/movement", query=query, crumbs=[{"text": heading}])

        def _cohort_page(self, filters: Filters, doc: dict[str, Any],
                         query: dict[str, list[str]]) -> str:
            rows = [[self._customer_cell(filters, r), r["name"] or r["email"] or "",
                     money(r["starting_mrr"], cur), money(r["mrr"], cur)] for r in doc["rows"]]
            heading = (f"Cohort {doc['cohort']}, month {doc['months_since']} "
                       f"({doc['month']})")
            return dashboard.table_page(
                filters, heading=heading, section_id="cohort",
                summary=[f"{len(doc['rows']):,} customer(s) first paid in {doc['cohort']}."],
                tables=[{"heading": "", "name": "cohort", "headers": [
                    "customer", "name", f"starting MRR ({cur.upper()})",
                    f"MRR in {doc['month']}"], "rows": rows}],
                path="/cohort", query=query, crumbs=[{"text": heading}])

        def _customer_page(self, filters: Filters, doc: dict[str, Any],
                           query: dict[str, list[str]]) -> str:
            links = DashboardLinks(filters)
            history = [[h["month"], money(h["opening_mrr"], cur), money(h["closing_mrr"], cur),
                        {"movement": h["movement"] or ""},
                        {"link": links.movement(h["month"], h["movement"]),
                         "text": money(h["amount"], cur)} if h["movement"] else "",
                        money(h["fx_impact"], cur)] for h in doc["history"]]
            causes = [[str(e.get("effective_at") or "")[:10],
                       {"causes": readable_causes([e], stripe_url)}]
                      for e in doc["ledger"] if e.get("mrr_before") != e.get("mrr_after")]
            who = ", ".join(str(v) for v in (doc.get("name"), doc.get("email"),
                                             doc.get("country")) if v)
            summary = [f"{who or 'not in the mirror'}; first paid "
                       f"{doc.get('first_paid_month') or 'never'}; MRR now "
                       f"{money(doc.get('current_mrr') or 0, cur)} {cur.upper()}."]
            metadata = next((h["segment"].get("metadata") for h in reversed(doc["history"])
                             if (h.get("segment") or {}).get("metadata")), None)
            if metadata:
                summary.append("metadata: " + ", ".join(f"{k}={v}" for k, v in
                                                       sorted(metadata.items())))
            heading = f"Customer {doc['customer_id']}"
            return dashboard.table_page(
                filters, heading=heading, section_id="customer", summary=summary,
                tables=[
                    {"heading": f"MRR history ({cur.upper()})", "name": "history",
                     "headers": ["month", "opening", "closing", "movement", "amount",
                                 "fx impact"], "rows": history},
                    {"heading": "Ledger causes (each in its subscription's currency)",
                     "name": "ledger", "headers": ["day", "cause"], "rows": causes},
                    {"heading": "", "name": "stripe", "headers": ["Stripe"], "rows": [[{
                        "link": f"{stripe_url}customers/{doc['customer_id']}",
                        "text": "open in the Stripe dashboard"}]]},
                ],
                path="/customer", query=query, crumbs=[{"text": heading}])

    return Handler


def make_server(settings: Settings, engine: Engine, host: str, port: int, *,
                session_token: str | None = None) -> tuple[ThreadingHTTPServer, Dashboard]:
    dashboard = Dashboard(settings, engine)
    handler = make_handler(dashboard, Credentials(settings, session_token))
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server, dashboard
