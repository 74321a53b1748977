"""pgqueue's schema, revision 0005: the same SQL file as the alembic revision 0005."""

from typing import Any

from django.db import migrations

from pgqueue.contrib.django._migrations import install


def install_0005(apps: Any, schema_editor: Any) -> None:
    install(schema_editor, "0005")


class Migration(migrations.Migration):  # type: ignore[misc]
    dependencies = [("pgqueue", "0004_finite_run_at")]

    operations = [migrations.RunPython(install_0005, migrations.RunPython.noop, elidable=False)]
