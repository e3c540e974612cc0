"""Benchmark the Stripe sync against the local emulator; prints numbers, asserts nothing.

1. Backfill: list pages made vs the minimum (ceil(objects/100) per resource, plus the
   line pages of invoices whose embedded list is partial, plus the event pages: the
   single-chain minimum). Target: at most 1.05 x minimum + a small constant; no per-object
   requests. The constant is K, the number of ``created`` windows the big resources are
   listed in (each window may end with one partial page): "bound" = 1.05 x minimum + K.
2. Incremental: requests of an incremental sync after k changes, for k = 10 and 100 and
   two account sizes. Target: proportional to k, not to the account size.
3. Rate: with 50 ms injected latency and concurrent threads, the achieved request rate vs
   the configured global and per-endpoint limits. The emulator answers 429 to anything
   above the limits, so "429s: 0" means never above. Target: >= 80 % of the effective
   limit (the limiter paces at 95 % of the configured one).

Usage: .venv/bin/python benchmarks/bench_sync.py [--quick]
"""

from __future__ import annotations

import argparse
import math
import random
import tempfile
import threading
import time
from pathlib import Path

from integrations.emulator import EmulatedAccount, EmulatorServer, generate_account
from integrations.ratelimit import PACING
from integrations.stripe_client import StripeReader
from integrations.stripe_sync import EVENT_TYPE_GROUPS, backfill_windows, run_sync
from nrr.db import make_engine, upgrade
from nrr.logs import configure_logging
from nrr.settings import Settings, load_settings

KEY_TEST = "sk_test_bench123"
KEY_LIVE = "sk_live_bench123"


def fresh_db(folder: Path, name: str) -> str:
    url = f"sqlite:///{folder / name}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    return url


def settings_for(url: str, server: EmulatorServer, *, key: str = KEY_TEST,
                 rate: float | None = 100_000, endpoint_rate: float = 100_000) -> Settings:
    env = {"DATABASE_URL": url, "STRIPE_API_KEY": key, "STRIPE_API_BASE": server.url,
           "NRR_STRIPE_ENDPOINT_RATE_LIMIT": str(endpoint_rate)}
    if rate is not None:
        env["NRR_STRIPE_RATE_LIMIT"] = str(rate)
    return load_settings(env)


def minimum_pages(account: EmulatedAccount, events_after: int) -> dict[str, int]:
    out = {name: max(1, math.ceil(len(account.store(name)) / 100))
           for name in ("customers", "products", "prices", "coupons", "subscriptions",
                        "invoices")}
    out["invoice lines"] = sum(math.ceil((len(lines) - 10) / 100)
                               for lines in account.invoice_lines.values() if len(lines) > 10)
    events = [e for e in account.events.values() if e["created"] >= events_after]
    out["events"] = 1 + sum(max(1, math.ceil(sum(e["type"] in group for e in events) / 100))
                            for group in EVENT_TYPE_GROUPS)
    return out


def bench_backfill(folder: Path, sizes: list[tuple[int, int]]) -> None:
    print("\n== 1. Backfill: list pages made vs minimum ==")
    windows = backfill_windows(False)  # settings_for: a test key
    k = sum(n for n in windows.values() if n > 1)
    print(f"   created windows (test key): {windows}; K = {k}")
    print(f"{'customers':>9} {'months':>6} {'objects':>8} {'minimum':>8} {'made':>6} "
          f"{'ratio':>6} {'bound':>6} {'retrieves':>9} {'seconds':>8}")
    for customers, months in sizes:
        account = generate_account(seed=3, customers=customers, months=months)
        with EmulatorServer(account) as server:
            url = fresh_db(folder, f"backfill-{customers}.db")
            engine = make_engine(url)
            newest = max((e["created"] for e in account.events.values()), default=0)
            started = time.monotonic()
            result = run_sync(engine, settings_for(url, server))
            seconds = time.monotonic() - started
            counts = server.counts_by_endpoint()
            lists = sum(n for ep, n in counts.items() if not ep.endswith(":id"))
            retrieves = sum(n for ep, n in counts.items() if ep.endswith(":id"))
            minimum = sum(minimum_pages(account, newest).values())
            objects = sum(account.counts()[k] for k in ("customers", "products", "prices",
                                                        "coupons", "subscriptions", "invoices",
                                                        "invoice_lines"))
            print(f"{customers:>9} {months:>6} {objects:>8} {minimum:>8} {lists:>6} "
                  f"{lists / minimum:>6.3f} {1.05 * minimum + k:>6.1f} {retrieves:>9} "
                  f"{seconds:>8.2f}")
            print(f"{'':>9} by endpoint: {dict(sorted(counts.items()))}; "
                  f"events applied after the listing: {result.events_applied}")
            engine.dispose()


