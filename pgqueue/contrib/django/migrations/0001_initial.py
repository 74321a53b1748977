"""pgqueue's schema, revision 0001: the same SQL files as the alembic revision 0001.

The Job model is unmanaged (a view over pgqueue's tables): Django only records its state.
"""

from typing import Any

from django.db import migrations, models

from pgqueue.contrib.django._migrations import install


def install_0001(apps: Any, schema_editor: Any) -> None:
    install(schema_editor, "0001")


class Migration(migrations.Migration):  # type: ignore[misc]
    initial = True

    dependencies: list[tuple[str, str]] = []

    operations = [
        migrations.RunPython(install_0001, migrations.RunPython.noop, elidable=False),
        migrations.CreateModel(
            name="Job",
            fields=[
                ("id", models.BigIntegerField(primary_key=True, serialize=False)),
                ("queue", models.CharField(max_length=64)),
                ("task", models.CharField(max_length=255)),
                ("args", models.JSONField()),
                ("kwargs", models.JSONField()),
                (
                    "state",
                    models.CharField(
                        choices=[
                            ("queued", "queued"),
                            ("running", "running"),
                            ("succeeded", "succeeded"),
                            ("failed", "failed"),
                            ("cancelled", "cancelled"),
                        ],
                        max_length=16,
                    ),
                ),
                ("priority", models.SmallIntegerField()),
                ("attempts", models.IntegerField()),
                ("max_attempts", models.IntegerField()),
                ("run_at", models.DateTimeField()),
                ("created_at", models.DateTimeField()),
                ("started_at", models.DateTimeField(null=True)),
                ("finished_at", models.DateTimeField(null=True)),
                ("result", models.JSONField(null=True)),
                ("last_error", models.TextField(null=True)),
                ("errors", models.JSONField()),
                ("unique_key", models.CharField(max_length=255, null=True)),
                ("meta", models.JSONField()),
                ("worker_id", models.TextField(null=True)),
                ("lease_expires_at", models.DateTimeField(null=True)),
                ("timeout", models.FloatField(null=True)),
                ("cancel_requested", models.BooleanField()),
            ],
            options={
                "verbose_name": "job",
                "db_table": 'pgqueue"."jobs',
                "ordering": ["-id"],
                "managed": False,
            },
        ),
    ]
