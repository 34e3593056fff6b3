"""A nonlinear round on the embedded substrate beside ngspice's sweep path: the same states, the time each takes.

One command: ``python benchmarks/elements_speed.py`` (``--quick``: fewer repeats).

Circuits: ``net16`` and a 64-node random network (mean degree 4), every edge a level-1
NMOS channel with its gate against ground (``--device mosfet``: the embedded substrate's
:class:`hil.ideal.IdealChannelSubstrate` and ngspice's device of the same card). Task: the
teacher task (seed 1) with 32 examples, signals x 0.1. A round is ep-sym's: the free state
and the nudged states at +-beta (beta = 0.01 / kappa_max), measured on the whole batch of 32;
before each round both substrates are written the same small change of every conductance
(as a training step does), so neither reuses a solution of the same parameters. Interleaved in
one process; medians of wall-clock and CPU time, their ratio, and the largest difference
between the two substrates' states (V).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from hil.circuits import load, random_network
from hil.ideal import IdealChannelSubstrate
from hil.spice.substrate import NgSpiceSubstrate
from hil.substrate import Free, Nudge
from hil.tasks import teacher_task


def rounds(circuit, repeats: int) -> dict:
    task = teacher_task(circuit, seed=1, examples=32)
    X, Y = 0.1 * task.X_train[:32], 0.1 * task.Y_train[:32]
    ideal = IdealChannelSubstrate(circuit, "mosfet")
    ng = NgSpiceSubstrate(circuit, device="mosfet")
    beta = 0.01 / ideal.kappa_max(X)
    states = [Free(), Nudge(beta), Nudge(-beta)]
    rng = np.random.default_rng(0)
    g0 = ideal.read()
    times = {"embedded": [], "ngspice": []}
    cpu = {"embedded": [], "ngspice": []}
    worst = 0.0
    try:
        for k in range(repeats):
            g = np.clip(g0 * np.exp(0.01 * rng.standard_normal(len(g0))), circuit.g_min, circuit.g_max)
            got = {}
            for name, sub in (("embedded", ideal), ("ngspice", ng)):
                sub.write(g)
                t, c = time.perf_counter(), time.process_time()
                m = sub.measure(X, Y, states)
                times[name].append(time.perf_counter() - t)
                cpu[name].append(time.process_time() - c)
                got[name] = m
            worst = max(worst, max(float(np.abs(got["embedded"][s] - got["ngspice"][s]).max()) for s in states))
    finally:
        ng.close()
    med = {k: statistics.median(v[1:] if len(v) > 2 else v) for k, v in times.items()}
    med_cpu = {k: statistics.median(v[1:] if len(v) > 2 else v) for k, v in cpu.items()}
    return {"wall": med, "cpu": med_cpu, "worst": worst, "nodes": circuit.n, "edges": circuit.m}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    repeats = 4 if args.quick else 12
    print("ep-sym round (free, +beta, -beta) on 32 examples, every edge a level-1 channel (gate against ground), "
          "signals x 0.1; medians")
    print(f"{'circuit':<22} {'embedded (ms)':>14} {'ngspice sweep (ms)':>19} {'ratio wall':>11} {'ratio cpu':>10} "
          f"{'max |dV| (V)':>13}")
    for name, c in (("net16", load("net16")), ("random64_d4", random_network(64, 4.0, seed=0))):
        r = rounds(c, repeats)
        w, p = r["wall"], r["cpu"]
        label = f"{name} ({r['nodes']} nodes)"
        print(f"{label:<22} "
              f"{1e3 * w['embedded']:14.2f} {1e3 * w['ngspice']:19.2f} {w['ngspice'] / w['embedded']:11.1f} "
              f"{p['ngspice'] / p['embedded']:10.1f} {r['worst']:13.2e}")


if __name__ == "__main__":
    main()
