"""Cancellation from asyncio, timeouts and errors."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

import agent_runtimes as ar


@pytest.fixture()
def fresh(plugin_dir: Path) -> ar.Runtimes:
    """A registry of its own, so that its turn counts are this test's."""
    return ar.Runtimes(plugin_dirs=[str(plugin_dir)], standard_dirs=False)


def wait_for(predicate, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def test_cancelling_the_task_cancels_the_turn_in_the_plugin(fresh: ar.Runtimes) -> None:
    slow = fresh.new_instance("echo", {"delay_ms": 30_000})

    async def main() -> None:
        task = asyncio.ensure_future(slow.run_turn("never answered"))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    started = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - started < 5
    assert wait_for(lambda: fresh.turn_counts()["cancelled"] == 1), fresh.turn_counts()
    assert fresh.wait_idle(5.0)


def test_wait_for_timeout_cancels_the_turn(fresh: ar.Runtimes) -> None:
    slow = fresh.new_instance("echo", {"delay_ms": 30_000})

    async def main() -> None:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(slow.run_turn("x"), 0.2)

    asyncio.run(main())
    assert wait_for(lambda: fresh.turn_counts()["cancelled"] == 1), fresh.turn_counts()


def test_closing_the_stream_cancels_the_turn(fresh: ar.Runtimes) -> None:
    slow = fresh.new_instance("echo", {"delay_ms": 200})

    async def main() -> str:
        stream = slow.stream_turn("one two three four five six seven eight nine ten")
        first = await stream.__anext__()
        await stream.aclose()
        with pytest.raises(StopAsyncIteration):
            await stream.__anext__()
        assert stream.output is None
        return first.content

    assert asyncio.run(main()) == "one "
    assert wait_for(lambda: fresh.turn_counts()["cancelled"] == 1), fresh.turn_counts()


def test_cancelling_the_task_iterating_a_stream_cancels_the_turn(fresh: ar.Runtimes) -> None:
    slow = fresh.new_instance("echo", {"delay_ms": 10_000})

    async def main() -> None:
        async def consume() -> None:
            async for _ in slow.stream_turn("a b c"):
                pass

        task = asyncio.ensure_future(consume())
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert wait_for(lambda: fresh.turn_counts()["cancelled"] == 1), fresh.turn_counts()


def test_cancel_by_execution_id_raises_cancelled(fresh: ar.Runtimes) -> None:
    slow = fresh.new_instance("echo", {"delay_ms": 10_000})

    async def main() -> None:
        stream = slow.stream_turn("a b")
        assert slow.cancel(stream.execution_id)
        with pytest.raises(ar.Cancelled) as raised:
            async for _ in stream:
                pass
        assert raised.value.kind == "cancelled"

    asyncio.run(main())


def test_a_timeout_raises_timeout(fresh: ar.Runtimes) -> None:
    slow = fresh.new_instance("echo", {"delay_ms": 10_000})
    with pytest.raises(ar.Timeout) as raised:
        asyncio.run(slow.run_turn("x", timeout=0.2))
    error = raised.value
    assert isinstance(error, TimeoutError) and isinstance(error, ar.AgentRuntimeError)
    assert error.kind == "timeout" and error.retriable
    assert error.message
    assert str(error).startswith("timeout: ")
    with pytest.raises(ar.Timeout):
        slow.run_turn_blocking("x", timeout=0.2)
    with pytest.raises(ar.Timeout):
        list(slow.stream_turn("x y", timeout=0.2))
    assert slow.with_timeout(0.2).timeout == pytest.approx(0.2)
    with pytest.raises(ar.Timeout):
        fresh.run_turn_blocking("echo", "fast", timeout=1.0) and slow.with_timeout(
            0.1
        ).run_turn_blocking("x")
    assert wait_for(lambda: fresh.turn_counts()["timed_out"] >= 4), fresh.turn_counts()


def test_a_refused_configuration_is_invalid_config(runtimes: ar.Runtimes) -> None:
    with pytest.raises(ar.InvalidConfig) as raised:
        runtimes.new_instance("echo", {"delay_ms": "soon"})
    assert raised.value.kind == "invalid_config"
    assert "could not be created" in str(raised.value)
    assert isinstance(raised.value, ValueError)


def test_bad_input_raises_python_errors_never_panics(runtimes: ar.Runtimes) -> None:
    with pytest.raises(TypeError):
        runtimes.run_turn_blocking("echo", 42)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        runtimes.run_turn_blocking("echo", "x", timeout=-1)
    with pytest.raises(ValueError):
        runtimes.run_turn_blocking("echo", "x", timeout=float("nan"))
    with pytest.raises(TypeError):
        ar.TurnRequest("x", config={"f": object()})
    with pytest.raises(TypeError):
        ar.TurnRequest("x", config={1: "non-str key"})
    cycle: list = []
    cycle.append(cycle)
    with pytest.raises(TypeError):
        ar.TurnRequest("x", metadata=cycle)
    with pytest.raises(ValueError):
        ar.TurnRequest("x", history=[{"role": "user"}])
    with pytest.raises(ValueError):
        runtimes.set_isolation("echo", "nowhere")
    assert ar.error_class("rate_limited") is ar.RateLimited
    assert ar.error_class("from_the_future") is ar.AgentRuntimeError


def test_the_gil_is_released_while_a_blocking_turn_runs(fresh: ar.Runtimes) -> None:
    slow = fresh.new_instance("echo", {"delay_ms": 500})
    ticks = 0
    done = threading.Event()

    def tick() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            time.sleep(0.001)

    ticker = threading.Thread(target=tick)
    ticker.start()
    try:
        assert slow.run_turn_blocking("x").content == "x"
    finally:
        done.set()
        ticker.join()
    assert ticks > 50


@pytest.mark.parametrize("level", ["inline", "threads", "process"])
def test_a_thousand_concurrent_turns(plugin_dir: Path, worker: str, level: str) -> None:
    runtimes = ar.Runtimes(plugin_dirs=[str(plugin_dir)], isolation=level, standard_dirs=False)
    echo = runtimes.resolve("echo")
    assert echo.isolation == level

    async def main():
        return await asyncio.gather(*(echo.run_turn(f"turn {i}") for i in range(1000)))

    started = time.monotonic()
    outputs = asyncio.run(main())
    elapsed = time.monotonic() - started
    assert [o.content for o in outputs] == [f"turn {i}" for i in range(1000)]
    assert elapsed < 60


def test_a_thousand_concurrent_slow_turns_overlap(fresh: ar.Runtimes) -> None:
    slow = fresh.new_instance("echo", {"delay_ms": 200})

    async def main():
        return await asyncio.gather(*(slow.run_turn(str(i)) for i in range(1000)))

    started = time.monotonic()
    outputs = asyncio.run(main())
    assert len(outputs) == 1000
    # 1,000 turns of 200 ms each, concurrently: far below 200 s.
    assert time.monotonic() - started < 20


def test_closing_a_stream_ends_an_item_being_awaited(fresh: ar.Runtimes) -> None:
    slow = fresh.new_instance("echo", {"delay_ms": 30_000})

    async def main() -> None:
        stream = slow.stream_turn("a b")
        pending = asyncio.ensure_future(stream.__anext__())
        await asyncio.sleep(0.2)
        await asyncio.wait_for(stream.aclose(), 5)
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(pending, 5)

    asyncio.run(main())
    assert wait_for(lambda: fresh.turn_counts()["cancelled"] == 1), fresh.turn_counts()


@pytest.mark.parametrize("level", ["inline", "threads"])
def test_tools_the_runtime_does_not_declare_are_unsupported(plugin_dir: Path, level: str) -> None:
    runtimes = ar.Runtimes(plugin_dirs=[str(plugin_dir)], isolation=level, standard_dirs=False)
    tool = {"name": "clock", "description": "the time", "parameters": {"type": "object"}}
    request = ar.TurnRequest("what time is it?", tools=[tool])
    assert request.tools == [tool]
    with pytest.raises(ar.Unsupported) as raised:
        asyncio.run(runtimes.run_turn("echo", request))
    assert raised.value.kind == "unsupported" and "tools" in raised.value.message
    with pytest.raises(ar.Unsupported):
        runtimes.run_turn_blocking("echo", request)
    with pytest.raises(ar.Unsupported):
        list(runtimes.stream_turn("echo", request))
    with pytest.raises(ValueError):
        ar.TurnRequest("x", tools=[{"description": "no name"}])
