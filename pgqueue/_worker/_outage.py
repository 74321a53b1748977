"""The failures in a row of a path the worker retries: one traceback an outage, not one a try."""

from __future__ import annotations


class Outage:
    """Counts the failures in a row of one retried path (a claim, a heartbeat, a write...).

    Its log records carry the traceback at the first failure only: a minute of a database
    outage then writes one traceback per path, and a line per retry that names the error and
    says how many failed in a row (the record's ``failures``), not the same traceback each time.
    """

    __slots__ = ("failures",)

    def __init__(self) -> None:
        self.failures = 0

    def failed(self) -> int:
        """Count one more failure; how many in a row now (1: the one to log with its traceback)."""
        self.failures += 1
        return self.failures

    def ended(self) -> int:
        """The path worked: how many failures in a row that ends (0 when there were none)."""
        failures, self.failures = self.failures, 0
        return failures
