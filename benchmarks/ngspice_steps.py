"""Training steps per second of the ngspice substrate beside per-example ways and the one-sweep floor.

One command: ``python benchmarks/ngspice_steps.py`` (``--quick``: 64 nodes only, fewer repeats;
``--profile``: cProfile of the substrate's step at 64 nodes).

On random networks (mean degree 4) of 64, 256 and 1,024 nodes, rule ep-sym (free +
two nudged states, 3 x batch solves a step), interleaved in one process:

- substrate: :class:`hil.spice.substrate.NgSpiceSubstrate`, a round as one DC sweep;
- per-example: the same substrate with ``batched=False`` (one ``op`` per example and
  state on two loaded decks, ``alter`` between): the substrate before the sweep;
- naive: what a PySpice user writes first: rebuild a ``Circuit`` and call
  ``simulator().operating_point()`` for every solve;
- bare op: the same number of bare ``op`` commands on a loaded deck, nothing else;
- floor: one bare ``dc`` sweep over every solve of the step on a loaded sweep deck
  (the substrate's own deck of that step), nothing else;
- hil train: a whole training run's step (``start_run``, full batch, logging and
  checkpoints included): runs of 2K and K steps, their difference over K; with the
  default learning rate (the curvature re-estimated every 10 steps) and with it fixed
  (what logging and checkpoints add). Not at 1,024 nodes (minutes).

Medians and ratios are printed, of wall-clock time and of the process's CPU time
(the development machine is shared: CPU time is what the step costs, wall-clock
also counts the time other processes held the cores).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from hil.circuits import random_network
from hil.ideal import IdealSubstrate
from hil.rules import make_rule
from hil.spice.session import session
from hil.spice.substrate import NgSpiceSubstrate
from hil.substrate import Experiment
from hil.tasks import teacher_task
from hil.train import TrainConfig, default_lr, start_run


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


class Setup:
    """One circuit, its task, the substrates and the step functions of every way."""

    def __init__(self, nodes, batch, train_steps):
        self.c = c = random_network(nodes, 4.0, seed=0)
        self.task = teacher_task(c, seed=1, examples=batch)
        self.X, self.Y = self.task.X_train, self.task.Y_train
        kappa = np.linalg.eigvalsh(IdealSubstrate(c).output_green()).max()
        self.rule = make_rule("ep-sym").configure(kappa)
        self.sub = NgSpiceSubstrate(c)
        self.per = NgSpiceSubstrate(c, batched=False)
        self.s = session()
        self.n_solves = 3 * len(self.X)
        self.train_steps = train_steps
        # the floor's deck: the substrate's own sweep deck of a step, loaded once
        beta = self.rule.nudge
        B, n_out = self.Y.shape
        exps = [Experiment.free(B, n_out), Experiment(True, "load", self.Y, beta), Experiment(True, "load", self.Y, -beta)]
        self.floor_title = f"hilfloor{nodes}"
        deck, self.floor_cmd = self.sub._sweep.deck(self.floor_title, self.sub.read_params(), self.X, exps, False)
        self.s.load(self.floor_title, deck)

    def ways(self):
        c, X, Y, rule, lr = self.c, self.X, self.Y, self.rule, 1e-9

        def step(sub):
            ghat = rule.estimate(sub.measure(X, Y, rule.states()))
            sub.write(np.clip(sub.read() - lr * ghat, c.g_min, c.g_max))

        def naive():
            g = self.sub.read()
            for x, y in zip(X, Y):
                naive_solve(c, g, x)
                naive_solve(c, g, x, (rule.nudge, y))
                naive_solve(c, g, x, (-rule.nudge, y))

        def bare_op():
            self.s.use(self.per.titles["open"])
            for _ in range(self.n_solves):
                self.s.op("floor")
                self.s.destroy_plots()

        def floor():
            self.s.use(self.floor_title)
            self.s.command(self.floor_cmd)
            self.s.destroy_plots()

        def train(lr=None):
            """(wall, CPU) seconds per step of `hil train`: runs of 2K and K steps, the difference over K.

            Everything a run does per step counts (logging, checkpoints, the substrate log and,
            with the default lr, the curvature re-estimated every LR_EVERY steps); its set-up
            (kappa_max, the first learning rate) and the final plot cancel.
            """
            out = []
            for steps in (2 * self.train_steps, self.train_steps):
                with tempfile.TemporaryDirectory() as d:
                    cfg = TrainConfig(rule="ep-sym", steps=steps, seed=0, backend="ngspice", lr=lr)
                    w, c0 = time.perf_counter(), time.process_time()
                    start_run(c, self.task, cfg, Path(d) / "r", progress=False)
                    out.append((time.perf_counter() - w, time.process_time() - c0))
            return tuple((a - b) / self.train_steps for a, b in zip(*out))

        fixed_lr = default_lr(c, c.g, self.task.X_train, rule)

        return {"substrate": lambda: step(self.sub), "per-example": lambda: step(self.per), "naive": naive,
                "bare op": bare_op, "floor": floor, "hil train": train, "train, lr fixed": lambda: train(fixed_lr)}

    def close(self):
        self.s.remove(self.floor_title)
        self.sub.close()
        self.per.close()


def measure(setup, reps, skip=()):
    """Medians of wall-clock and of process CPU time (s) per step, every way once per repeat, in turn."""
    ways = {k: f for k, f in setup.ways().items() if k not in skip}
    wall, cpu = {k: [] for k in ways}, {k: [] for k in ways}
    for _ in range(reps):
        for name, f in ways.items():
            t, c = time.perf_counter(), time.process_time()
            r = f()
            wall[name].append(r[0] if name.endswith("train") or name.startswith("train") else time.perf_counter() - t)
            cpu[name].append(r[1] if name.endswith("train") or name.startswith("train") else time.process_time() - c)
    med = lambda d: {k: statistics.median(v) for k, v in d.items()}
    return med(wall), med(cpu)


def report(setup, wall, cpu, reps):
    c, n = setup.c, setup.n_solves
    print(f"\nngspice: {c.n}-node random network ({c.m} edges), batch {len(setup.X)}, ep-sym "
          f"({n} solves a step), medians of {reps} interleaved repeats")
    print(f"  {'':<16} {'steps/s':>9} {'us/solve':>9}   {'(CPU time:':>10} {'steps/s':>9} {'us/solve':>9})")
    for k in wall:
        print(f"  {k:<16} {1 / wall[k]:9.2f} {1e6 * wall[k] / n:9.1f}   {'':>10} {1 / cpu[k]:9.2f} {1e6 * cpu[k] / n:9.1f}")
    goals = [("substrate time / one-sweep floor", "substrate", "floor", "<= 1.5"),
             ("speed-up over the per-example substrate", "per-example", "substrate", ">= 10"),
             ("speed-up over naive PySpice", "naive", "substrate", ">= 200"),
             ("hil train step / substrate step", "hil train", "substrate", "<= 1.1"),
             ("  the same, lr fixed (logging + checkpoints)", "train, lr fixed", "substrate", "<= 1.1"),
             ("bare op loop / one-sweep floor", "bare op", "floor", "")]
    print(f"  {'ratio':<42} {'wall':>8} {'CPU':>8}  goal")
    for label, a, b, goal in goals:
        if a in wall and b in wall:
            print(f"  {label:<42} {wall[a] / wall[b]:8.2f} {cpu[a] / cpu[b]:8.2f}  {goal}", flush=True)


def profile(setup, steps=200):
    import cProfile
    import pstats
    f = setup.ways()["substrate"]
    pr = cProfile.Profile(time.process_time)
    pr.enable()
    for _ in range(steps):
        f()
    pr.disable()
    pstats.Stats(pr).sort_stats("tottime").print_stats(12)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args(argv)
    plan = [(64, 32, 5 if not args.quick else 3, 100, ())]
    if not args.quick:
        plan += [(256, 32, 3, 20, ()), (1024, 4, 2, 0, ("naive", "hil train", "train, lr fixed"))]
    for nodes, batch, reps, train_steps, skip in plan:
        setup = Setup(nodes, batch, train_steps)
        try:
            if args.profile:
                profile(setup)
                return
            report(setup, *measure(setup, reps, skip), reps)
        finally:
            setup.close()


if __name__ == "__main__":
    main()
