"""The openai runtime (plugins/llm) against a real llama-server, from Python and through the
PraisonAI adapter. Selected with `-m llama` (ci.sh does when LLAMA_SERVER_URL is set); without
a server these tests fail rather than pass unseen."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

import agent_runtimes as ar
import agent_runtimes.praisonai as adapter
from conftest import TARGET, install

pytestmark = pytest.mark.llama


@pytest.fixture(scope="module")
def llm_runtimes(tmp_path_factory: pytest.TempPathFactory) -> ar.Runtimes:
    library = TARGET / "debug" / "libllm_runtimes.so"
    if not library.is_file():
        pytest.fail(f"the llm plugin is not built: {library} (cargo build -p llm-runtimes)")
    folder = tmp_path_factory.mktemp("llm-plugins")
    install(folder, library, library.name)
    return ar.Runtimes(plugin_dirs=[str(folder)], standard_dirs=False)


@pytest.fixture(scope="module")
def config() -> dict:
    url = os.environ.get("LLAMA_SERVER_URL", "")
    if not url:
        pytest.fail("LLAMA_SERVER_URL is not set: scripts/llama-server.sh start, then "
                    "set -a; . target/llama-server/env; set +a")
    return {"base_url": f"{url}/v1", "model": "smollm2", "read_timeout_ms": 60_000}


def test_openai_runtime_answers_from_python(llm_runtimes: ar.Runtimes, config: dict) -> None:
    openai = llm_runtimes.new_instance("openai", config)
    request = ar.TurnRequest("Say hello.", max_tokens=16, temperature=0.0)
    output = asyncio.run(openai.run_turn(request, timeout=120))
    assert output.content.strip()
    assert output.usage.output_tokens > 0
    assert output.finish_reason in ("stop", "length")

    async def stream() -> list:
        return [d async for d in openai.stream_turn(request, timeout=120)]

    deltas = asyncio.run(stream())
    assert "".join(d.content for d in deltas if d.kind == "text").strip()


def test_openai_runtime_through_praisonai(llm_runtimes: ar.Runtimes, config: dict) -> None:
    runtime = adapter.NativeRuntime(llm_runtimes, "openai", config=config, timeout=120)
    result = asyncio.run(runtime.run_turn("Name a colour.", max_tokens=8))
    assert result.content.strip()
    assert result.metadata["usage"]["output_tokens"] > 0


def test_plugin_log_events_reach_python_logging(
    llm_runtimes: ar.Runtimes, config: dict, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    openai = llm_runtimes.new_instance("openai", config)
    with caplog.at_level(logging.DEBUG, logger="agent_runtimes"):
        ar.refresh_log_level()
        openai.run_turn_blocking(ar.TurnRequest("Hi.", max_tokens=4), timeout=120)
    ar.refresh_log_level()
    from_plugin = [r for r in caplog.records
                   if getattr(r, "tracing_target", "") == "agent_runtimes::plugin"]
    assert from_plugin, [r.getMessage() for r in caplog.records]
