"""pgqueue: a job queue for Python that needs nothing but PostgreSQL.

Jobs are rows, enqueued in the caller's own transaction; workers claim them with
``FOR UPDATE SKIP LOCKED`` and are woken by ``LISTEN/NOTIFY``.
"""

from pgqueue._app import PgQueue
from pgqueue._connections import Adapter, ConnectionKindError, register_adapter
from pgqueue._errors import (
    Cancel,
    ConfigurationError,
    DuplicateJob,
    JobStateError,
    PgQueueError,
    Retry,
    SchemaError,
    UniqueKeyContended,
    UnknownTaskError,
    WorkerFailed,
)
from pgqueue._hooks import JobEvent
from pgqueue._job import Job, QueueStats, WorkerInfo
from pgqueue._migrate import migrate, migration_sql, schema_check
from pgqueue._periodic import Periodic, ScheduleStatus, cron_list
from pgqueue._retry import RetryPolicy
from pgqueue._task import Task
from pgqueue._version import __version__
from pgqueue._worker import JobContext, Worker, current_job

__all__ = [
    "Adapter",
    "Cancel",
    "ConfigurationError",
    "ConnectionKindError",
    "DuplicateJob",
    "Job",
    "JobContext",
    "JobEvent",
    "JobStateError",
    "Periodic",
    "PgQueue",
    "PgQueueError",
    "QueueStats",
    "Retry",
    "RetryPolicy",
    "ScheduleStatus",
    "SchemaError",
    "Task",
    "UniqueKeyContended",
    "UnknownTaskError",
    "Worker",
    "WorkerFailed",
    "WorkerInfo",
    "__version__",
    "cron_list",
    "current_job",
    "migrate",
    "migration_sql",
    "register_adapter",
    "schema_check",
]
