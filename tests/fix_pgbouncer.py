"""A real PgBouncer in transaction mode, started per test, whose pool hands one client's
consecutive transactions to different server connections.

PgBouncer reuses the server connection it released last (LIFO): a client alone on a quiet
pool got the same backend again and again, so session state (a prepared statement, a
session lock, a LISTEN) seemed to survive. Here the pool holds two server connections,
handed out oldest-idle first (``server_round_robin``), and both are opened before the test
starts: a client's transactions alternate between two backends, as they do on a pool shared
with busy clients.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

PGBOUNCER = shutil.which("pgbouncer") or next(
    (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.path.exists(p)), None
)
POOL_SIZE = 2


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _config(home: Path, dsn: str, port: int) -> str:
    server = conninfo_to_dict(dsn)
    return (
        "[databases]\n"
        f"* = host={server.get('host', '127.0.0.1')} port={server.get('port', 5432)}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {home / 'users.txt'}\n"
        f"pool_mode = transaction\ndefault_pool_size = {POOL_SIZE}\nserver_round_robin = 1\n"
        "max_client_conn = 50\n"
        f"logfile = {home / 'pgbouncer.log'}\n"
    )


def _fill_pool(via: str) -> None:
    """Open every server connection of the pool: clients that each hold a transaction."""
    clients = [psycopg.connect(via, prepare_threshold=None) for _ in range(POOL_SIZE)]
    try:
        for client in clients:
            client.execute("SELECT 1")  # each holds a server connection until its commit
        for client in clients:
            client.commit()  # a client gone in a transaction takes its server connection along
    finally:
        for client in clients:
            client.close()


def _wait_up(process: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + 10
    while not _accepts(port) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None and _accepts(port), process.communicate(timeout=10)[0]


@pytest.fixture
def pgbouncer(dsn: str) -> Iterator[str]:
    """A PgBouncer in transaction mode in front of the test server, its two server
    connections open; yields the DSN through it."""
    if PGBOUNCER is None:
        pytest.skip("pgbouncer is not installed (Debian: apt-get install -y pgbouncer)")
    home = Path(tempfile.mkdtemp(prefix="pgqueue-pgbouncer-"))
    home.chmod(0o777)  # pgbouncer refuses root and runs as postgres: it must read this
    port = free_port()
    user = conninfo_to_dict(dsn).get("user") or "postgres"
    (home / "users.txt").write_text(f'"{user}" ""\n')
    (home / "pgbouncer.ini").write_text(_config(home, dsn, port))
    for f in home.iterdir():
        f.chmod(0o666)
    command = [PGBOUNCER, str(home / "pgbouncer.ini")]
    if os.geteuid() == 0:
        command[1:1] = ["-u", "postgres"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait_up(process, port)
        via = make_conninfo(dsn, host="127.0.0.1", port=str(port))
        _fill_pool(via)
        assert len(sessions_left(via)) == POOL_SIZE  # transactions in turn on each backend
        yield via
    finally:
        process.terminate()
        process.communicate(timeout=10)
        shutil.rmtree(home, ignore_errors=True)


def sessions_left(via: str) -> dict[int, tuple[list[str], list[str]]]:
    """What each server connection of the pool holds in its session, read through ``via``
    (each of the pool's backends in turn): its LISTEN channels and prepared statements."""
    found = {}
    with psycopg.connect(via, autocommit=True, prepare_threshold=None) as conn:
        for _ in range(2 * POOL_SIZE):
            pid, channels, prepared = conn.execute(
                "SELECT pg_backend_pid(), ARRAY(SELECT pg_listening_channels()),"
                " ARRAY(SELECT name FROM pg_prepared_statements)"
            ).fetchone()  # type: ignore[misc]
            found[pid] = (channels, prepared)
    return found
