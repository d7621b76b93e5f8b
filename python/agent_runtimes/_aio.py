"""Coroutines over the native awaitables.

The native side hands back ``asyncio`` futures, which need a running event loop when they are
created; wrapping their creation in a coroutine makes ``run_turn`` and ``health`` ordinary
coroutines (``asyncio.run(runtime.run_turn("hi"))`` works, and nothing starts until awaited).
"""

from __future__ import annotations

from typing import Any, Callable


async def awaitable(start: Callable[..., Any], *args: Any) -> Any:
    """Starts ``start(*args)`` on the running loop and awaits it."""
    return await start(*args)
