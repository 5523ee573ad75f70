"""Real servers for the tests: PostgreSQL 15 and redis-server on free loopback ports, in temporary folders."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from accesspoint.servicekit.ports import free_port as free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def missing_postgres() -> str | None:
    """Why PostgreSQL 15 cannot be started here, or None when it can."""
    if not (PG_BIN / "initdb").exists():
        return f"PostgreSQL 15 is not installed ({PG_BIN}/initdb is missing)"
    return None


def missing_redis() -> str | None:
    """Why redis-server cannot be started here, or None when it can."""
    if shutil.which("redis-server") is None:
        return "redis-server is not installed (scripts/ensure-system-packages.sh installs it)"
    return None


def _wait_for_port(port: int, process: subprocess.Popen[bytes] | None, log: Path, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text(errors='replace')}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {seconds} s:\n{log.read_text(errors='replace')}")


@dataclass(frozen=True)
class PostgresServer:
    """A running PostgreSQL cluster with trust authentication for the ``postgres`` role."""

    port: int
    data: Path | None = None
    log: Path | None = None
    options: str = ""

    def stop(self) -> None:
        """Stop the server as an operator's restart does (fast: sessions end, their transactions roll back)."""
        assert self.data is not None, "a server these tests started"
        _pg_ctl(self.data, None, "-m", "fast", "-w", "stop")

    def start(self) -> None:
        """Start the stopped server again on the same port and data."""
        assert self.data is not None and self.log is not None, "a server these tests started"
        _pg_ctl(self.data, self.log, "-o", self.options, "-w", "start")
        _wait_for_port(self.port, None, self.log)

    def url(self, database: str = "postgres") -> str:
        """The SQLAlchemy URL of one of its databases (asyncpg driver)."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def dsn(self, database: str = "postgres") -> str:
        """The libpq/asyncpg DSN of one of its databases."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"


def _as_postgres(argv: list[str]) -> list[str]:
    # initdb and pg_ctl refuse to run as root; the Debian package brings a postgres user for them.
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", "postgres", "--", *argv]


@contextlib.contextmanager
def postgres_server(*, durable: bool = False) -> Iterator[PostgresServer]:
    """Start a throw-away PostgreSQL 15 (initdb, pg_ctl) and stop and remove it afterwards.

    ``durable``: every commit flushed to disk, as in production (benchmarks of the power-loss durability).
    """
    root = Path(tempfile.mkdtemp(prefix="ap-pg-"))
    data, log = root / "data", root / "server.log"
    try:
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(root, owner.pw_uid, owner.pw_gid)
        port = free_port()
        initdb = [str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8"]
        subprocess.run(_as_postgres([*initdb, "--locale=C", "--no-sync"]), check=True, capture_output=True)
        # Durability settings off unless asked for: the tests prove logic, not what survives a power cut.
        durability = "" if durable else " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        options = f"-p {port} -c listen_addresses=127.0.0.1 -k {root}{durability} -c max_connections=200"
        _pg_ctl(data, log, "-o", options, "-w", "start")
        try:
            _wait_for_port(port, None, log)
            yield PostgresServer(port, data, log, options)
        finally:
            _pg_ctl(data, None, "-m", "immediate", "-w", "stop", check=False)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _pg_ctl(data: Path, log: Path | None, *argv: str, check: bool = True) -> None:
    logging = ["-l", str(log)] if log is not None else []
    command = _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), *logging, *argv])
    subprocess.run(command, check=check, capture_output=True)


@dataclass
class RedisServer:
    """A running redis-server without persistence; ``stop`` and ``start`` restart it empty on the same port."""

    port: int
    argv: list[str] | None = None
    log: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        """The redis:// URL of one of its databases."""
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        """Start the server (again: with nothing in it, as after a restart without persistence)."""
        assert self.argv is not None and self.log is not None, "a server these tests started"
        self.process = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_for_port(self.port, self.process, self.log)

    def stop(self) -> None:
        """Stop the server (SIGTERM; it keeps nothing)."""
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def redis_server() -> Iterator[RedisServer]:
    """Start redis-server on a free loopback port (no RDB, no AOF) and stop it afterwards."""
    binary = shutil.which("redis-server") or "redis-server"
    root = Path(tempfile.mkdtemp(prefix="ap-redis-"))
    log = root / "server.log"
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    argv += ["--dir", str(root), "--logfile", str(log), "--daemonize", "no"]
    server = RedisServer(port, argv, log)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


async def _admin(server: PostgresServer, statement: str) -> None:
    import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information

    connection = await asyncpg.connect(server.dsn())
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def create_postgres_database(server: PostgresServer) -> str:
    """Create an empty database with a fresh name and return the name."""
    name = f"test_{uuid.uuid4().hex}"
    # FILE_COPY copies template1's few files instead of writing them through the WAL: several times faster.
    await _admin(server, f'CREATE DATABASE "{name}" STRATEGY FILE_COPY')
    return name


async def empty_postgres_database(server: PostgresServer, name: str) -> None:
    """Delete every row of every table but Alembic's, and restart the id sequences."""
    import asyncpg

    connection = await asyncpg.connect(server.dsn(name))
    try:
        tables = await connection.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
        )
        if tables:
            names = ", ".join(f'"{row["tablename"]}"' for row in tables)
            await connection.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
    finally:
        await connection.close()


async def drop_postgres_database(server: PostgresServer, name: str) -> None:
    """Drop a database, ending the sessions still connected to it."""
    await _admin(server, f'DROP DATABASE "{name}" WITH (FORCE)')


def rss_bytes(pid: int) -> int:
    """The resident set size of a process (VmRSS in /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def open_files(pid: int) -> list[str]:
    """What the process's file descriptors point at; a deleted temporary file shows as '<path> (deleted)'."""
    found = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            found.append(str(fd.readlink()))
    return found


def files_only(opened: list[str]) -> list[str]:
    """The files among open_files (sockets, pipes and event fds left out), sorted: deleted spool files stay in."""
    return sorted(path for path in opened if path.startswith("/"))
