"""A private PostgreSQL server with the default configuration, for the bench.

A shared development server may have autovacuum off or other people's load on its WAL; the
issue's targets are for PostgreSQL's defaults, so by default the bench starts its own.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator


def _bindir() -> str | None:
    """Where initdb and pg_ctl live: pg_config's bindir, else Debian's newest version."""
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        if out.returncode == 0 and os.path.exists(os.path.join(out.stdout.strip(), "initdb")):
            return out.stdout.strip()
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return os.path.dirname(found[-1]) if found else None


def available() -> bool:
    """Whether a private server can be started here."""
    return _bindir() is not None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_owner(command: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root: run them as the postgres user then.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *command]
    return command


@contextlib.contextmanager
def private_server() -> Iterator[str]:
    """Start a throwaway server on a free port (default settings); yields its admin DSN."""
    bindir = _bindir()
    assert bindir, "no initdb found: install PostgreSQL or set PGQUEUE_BENCH_DSN"
    home = tempfile.mkdtemp(prefix="pgqueue-bench-server-")
    data, port = os.path.join(home, "data"), _free_port()
    if os.geteuid() == 0:
        shutil.chown(home, "postgres", "postgres")

    def run(*command: str) -> None:
        subprocess.run(_as_owner(list(command)), check=True, capture_output=True)

    run(os.path.join(bindir, "initdb"), "-D", data, "-U", "postgres", "-A", "trust")
    options = f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={home}"
    run(os.path.join(bindir, "pg_ctl"), "-D", data, "-o", options, "-l",
        os.path.join(home, "log"), "-w", "start")  # fmt: skip
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        run(os.path.join(bindir, "pg_ctl"), "-D", data, "-m", "fast", "-w", "stop")
        shutil.rmtree(home, ignore_errors=True)
