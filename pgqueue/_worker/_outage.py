"""The failures in a row of a path the worker retries: one traceback an outage, not one a try."""

from __future__ import annotations

_EVERY = 64  # failures in a row between two lines, once past the first lines of an outage


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

    def worth_a_line(self) -> bool:
        """Whether to log the failure just counted, on a path retried every second or so (a
        heartbeat, while its worker holds jobs): the 1st, 2nd, 4th... 64th in a row, then
        every 64th, about one a minute. A line per retry was one a second for as long as the
        outage lasted; the line at its end counts them all."""
        n = self.failures
        return n % _EVERY == 0 if n > _EVERY else n & (n - 1) == 0

    def ended(self) -> int:
        """The path worked: how many failures in a row that ends (0 when there were none)."""
        failures, self.failures = self.failures, 0
        return failures
