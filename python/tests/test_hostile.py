"""A plugin that crashes, exits and logs (tests/fixtures/hostile-plugin): the process level
contains it, and its log events reach Python's logging."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

import agent_runtimes as ar
from conftest import TARGET, install


@pytest.fixture(scope="module")
def hostile_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("AGENT_RUNTIMES_TEST_HOSTILE")
    library = Path(given) if given else TARGET / "debug" / "libhostile_plugin.so"
    if not library.is_file():
        pytest.fail(f"the hostile plugin is not built: {library} (cargo build -p hostile-plugin)")
    folder = tmp_path_factory.mktemp("hostile")
    install(folder, library, library.name)
    return folder


@pytest.mark.parametrize("fault", ["abort", "exit"])
def test_the_process_level_turns_a_crash_into_crashed(hostile_dir: Path, worker: str, fault: str) -> None:
    runtimes = ar.Runtimes(plugin_dirs=[str(hostile_dir)], isolation="process", standard_dirs=False)
    hostile = runtimes.resolve("hostile")
    with pytest.raises(ar.Crashed) as raised:
        hostile.run_turn_blocking(fault, timeout=60)
    assert raised.value.kind == "crashed" and raised.value.retriable
    assert "hostile" in raised.value.message
    # The next turn gets a new worker; the Python process lives on.
    assert hostile.run_turn_blocking("ok", timeout=60).content


def test_a_plugins_log_events_reach_python_logging(
    hostile_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    runtimes = ar.Runtimes(plugin_dirs=[str(hostile_dir)], standard_dirs=False)
    with caplog.at_level(logging.INFO, logger="agent_runtimes"):
        ar.refresh_log_level()
        assert runtimes.run_turn_blocking("hostile", "log").content == "logged"
    ar.refresh_log_level()
    [record] = [r for r in caplog.records if "hostile turn logs" in r.getMessage()]
    assert record.name == "agent_runtimes"
    assert record.levelno == logging.INFO
    assert record.tracing_target == "agent_runtimes::plugin"
    assert "hostile-log" in record.getMessage()
