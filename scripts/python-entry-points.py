#!/usr/bin/env python3
"""Python's entry-point discovery over 100 distributions, for BENCHMARKS.md's listing row.

Makes 100 `*.dist-info` folders, each declaring one `agent_runtimes` entry point, in a
temporary folder, then times a fresh listing (importlib.metadata's path cache cleared): every
distribution's entry points, with its summary and version, as `runtimes list` shows them.
Standard library only:

    python3 scripts/python-entry-points.py
"""
import importlib.metadata as md
import os
import statistics
import sys
import tempfile
import time


def main():
    with tempfile.TemporaryDirectory() as root:
        for i in range(100):
            info = os.path.join(root, f"echo_{i:03d}-0.2.0.dist-info")
            os.makedirs(info)
            with open(os.path.join(info, "METADATA"), "w") as f:
                f.write(f"Metadata-Version: 2.1\nName: echo-{i:03d}\nVersion: 0.2.0\n"
                        "Summary: Answers with the prompt.\n")
            with open(os.path.join(info, "entry_points.txt"), "w") as f:
                f.write(f"[agent_runtimes]\necho-{i:03d} = echo_{i:03d}:Echo\n")

        def listing():
            md.FastPath.__new__.cache_clear()
            started = time.perf_counter()
            found = [(e.name, e.value, dist.metadata["Summary"], dist.version)
                     for dist in md.distributions(path=[root])
                     for e in dist.entry_points if e.group == "agent_runtimes"]
            elapsed = time.perf_counter() - started
            assert len(found) == 100, len(found)
            return elapsed

        for _ in range(5):
            listing()
        times = sorted(listing() for _ in range(200))
        ms = [t * 1e3 for t in times]
        print(f"Python {sys.version.split()[0]}: list 100 distributions' entry points: "
              f"median {statistics.median(ms):.2f} ms, 5th–95th percentile "
              f"{ms[10]:.2f}–{ms[190]:.2f} ms (200 listings)")


if __name__ == "__main__":
    main()
