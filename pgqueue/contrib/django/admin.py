"""A read-only admin for jobs, with retry and cancel actions."""

from __future__ import annotations

import functools
from typing import Any

from django.contrib import admin, messages
from django.core.paginator import Paginator
from django.db import transaction

from pgqueue._manage import retry_jobs
from pgqueue.contrib.django import _conf
from pgqueue.contrib.django.models import Job

# How many jobs of a list the changelist counts (the latest, unless sorted), and how many of
# the latest it reads the queue filter's names from:
# a page load reads this many rows at most, however long the history (invariant 10).
RECENT = 10_000


class _QueueFilter(admin.SimpleListFilter):  # type: ignore[misc]
    """The queues of the latest ``RECENT`` jobs (and the one selected): Django's filter of a
    field's values read every job's queue on each page load."""

    title = "queue"
    parameter_name = "queue__exact"  # the URLs of Django's own filter of the field still work

    def lookups(self, request: Any, model_admin: Any) -> list[tuple[str, str]]:
        latest = model_admin.get_queryset(request).order_by("-id")
        names = set(latest.values_list("queue", flat=True)[:RECENT])
        names.update(filter(None, [self.value()]))
        return [(name, name) for name in sorted(names)]

    def queryset(self, request: Any, queryset: Any) -> Any:
        return queryset.filter(queue=self.value()) if self.value() else queryset


class _RecentPaginator(Paginator):  # type: ignore[misc]
    """Pages through the first ``RECENT`` jobs of a list in its order (the latest, unless
    sorted): a ``COUNT(*)`` of them all read the whole history on each page load. A list
    that long says so, once per page shown (an action's POST counts it too, then redirects
    to the page that says it). The count leaves the order out: it does not depend on
    it, and sorted by a column without an index it sorted the whole history once more."""

    def __init__(self, *args: Any, request: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.request = request

    @functools.cached_property
    def count(self) -> int:
        counted: int = self.object_list.order_by()[: RECENT + 1].count()
        if counted > RECENT and self.request is not None and self.request.method == "GET":
            messages.info(
                self.request,
                f"Only the first {RECENT:,} of these jobs, in the list's order, are counted"
                " and paged through: filter, search or sort to reach the others.",
            )
        return min(counted, RECENT)


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):  # type: ignore[misc]
    """Jobs are written by pgqueue only: the admin shows them and can retry or cancel."""

    list_display = ["id", "task", "queue", "state", "attempts", "run_at", "finished_at"]
    list_filter = ["state", _QueueFilter]
    search_fields = ["task", "=id"]
    actions = ["retry", "cancel"]
    readonly_fields = [f.name for f in Job._meta.fields]
    show_full_result_count = False  # "N of M": M was a count of every job

    def get_paginator(self, request: Any, queryset: Any, per_page: int, *args: Any) -> Any:
        return _RecentPaginator(queryset, per_page, *args, request=request)

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
        self._apply(request, retry_jobs, queryset, "{} job(s) queued again.")

    @admin.action(description="Cancel the selected queued or running jobs")  # type: ignore[untyped-decorator]
    def cancel(self, request: Any, queryset: Any) -> None:
        """Cancel queued jobs; ask running ones to stop."""
        self._apply(request, _cancel_jobs, queryset, "{} job(s) cancelled.")

    def _apply(self, request: Any, action: Any, queryset: Any, done: str) -> None:
        """``action`` on the selected jobs in one transaction; none past ``RECENT`` of them,
        the most "select all" offers (the changelist counts no further)."""
        ids = list(queryset.values_list("id", flat=True)[: RECENT + 1])
        if len(ids) > RECENT:
            self.message_user(request, _TOO_MANY.format(RECENT), messages.ERROR)
            return
        with transaction.atomic(using=_conf.database_alias()):
            changed = action(_conf.connection(), ids)
        self.message_user(request, done.format(len(changed)), messages.SUCCESS)


_TOO_MANY = (
    "More than {:,} jobs selected: none changed. Filter the list to fewer, or retry every"
    " failed job with manage.py pgqueue jobs retry --failed (in batches)."
)


def _cancel_jobs(conn: Any, ids: list[int]) -> list[int]:
    """Cancel each job with ``PgQueue.cancel``; the ids it cancelled or asked to stop.

    In id order, as the retry action locks its jobs: in the changelist's order (newest first,
    or any column sorted) two admins cancelling overlapping selections could deadlock."""
    app = _conf.get_app()
    return [job_id for job_id in sorted(ids) if app.cancel(conn, job_id) is not None]
