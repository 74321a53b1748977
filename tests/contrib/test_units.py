"""Pure pieces of the integrations: no database."""

from __future__ import annotations

import traceback

import pytest

import pgqueue
from pgqueue._embed import is_installed
from pgqueue.contrib.alembic import include_name, include_object


def _formatted(exc: BaseException) -> str:
    try:
        raise exc
    except BaseException as caught:
        return "".join(traceback.format_exception(caught))


class ShopError(Exception):
    """An exception defined outside builtins."""


def test_exception_class_path_is_read_from_the_traceback(django_setup: None) -> None:
    """Built-in exceptions get 'builtins.', others keep their module; no traceback → Exception."""
    results = pytest.importorskip("pgqueue.contrib.django._results", exc_type=ImportError)
    path = results.exception_class_path
    assert path(_formatted(KeyError("k"))) == "builtins.KeyError"
    assert path(_formatted(ShopError("a: b"))) == f"{__name__}.ShopError"
    assert path(None) == "builtins.Exception"
    assert set(results.STATUSES) == {"queued", "running", "succeeded", "failed", "cancelled"}


def test_exception_class_path_ignores_notes_and_later_lines_of_the_message(
    django_setup: None,
) -> None:
    """A multi-line message or an exception note (add_note) follows the ``module.Class:``
    line: the class is still the one raised, and chained exceptions give the last one."""
    results = pytest.importorskip("pgqueue.contrib.django._results", exc_type=ImportError)
    path = results.exception_class_path
    noted = ShopError("declined")
    noted.add_note("hint: try again later")
    assert path(_formatted(noted)) == f"{__name__}.ShopError"
    assert path(_formatted(ValueError("first line\nsecond: line"))) == "builtins.ValueError"
    try:
        try:
            raise KeyError("k")
        except KeyError as inner:
            raise ShopError("wrapped\nmore") from inner
    except ShopError as outer:
        chained = "".join(traceback.format_exception(outer))
    assert path(chained) == f"{__name__}.ShopError"


class ShopGroup(ExceptionGroup):
    """An exception group of the user's own."""


def test_exception_class_path_of_an_exception_group(django_setup: None) -> None:
    """An exception group's block is drawn indented: a group raised while handling another
    exception gave that other exception's class, and a group alone builtins.Exception."""
    results = pytest.importorskip("pgqueue.contrib.django._results", exc_type=ImportError)
    path = results.exception_class_path
    alone = ShopGroup("several", [KeyError("k"), ShopError("s")])
    assert path(_formatted(alone)) == f"{__name__}.ShopGroup"
    try:
        try:
            raise ValueError("the context")
        except ValueError:
            raise ExceptionGroup("group", [ShopError("s")]) from None
    except ExceptionGroup as group:
        assert path(_formatted(group)) == "builtins.ExceptionGroup"
    try:
        try:
            raise ValueError("the context")
        except ValueError:
            raise ShopGroup("group", [KeyError("k")])  # noqa: B904 (the chain is the point)
    except ShopGroup as group:
        assert path("".join(traceback.format_exception(group))) == f"{__name__}.ShopGroup"


def test_is_installed_compares_revisions_in_order() -> None:
    """A revision counts as installed when it, a later one, or an unknown (newer) one is there."""
    assert not is_installed(None, "0001")
    assert is_installed("0001", "0001")
    assert is_installed("9999", "0001")


def test_alembic_hooks_hide_only_the_pgqueue_schema() -> None:
    """include_name/include_object reject pgqueue's schema and its objects, nothing else."""
    assert not include_name("pgqueue", "schema", {})
    assert include_name("public", "schema", {})
    assert not include_name("jobs", "table", {"schema_name": "pgqueue"})
    assert include_name("orders", "table", {"schema_name": None})

    class Table:
        schema = "pgqueue"

    class Index:
        table = Table()

    assert not include_object(Table(), "jobs", "table", True, None)
    assert not include_object(Index(), "jobs_idx", "index", True, None)
    assert include_object(type("T", (), {"schema": None})(), "orders", "table", True, None)


def test_include_object_hides_alembic_utils_views_and_functions_of_pgqueue() -> None:
    """alembic_utils (0.8.8) hands include_object each entity it reflects (view, function,
    grant...): its schema is a name, and a grant's table a name too. pgqueue's are skipped,
    others kept. All were kept, and autogenerate proposed to drop pgqueue's views, functions
    and grants."""

    class PGGrantTable:  # what include_object reads of alembic_utils' entities
        def __init__(self, schema: str, table: str | None = None) -> None:
            self.schema, self.table = schema, table

    assert not include_object(PGGrantTable("pgqueue"), "pgqueue.jobs", "view", True, None)
    assert not include_object(PGGrantTable("pgqueue"), "pgqueue.retry", "function", True, None)
    grant = PGGrantTable("pgqueue", "periodic_watermarks")
    assert not include_object(grant, "pgqueue.periodic_watermarks", "grant_table", True, None)
    assert include_object(
        PGGrantTable("public", "orders"), "public.orders", "grant_table", True, None
    )
    assert include_object(PGGrantTable("public"), "public.v", "view", True, None)


