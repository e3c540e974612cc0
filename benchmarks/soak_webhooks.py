"""Soak test of ``nrr serve``: many signed deliveries while many connections stall.

For each mode (``inprocess``: no Redis, events processed inside ``nrr serve``; ``celery``:
``REDIS_URL`` set, events processed by a Celery worker on a local redis-server):

1. a generated Stripe account on the local emulator, mirrored with ``nrr sync`` and
   recomputed (``nrr recompute``);
2. the account moves on (``apply_changes``) until it has the unique events to deliver;
3. ``nrr serve`` (the real command, a subprocess) receives the deliveries, signed, a
   quarter of them duplicates, shuffled, over ``--concurrency`` keep-alive connections,
   while ``--stalled`` other connections send half a request and then nothing;
4. once every event is processed, ``nrr report`` is compared with the report after a
   full ``nrr recompute``.

It passes when there were 0 connection errors, 0 answers 5xx, every stalled connection
was closed by the server within its read timeout (plus the once-a-second check), and the
two reports are equal. Everything listens on 127.0.0.1 only; counts and waits are
bounded (``--deadline`` per mode).

    .venv/bin/python benchmarks/soak_webhooks.py               # 10,000 deliveries, both modes
    .venv/bin/python benchmarks/soak_webhooks.py --deliveries 2000 --modes inprocess

Prints one line per figure and a JSON summary on the last line; exits 1 on a failure.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import http.client
import json
import os
import queue
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: the repository root holds tests/support
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SECRET = "whsec_soaksecret"
API_KEY = "sk_test_soakkey"
HOST = "127.0.0.1"


def sign(body: bytes) -> str:
    stamp = int(time.time())
    mac = hmac.new(SECRET.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={stamp},v1={mac}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def environment(database_url: str, emulator_url: str, redis_url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("NRR_", "STRIPE_", "REDIS_", "DATABASE_", "SLACK_"))}
    env.update({"DATABASE_URL": database_url, "STRIPE_API_KEY": API_KEY,
                "STRIPE_API_BASE": emulator_url, "STRIPE_WEBHOOK_SECRET": SECRET,
                "NRR_STRIPE_RATE_LIMIT": "1000", "NRR_STRIPE_ENDPOINT_RATE_LIMIT": "1000",
                "NRR_LOG_LEVEL": "WARNING", "NRR_RECOMPUTE_WORKERS": "0",
                "PYTHONPATH": str(ROOT)})
    if redis_url:
        env["REDIS_URL"] = redis_url
    return env


def nrr(env: dict[str, str], *args: str, timeout: float = 900) -> str:
    done = subprocess.run([str(BIN / "nrr"), *args], env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"nrr {' '.join(args)} exited {done.returncode}: "
                           f"{done.stderr[-2000:]}")
    return done.stdout


# --------------------------------------------------------------------------- deliveries


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.statuses: dict[int, int] = {}
        self.connection_errors: list[str] = []
        self.latencies: list[float] = []

    def status(self, code: int, seconds: float) -> None:
        with self.lock:
            self.statuses[code] = self.statuses.get(code, 0) + 1
            self.latencies.append(seconds)

    def error(self, text: str) -> None:
        with self.lock:
            self.connection_errors.append(text)


def sender(port: int, work: queue.Queue[bytes | None], tally: Tally, deadline: float) -> None:
    """One keep-alive connection posting bodies until the queue is empty."""
    connection = http.client.HTTPConnection(HOST, port, timeout=60)
    while time.monotonic() < deadline:
        body = work.get()
        if body is None:
            break
        started = time.monotonic()
        try:
            connection.request("POST", "/webhooks/stripe", body=body, headers={
                "Content-Type": "application/json", "Stripe-Signature": sign(body)})
            response = connection.getresponse()
            response.read()
            tally.status(response.status, time.monotonic() - started)
            if response.getheader("Connection", "").lower() == "close":
                connection.close()
        except (OSError, http.client.HTTPException) as exc:
            tally.error(f"{type(exc).__name__}: {exc}")
            connection.close()
    connection.close()


class Staller:
    """Connections that send half a request and then nothing; when did the server close?"""

    def __init__(self, port: int, count: int) -> None:
        self.port = port
        self.count = count
        self.opened: list[float] = []
        self.closed_after: list[float | None] = []
        self.refused = 0
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        for index in range(self.count):
            thread = threading.Thread(target=self._one, args=(index,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _one(self, index: int) -> None:
        try:
            conn = socket.create_connection((HOST, self.port), timeout=5)
        except OSError:
            with self._lock:
                self.refused += 1
            return
        opened = time.monotonic()
        # Half the stallers stop inside the headers, half inside the body.
        partial = (b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nContent-Le" if index % 2
                   else b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nContent-Length: 500"
                        b"\r\nContent-Type: application/json\r\n\r\n{\"id\": ")
        closed: float | None = None
        try:
            conn.sendall(partial)
            conn.settimeout(120)
            while True:
                data = conn.recv(4096)
                if not data:
                    break
            closed = time.monotonic() - opened
        except ConnectionResetError:
            closed = time.monotonic() - opened
        except OSError:
            closed = None  # our own 120 s wait ran out: the server never closed it
        finally:
            conn.close()
        with self._lock:
            self.closed_after.append(closed)

    def join(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, end - time.monotonic()))


# --------------------------------------------------------------------------- one mode


def wait_settled(database_url: str, deadline: float) -> bool:
    """Every recorded event processed and no customer waiting for a recompute."""
    from sqlalchemy import func, select

    from models.mirror import DirtyCustomer, StripeEvent
    from nrr.db import make_engine

    engine = make_engine(database_url)
    try:
        quiet_since: float | None = None
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                pending = conn.execute(select(func.count()).select_from(StripeEvent).where(
                    StripeEvent.processed_at.is_(None))).scalar_one()
                dirty = conn.execute(select(func.count()).select_from(DirtyCustomer)).scalar_one()
            if pending == 0 and dirty == 0:
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since > 3:
                    return True
            else:
                quiet_since = None
            time.sleep(0.5)
        return False
    finally:
        engine.dispose()


def report_document(env: dict[str, str], first: str, last: str) -> Any:
    document = json.loads(nrr(env, "report", "--from", first, "--to", last, "--format", "json"))
    return _without_volatile(document)


def _without_volatile(value: Any) -> Any:
    """The report without the instants it was made at (they differ between two runs)."""
    if isinstance(value, dict):
        return {k: _without_volatile(v) for k, v in value.items()
                if k not in ("generated_at", "computed_at", "recomputed_at", "as_of")}
    if isinstance(value, list):
        return [_without_volatile(v) for v in value]
    return value


def differences(left: Any, right: Any, path: str = "") -> list[str]:
    """Where two JSON documents differ (paths with both values), for the soak's verdict."""
    if isinstance(left, dict) and isinstance(right, dict):
        found = []
        for key in sorted(set(left) | set(right)):
            found += differences(left.get(key), right.get(key), f"{path}.{key}")
        return found
    if isinstance(left, list) and isinstance(right, list) and len(left) == len(right):
        found = []
        for index, (a, b) in enumerate(zip(left, right, strict=True)):
            found += differences(a, b, f"{path}[{index}]")
        return found
    return [] if left == right else [f"{path}: {left!r:.60} != {right!r:.60}"]


