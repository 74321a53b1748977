"""pgqueue's schema, revision 0006: the same SQL files as the alembic revision 0006."""

from typing import Any

from django.db import migrations

from pgqueue.contrib.django._migrations import install


def install_0006(apps: Any, schema_editor: Any) -> None:
    install(schema_editor, "0006")


class Migration(migrations.Migration):  # type: ignore[misc]
    dependencies = [("pgqueue", "0005_finished_run_at")]

    operations = [migrations.RunPython(install_0006, migrations.RunPython.noop, elidable=False)]
