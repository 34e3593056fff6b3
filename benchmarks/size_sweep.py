"""One solve's time, ngspice substrate beside the ideal substrate, from 16 to 4,096 nodes.

One command: ``python benchmarks/size_sweep.py`` (``--quick`` stops at 1,024 nodes).

A solve is the free state of one example after a conductance write (so the
ideal substrate refactorizes, as it does once per training step). Random
networks (mean degree 4) and square lattices; medians over repeats; the
ratio shows where the simulator's own cost dominates.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from hil.circuits import lattice, random_network
from hil.ideal import IdealSubstrate
from hil.spice.substrate import NgSpiceSubstrate
from hil.substrate import Free


def solve_time(sub, X, Y, g, repeats):
    times = []
    for k in range(repeats):
        sub.write(g * (1 + 1e-3 * (k + 1)))
        t = time.perf_counter()
        sub.measure(X, Y, [Free()])
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    sizes = [16, 64, 256, 1024] + ([] if args.quick else [4096])
    print(f"{'circuit':<22} {'nodes':>6} {'edges':>7} {'ngspice':>12} {'ideal':>12} {'ratio':>8}")
    for n in sizes:
        side = int(round(np.sqrt(n)))
        for c in (random_network(n, 4.0, seed=0), lattice(side, side, seed=0)):
            X = np.random.default_rng(0).uniform(-1, 1, (1, len(c.inputs)))
            Y = np.zeros((1, len(c.outputs)))
            reps = 3 if c.n >= 1024 else 7
            ng = NgSpiceSubstrate(c)
            t_ng = solve_time(ng, X, Y, c.g, reps)
            ng.close()
            t_id = solve_time(IdealSubstrate(c), X, Y, c.g, reps)
            kind = "random (degree 4)" if c.name.startswith("random") else "lattice"
            print(f"{kind:<22} {c.n:>6} {c.m:>7} {t_ng * 1e3:10.2f}ms {t_id * 1e3:10.2f}ms {t_ng / t_id:7.1f}x",
                  flush=True)


if __name__ == "__main__":
    main()
