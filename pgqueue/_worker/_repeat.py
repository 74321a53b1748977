"""pgqueue's own optional loops (maintenance, the claim watchers, the summary, the metrics, the
scheduler): a pass that raises a bug is logged, and the loop goes on.

Such a loop used to end at its first bug, with one ``service_error`` record, and never run
again for the process's life: a worker whose skipping probe had ended went on deciding from
what it had last measured. Services given to ``Worker(services=...)`` are the user's own and
keep that behaviour; the loops a worker cannot be correct without fail it instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from pgqueue._worker._db import backoff

log = logging.getLogger("pgqueue.worker")

BUG_PAUSE_CAP = 60.0  # seconds: the longest pause after passes that raised, in a row


async def repeat(
    loop: str,
    one_pass: Callable[[], Awaitable[object]],
    action: str,
    stopping: asyncio.Event | None = None,
    log: logging.Logger = log,
) -> None:
    """Run ``one_pass()`` over and over (until ``stopping`` is set, if given). A pass that
    raises anything (a bug: each pass handles the database's errors its own way; a
    CancelledError too, unless the loop itself was cancelled) is logged to ``log``
    at ERROR as ``action``, with its traceback, and the next comes after a pause that grows
    with each such pass in a row, up to BUG_PAUSE_CAP seconds."""
    crashes = 0
    while stopping is None or not stopping.is_set():
        try:
            await one_pass()
            crashes = 0
        except (Exception, asyncio.CancelledError) as exc:
            if isinstance(exc, asyncio.CancelledError) and _cancelled():
                raise  # the loop's own cancellation (the worker stops): it ends
            crashes += 1
            pause = backoff(crashes, cap=BUG_PAUSE_CAP)
            log.error(
                "worker loop %s raised %s: %s (a bug); it runs again in %.1f s", loop,
                type(exc).__name__, exc, pause,
                exc_info=True, extra={"action": action, "loop": loop},
            )  # fmt: skip
            await asyncio.sleep(pause)


def _cancelled() -> bool:
    """Whether the running task was asked to cancel: a CancelledError raised otherwise (a pass
    awaiting a future something else cancelled) is a bug, which ended the loop unseen."""
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0
