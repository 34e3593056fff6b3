"""Training steps per second of the ideal substrate beside a naive solver loop.

One command: ``python benchmarks/ideal_steps.py`` (``--quick`` for a short run).

A step is what the training loop does: measure the rule's states on a batch of
64 examples, form the estimate, write the update. The naive loop builds each
state's system and calls ``numpy.linalg.solve`` (dense circuits) or
``scipy.sparse.linalg.spsolve`` (the lattice) once per example and per state.
Both run in the same process, interleaved, and must produce the same update.
Prints medians and the speed-up ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from hil.circuits import lattice, random_network
from hil.exact import laplacian
from hil.ideal import IdealSubstrate
from hil.rules import cocontent, make_rule
from hil.tasks import teacher_task


def naive_states(c, g, X, Y, betas, sparse):
    """Free and closed-loop nudged states, one solve per example and per state."""
    L = laplacian(c, g)
    F, S, O = c.free, c.sources, c.out_in_free
    LFF, LFS = L[F][:, F].tocsc(), L[F][:, S]
    out = {}
    for beta in [0.0] + list(betas):
        D = np.zeros(len(F))
        D[O] = beta
        A = LFF + sp.diags(D)
        A = A.tocsc() if sparse else A.toarray()
        V = np.zeros((len(X), c.n))
        for i, (x, y) in enumerate(zip(X, Y)):
            s = np.concatenate([[0.0], x])
            rhs = -(LFS @ s)
            rhs[O] += beta * y
            V[i, F] = spla.spsolve(A, rhs) if sparse else np.linalg.solve(A, rhs)
            V[i, S] = s
        out[beta] = V
    return out


def naive_step(c, g, X, Y, beta, lr, sparse):
    V = naive_states(c, g, X, Y, [beta, -beta], sparse)
    f = {b: 0.5 * c.drops(v) ** 2 for b, v in V.items()}
    ghat = np.mean(f[beta] - f[-beta], axis=0) / (2 * beta)
    return np.clip(g - lr * ghat, c.g_min, c.g_max)


def substrate_step(sub, rule, X, Y, lr):
    c = sub.circuit
    ghat = rule.estimate(sub.measure(X, Y, rule.states()))
    return sub.write(np.clip(sub.read() - lr * ghat, c.g_min, c.g_max))


def bench(name, c, sparse, repeats, batch=64):
    task = teacher_task(c, seed=1, examples=batch)
    X, Y = task.X_train, task.Y_train
    sub = IdealSubstrate(c)
    kappa = np.linalg.eigvalsh(sub.output_green()).max()
    rule = make_rule("ep-sym").configure(kappa)
    lr = 1e-9
    # same update from both
    g0 = c.g.copy()
    g_naive = naive_step(c, g0, X, Y, rule.nudge, lr, sparse)
    sub.write(g0)
    g_fast = substrate_step(sub, rule, X, Y, lr)
    err = np.abs(g_naive - g_fast).max() / np.abs(g0).max()
    t_fast, t_naive = [], []
    for _ in range(repeats):  # interleaved, so load on the machine hits both alike
        sub.write(g0)
        t = time.perf_counter()
        substrate_step(sub, rule, X, Y, lr)
        t_fast.append(time.perf_counter() - t)
        t = time.perf_counter()
        naive_step(c, g0, X, Y, rule.nudge, lr, sparse)
        t_naive.append(time.perf_counter() - t)
    fast, naive = statistics.median(t_fast), statistics.median(t_naive)
    print(f"{name:<34} {c.n:>6} {c.m:>6}  {1 / fast:10.1f} {1 / naive:10.2f}  {naive / fast:8.1f}x  "
          f"(same update to {err:.1e})", flush=True)
    return naive / fast


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats and a 40x40 lattice")
    args = ap.parse_args(argv)
    reps = 3 if args.quick else 7
    side = 40 if args.quick else 100
    print("ideal substrate: training steps/s (rule ep-sym: 3 states, batch 64), medians of "
          f"{reps} interleaved repeats")
    print(f"{'circuit':<34} {'nodes':>6} {'edges':>6}  {'substrate':>10} {'naive':>10}  {'ratio':>9}")
    bench("random network, 64 nodes, degree 4", random_network(64, 4.0, seed=0), False, reps)
    bench(f"lattice {side}x{side}", lattice(side, side, seed=0), True, reps)


if __name__ == "__main__":
    main()
