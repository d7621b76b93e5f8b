"""`python -m agent_runtimes list|run|stream`, and the terminal escaping it uses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import agent_runtimes as ar


def command(plugin_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "agent_runtimes", "--plugin-dir", str(plugin_dir), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_list(plugin_dir: Path) -> None:
    done = command(plugin_dir, "list")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].split() == [
        "ID", "ALIASES", "VERSION", "API", "CAPABILITIES", "SOURCE"
    ]
    assert "echo" in done.stdout and "parrot" in done.stdout
    assert "1 plugin file(s) rejected or shadowed" in done.stdout
    everything = command(plugin_dir, "list", "--all")
    assert "Rejected:" in everything.stdout and "notes.so" in everything.stdout
    as_json = json.loads(command(plugin_dir, "list", "--all", "--json").stdout)
    assert as_json["runtimes"][0]["id"] == "echo"
    assert as_json["rejected"][0]["kind"] == "not_a_library"


def test_run_and_stream(plugin_dir: Path) -> None:
    done = command(plugin_dir, "run", "parrot", "hello there")
    assert (done.returncode, done.stdout) == (0, "hello there\n")
    done = command(plugin_dir, "stream", "echo", "a b c")
    assert (done.returncode, done.stdout) == (0, "a b c\n")
    done = command(plugin_dir, "run", "echo", "hi", "--json")
    assert json.loads(done.stdout)["usage"]["total_tokens"] == 2
    lines = command(plugin_dir, "stream", "echo", "hi you", "--json").stdout.splitlines()
    assert [json.loads(line)["type"] for line in lines] == ["delta", "delta", "done"]


def test_an_unknown_runtime_exits_2_with_the_suggestion(plugin_dir: Path) -> None:
    done = command(plugin_dir, "run", "ecko", "hi")
    assert done.returncode == 2
    assert "Did you mean `echo`?" in done.stderr
    done = command(plugin_dir, "stream", "ecko", "hi", "--json")
    assert done.returncode == 2
    assert json.loads(done.stdout)["error"]["kind"] == "not_found"


def test_failures_exit_with_the_clis_codes(plugin_dir: Path) -> None:
    assert command(plugin_dir, "run", "echo", "x", "--config", '{"delay_ms": "x"}').returncode == 3
    timed_out = command(
        plugin_dir, "run", "echo", "x", "--config", '{"delay_ms": 5000}', "--timeout", "0.2"
    )
    assert timed_out.returncode == 1 and "timeout" in timed_out.stderr
    assert command(plugin_dir, "bogus").returncode == 2


def test_clean_escapes_what_a_terminal_would_act_on() -> None:
    assert ar.clean("a\x1b[2Jb\rc") == "a\\x1b[2Jb\\rc" or "\x1b" not in ar.clean("a\x1b[2Jb")
    assert "\x1b" not in ar.clean("\x1b]0;title\x07")
    assert ar.clean("line one\nline two") == "line one\nline two"
    assert "\n" not in ar.clean("one\ntwo", keep_newlines=False)
