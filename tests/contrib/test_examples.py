"""The integration examples in examples/ run as documented (each in subprocesses)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.contrib.test_sqlalchemy import url
from tests.helpers import query

pytestmark = pytest.mark.slow  # subprocesses of whole examples: covered quicker elsewhere too
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(args: list[str], cwd: str, **env: str) -> str:
    """Run a documented command; fail with its stderr if it fails."""
    inherited = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    done = subprocess.run(
        [sys.executable, *args], cwd=os.path.join(ROOT, cwd), env={**inherited, **env},
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_django_example(empty_dsn: str) -> None:
    """examples/django: migrate, a committed and a rolled-back checkout, a burst worker."""
    pytest.importorskip("django", reason="Django is not installed (pgqueue[django])")
    env = {"DATABASE_URL": empty_dsn}
    run(["manage.py", "migrate", "-v0"], "examples/django", **env)
    shell = "from shop.checkout import place_order as p; p('ok@example.com')\ntry:\n" \
            "    p('no@example.com', fail=True)\nexcept RuntimeError:\n    pass"  # fmt: skip
    run(["manage.py", "shell", "-c", shell], "examples/django", **env)
    run(["manage.py", "pgqueue", "worker", "-q", "default,emails", "--burst"],
        "examples/django", **env)  # fmt: skip
    assert query(empty_dsn, "SELECT email, receipt_sent, invoiced FROM shop_order") == [
        ("ok@example.com", True, True)
    ]
    assert query(empty_dsn, "SELECT state, count(*) FROM pgqueue.jobs GROUP BY 1") == [
        ("succeeded", 2)
    ]


def test_sqlalchemy_example(empty_dsn: str) -> None:
    """examples/sqlalchemy_app.py: the committed order ships, the rolled-back one never was."""
    out = run(["sqlalchemy_app.py"], "examples", DATABASE_URL=url(empty_dsn))
    assert "orders: 1, shipped: 1" in out


@pytest.mark.parametrize("asyncio", ["no:asyncio", "asyncio"])
def test_testing_example(pg_server, asyncio: str) -> None:
    """examples/testing: eager, assert_enqueued and drain with the plugin's fixtures pass, run
    from the clone's root by a pytest without this repository's plugins, and without a warning
    whether pytest-asyncio is installed or not (it warned of its unset loop scope)."""
    plain = ["-p", asyncio, "-p", "no:timeout", "-p", "no:cacheprovider"]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", *plain, "examples/testing"], cwd=ROOT,
        env={**os.environ, "PGQUEUE_TEST_DSN": pg_server.dsn},
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.stdout.splitlines()[-1].startswith("3 passed in "), done.stdout
    assert done.stderr == ""  # pytest-asyncio's configure-time warning goes here
