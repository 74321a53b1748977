"""How often a path retried every second logs its failures in an outage."""

from __future__ import annotations

from pgqueue._worker._outage import Outage


def test_a_path_retried_each_second_logs_doubling_gaps_then_one_line_a_minute() -> None:
    """Of 300 failures in a row, the 1st, 2nd, 4th... 64th are logged, then every 64th; the
    end of the outage counts all 300, and the next outage starts over at its 1st."""
    outage = Outage()
    logged = []
    for _ in range(300):
        outage.failed()
        if outage.worth_a_line():
            logged.append(outage.failures)
    assert logged == [1, 2, 4, 8, 16, 32, 64, 128, 192, 256]
    assert outage.ended() == 300
    outage.failed()
    assert outage.worth_a_line()
