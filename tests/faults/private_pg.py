"""A private PostgreSQL server for scenarios that restart the server (never the shared one)."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest


def _bindir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent  # a link's folder may lack pg_basebackup
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(candidates[-1]).parent if candidates else None


def _has_user(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateServer:
    """initdb + pg_ctl on a free port under /tmp, run as user postgres when we are root.

    ``settings`` are extra ``name=value`` server settings. Given ``primary``, the server is
    instead a standby of it (pg_basebackup -R), streaming through the new replication slot
    ``slot`` if one is named; a standby needs the primary's settings too.
    """

    def __init__(
        self, *settings: str, primary: PrivateServer | None = None, slot: str | None = None
    ) -> None:
        bindir = _bindir()
        if bindir is None:
            pytest.skip("no pg_ctl/initdb on this machine for a private server")
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="pgqueue-faults-pg-", dir="/tmp"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.settings = settings
        self.as_user: list[str] = []
        if os.geteuid() == 0:  # initdb refuses to run as root
            if not shutil.which("runuser") or not _has_user("postgres"):
                pytest.skip("running as root without a 'postgres' user for a private server")
            self.as_user = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.root, "postgres")
        if primary is None:
            self._pg("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        else:
            with_slot = ["-S", slot, "-C"] if slot else []
            self._pg("pg_basebackup", "-D", str(self.data), "-d", primary.dsn, "-R",
                     "--checkpoint=fast", "--no-sync", *with_slot)  # fmt: skip
        self.start()

    @property
    def dsn(self) -> str:
        """The admin DSN of this server."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _pg(self, tool: str, *args: str) -> None:
        subprocess.run([*self.as_user, str(self.bindir / tool), *args], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip

    def _ctl(self, action: str, *args: str) -> None:
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off -c max_connections=50")  # fmt: skip
        options += "".join(f" -c {setting}" for setting in self.settings)
        self._pg("pg_ctl", action, "-D", str(self.data), "-o", options, "-w",
                 "-l", str(self.root / "server.log"), *args)  # fmt: skip

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        self._ctl("start")

    def restart_immediate(self) -> None:
        """``pg_ctl restart -m immediate``: a crash-like stop, then wait until it accepts."""
        self._ctl("restart", "-m", "immediate")

    def stop(self) -> None:
        """``pg_ctl stop -m immediate``: the server is gone at once, as after a crash."""
        self._ctl("stop", "-m", "immediate")

    def destroy(self) -> None:
        """Stop the server, unless it was stopped, and delete its files."""
        try:
            if (self.data / "postmaster.pid").exists():
                self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
