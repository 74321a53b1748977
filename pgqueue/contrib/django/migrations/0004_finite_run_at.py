"""pgqueue's schema, revision 0004: the same SQL file as the alembic revision 0004."""

from typing import Any

from django.db import migrations

from pgqueue.contrib.django._migrations import install


def install_0004(apps: Any, schema_editor: Any) -> None:
    install(schema_editor, "0004")


class Migration(migrations.Migration):  # type: ignore[misc]
    dependencies = [("pgqueue", "0003_finished_waiters")]

    operations = [migrations.RunPython(install_0004, migrations.RunPython.noop, elidable=False)]
