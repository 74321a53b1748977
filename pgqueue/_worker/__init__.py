"""The worker: claims jobs, runs them, writes their outcomes."""

from pgqueue._worker._config import parse_queues
from pgqueue._worker._context import JobContext, current_job
from pgqueue._worker._worker import Service, Worker

__all__ = ["JobContext", "Service", "Worker", "current_job", "parse_queues"]
