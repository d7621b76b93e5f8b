"""Fixtures: a plugin folder holding the echo plugin (and a file that is not a library), and
the worker for the process level.

The echo library and the worker come from `AGENT_RUNTIMES_TEST_ECHO` and
`AGENT_RUNTIMES_WORKER`, or from python/target/debug (what ci.sh builds). A missing one fails
the tests that need it: nothing is skipped silently.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", HERE.parent / "target"))


def _echo_library() -> Path:
    given = os.environ.get("AGENT_RUNTIMES_TEST_ECHO")
    path = Path(given) if given else TARGET / "debug" / "libecho_runtime.so"
    if not path.is_file():
        pytest.fail(f"the echo plugin is not built: {path} (cargo build -p echo-runtime)")
    return path


def pytest_configure(config: pytest.Config) -> None:
    worker = TARGET / "debug" / "runtimes-worker"
    if "AGENT_RUNTIMES_WORKER" not in os.environ and worker.is_file():
        os.environ["AGENT_RUNTIMES_WORKER"] = str(worker)
    # The tests choose their folders and levels themselves.
    os.environ.pop("AGENT_RUNTIMES_PATH", None)
    os.environ.pop("AGENT_RUNTIMES_ISOLATION", None)
    os.environ.pop("AGENT_RUNTIMES_ALLOW_INSECURE", None)


def install(folder: Path, library: Path, name: str = "libecho_runtime.so") -> Path:
    """Copies a library into a plugin folder with the modes the loader accepts."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)
    target = folder / name
    shutil.copyfile(library, target)
    target.chmod(0o644)
    return target


@pytest.fixture(scope="session")
def echo_library() -> Path:
    """The built echo plugin."""
    return _echo_library()


@pytest.fixture(scope="session")
def plugin_dir(tmp_path_factory: pytest.TempPathFactory, echo_library: Path) -> Path:
    """A plugin folder with echo and `notes.so`, a text file the loader must refuse."""
    folder = tmp_path_factory.mktemp("plugins")
    install(folder, echo_library)
    notes = folder / "notes.so"
    notes.write_text("not a library\n")
    notes.chmod(0o644)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    return folder


@pytest.fixture(scope="session")
def worker() -> str:
    """The `runtimes-worker` binary the process level runs."""
    path = os.environ.get("AGENT_RUNTIMES_WORKER", "")
    if not Path(path).is_file():
        pytest.fail(
            "AGENT_RUNTIMES_WORKER does not name the worker "
            "(cargo build -p runtime-loader --bin runtimes-worker)"
        )
    return path


@pytest.fixture(scope="session")
def runtimes(plugin_dir: Path):
    """A registry over the test plugin folder only, at the threads level."""
    import agent_runtimes

    return agent_runtimes.Runtimes(plugin_dirs=[str(plugin_dir)], standard_dirs=False)
