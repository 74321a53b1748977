"""What a worker's start imports: optional parts load when first used, not at every start."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

# Each costs a worker's every start several milliseconds (docs/performance.md, footprint)
# and is needed only by some apps: periodic tasks, process tasks, migrations, SQLAlchemy.
LAZY = ["croniter", "dateutil", "multiprocessing", "alembic", "sqlalchemy"]


def _loaded_after(code: str) -> set[str]:
    """The LAZY modules a fresh interpreter holds after running ``code``."""
    probe = textwrap.dedent(code) + textwrap.dedent(f"""
        import json, sys
        print(json.dumps(sorted(m for m in {LAZY!r} if m in sys.modules)))
    """)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.splitlines()[-1]))


def test_a_worker_of_an_app_without_periodic_or_process_tasks_imports_none_of_them() -> None:
    loaded = _loaded_after("""
        import pgqueue, pgqueue._cli
        app = pgqueue.PgQueue(dsn="postgresql://unused")

        @app.task
        async def noop() -> None: ...

        pgqueue.Worker(app)
    """)
    assert loaded == set()


def test_periodic_tasks_import_croniter_when_declared_and_still_validate() -> None:
    loaded = _loaded_after("""
        import pgqueue
        app = pgqueue.PgQueue(dsn="postgresql://unused")
        def tick() -> None: ...

        try:
            app.periodic("61 * * * *")(tick)
        except ValueError as exc:
            assert "61 * * * *" in str(exc), exc
        else:
            raise AssertionError("an invalid cron expression was accepted")
    """)
    assert "croniter" in loaded


def test_tracing_without_opentelemetry_says_what_to_install() -> None:
    """``from pgqueue import tracing`` without OpenTelemetry failed with Python's bare "No module
    named 'opentelemetry'", where the metrics name the extra to install: so does tracing."""
    probe = textwrap.dedent("""
        import sys
        sys.modules["opentelemetry"] = None  # as if not installed
        try:
            from pgqueue import tracing
        except ImportError as exc:
            print(exc)
    """)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == (
        "pgqueue.tracing needs OpenTelemetry's API: pip install 'pgqueue[otel]'"
    )
