"""The installed package: where it comes from, its stubs, its documentation."""

from __future__ import annotations

import inspect
import os
from pathlib import Path

import pytest

import agent_runtimes as ar


@pytest.mark.skipif(
    os.environ.get("AGENT_RUNTIMES_TEST_WHEEL") != "1",
    reason="only under ci.sh (AGENT_RUNTIMES_TEST_WHEEL=1), which tests the installed wheel",
)
def test_the_tested_package_is_the_installed_wheel() -> None:
    assert "site-packages" in ar.__file__, ar.__file__


def test_pep_561_files_ship() -> None:
    folder = Path(ar.__file__).parent
    assert (folder / "py.typed").is_file()
    assert (folder / "__init__.pyi").is_file()


def test_every_public_item_is_documented() -> None:
    for name in ar.__all__:
        item = getattr(ar, name)
        if name == "CONTRACT_VERSION":
            continue
        assert inspect.getdoc(item), f"{name} has no docstring"
        if inspect.isclass(item) and not issubclass(item, BaseException):
            for attr, member in vars(item).items():
                if attr.startswith("_") or not callable(member) and not hasattr(member, "__get__"):
                    continue
                assert inspect.getdoc(getattr(item, attr)), f"{name}.{attr} has no docstring"
