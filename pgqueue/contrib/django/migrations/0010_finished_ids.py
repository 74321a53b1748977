"""pgqueue's schema, revision 0010: the same SQL files as the alembic revision 0010."""

from typing import Any

from django.db import migrations

from pgqueue.contrib.django._migrations import install


def install_0010(apps: Any, schema_editor: Any) -> None:
    install(schema_editor, "0010")


class Migration(migrations.Migration):  # type: ignore[misc]
    dependencies = [("pgqueue", "0009_tick_watermarks")]

    operations = [migrations.RunPython(install_0010, migrations.RunPython.noop, elidable=False)]