def bench_incremental(folder: Path, sizes: list[int], ks: list[int]) -> None:
    print("\n== 2. Incremental sync after k changes ==")
    print(f"{'customers':>9} {'k':>5} {'events':>7} {'requests':>9} {'requests/k':>10} "
          f"{'event pages':>11} {'re-fetches':>10} {'line pages':>10}")
    for customers in sizes:
        for k in ks:
            account = generate_account(seed=5, customers=customers, months=12)
            with EmulatorServer(account) as server:
                url = fresh_db(folder, f"incr-{customers}-{k}.db")
                engine = make_engine(url)
                settings = settings_for(url, server)
                run_sync(engine, settings)
                events = account.apply_changes(k, rng=random.Random(k))
                server.reset_log()
                result = run_sync(engine, settings)
                counts = server.counts_by_endpoint()
                refetches = sum(n for ep, n in counts.items() if ep.endswith(":id"))
                print(f"{customers:>9} {k:>5} {len(events):>7} {result.requests:>9} "
                      f"{result.requests / k:>10.2f} {counts.get('/v1/events', 0):>11} "
                      f"{refetches:>10} {counts.get('/v1/invoices/:id/lines', 0):>10}")
                engine.dispose()


def _hammer(reader: StripeReader, resource: str, stop: threading.Event) -> None:
    while not stop.is_set():
        # Small pages: the limiter, not parsing 100 objects per answer, is what is measured.
        reader.list_page(resource, {"limit": 1})


def bench_rate_direct(account: EmulatedAccount, seconds: float) -> None:
    print("\n== 3a. Rate with 50 ms latency, concurrent readers (wrapper + limiter) ==")
    print(f"{'case':<34} {'limit':>6} {'paced at':>8} {'achieved':>8} {'% of limit':>10} "
          f"{'peak/s':>6} {'429s':>5}")
    cases = [
        ("test key, global binds (8 thr, 4 ep)", KEY_TEST, None, 25.0,
         ["customers", "prices", "invoices", "subscriptions"] * 2, "global"),
        ("live key, global binds (12 thr, 6 ep)", KEY_LIVE, None, 25.0,
         ["customers", "prices", "invoices", "subscriptions", "products", "coupons"] * 2,
         "global"),
        ("live key, endpoint binds (4 thr, 1 ep)", KEY_LIVE, None, 25.0,
         ["invoices"] * 4, "endpoint"),
    ]
    for name, key, rate, endpoint_rate, resources, binding in cases:
        with EmulatorServer(account, latency_ms=50, api_key_prefix=key[:8]) as server:
            settings = settings_for("sqlite://", server, key=key, rate=rate,
                                    endpoint_rate=endpoint_rate)
            reader = StripeReader(settings)
            limit = reader.limiter.global_rate / PACING if binding == "global" else endpoint_rate
            server.rate_limit = int(reader.limiter.global_rate / PACING)
            server.endpoint_rate_limit = int(endpoint_rate)
            stop = threading.Event()
            threads = [threading.Thread(target=_hammer, args=(reader, r, stop), daemon=True)
                       for r in resources]
            for thread in threads:
                thread.start()
            time.sleep(1.0)  # warm up
            before = len(server.requests)
            started = time.monotonic()
            time.sleep(seconds)
            made = len(server.requests) - before
            elapsed = time.monotonic() - started
            stop.set()
            for thread in threads:
                thread.join(timeout=10)
            peaks = server.peak_rates()
            peak = peaks["global"] if binding == "global" else max(peaks["per_endpoint"].values())
            rejected = sum(1 for r in server.requests if r.status == 429)
            achieved = made / elapsed
            print(f"{name:<34} {limit:>6.0f} {limit * PACING:>8.2f} {achieved:>8.2f} "
                  f"{100 * achieved / limit:>9.1f}% {peak:>6} {rejected:>5}")
            reader.close()


