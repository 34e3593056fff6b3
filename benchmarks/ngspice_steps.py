"""Training steps per second of the ngspice substrate beside the naive PySpice way and the floor.

One command: ``python benchmarks/ngspice_steps.py`` (``--quick`` for a short run).

On a 64-node random network, batch 32, rule ep-sym (free + two nudged states):

- substrate: :class:`hil.spice.substrate.NgSpiceSubstrate` (decks loaded once, ``alter``);
- naive: what a PySpice user writes first: rebuild a ``Circuit`` and call
  ``simulator().operating_point()`` for every solve;
- floor: the same number of bare ``op`` commands on a loaded circuit, nothing else.

All three run in one process, interleaved; medians and ratios are printed.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from hil.circuits import random_network
from hil.ideal import IdealSubstrate
from hil.rules import make_rule
from hil.spice.session import session
from hil.spice.substrate import NgSpiceSubstrate
from hil.tasks import teacher_task


def naive_solve(c, g, x, load=None):
    """One free or nudged solve the naive PySpice way; returns the output voltages."""
    from PySpice.Spice.Netlist import Circuit as SpiceCircuit

    sc = SpiceCircuit("naive")
    nn = lambda i: sc.gnd if i == c.ground else f"n{i}"
    for e in range(c.m):
        sc.R(f"{e}", nn(c.a[e]), nn(c.b[e]), 1.0 / g[e])
    for k, i in enumerate(c.inputs):
        sc.V(f"in{k}", nn(i), sc.gnd, float(x[k]))
    if load is not None:
        beta, y = load
        for k, o in enumerate(c.outputs):
            sc.R(f"ld{k}", nn(o), f"t{k}", 1.0 / beta)
            sc.V(f"ld{k}", f"t{k}", sc.gnd, float(y[k]))
    analysis = sc.simulator(simulator="ngspice-shared").operating_point()
    return [float(np.asarray(analysis[f"n{o}"])[0]) for o in c.outputs]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    reps = 3 if args.quick else 5
    c = random_network(64, 4.0, seed=0)
    task = teacher_task(c, seed=1, examples=32)
    X, Y = task.X_train, task.Y_train
    kappa = np.linalg.eigvalsh(IdealSubstrate(c).output_green()).max()
    rule = make_rule("ep-sym").configure(kappa)
    sub = NgSpiceSubstrate(c)
    s = session()
    n_solves = 3 * len(X)
    lr = 1e-9

    def step_substrate():
        ghat = rule.estimate(sub.measure(X, Y, rule.states()))
        sub.write(np.clip(sub.read() - lr * ghat, c.g_min, c.g_max))

    def step_naive():
        for x, y in zip(X, Y):
            naive_solve(c, sub.read(), x)
            naive_solve(c, sub.read(), x, (rule.nudge, y))
            naive_solve(c, sub.read(), x, (-rule.nudge, y))

    def step_floor():
        s.use(sub.titles["open"])
        for _ in range(n_solves):
            s.op("floor")
            s.destroy_plots()

    times = {"substrate": [], "naive": [], "floor": []}
    for _ in range(reps):
        for name, f in (("substrate", step_substrate), ("naive", step_naive), ("floor", step_floor)):
            t = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"ngspice: 64-node random network ({c.m} edges), batch 32, ep-sym ({n_solves} op solves a step), "
          f"medians of {reps} interleaved repeats")
    for k in ("substrate", "naive", "floor"):
        print(f"  {k:<10} {1 / med[k]:8.2f} steps/s  ({1e6 * med[k] / n_solves:7.1f} us per solve)")
    print(f"  substrate / naive speed-up: {med['naive'] / med['substrate']:.1f}x   (goal >= 10x)")
    print(f"  substrate time / floor time: {med['substrate'] / med['floor']:.2f}x  (goal <= 1.5x)")
    sub.close()


if __name__ == "__main__":
    main()
