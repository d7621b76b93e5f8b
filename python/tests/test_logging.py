"""Loader and plugin `tracing` events in Python's `logging`."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import agent_runtimes as ar


def test_discovery_warnings_reach_the_agent_runtimes_logger(
    plugin_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="agent_runtimes"):
        assert ar.refresh_log_level() == logging.DEBUG
        ar.Runtimes(plugin_dirs=[str(plugin_dir)], standard_dirs=False)
    records = [r for r in caplog.records if r.name == "agent_runtimes"]
    assert records, "no event reached logging"
    assert any("notes.so" in r.getMessage() for r in records)
    assert all(hasattr(r, "tracing_target") for r in records)


def test_nothing_below_the_level_is_forwarded(
    plugin_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    logging.getLogger("agent_runtimes").setLevel(logging.CRITICAL)
    try:
        assert ar.refresh_log_level() == logging.CRITICAL
        with caplog.at_level(logging.CRITICAL, logger="agent_runtimes"):
            ar.Runtimes(plugin_dirs=[str(plugin_dir)], standard_dirs=False)
        assert [r for r in caplog.records if r.name == "agent_runtimes"] == []
    finally:
        logging.getLogger("agent_runtimes").setLevel(logging.NOTSET)
        ar.refresh_log_level()
