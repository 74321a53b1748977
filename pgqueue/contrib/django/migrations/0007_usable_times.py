"""pgqueue's schema, revision 0007: the same SQL files as the alembic revision 0007."""

from typing import Any

from django.db import migrations

from pgqueue.contrib.django._migrations import install


def install_0007(apps: Any, schema_editor: Any) -> None:
    install(schema_editor, "0007")


class Migration(migrations.Migration):  # type: ignore[misc]
    dependencies = [("pgqueue", "0006_usable_values")]

    operations = [migrations.RunPython(install_0007, migrations.RunPython.noop, elidable=False)]
