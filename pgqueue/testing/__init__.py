"""Helpers for testing code that uses pgqueue.

- :func:`eager`: tasks run inline when enqueued, without a database.
- Manual mode (the default): jobs are enqueued for real, in your transactions; :func:`drain`
  then runs every queued job synchronously with a real worker.
- :func:`assert_enqueued` / :func:`assert_not_enqueued`: in either mode; their async twins
  :func:`aassert_enqueued` / :func:`aassert_not_enqueued` read on an async connection.
- A pytest plugin (loaded automatically) with the fixtures ``pgqueue_dsn`` (a fresh, migrated
  database per test) and ``pgqueue_conn``.
"""

from pgqueue.testing._assertions import (
    aassert_enqueued,
    aassert_not_enqueued,
    assert_enqueued,
    assert_not_enqueued,
)
from pgqueue.testing._drain import adrain, drain
from pgqueue.testing._eager import EagerJob, EagerLog, eager

__all__ = [
    "EagerJob",
    "EagerLog",
    "aassert_enqueued",
    "aassert_not_enqueued",
    "adrain",
    "assert_enqueued",
    "assert_not_enqueued",
    "drain",
    "eager",
]
