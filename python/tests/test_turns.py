"""Turns at every isolation level: awaitable, blocking and streamed; typed values."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import agent_runtimes as ar

LEVELS = ["inline", "threads", "process"]


@pytest.fixture(scope="module", params=LEVELS)
def level_runtimes(request: pytest.FixtureRequest, plugin_dir: Path, worker: str) -> ar.Runtimes:
    return ar.Runtimes(
        plugin_dirs=[str(plugin_dir)], isolation=request.param, standard_dirs=False
    )


def test_each_level_runs_a_turn(level_runtimes: ar.Runtimes) -> None:
    runtime = level_runtimes.resolve("parrot")
    assert runtime.id == "echo"
    assert runtime.isolation in LEVELS
    output = asyncio.run(level_runtimes.run_turn("parrot", "hello there"))
    assert isinstance(output, ar.TurnOutput)
    assert output.content == "hello there"
    assert output.finish_reason == "stop"
    assert isinstance(output.usage, ar.Usage)
    assert (output.usage.input_tokens, output.usage.output_tokens) == (2, 2)
    assert output.usage.total_tokens == 4
    assert output.tool_calls == []
    assert str(output) == "hello there"


def test_each_level_runs_a_blocking_turn(level_runtimes: ar.Runtimes) -> None:
    output = level_runtimes.run_turn_blocking("echo", ar.TurnRequest("one two three"))
    assert output.content == "one two three"


def test_each_level_streams(level_runtimes: ar.Runtimes) -> None:
    async def collect():
        stream = level_runtimes.stream_turn("echo", "a b  c")
        deltas = [delta async for delta in stream]
        return deltas, stream.output

    deltas, output = asyncio.run(collect())
    assert all(isinstance(d, ar.Delta) for d in deltas)
    assert [d.kind for d in deltas] == ["text"] * 3
    assert [d.content for d in deltas] == ["a ", "b  ", "c"]
    assert output is not None and output.content == "a b  c"


def test_each_level_streams_blocking(level_runtimes: ar.Runtimes) -> None:
    with level_runtimes.stream_turn("echo", "x y") as stream:
        assert "".join(d.content for d in stream) == "x y"
        assert stream.output.usage.output_tokens == 2
    assert stream.execution_id


def test_the_process_level_runs_in_a_worker(plugin_dir: Path, worker: str) -> None:
    isolated = ar.Runtimes(plugin_dirs=[str(plugin_dir)], isolation="process", standard_dirs=False)
    runtime = isolated.resolve("echo")
    assert runtime.isolation == "process"
    assert runtime.run_turn_blocking("in a worker").content == "in a worker"


def test_requests_are_typed_and_read_only() -> None:
    request = ar.TurnRequest(
        "hi",
        system="be brief",
        model="m",
        history=[{"role": "user", "content": "earlier"}, ("assistant", "answer")],
        max_tokens=5,
        temperature=0.5,
        stop=["\n"],
        config={"a": [1, 2.5, None, True]},
        metadata={"trace": "x"},
        execution_id="exec-1",
    )
    assert request.prompt == "hi" and request.system == "be brief" and request.model == "m"
    assert request.history == [("user", "earlier"), ("assistant", "answer")]
    assert (request.max_tokens, request.temperature, request.stop) == (5, 0.5, ["\n"])
    assert request.config == {"a": [1, 2.5, None, True]}
    assert request.metadata == {"trace": "x"}
    assert request.execution_id == "exec-1"
    with pytest.raises(AttributeError):
        request.prompt = "changed"  # type: ignore[misc]


def test_history_and_system_reach_the_runtime(runtimes: ar.Runtimes) -> None:
    request = ar.TurnRequest("a b", system="s t u", history=[("user", "v w")])
    output = runtimes.run_turn_blocking("echo", request)
    assert output.usage.input_tokens == 2 + 3 + 2


def test_describe_health_and_validate(runtimes: ar.Runtimes) -> None:
    runtime = runtimes.resolve("echo")
    assert runtime.describe()["id"] == "echo"
    assert asyncio.run(runtime.health())
    assert runtime.validate_config({"delay_ms": 1}) == []
    assert runtime.validate_config({"delay_ms": "x"})
    assert runtimes.validate_config("echo", {"nope": 1})
    assert runtime.supports("any-model") in (True, False)
