"""Discovery, refusals, listing and fail-closed resolution."""

from __future__ import annotations

from pathlib import Path

import pytest

import agent_runtimes as ar
from conftest import install


def test_list_info_and_names(runtimes: ar.Runtimes, plugin_dir: Path) -> None:
    [entry] = runtimes.list()
    assert entry.id == "echo"
    assert entry.aliases == ["parrot"]
    assert "streaming" in entry.capabilities
    assert entry.path == str(plugin_dir / "libecho_runtime.so")
    assert entry.config_schema["properties"]["delay_ms"]["type"] == "integer"
    assert runtimes.info("parrot").id == "echo"
    assert runtimes.info("nothing") is None
    assert runtimes.names() == ["echo"]  # ids; aliases are on the entries
    assert "parrot" in runtimes and "ecko" not in runtimes


def test_a_file_that_is_not_a_library_is_refused_with_its_reason(runtimes: ar.Runtimes) -> None:
    report = runtimes.report()
    [rejection] = report.rejected
    assert rejection.path.endswith("notes.so")
    assert rejection.kind == "not_a_library"
    assert "not a shared library" in rejection.reason
    assert not report.is_clean
    assert "notes.so" in str(report)
    [folder] = report.dirs
    assert "2 candidate" in folder.status


def test_discover_again_registers_nothing_twice(runtimes: ar.Runtimes) -> None:
    report = runtimes.discover()
    assert len(report.registered) == 1
    assert [e.id for e in runtimes.list()] == ["echo"]


def test_a_writable_plugin_is_refused_unless_insecure_is_allowed(
    tmp_path: Path, echo_library: Path
) -> None:
    library = install(tmp_path / "open", echo_library)
    library.chmod(0o666)
    strict = ar.Runtimes(plugin_dirs=[str(library.parent)], standard_dirs=False)
    assert strict.list() == []
    [rejection] = strict.report().rejected
    assert "writable" in rejection.reason
    with pytest.raises(ar.Rejected) as raised:
        strict.resolve("echo")
    assert "refused" in str(raised.value)
    assert raised.value.kind == "rejected"
    relaxed = ar.Runtimes(
        plugin_dirs=[str(library.parent)], standard_dirs=False, allow_insecure=True
    )
    assert [e.id for e in relaxed.list()] == ["echo"]


def test_a_second_copy_is_shadowed(tmp_path: Path, echo_library: Path) -> None:
    first = install(tmp_path / "a", echo_library)
    second = install(tmp_path / "b", echo_library)
    both = ar.Runtimes(plugin_dirs=[str(first.parent), str(second.parent)], standard_dirs=False)
    assert both.info("echo").path == str(first)
    shadowed = {s.name for s in both.report().shadowed}
    assert shadowed == {"echo"}


def test_resolve_fails_closed_with_the_loaders_message(runtimes: ar.Runtimes) -> None:
    with pytest.raises(ar.NotFound) as raised:
        runtimes.resolve("ecko")
    error = raised.value
    assert str(error) == (
        "no runtime named `ecko`. Did you mean `echo`? Available: echo (alias parrot). "
        "View all installed runtimes with `runtimes list --all`."
    )
    assert error.suggestion == "echo"
    assert error.available == ["echo"]
    assert error.name == "ecko"
    assert isinstance(error, LookupError) and isinstance(error, ar.AgentRuntimeError)


def test_an_empty_registry_says_how_to_install(tmp_path: Path) -> None:
    empty = ar.Runtimes(plugin_dirs=[str(tmp_path)], standard_dirs=False)
    with pytest.raises(ar.NotFound, match="No runtime is installed"):
        empty.resolve("echo")


def test_bad_arguments_raise_python_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="isolation|level"):
        ar.Runtimes(plugin_dirs=[str(tmp_path)], isolation="sandbox")
