"""pgqueue's schema, revision 0008: the same SQL files as the alembic revision 0008."""

from typing import Any

from django.db import migrations

from pgqueue.contrib.django._migrations import install


def install_0008(apps: Any, schema_editor: Any) -> None:
    install(schema_editor, "0008")


class Migration(migrations.Migration):  # type: ignore[misc]
    dependencies = [("pgqueue", "0007_usable_times")]

    operations = [migrations.RunPython(install_0008, migrations.RunPython.noop, elidable=False)]
