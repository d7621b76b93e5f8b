"""Native runtimes in PraisonAI's runtime registry (the published `praisonaiagents`)."""

from __future__ import annotations

import asyncio

import pytest

import agent_runtimes as ar
import agent_runtimes.praisonai as adapter

from praisonaiagents.runtime import registry as praison  # noqa: E402
from praisonaiagents.runtime.capabilities import RuntimeCapabilityMatrix  # noqa: E402
from praisonaiagents.runtime.protocols import (  # noqa: E402
    AgentRuntimeProtocol,
    RuntimeDelta,
    RuntimeResult,
)


@pytest.fixture()
def registered(runtimes: ar.Runtimes):
    names = adapter.register(runtimes, prefix="native-", replace=True)
    yield names
    adapter.unregister(runtimes, prefix="native-")


def test_every_runtime_and_alias_is_registered(registered, runtimes: ar.Runtimes) -> None:
    assert registered == ["native-echo"]
    assert "native-echo" in praison.list_runtimes()
    assert praison.is_runtime_available("native-parrot")
    entry = praison._global_registry.get_entry("native-parrot")
    assert entry.runtime_id == "native-echo"
    assert entry.metadata["native"] is True


def test_code_written_for_praisonai_runs_echo_unchanged(registered) -> None:
    async def praisonai_code():
        runtime = praison.resolve_runtime("native-parrot")
        assert isinstance(runtime, AgentRuntimeProtocol)
        assert runtime.runtime_name == "echo" and runtime.runtime_version
        assert runtime.supports() and runtime.supports("gpt-4") in (True, False)
        caps = runtime.capabilities()
        assert isinstance(caps, RuntimeCapabilityMatrix) and caps.streaming_deltas
        result = await runtime.run_turn("hello from praisonai", system_prompt="sys")
        deltas = [d async for d in runtime.stream_turn("a b c")]
        executed = await runtime.execute_agent({"instructions": "be brief"}, "x y")
        streamed = [d async for d in runtime.stream_agent({}, "p q")]
        health = await runtime.health_check()
        problems = await runtime.validate_config({"config": {"delay_ms": "soon"}})
        return result, deltas, executed, streamed, health, problems

    result, deltas, executed, streamed, health, problems = asyncio.run(praisonai_code())
    assert isinstance(result, RuntimeResult)
    assert result.content == "hello from praisonai"
    assert result.metadata["finish_reason"] == "stop"
    assert result.metadata["usage"]["input_tokens"] == 4
    assert all(isinstance(d, RuntimeDelta) and d.type == "text" for d in deltas)
    assert "".join(d.content for d in deltas) == "a b c"
    assert executed["response"] == "x y"
    assert "".join(d.content for d in streamed) == "p q"
    assert health["status"] == "healthy"
    assert problems


def test_errors_reach_praisonai_code_as_exceptions(registered, runtimes) -> None:
    runtime = adapter.NativeRuntime(runtimes, "echo", config={"delay_ms": 5_000})
    with pytest.raises(ar.Timeout):
        asyncio.run(runtime.run_turn("x", timeout=0.1))
    with pytest.raises(ValueError):
        praison.resolve_runtime("native-ecko")
    with pytest.raises(ar.NotFound):
        adapter.NativeRuntime(runtimes, "ecko")


def test_registering_twice_refuses_without_replace(registered, runtimes) -> None:
    with pytest.raises(ValueError):
        adapter.register(runtimes, prefix="native-")


def test_any_factory_registry(runtimes: ar.Runtimes) -> None:
    """The README's recipe for a registry that takes a factory."""
    import functools

    factories = {}
    for info in runtimes.list():
        for name in [info.id, *info.aliases]:
            factories[name] = functools.partial(adapter.NativeRuntime, runtimes, info.id)
    result = asyncio.run(factories["parrot"]().run_turn("via a factory"))
    assert result.content == "via a factory"
