"""``python -m agent_runtimes list|run|stream``: the ``runtimes`` command's turns, from Python.

Plugin folders are searched as the ``runtimes`` command searches them: ``--plugin-dir`` (any
number), then ``AGENT_RUNTIMES_PATH``, then the per-user folder. Output on a terminal has its
control characters escaped (newlines and tabs kept); ``--json`` prints JSON.

Exit codes, as the ``runtimes`` command's: 0 success; 1 the turn failed; 2 usage error, an
unknown runtime, or a request the runtime does not support; 3 a refused plugin or
configuration; 4 a plugin crashed; 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any, List, Optional

from . import (
    AgentRuntimeError,
    Crashed,
    Failed,
    InvalidConfig,
    NotFound,
    Rejected,
    Runtimes,
    TurnRequest,
    Unsupported,
    clean,
)

__all__ = ["main"]


def _out(text: str, raw: bool = False) -> str:
    """``text`` escaped for a terminal (kept as is when piped, as the CLI does)."""
    if raw or not sys.stdout.isatty():
        return text
    return clean(text)


def _exit_code(error: BaseException) -> int:
    if isinstance(error, NotFound):
        return 2
    if isinstance(error, (Rejected, InvalidConfig)):
        return 3
    if isinstance(error, (Crashed, Failed)):
        return 4
    if isinstance(error, Unsupported):
        return 2
    return 1


def _fail(error: BaseException, as_json: bool) -> int:
    code = _exit_code(error)
    if as_json:
        kind = getattr(error, "kind", "failed")
        message = getattr(error, "message", str(error))
        print(json.dumps({"error": {"kind": kind, "message": message, "exit_code": code}}))
    else:
        print(f"error: {clean(str(error))}", file=sys.stderr)
    return code


def _list(runtimes: Runtimes, args: argparse.Namespace) -> int:
    entries = runtimes.list()
    report = runtimes.report()
    if args.json:
        out: dict = {
            "runtimes": [
                {
                    "id": e.id,
                    "display_name": e.display_name,
                    "description": e.description,
                    "version": e.version,
                    "api_version": e.api_version,
                    "aliases": e.aliases,
                    "capabilities": e.capabilities,
                    "path": e.path,
                }
                for e in entries
            ]
        }
        if args.all:
            out["rejected"] = [
                {"path": r.path, "runtime_ids": r.runtime_ids, "kind": r.kind, "reason": r.reason}
                for r in report.rejected
            ]
            out["shadowed"] = [
                {"name": s.name, "path": s.path, "kept": s.kept} for s in report.shadowed
            ]
            out["dirs"] = [
                {"path": d.path, "origin": d.origin, "status": d.status} for d in report.dirs
            ]
        print(json.dumps(out, indent=2))
        return 0
    if not entries:
        searched = ", ".join(clean(d.path) for d in report.dirs) or "nothing"
        print("No runtime is installed.")
        print(f"Searched: {searched}. Install one with `runtimes install <file>`.")
    else:
        rows = [["ID", "ALIASES", "VERSION", "API", "CAPABILITIES", "SOURCE"]]
        for e in entries:
            rows.append([
                e.id,
                ", ".join(e.aliases) or "-",
                e.version or "-",
                e.api_version,
                ", ".join(e.capabilities) or "-",
                e.path or "built-in",
            ])
        rows = [[clean(cell, False) for cell in row] for row in rows]
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    hidden = len(report.rejected) + len(report.shadowed)
    if args.all:
        print()
        print("Plugin folders searched, in order:")
        for d in report.dirs:
            print(f"  {clean(d.path)} ({d.origin}): {clean(d.status, False)}")
        if report.rejected:
            print()
            print("Rejected:")
            for r in report.rejected:
                print(f"  {clean(r.path)}")
                if r.runtime_ids:
                    print(f"    declares: {clean(', '.join(r.runtime_ids), False)}")
                print(f"    {clean(r.reason, False)}")
        if report.shadowed:
            print()
            print("Shadowed:")
            for s in report.shadowed:
                print(f"  {clean(s.name, False)} in {clean(s.path)} (kept: {clean(s.kept, False)})")
    elif hidden:
        print(f"{hidden} plugin file(s) rejected or shadowed: see `python -m agent_runtimes list --all`.")
    return 0


def _request(args: argparse.Namespace) -> TurnRequest:
    history: Optional[List[Any]] = None
    if args.history:
        with open(args.history, encoding="utf-8") as f:
            history = json.load(f)
    return TurnRequest(args.prompt, system=args.system, model=args.model, history=history)


async def _run(runtimes: Runtimes, args: argparse.Namespace) -> int:
    runtime = _runtime(runtimes, args)
    output = await runtime.run_turn(_request(args), timeout=args.timeout)
    if args.json:
        usage = output.usage
        print(json.dumps({
            "content": output.content,
            "finish_reason": output.finish_reason,
            "usage": {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
                      "total_tokens": usage.total_tokens},
            "tool_calls": [{"id": c.id, "name": c.name, "arguments": c.arguments}
                           for c in output.tool_calls],
            "metadata": output.metadata,
        }))
    else:
        print(_out(output.content))
    return 0


async def _stream(runtimes: Runtimes, args: argparse.Namespace) -> int:
    runtime = _runtime(runtimes, args)
    async with runtime.stream_turn(_request(args), timeout=args.timeout) as stream:
        async for delta in stream:
            if args.json:
                print(json.dumps({"type": "delta", "kind": delta.kind, "content": delta.content,
                                  "metadata": delta.metadata}), flush=True)
            elif delta.kind == "text":
                sys.stdout.write(_out(delta.content))
                sys.stdout.flush()
        output = stream.output
    if args.json:
        if output is not None:
            print(json.dumps({"type": "done", "finish_reason": output.finish_reason,
                              "total_tokens": output.usage.total_tokens}))
    else:
        print()
    return 0


def _runtime(runtimes: Runtimes, args: argparse.Namespace):
    if args.config is not None:
        try:
            config = json.loads(args.config)
        except json.JSONDecodeError as error:
            raise InvalidConfig(f"--config is not JSON: {error}") from None
        return runtimes.new_instance(args.name, config)
    return runtimes.resolve(args.name)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m agent_runtimes",
        description="List native agent runtimes and run their turns.",
        epilog=__doc__.split("\n\n", 2)[2] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--plugin-dir", action="append", default=[], metavar="DIR",
                        help="a plugin folder searched first (repeatable)")
    parser.add_argument("--isolation", choices=["inline", "threads", "process"],
                        help="the isolation level (default: AGENT_RUNTIMES_ISOLATION or threads)")
    parser.add_argument("--allow-insecure", action="store_true",
                        help="load plugin files writable by group or others")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="the runtimes found")
    p.add_argument("--all", action="store_true", help="also folders, rejected and shadowed files")
    p.add_argument("--json", action="store_true")
    for name, help_text in (("run", "run one turn"), ("stream", "stream one turn")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("name", help="the runtime's id or alias")
        p.add_argument("prompt")
        p.add_argument("--system", metavar="TEXT")
        p.add_argument("--model", metavar="MODEL")
        p.add_argument("--config", metavar="JSON", help="the runtime's configuration")
        p.add_argument("--history", metavar="FILE", help="a JSON array of {role, content}")
        p.add_argument("--timeout", type=float, metavar="SECS")
        p.add_argument("--json", action="store_true")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Runs the command with ``argv`` (``sys.argv[1:]`` when ``None``); returns the exit code."""
    args = _parser().parse_args(argv)
    as_json = getattr(args, "json", False)
    try:
        runtimes = Runtimes(plugin_dirs=args.plugin_dir, isolation=args.isolation,
                            allow_insecure=args.allow_insecure or None)
        if args.command == "list":
            return _list(runtimes, args)
        if args.command == "run":
            return asyncio.run(_run(runtimes, args))
        return asyncio.run(_stream(runtimes, args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (AgentRuntimeError, OSError, ValueError, TypeError) as error:
        return _fail(error, as_json)


if __name__ == "__main__":
    sys.exit(main())
