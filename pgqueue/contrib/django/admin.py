"""A read-only admin for jobs, with retry and cancel actions."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db import transaction

from pgqueue._manage import retry_jobs
from pgqueue.contrib.django import _conf
from pgqueue.contrib.django.models import Job


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):  # type: ignore[misc]
    """Jobs are written by pgqueue only: the admin shows them and can retry or cancel."""

    list_display = ["id", "task", "queue", "state", "attempts", "run_at", "finished_at"]
    list_filter = ["state", "queue"]
    search_fields = ["task", "=id"]
    actions = ["retry", "cancel"]
    readonly_fields = [f.name for f in Job._meta.fields]

    def get_queryset(self, request: Any) -> Any:
        # pgqueue's database, which need not be "default" (PGQUEUE["DATABASE"]): without a
        # router, the model's queries went to "default", where pgqueue.jobs may not exist.
        return super().get_queryset(request).using(_conf.database_alias())

    def has_add_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    @admin.action(description="Retry the selected failed or cancelled jobs")  # type: ignore[untyped-decorator]
    def retry(self, request: Any, queryset: Any) -> None:
        """Queue failed or cancelled jobs again, with a fresh budget of attempts."""
        done = self._apply(retry_jobs, queryset)
        self.message_user(request, f"{len(done)} job(s) queued again.", messages.SUCCESS)

    @admin.action(description="Cancel the selected queued or running jobs")  # type: ignore[untyped-decorator]
    def cancel(self, request: Any, queryset: Any) -> None:
        """Cancel queued jobs; ask running ones to stop."""
        done = self._apply(_cancel_jobs, queryset)
        self.message_user(request, f"{len(done)} job(s) cancelled.", messages.SUCCESS)

    @staticmethod
    def _apply(action: Any, queryset: Any) -> list[int]:
        ids = list(queryset.values_list("id", flat=True))
        with transaction.atomic(using=_conf.database_alias()):
            done: list[int] = action(_conf.connection(), ids)
        return done


def _cancel_jobs(conn: Any, ids: list[int]) -> list[int]:
    """Cancel each job with ``PgQueue.cancel``; the ids it cancelled or asked to stop.

    In id order, as the retry action locks its jobs: in the changelist's order (newest first,
    or any column sorted) two admins cancelling overlapping selections could deadlock."""
    app = _conf.get_app()
    return [job_id for job_id in sorted(ids) if app.cancel(conn, job_id) is not None]
