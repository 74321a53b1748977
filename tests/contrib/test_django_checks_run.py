"""manage.py pgqueue worker runs Django's system checks, as the Django guide says it does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.contrib.conftest import subprocess_env

MANAGE = "tests/contrib/django_project/manage.py"

ELSEWHERE = """
from tests.contrib.django_project.settings import *  # noqa: F403

DATABASES = {**DATABASES, "replica": DATABASES["default"]}  # noqa: F405
TASKS = {**TASKS, "elsewhere": {  # noqa: F405
    "BACKEND": "pgqueue.contrib.django.PgQueueBackend", "OPTIONS": {"DATABASE": "replica"},
}}
"""


def test_manage_py_pgqueue_worker_refuses_a_backend_on_another_database(
    tasks_flavour: str, django_db: str, tmp_path: Path
) -> None:
    """docs/integrations/django.md: a backend whose DATABASE is not PGQUEUE["DATABASE"] is
    pgqueue.E001, and "manage.py pgqueue worker" refuses to go on, as manage.py check does."""
    (tmp_path / "elsewhere_settings.py").write_text(ELSEWHERE)
    env = subprocess_env(django_db)
    env["DJANGO_SETTINGS_MODULE"] = "elsewhere_settings"
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])
    check = subprocess.run(
        [sys.executable, MANAGE, "check"], env=env, capture_output=True, text=True, timeout=120
    )
    assert check.returncode != 0 and "pgqueue.E001" in check.stderr, check.stderr
    worker = subprocess.run(
        [sys.executable, MANAGE, "pgqueue", "worker", "--burst", "--poll-interval", "0.05"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert worker.returncode != 0 and "pgqueue.E001" in worker.stderr, worker.stderr[-2000:]


@pytest.mark.parametrize("option", ["--help", "-h"])
def test_manage_py_pgqueue_worker_help_needs_no_passing_checks(
    tasks_flavour: str, django_db: str, tmp_path: Path, option: str
) -> None:
    """``manage.py pgqueue worker --help`` prints the worker's options, as ``manage.py runserver
    --help`` does, even in a project whose system checks fail: help runs no worker. So does
    ``-h``, which pgqueue's command line takes for ``--help`` too (it ran the checks)."""
    (tmp_path / "elsewhere_settings.py").write_text(ELSEWHERE)
    env = subprocess_env(django_db)
    env["DJANGO_SETTINGS_MODULE"] = "elsewhere_settings"
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])
    shown = subprocess.run(
        [sys.executable, MANAGE, "pgqueue", "worker", option],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert shown.returncode == 0 and "--queues" in shown.stdout, shown.stderr[-2000:]


def test_manage_py_pgqueue_worker_reports_failed_checks_as_manage_py_does(
    tasks_flavour: str, django_db: str, tmp_path: Path
) -> None:
    """The refusal reads as manage.py's own: "SystemCheckError: System check identified ...",
    the class name once (the report already starts with it)."""
    (tmp_path / "elsewhere_settings.py").write_text(ELSEWHERE)
    env = subprocess_env(django_db)
    env["DJANGO_SETTINGS_MODULE"] = "elsewhere_settings"
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])
    refused = subprocess.run(
        [sys.executable, MANAGE, "pgqueue", "worker", "--burst"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert refused.returncode == 1, refused.stderr[-2000:]
    assert refused.stderr.startswith("SystemCheckError: System check identified"), refused.stderr


def test_manage_py_pgqueue_worker_skip_checks_starts_despite_failing_checks(
    tasks_flavour: str, django_db: str, tmp_path: Path
) -> None:
    """``--skip-checks`` (Django's flag for commands that run checks, as ``runserver
    --skip-checks``), before or after ``worker``, starts the worker without the checks:
    in a project that fails pgqueue.E001, it runs and ends its burst."""
    (tmp_path / "elsewhere_settings.py").write_text(ELSEWHERE)
    env = subprocess_env(django_db)
    env["DJANGO_SETTINGS_MODULE"] = "elsewhere_settings"
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])
    for line in (["worker", "--skip-checks"], ["--skip-checks", "worker"]):
        ran = subprocess.run(
            [sys.executable, MANAGE, "pgqueue", *line, "--burst", "--poll-interval", "0.05"],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert ran.returncode == 0, ran.stderr[-2000:]
        assert "pgqueue.E001" not in ran.stderr, ran.stderr[-2000:]
