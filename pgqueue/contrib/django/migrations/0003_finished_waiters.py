"""pgqueue's schema, revision 0003: the same SQL file as the alembic revision 0003."""

from typing import Any

from django.db import migrations

from pgqueue.contrib.django._migrations import install


def install_0003(apps: Any, schema_editor: Any) -> None:
    install(schema_editor, "0003")


class Migration(migrations.Migration):  # type: ignore[misc]
    dependencies = [("pgqueue", "0002_worker_liveness")]

    operations = [migrations.RunPython(install_0003, migrations.RunPython.noop, elidable=False)]
