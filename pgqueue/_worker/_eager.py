"""Running coroutines that cannot suspend without giving each one an asyncio task.

A task per job costs more than a tiny job itself (Python 3.11 has no eager task factory): the
task object, its scheduling handle, an entry in asyncio's task registry and a loop iteration.
A coroutine function with no ``await``, ``async for`` or ``async with`` in its body can never
suspend, so the worker runs such jobs to their end at once, from one callback per batch.
"""

from __future__ import annotations

import asyncio
import contextvars
import dis
from collections.abc import Awaitable, Coroutine, Generator
from typing import Any

# The instructions through which a coroutine's own frame can suspend (await, async for,
# async with all compile to them); code without them runs to its end in one step.
_SUSPENDING_NAMES = (
    "YIELD_VALUE", "SEND", "GET_AWAITABLE", "GET_AITER", "GET_ANEXT", "BEFORE_ASYNC_WITH",
    "END_ASYNC_FOR",
)  # fmt: skip
_SUSPENDING = frozenset(dis.opmap[name] for name in _SUSPENDING_NAMES if name in dis.opmap)


def never_suspends(fn: object) -> bool:
    """Whether ``fn`` is a plain coroutine function whose body contains no suspension point."""
    code = getattr(fn, "__code__", None)
    if code is None or not asyncio.iscoroutinefunction(fn):
        return False
    return not any(op.opcode in _SUSPENDING for op in dis.get_instructions(code))


def run_now(coro: Coroutine[Any, Any, None], context: contextvars.Context) -> None:
    """Run ``coro`` in ``context`` until it ends; if it suspends after all, a task finishes it."""
    try:
        waiting = context.run(coro.send, None)
    except StopIteration:
        return
    # Not expected for the coroutines given here; never lose the rest of the job either way.
    asyncio.get_running_loop().create_task(_finish(_Resumed(coro, waiting)), context=context)


async def _finish(awaitable: Awaitable[None]) -> None:
    await awaitable


class _Resumed:
    """Awaiting it continues a coroutine that already ran its first step and yielded ``waiting``."""

    def __init__(self, coro: Coroutine[Any, Any, None], waiting: Any) -> None:
        self.coro = coro
        self.waiting = waiting

    def __await__(self) -> Generator[Any, Any, None]:
        coro, waiting = self.coro, self.waiting
        while True:
            try:
                sent = yield waiting
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # cancellation and the like go to the coroutine
                try:
                    waiting = coro.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    waiting = coro.send(sent)
                except StopIteration:
                    return
