"""Real servers for the tests, started on free loopback ports: PostgreSQL and redis-server.

PostgreSQL's ``initdb`` refuses to run as root, so as root the cluster is created by the
``postgres`` user in a folder it owns (pytest's temporary folders are closed to it).
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


def stop_process_group(process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM a process started with ``start_new_session=True`` and its children (a Celery
    worker and its pool), SIGKILL them when they are not gone after ``timeout``."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def _pg_bin(name: str) -> str:
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    if candidates:
        return candidates[0]
    found = shutil.which(name)
    if found:
        return found
    raise FileNotFoundError(f"PostgreSQL binary {name!r} not found (install postgresql-15)")


@dataclass
class PostgresServer:
    port: int
    data_dir: Path
    process: subprocess.Popen[bytes]
    run_as: list[str]

    @property
    def admin_url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
        shutil.rmtree(self.data_dir.parent, ignore_errors=True)


def start_postgres() -> PostgresServer:
    is_root = os.geteuid() == 0
    base = Path(tempfile.mkdtemp(prefix="nrr-pg-", dir="/tmp"))
    data_dir = base / "data"
    run_as: list[str] = []
    if is_root:
        run_as = ["runuser", "-u", "postgres", "--"]
        shutil.chown(base, user="postgres", group="postgres")
        os.chmod(base, 0o700)
    subprocess.run(
        [*run_as, _pg_bin("initdb"), "-D", str(data_dir), "-U", "postgres", "--auth=trust",
         "--no-sync", "-E", "UTF8", "--locale=C"],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    port = free_port()
    process = subprocess.Popen(
        [*run_as, _pg_bin("postgres"), "-D", str(data_dir), "-p", str(port),
         "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={base}",
         "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
         "-c", "max_connections=200"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    wait_for_port(port)
    # The port accepts before the server accepts queries; poll until it does.
    import psycopg

    deadline = time.monotonic() + 30
    while True:
        try:
            with psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=postgres"):
                break
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    return PostgresServer(port=port, data_dir=data_dir, process=process, run_as=run_as)


@dataclass
class RedisServer:
    port: int
    process: subprocess.Popen[bytes]
    workdir: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_redis() -> RedisServer:
    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError("redis-server not found (apt-get install -y redis-server)")
    workdir = Path(tempfile.mkdtemp(prefix="nrr-redis-"))
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    wait_for_port(port)
    return RedisServer(port=port, process=process, workdir=workdir)
