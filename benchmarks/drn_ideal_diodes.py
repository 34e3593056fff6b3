"""An ideal-diode deep resistive network: the embedded solver beside exact coordinate descent, per example.

One command: ``python benchmarks/drn_ideal_diodes.py`` (``--quick``: fewer examples).

The network (Kendall et al. 2020; Scellier, ICML 2024): 64 inputs, each applied as +x and -x
(128 input sources), 100 hidden nodes (50 excitatory, held >= 0 V by an ideal diode from
ground; 50 inhibitory, held <= 0 V by one to ground), 10 x 2 output nodes; every input joined
to every hidden node and every hidden node to every output by a resistor (conductances
log-uniform in [1e-5, 1e-3] S, seeded). Inputs uniform in [-1, 1] V.

Baseline: the exact coordinate descent of Scellier (2024), written here from the paper: the
state minimises the power dissipation 1/2 sum g (V_i - V_j)^2 under the diodes' constraints;
each node's optimum given its neighbours is its neighbours' conductance-weighted mean, clipped
to its diode's interval; the nodes of a layer share no edge, so a layer is updated at once,
alternating hidden and output layers (one iteration = both). Run until no node moves by more
than ``tol`` (1e-12 V by default) in an iteration.

Embedded: :mod:`hil.mna`'s Newton (active-set) solve of the same circuit file, batched, from
0 V, two ways: each step by the Woodbury identity about the all-diodes-on Jacobian (the default:
only the diodes' branch rows change, 100 of 220 unknowns) and each step a direct LU of the
220 x 220 J_UU (``hil.mna.WOODBURY_FRACTION = 0``).
Printed: time per example of each (medians of interleaved repeats, everything on one BLAS
thread), their ratios, the iterations coordinate descent took, and the largest difference
between the states (V). Before this round (main at f03299f, the same command with ``--quick``)
the embedded solve took 10.9 ms per example on this machine (113 ms in an earlier session),
assembling an N x N Jacobian per example and solving on two contended BLAS threads.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from threadpoolctl import threadpool_limits

import hil.mna as mna
from hil.circuit import circuit_from_dict
from hil.mna import System, newton, start


def drn(seed: int = 0, n_in: int = 64, hidden: int = 100, n_out: int = 10):
    """(circuit, W1 (2 n_in, hidden), W2 (hidden, 2 n_out)) of the DRN above, conductances in siemens."""
    rng = np.random.default_rng(seed)
    ins = [f"x{k}" for k in range(2 * n_in)]
    hid = [f"h{k}" for k in range(hidden)]
    outs = [f"o{k}" for k in range(2 * n_out)]
    W1 = np.exp(rng.uniform(np.log(1e-5), np.log(1e-3), (2 * n_in, hidden)))
    W2 = np.exp(rng.uniform(np.log(1e-5), np.log(1e-3), (hidden, 2 * n_out)))
    edges = [{"name": f"A{i}_{j}", "a": ins[i], "b": hid[j], "g": float(W1[i, j])}
             for i in range(2 * n_in) for j in range(hidden)]
    edges += [{"name": f"B{j}_{k}", "a": hid[j], "b": outs[k], "g": float(W2[j, k])}
              for j in range(hidden) for k in range(2 * n_out)]
    edges.append({"name": "Rgnd", "a": "gnd", "b": hid[0], "g": 1e-9, "fixed": True})  # ground on the graph
    half = hidden // 2
    diodes = [{"name": f"D{j}", "a": "gnd" if j < half else hid[j], "b": hid[j] if j < half else "gnd",
               "model": "ideal"} for j in range(hidden)]
    data = {"name": "drn64x2_100_10x2", "ground": "gnd", "inputs": ins, "outputs": outs, "g_min": 1e-9,
            "g_max": 1e-2, "edge": edges, "diode": diodes}
    return circuit_from_dict(data, source="benchmarks/drn_ideal_diodes.py"), W1, W2


def coordinate_descent(X2, W1, W2, hidden: int, tol: float, max_iter: int = 100000):
    """(hidden states, output states, iterations): Scellier's exact coordinate descent, layer by layer."""
    B = len(X2)
    half = hidden // 2
    h = np.zeros((B, hidden))
    o = np.zeros((B, W2.shape[1]))
    a_h = W1.sum(axis=0) + W2.sum(axis=1)  # each hidden node's total conductance
    a_o = W2.sum(axis=0)
    drive = X2 @ W1  # the inputs' part of each hidden node's weighted sum (fixed)
    a_h = a_h + np.r_[1e-9, np.zeros(hidden - 1)]  # the benchmark circuit's 1 nS from h0 to ground
    for it in range(1, max_iter + 1):
        h_new = (drive + o @ W2.T) / a_h
        h_new[:, :half] = np.maximum(h_new[:, :half], 0.0)   # excitatory: a diode from ground holds v >= 0
        h_new[:, half:] = np.minimum(h_new[:, half:], 0.0)   # inhibitory: v <= 0
        o_new = (h_new @ W2) / a_o
        moved = max(np.abs(h_new - h).max(), np.abs(o_new - o).max())
        h, o = h_new, o_new
        if moved <= tol:
            return h, o, it
    return h, o, max_iter


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--tol", type=float, default=1e-12, help="coordinate descent stops when no node moves more (V)")
    args = ap.parse_args()
    c, W1, W2 = drn()
    rng = np.random.default_rng(1)
    batch = 16 if args.quick else 64
    repeats = 3 if args.quick else 5
    X = rng.uniform(-1, 1, (batch, len(c.inputs)))
    hid = [c.nodes.index(f"h{k}") for k in range(W1.shape[1])]
    out = list(c.outputs)
    times = {"cd": [], "woodbury": [], "lu": []}
    worst, iters_cd = 0.0, 0
    default = mna.WOODBURY_FRACTION
    with threadpool_limits(1):
        for _ in range(repeats):
            t = time.perf_counter()
            h, o, iters_cd = coordinate_descent(X, W1, W2, W1.shape[1], args.tol)
            times["cd"].append((time.perf_counter() - t) / batch)
            for name, frac in (("woodbury", default), ("lu", 0.0)):
                mna.WOODBURY_FRACTION = frac
                system = System(c)  # a fresh system: the Woodbury base is inverted inside the timing
                t = time.perf_counter()
                x = newton(system, start(system, X))
                times[name].append((time.perf_counter() - t) / batch)
                worst = max(worst, float(np.abs(x[:, hid] - h).max()), float(np.abs(x[:, out] - o).max()))
            mna.WOODBURY_FRACTION = default
    cd, wb, lu = (statistics.median(times[k]) for k in ("cd", "woodbury", "lu"))
    print(f"DRN 64x2 inputs, 100 hidden (ideal diodes), 10x2 outputs; {batch} examples, medians of {repeats}, "
          "one BLAS thread")
    print(f"exact coordinate descent (to {args.tol:g} V):    {1e3 * cd:.3f} ms per example, {iters_cd} iterations")
    print(f"embedded Newton, Woodbury steps (default): {1e3 * wb:.3f} ms per example")
    print(f"embedded Newton, a direct LU each step:    {1e3 * lu:.3f} ms per example")
    print(f"ratio direct LU / Woodbury: {lu / wb:.2f}; coordinate descent / Woodbury: {cd / wb:.3f}; "
          f"largest state difference {worst:.2e} V")


if __name__ == "__main__":
    main()
