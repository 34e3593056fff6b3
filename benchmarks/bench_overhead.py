"""Solves per second through the emulated bench beside the same substrate called directly.

One command: ``python benchmarks/bench_overhead.py``. The emulator runs in its own
process (``hil emulate``), as on a real bench where the instruments are elsewhere;
the bench substrate talks to it through pyvisa-py over loopback sockets. Both
sides measure the free state of the same examples one at a time (a bench solves
one example at a time), then ideal batched for reference; medians of repeats.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from hil.circuit import load_circuit
from hil.bench.substrate import BenchSubstrate
from hil.ideal import IdealSubstrate
from hil.substrate import Free

# the entry point of the interpreter running this script, never whatever PATH holds
_ENTRY = Path(sys.executable).with_name("hil")
HIL = [str(_ENTRY)] if _ENTRY.is_file() else [sys.executable, "-m", "hil"]

warnings.filterwarnings("ignore", category=FutureWarning)


def per_solve(sub, X, Y, one_at_a_time=True, repeats=5):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        if one_at_a_time:
            for x, y in zip(X, Y):
                sub.measure(x[None], y[None], [Free()])
        else:
            sub.measure(X, Y, [Free()])
        times.append((time.perf_counter() - t) / len(X))
    return statistics.median(times)


def main():
    for name in ("net16", "bridge"):
        c = load_circuit(name)
        bench_file = Path(tempfile.mkdtemp()) / "bench.toml"
        emu = subprocess.Popen(HIL + ["emulate", name, "--bench-file", str(bench_file), "--json"],
                               stdout=subprocess.PIPE, text=True)
        try:
            line = ""
            while not line.startswith("{"):
                line = emu.stdout.readline()
            json.loads(line)
            X = np.random.default_rng(0).uniform(-1, 1, (50, len(c.inputs)))
            Y = np.zeros((50, len(c.outputs)))
            with BenchSubstrate(c, bench_file) as bench:
                t_bench = per_solve(bench, X, Y)
                t_bench_batch = per_solve(bench, X, Y, one_at_a_time=False)
            ideal = IdealSubstrate(c)
            t_direct = per_solve(ideal, X, Y)
            t_batch = per_solve(ideal, X, Y, one_at_a_time=False)
        finally:
            emu.terminate()
            emu.wait()
        print(f"{name} ({c.m} edges, {c.n} nodes): bench {1 / t_bench:8.0f} solves/s | ideal one at a time "
              f"{1 / t_direct:8.0f} solves/s | ideal batched {1 / t_batch:9.0f} solves/s")
        print(f"   bench batched (source-list sweeps of {len(X)}): {1 / t_bench_batch:8.0f} solves/s")
        print(f"   protocol overhead: one at a time {t_bench / t_direct:.1f}x; batched against ideal one at a time "
              f"{t_bench_batch / t_direct:.2f}x, against ideal batched {t_bench_batch / t_batch:.0f}x (goal < 3x)")


if __name__ == "__main__":
    main()