def _rate_over(stamps: list[float]) -> tuple[int, float, float]:
    """(requests, seconds from the first to the last, requests per second) of some stamps."""
    if len(stamps) < 2:
        return len(stamps), 0.0, 0.0
    span = max(stamps) - min(stamps)
    # n requests spread over a span cover n - 1 intervals.
    return len(stamps), span, (len(stamps) - 1) / span if span > 0 else 0.0


def bench_rate_backfill(folder: Path, customers: int) -> None:
    print("\n== 3b. Backfill with 50 ms latency: resources in parallel threads ==")
    print("   overall: the whole run_sync (event probe, listing, storing, events) / its time;")
    print("   listing phase: the backfill's list and line requests (no /v1/events), first to")
    print("   last; per endpoint: each busy endpoint from its first to its last request.")
    print("   % are of Stripe's limits (the limiter paces at 95 % of them).")
    account = generate_account(seed=9, customers=customers, months=24)
    for key, label in ((KEY_TEST, "test key: 25/s global, 25/s per endpoint"),
                       (KEY_LIVE, "live key: 100/s global, 25/s per endpoint")):
        with EmulatorServer(account, latency_ms=50, api_key_prefix=key[:8]) as server:
            url = fresh_db(folder, f"rate-{key[3:7]}.db")
            settings = settings_for(url, server, key=key, rate=None, endpoint_rate=25)
            reader = StripeReader(settings)
            global_limit = round(reader.limiter.global_rate / PACING)
            server.rate_limit = int(global_limit)
            server.endpoint_rate_limit = 25
            engine = make_engine(url)
            started = time.monotonic()
            result = run_sync(engine, settings, client=reader)
            elapsed = time.monotonic() - started
            log = server.requests
            peaks = server.peak_rates()
            rejected = sum(1 for r in log if r.status == 429)
            windows = backfill_windows(key == KEY_LIVE)
            print(f"{label}, created windows {windows}: {result.requests} requests in "
                  f"{elapsed:.1f} s = "
                  f"{result.requests / elapsed:.1f}/s overall; peak in any second: global "
                  f"{peaks['global']}, per endpoint {max(peaks['per_endpoint'].values())}; "
                  f"429s: {rejected}")
            listing = [r.at for r in log if r.endpoint != "/v1/events"]
            n, span, rate = _rate_over(listing)
            print(f"   listing phase: {n} requests in {span:.1f} s = {rate:.1f}/s "
                  f"({100 * rate / global_limit:.1f}% of the {global_limit}/s global limit)")
            by_endpoint: dict[str, list[float]] = {}
            for r in log:
                by_endpoint.setdefault(r.endpoint, []).append(r.at)
            for endpoint, stamps in sorted(by_endpoint.items()):
                n, span, rate = _rate_over(stamps)
                if n >= 20:
                    print(f"   {endpoint}: {n} requests in {span:.1f} s = {rate:.1f}/s "
                          f"({100 * rate / 25:.1f}% of 25/s), peak "
                          f"{peaks['per_endpoint'].get(endpoint, 0)} in a second")
            if log:
                first = min(r.at for r in log)
                per_second: dict[int, int] = {}
                for r in log:
                    per_second[int(r.at - first)] = per_second.get(int(r.at - first), 0) + 1
                busiest = sorted(per_second.values(), reverse=True)[:5]
                timeline = [per_second.get(i, 0) for i in range(max(per_second) + 1)]
                print(f"   busiest seconds: {busiest}; each second: {timeline}")
            engine.dispose()
            reader.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Smaller accounts, shorter runs.")
    args = parser.parse_args()
    configure_logging("WARNING")
    import logging

    logging.getLogger("alembic").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="nrr-bench-sync-") as tmp:
        folder = Path(tmp)
        if args.quick:
            bench_backfill(folder, [(100, 12)])
            bench_incremental(folder, [50, 200], [10, 100])
            bench_rate_direct(generate_account(seed=1, customers=30, months=6), 3.0)
            bench_rate_backfill(folder, 150)
        else:
            bench_backfill(folder, [(300, 24), (1000, 24)])
            bench_incremental(folder, [100, 1000], [10, 100])
            bench_rate_direct(generate_account(seed=1, customers=60, months=6), 6.0)
            bench_rate_backfill(folder, 400)


if __name__ == "__main__":
    main()