def run_mode(mode: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from integrations.emulator import EmulatorServer, generate_account
    from nrr.domain.months import add_months, current_month
    from tests.support.servers import start_redis, stop_process_group

    folder = workdir / mode
    folder.mkdir()
    database_url = f"sqlite:///{folder / 'soak.db'}"
    now = int(time.time())
    rng = random.Random(args.seed)
    account = generate_account(seed=args.seed, customers=args.customers, months=12,
                               now=now - 30 * 86400)
    emulator = EmulatorServer(account).start()
    redis_server = start_redis() if mode == "celery" else None
    env = environment(database_url, emulator.url, redis_server.url if redis_server else None)
    processes: list[subprocess.Popen[bytes]] = []
    result: dict[str, Any] = {"mode": mode}
    try:
        nrr(env, "db", "upgrade")
        nrr(env, "fx", "import", str(_rates_file(folder)))
        nrr(env, "sync", "--no-progress")
        nrr(env, "recompute")
        # The account moves on to now: the unique events to deliver.
        unique = args.deliveries - args.deliveries // 4
        events: list[dict[str, Any]] = []
        step = 0
        while len(events) < unique:
            step += 1
            at = min(now, account.now + 600)
            events += account.apply_changes(25, now=at)
            if step > 10_000:
                raise RuntimeError("the account produced too few events")
        events = events[:unique]
        bodies = [json.dumps(e).encode() for e in events]
        bodies += [rng.choice(bodies) for _ in range(args.deliveries - unique)]
        rng.shuffle(bodies)

        port = free_port()
        log = open(folder / "serve.log", "ab")  # noqa: SIM115 - closed with the process
        processes.append(subprocess.Popen(
            [str(BIN / "nrr"), "serve", "--host", HOST, "--port", str(port),
             "--read-timeout", str(args.read_timeout), "--threads", "8"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        if redis_server is not None:
            worker_log = open(folder / "worker.log", "ab")  # noqa: SIM115
            processes.append(subprocess.Popen(
                [str(BIN / "celery"), "-A", "worker.celery_app", "worker", "--queues", "nrr",
                 "--concurrency", "2", "--loglevel", "WARNING", "--without-gossip",
                 "--without-mingle"], env=env, cwd=str(folder), stdout=worker_log,
                stderr=subprocess.STDOUT, start_new_session=True))
        _wait_listening(port, 60)

        deadline = time.monotonic() + args.deadline
        staller = Staller(port, args.stalled)
        staller.start()
        time.sleep(1)  # the stalled connections are in place before the burst
        work: queue.Queue[bytes | None] = queue.Queue()
        for body in bodies:
            work.put(body)
        for _ in range(args.concurrency):
            work.put(None)
        tally = Tally()
        started = time.monotonic()
        senders = [threading.Thread(target=sender, args=(port, work, tally, deadline))
                   for _ in range(args.concurrency)]
        for thread in senders:
            thread.start()
        for thread in senders:
            thread.join(max(0.0, deadline - time.monotonic()))
        sent_seconds = time.monotonic() - started
        staller.join(timeout=args.read_timeout + 30)
        settled = wait_settled(database_url, deadline)
        settle_seconds = time.monotonic() - started - sent_seconds

        from zoneinfo import ZoneInfo

        last = current_month(ZoneInfo("UTC"))
        first = add_months(last, -12)
        after_webhooks = report_document(env, first, last)
        (folder / "report_after_webhooks.json").write_text(json.dumps(after_webhooks, indent=1))
        for process in processes:
            stop_process_group(process)
        processes.clear()
        if args.keep:  # the database as the webhooks left it, before the full recompute
            import sqlite3

            with sqlite3.connect(folder / "soak.db") as source, \
                    sqlite3.connect(folder / "after_webhooks.db") as copy:
                source.backup(copy)
        nrr(env, "recompute")
        after_recompute = report_document(env, first, last)
        (folder / "report_after_recompute.json").write_text(json.dumps(after_recompute, indent=1))

        closed = [c for c in staller.closed_after if c is not None]
        limit = args.read_timeout + 2.0  # the read timeout is checked once a second
        five_xx = sum(n for code, n in tally.statuses.items() if code >= 500)
        latencies = sorted(tally.latencies)
        result.update({
            "deliveries": len(bodies), "unique_events": unique,
            "duplicates": len(bodies) - unique, "concurrency": args.concurrency,
            "answered": sum(tally.statuses.values()), "statuses": tally.statuses,
            "responses_5xx": five_xx, "connection_errors": len(tally.connection_errors),
            "first_errors": tally.connection_errors[:3],
            "send_seconds": round(sent_seconds, 1),
            "deliveries_per_second": round(len(bodies) / sent_seconds, 1),
            "p95_answer_ms": round(latencies[int(0.95 * (len(latencies) - 1))] * 1000, 1)
            if latencies else None,
            "stalled": args.stalled, "stalled_refused": staller.refused,
            "stalled_closed": len(closed),
            "stalled_closed_max_seconds": round(max(closed), 2) if closed else None,
            "read_timeout_seconds": args.read_timeout, "settled": settled,
            "settled_after_last_answer_seconds": round(settle_seconds, 1),
            "reports_equal": after_webhooks == after_recompute,
            "report_differences": differences(after_webhooks, after_recompute)[:10],
        })
        result["ok"] = (result["answered"] == len(bodies) and five_xx == 0
                        and not tally.connection_errors and staller.refused == 0
                        and len(closed) == args.stalled and max(closed or [0]) <= limit
                        and settled and result["reports_equal"])
        return result
    finally:
        for process in processes:
            stop_process_group(process)
        emulator.stop()
        if redis_server is not None:
            redis_server.stop()


def _rates_file(folder: Path) -> Path:
    """The demo's exchange rates over the account's months, as a CSV for `nrr fx import`."""
    from zoneinfo import ZoneInfo

    from nrr.demo import demo_rates
    from nrr.domain.months import add_months, current_month

    last = add_months(current_month(ZoneInfo("UTC")), 1)
    rows = demo_rates(add_months(last, -40), last, "usd", ("eur", "gbp", "jpy"))
    path = folder / "rates.csv"
    path.write_text("date,currency,rate\n" + "".join(f"{d},{c},{r}\n" for d, c, r in rows))
    return path


def _wait_listening(port: int, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection((HOST, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nrr serve did not listen on {HOST}:{port} within {timeout} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=10_000,
                        help="signed deliveries per mode (a quarter are duplicates)")
    parser.add_argument("--concurrency", type=int, default=50, help="sending connections")
    parser.add_argument("--stalled", type=int, default=200, help="stalled connections")
    parser.add_argument("--customers", type=int, default=200, help="customers in the account")
    parser.add_argument("--read-timeout", type=float, default=10.0,
                        help="nrr serve --read-timeout (seconds)")
    parser.add_argument("--deadline", type=float, default=1800.0,
                        help="longest run of one mode, in seconds")
    parser.add_argument("--modes", default="inprocess,celery",
                        help="comma-separated: inprocess (no Redis), celery (Redis)")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--keep", action="store_true",
                        help="keep each mode's folder (database, logs, both reports) and "
                             "print its path")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    results = []
    with tempfile.TemporaryDirectory(prefix="nrr-soak-") as temporary:
        folder = tempfile.mkdtemp(prefix="nrr-soak-") if args.keep else temporary
        if args.keep:
            print(f"keeping {folder}")
        for mode in args.modes.split(","):
            result = run_mode(mode.strip(), args, Path(folder))
            results.append(result)
            print(f"{mode}: {result['answered']}/{result['deliveries']} answered "
                  f"({result['duplicates']} duplicates, {result['concurrency']} connections) "
                  f"in {result['send_seconds']} s, {result['deliveries_per_second']}/s, "
                  f"p95 answer {result['p95_answer_ms']} ms")
            print(f"{mode}: connection errors {result['connection_errors']}, "
                  f"5xx {result['responses_5xx']}, statuses {result['statuses']}")
            print(f"{mode}: stalled {result['stalled']}, closed by the server "
                  f"{result['stalled_closed']}, slowest close "
                  f"{result['stalled_closed_max_seconds']} s (read timeout "
                  f"{result['read_timeout_seconds']} s)")
            print(f"{mode}: every event processed and no customer dirty {result['settled']} "
                  f"(within {result['settled_after_last_answer_seconds']} s of the last answer), "
                  f"report equals the full recompute's {result['reports_equal']}")
            for difference in result["report_differences"]:
                print(f"{mode}: after the webhooks / after a full recompute: {difference}")
    print(json.dumps(results))
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