def test_django_global_options_are_removed_before_pgqueue_sees_them(django_setup: None) -> None:
    """--settings X, --settings=X, --pythonpath X, --skip-checks go (the last is reported);
    everything else (and after --) stays."""
    from pgqueue.contrib.django.management.commands.pgqueue import without_django_options

    argv = ["--settings", "s", "worker", "--pythonpath=.", "-q", "a", "--", "--settings=x"]
    assert without_django_options(argv) == (["worker", "-q", "a", "--", "--settings=x"], False)
    argv = ["worker", "--skip-checks", "-q", "a", "--", "--skip-checks"]
    assert without_django_options(argv) == (["worker", "-q", "a", "--", "--skip-checks"], True)


@pytest.mark.parametrize(
    ("pgqueue_setting", "message"),
    [
        ("default", "PGQUEUE must be a dict"),
        ({"TASK_MODULES": "shop.jobs"}, r"PGQUEUE\['TASK_MODULES'\] must be a list.*'shop.jobs'"),
        ({"TASK_MODULES": [1]}, r"PGQUEUE\['TASK_MODULES'\] must be a list"),
        ({"AUTODISCOVER": ["tasks"]}, r"PGQUEUE\['AUTODISCOVER'\] must be a module name"),
    ],
)
def test_pgqueue_settings_of_the_wrong_shape_are_improperly_configured(
    django_setup: None, pgqueue_setting: object, message: str
) -> None:
    """A string where a list belongs (imported character by character: "No module named 's'")
    or a non-dict PGQUEUE is ImproperlyConfigured naming the setting."""
    from django.core.exceptions import ImproperlyConfigured
    from django.test import override_settings

    from pgqueue.contrib.django import _conf

    with (
        override_settings(PGQUEUE=pgqueue_setting),
        pytest.raises(ImproperlyConfigured, match=message),
    ):
        _conf.settings()


def test_the_django_app_takes_its_unknown_task_delay_from_the_pgqueue_setting(
    django_setup: None,
) -> None:
    """PGQUEUE["UNKNOWN_TASK_DELAY"] reaches the app made from the settings (60 s unless
    given); one that is not a wait is refused as PgQueue refuses it."""
    from django.test import override_settings

    from pgqueue.contrib.django import _conf

    make = _conf.get_app.__wrapped__  # not the cached app of the whole test run
    with override_settings(PGQUEUE={"UNKNOWN_TASK_DELAY": 300}):
        assert make().unknown_task_delay == 300.0
    with override_settings(PGQUEUE={}):
        assert make().unknown_task_delay == 60.0
    with (
        override_settings(PGQUEUE={"UNKNOWN_TASK_DELAY": -1}),
        pytest.raises(ValueError, match="unknown_task_delay must be a number of seconds"),
    ):
        make()


def app_set_up() -> None:
    """A process set-up of the app PGQUEUE["APP"] names."""


own_app = pgqueue.PgQueue()
own_app.process_setup(app_set_up)


def test_djangos_set_up_runs_before_the_process_set_up_of_the_app_named_by_app(
    django_setup: None,
) -> None:
    """With PGQUEUE["APP"], an app whose own set-up is registered: a child runs Django's
    set-up first (the user's may use the ORM), then the user's."""
    from django.test import override_settings

    from pgqueue.contrib.django import _conf

    with override_settings(PGQUEUE={"APP": f"{__name__}.own_app"}):
        app = _conf.get_app.__wrapped__()
    assert app is own_app
    assert app._process_setups() == (_conf._PROCESS_SETUP, (__name__, "app_set_up"))


_LOGGED = """
import logging, sys
import django
from django.conf import settings
from pgqueue._logging import configure_logging

settings.configure(DEBUG=True, **({"LOGGING": eval(sys.argv[1])} if sys.argv[1] else {}))
django.setup()
configure_logging("info", "json")  # as manage.py pgqueue worker --log-format json does
logging.getLogger("django.db").warning("a django record")
"""


def _django_lines(logging_setting: str) -> list[str]:
    """What a django.* record prints once a worker's JSON logs are set up, with DEBUG=True
    and ``logging_setting`` as LOGGING (none if empty)."""
    import subprocess
    import sys

    pytest.importorskip("django", reason="Django is not installed (pgqueue[django])")
    done = subprocess.run(
        [sys.executable, "-c", _LOGGED, logging_setting], capture_output=True, text=True,
        timeout=60, check=True,
    )  # fmt: skip
    return [line for line in done.stderr.splitlines() if "a django record" in line]


def test_the_documented_logging_setting_prints_django_records_once() -> None:
    """With DEBUG=True, Django's default console handler prints each django.* record beside
    the worker's root handler: twice, one copy text amid JSON lines. pgqueue leaves that
    handler (it cannot tell it from the user's); the LOGGING that docs/integrations/django.md
    gives routes Django's records through the root logger, which the worker's is: once."""
    from pathlib import Path

    page = (Path(__file__).parents[2] / "docs/integrations/django.md").read_text()
    documented = page[page.index("LOGGING = {") + len("LOGGING = ") :]
    documented = documented[: documented.index("\n}\n") + 2]
    assert len(_django_lines("")) == 2  # Django's default set-up: the duplicate
    [line] = _django_lines(documented)
    assert line.startswith('{"time"') and '"logger": "django.db"' in line
