"""Loading a circuit file is linear in its size: seconds per load at 1k and 10k elements, and their ratio.

One command: ``python benchmarks/load_circuit.py`` (``--big`` adds 100k elements).

The file is a ladder of N edges (TOML, one ``[[edge]]`` table each, as ``hil generate``
writes). ``hil.circuit.load_circuit`` parses it, validates every edge and keeps each
element's line for error messages. Prints the median of 3 loads per size and the
ratio 10k/1k: about 10 when loading is linear, about 100 when quadratic.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from hil.circuit import load_circuit


def ladder_text(m: int) -> str:
    """A connected circuit of ``m`` edges: a chain n0-n1-..., each node also joined two ahead."""
    lines = ['name = "ladder"', 'ground = "n0"', 'inputs = ["n1"]', 'outputs = ["n2"]', ""]
    e, k = 0, 0
    while e < m:
        for a, b in ((k, k + 1), (k, k + 2)):
            if e < m:
                lines += ["[[edge]]", f'name = "E{e}"', f'a = "n{a}"', f'b = "n{b}"', "g = 1e-3", ""]
                e += 1
        k += 1
    return "\n".join(lines)


def seconds(path: Path, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        c = load_circuit(path)
        times.append(time.perf_counter() - t0)
    assert c.m > 0
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--big", action="store_true", help="also load 100,000 elements")
    args = ap.parse_args()
    sizes = [1_000, 10_000] + ([100_000] if args.big else [])
    with tempfile.TemporaryDirectory() as tmp:
        res = {}
        for m in sizes:
            p = Path(tmp) / f"ladder{m}.toml"
            p.write_text(ladder_text(m))
            res[m] = seconds(p)
            print(f"{m:>7} elements: {res[m]:.3f} s per load (median of 3)")
    print(f"ratio 10k/1k: {res[10_000] / res[1_000]:.1f} (linear: 10, quadratic: 100)")
    if args.big:
        print(f"ratio 100k/10k: {res[100_000] / res[10_000]:.1f}")


if __name__ == "__main__":
    main()
