"""Jobs that cannot suspend run without a task: which functions qualify, and the safety net."""

from __future__ import annotations

import asyncio
import contextvars
import functools
from typing import Any

from pgqueue._worker._eager import never_suspends, run_now


async def plain(a: int) -> int:
    return a + 1


async def raising() -> None:
    raise RuntimeError("boom")


async def awaiting() -> None:
    await asyncio.sleep(0)


async def with_async_with(lock: asyncio.Lock) -> None:
    async with lock:
        pass


async def with_async_for(items: Any) -> None:
    async for _ in items:
        pass


async def with_async_comprehension(items: Any) -> list[Any]:
    return [x async for x in items]


async def with_nested_awaiting_function() -> int:
    async def inner() -> None:
        await asyncio.sleep(0)

    return 1  # inner is never awaited here: this coroutine itself cannot suspend


def sync(a: int) -> int:
    return a


def test_only_coroutine_functions_without_suspension_points_qualify() -> None:
    """No await, async for or async with in the body; sync functions and wrappers do not."""
    assert never_suspends(plain) and never_suspends(raising)
    assert never_suspends(with_nested_awaiting_function)
    for fn in (awaiting, with_async_with, with_async_for, with_async_comprehension, sync,
               functools.partial(plain, 1), lambda: None, None):  # fmt: skip
        assert not never_suspends(fn), fn


async def test_run_now_finishes_at_once_in_the_context_given() -> None:
    """The coroutine runs to its end before run_now returns, inside the given context."""
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="outer")
    seen: list[str] = []

    async def job() -> None:
        var.set("inner")
        seen.append(var.get())

    context = contextvars.copy_context()
    run_now(job(), context)
    assert seen == ["inner"]
    assert var.get() == "outer" and context[var] == "inner"


async def test_a_coroutine_that_suspends_after_all_is_finished_by_a_task() -> None:
    """The safety net: the rest of a suspending coroutine runs, and cancellation reaches it."""
    steps: list[str] = []
    gate = asyncio.Event()

    async def job() -> None:
        steps.append("first")
        await gate.wait()
        steps.append("second")
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            steps.append("cancelled")
            raise

    run_now(job(), contextvars.copy_context())
    assert steps == ["first"]
    gate.set()
    for _ in range(5):
        await asyncio.sleep(0)
    assert steps == ["first", "second"]
    [task] = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert steps == ["first", "second", "cancelled"] and task.cancelled()
