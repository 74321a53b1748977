"""Apps with seconds-resolution schedules, run by the acceptance tests' worker processes."""

from __future__ import annotations

import pgqueue

app = pgqueue.PgQueue()


@app.periodic("* * * * * *", name="beat")
async def beat() -> str:
    """Return the tick this job serves."""
    return str(pgqueue.current_job().meta["tick"])


catchup_app = pgqueue.PgQueue()


@catchup_app.periodic("* * * * * */2", name="catchup", catch_up=6)
async def every_two_seconds() -> str:
    """Return the tick this job serves."""
    return str(pgqueue.current_job().meta["tick"])
