"""pgqueue's schema, revision 0009: the same SQL files as the alembic revision 0009."""

from typing import Any

from django.db import migrations

from pgqueue.contrib.django._migrations import install


def install_0009(apps: Any, schema_editor: Any) -> None:
    install(schema_editor, "0009")


class Migration(migrations.Migration):  # type: ignore[misc]
    dependencies = [("pgqueue", "0008_racing_calls")]

    operations = [migrations.RunPython(install_0009, migrations.RunPython.noop, elidable=False)]
