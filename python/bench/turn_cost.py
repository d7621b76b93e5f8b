"""What one echo turn costs a Python host: through this package (blocking, asyncio, inline),
through PraisonAI's registry (a native runtime, and a Python runtime for reference), and as
an HTTP round trip to `runtimes serve`.

    python bench/turn_cost.py --echo PATH/libecho_runtime.so [--runtimes PATH/runtimes] [-n 2000]

Prints a Markdown table of the median microseconds per turn over 5 batches of n turns, each
after a warm-up. Sequential turns: latency, not throughput. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Awaitable, Callable, List, Optional, Tuple

import agent_runtimes as ar


def batches(run_batch: Callable[[int], float], n: int) -> float:
    run_batch(max(n // 10, 50))  # warm-up
    return statistics.median(run_batch(n) for _ in range(5)) / n * 1e6


def blocking(call: Callable[[], object]) -> Callable[[int], float]:
    def run(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            call()
        return time.perf_counter() - start
    return run


def awaiting(make: Callable[[], Awaitable[object]]) -> Callable[[int], float]:
    def run(n: int) -> float:
        async def loop() -> float:
            start = time.perf_counter()
            for _ in range(n):
                await make()
            return time.perf_counter() - start
        return asyncio.run(loop())
    return run


class PythonEcho:
    """A Python runtime in PraisonAI's registry, answering like echo."""

    async def run_turn(self, prompt: str, **kwargs: object):
        from praisonaiagents.runtime.protocols import RuntimeResult
        return RuntimeResult(content=prompt, metadata={"usage": {"total_tokens": 2}})


def serve(runtimes_bin: str, plugins: Path) -> Tuple[subprocess.Popen, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [runtimes_bin, "serve", "--addr", f"127.0.0.1:{port}", "--plugin-dir", str(plugins), "-q"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("runtimes serve did not come up")


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--echo", required=True, help="the echo plugin library")
    parser.add_argument("--runtimes", help="the `runtimes` command, for the HTTP round trip")
    parser.add_argument("-n", type=int, default=2000)
    args = parser.parse_args(argv)

    folder = Path(tempfile.mkdtemp())
    folder.chmod(0o755)
    shutil.copyfile(args.echo, folder / "libecho_runtime.so")
    (folder / "libecho_runtime.so").chmod(0o644)

    rows = []
    for level in ("inline", "threads"):
        echo = ar.Runtimes(plugin_dirs=[str(folder)], isolation=level, standard_dirs=False).resolve("echo")
        rows.append((f"package, `run_turn_blocking` ({level})",
                     batches(blocking(lambda: echo.run_turn_blocking("hello there")), args.n)))
        rows.append((f"package, `await run_turn` ({level})",
                     batches(awaiting(lambda: echo.run_turn("hello there")), args.n)))

    echo = ar.Runtimes(plugin_dirs=[str(folder)], standard_dirs=False).resolve("echo")

    def gathered(n: int) -> float:
        async def many() -> float:
            start = time.perf_counter()
            await asyncio.gather(*(echo.run_turn("hello there") for _ in range(n)))
            return time.perf_counter() - start
        return asyncio.run(many())

    rows.append(("package, 1,000 turns at once with `asyncio.gather` (threads), per turn",
                 statistics.median(gathered(1000) for _ in range(5)) / 1000 * 1e6))

    try:
        from praisonaiagents.runtime import registry as praison
        import agent_runtimes.praisonai as adapter

        runtimes = ar.Runtimes(plugin_dirs=[str(folder)], standard_dirs=False)
        adapter.register(runtimes, prefix="bench-", replace=True)
        praison._global_registry.unregister("bench-python-echo")
        praison.register_runtime("bench-python-echo", PythonEcho)
        native = praison.resolve_runtime("bench-echo")
        python = praison.resolve_runtime("bench-python-echo")
        rows.append(("PraisonAI registry → native echo (threads)",
                     batches(awaiting(lambda: native.run_turn("hello there")), args.n)))
        rows.append(("PraisonAI registry → a Python echo runtime",
                     batches(awaiting(lambda: python.run_turn("hello there")), args.n)))
    except ImportError:
        pass

    if args.runtimes:
        proc, port = serve(args.runtimes, folder)
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port)
            body = json.dumps({"model": "echo", "messages": [{"role": "user", "content": "hello there"}]})

            def post() -> None:
                conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
                response = conn.getresponse()
                data = response.read()
                assert response.status == 200, data

            rows.append(("HTTP round trip to `runtimes serve` (keep-alive, http.client)",
                         batches(blocking(post), args.n)))
        finally:
            proc.terminate()
            proc.wait(10)

    print("| one echo turn from Python | µs per turn (median of 5 × %d) |" % args.n)
    print("|---|---:|")
    for name, micros in rows:
        print(f"| {name} | {micros:.1f} |")
    shutil.rmtree(folder)


if __name__ == "__main__":
    main()
