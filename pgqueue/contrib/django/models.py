"""A read-only model over the ``pgqueue.jobs`` view, for the admin and ORM queries."""

from __future__ import annotations

from django.db import models

STATES = [(s, s) for s in ("queued", "running", "succeeded", "failed", "cancelled")]


class Job(models.Model):  # type: ignore[misc]
    """One pgqueue job (active or finished). Unmanaged: pgqueue's migrations own the view."""

    id = models.BigIntegerField(primary_key=True)
    queue = models.CharField(max_length=64)
    task = models.CharField(max_length=255)
    args = models.JSONField()
    kwargs = models.JSONField()
    state = models.CharField(max_length=16, choices=STATES)
    priority = models.SmallIntegerField()
    attempts = models.IntegerField()
    max_attempts = models.IntegerField()
    run_at = models.DateTimeField()
    created_at = models.DateTimeField()
    started_at = models.DateTimeField(null=True)
    finished_at = models.DateTimeField(null=True)
    result = models.JSONField(null=True)
    last_error = models.TextField(null=True)
    errors = models.JSONField()
    unique_key = models.CharField(max_length=255, null=True)
    meta = models.JSONField()
    worker_id = models.TextField(null=True)
    lease_expires_at = models.DateTimeField(null=True)
    timeout = models.FloatField(null=True)
    cancel_requested = models.BooleanField()

    class Meta:
        managed = False
        db_table = 'pgqueue"."jobs'  # schema-qualified: Django quotes it as "pgqueue"."jobs"
        ordering = ["-id"]
        verbose_name = "job"

    def __str__(self) -> str:
        return f"{self.task} #{self.id} ({self.state})"
