"""pgqueue's schema, revision 0002: the same SQL file as the alembic revision 0002."""

from typing import Any

from django.db import migrations

from pgqueue.contrib.django._migrations import install


def install_0002(apps: Any, schema_editor: Any) -> None:
    install(schema_editor, "0002")


class Migration(migrations.Migration):  # type: ignore[misc]
    dependencies = [("pgqueue", "0001_initial")]

    operations = [migrations.RunPython(install_0002, migrations.RunPython.noop, elidable=False)]
