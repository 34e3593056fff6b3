"""The embedded solver's fast paths give the states and steps of the direct computations they replace.

- Newton's step by the Woodbury identity (few rows of J change: ideal diodes) against the direct LU of J_UU;
- Newton over a batch solved in chunks against one block, and its messages counting examples across chunks;
- the default step's curvature by Lanczos on H v against lambda_max of the dense H (:func:`hil.exact.gauss_newton`).
"""

import numpy as np
import pytest

import hil.mna as mna
from hil import exact
from hil.circuit import circuit_from_dict
from hil.circuits import board_classifier, random_network
from hil.mna import System, newton, start
from hil.substrate import SubstrateError


def drn(diode="ideal", n_in=4, hidden=8, n_out=3, seed=0):
    """A small deep resistive network (Scellier 2024): +-x input pairs, dense resistive layers, half the hidden
    nodes held >= 0 V by a diode from ground, half <= 0 V by one to ground."""
    rng = np.random.default_rng(seed)
    ins = [f"x{k}" for k in range(2 * n_in)]
    hid = [f"h{k}" for k in range(hidden)]
    outs = [f"o{k}" for k in range(n_out)]
    edges = [{"name": f"A{i}_{j}", "a": a, "b": b, "g": float(np.exp(rng.uniform(np.log(1e-5), np.log(1e-3))))}
             for i, a in enumerate(ins) for j, b in enumerate(hid)]
    edges += [{"name": f"B{i}_{j}", "a": a, "b": b, "g": float(np.exp(rng.uniform(np.log(1e-5), np.log(1e-3))))}
              for i, a in enumerate(hid) for j, b in enumerate(outs)]
    diodes = []
    for j, h in enumerate(hid):
        t = {"name": f"D{j}", "a": "gnd" if j % 2 == 0 else h, "b": h if j % 2 == 0 else "gnd"}
        t.update({"model": "ideal"} if diode == "ideal" else {"is": 1e-12, "n": 1.0})
        diodes.append(t)
    return circuit_from_dict({"name": f"drn_{diode}", "ground": "gnd", "inputs": ins, "outputs": outs,
                              "g_min": 1e-7, "g_max": 1e-2, "edge": edges, "diode": diodes}, source="test")


def kcl(c, system, x, load=None):
    """The largest |sum of currents| at a free node over the largest element current, summed from each element's
    own terminal currents (resistors and diodes) and a ``load`` (beta, y) on the outputs, not from the solver's
    residual or Jacobian."""
    F = np.zeros((len(x), c.n))
    if load is not None:
        out = list(c.outputs)
        F[:, out] += load[0] * (x[:, out] - load[1])
    imax = 0.0
    for grp, cur in zip(system.groups, system.currents(x)):
        for t in range(2):  # an ideal diode's third column is its complementarity equation, not a current
            np.add.at(F.T, grp.nodes[:, t], cur[..., t].T)
        imax = max(imax, float(np.abs(cur[..., :2]).max(initial=0)))
    return float(np.abs(F[:, c.free]).max() / imax)


@pytest.mark.parametrize("diode", ["ideal", "shockley"])
def test_the_woodbury_step_gives_the_states_of_the_direct_solve(diode, monkeypatch):
    c = drn(diode)
    rng = np.random.default_rng(1)
    X = rng.uniform(-1, 1, (12, len(c.inputs)))
    Y = rng.uniform(-0.2, 0.2, (12, len(c.outputs)))
    calls, steps = [], []
    real, real_step = mna._woodbury, mna._Reduced.solve
    monkeypatch.setattr(mna, "_woodbury", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setattr(mna._Reduced, "solve", lambda *a: steps.append(1) or real_step(*a))
    states = {}
    for frac in (0.0, mna.WOODBURY_FRACTION):
        monkeypatch.setattr(mna, "WOODBURY_FRACTION", frac)
        calls.clear(), steps.clear()
        system = System(c)
        x0 = start(system, X)
        free = newton(system, x0)
        woodbury, newton_steps = len(calls), len(steps)
        nudged = newton(system, free, load=(np.full(12, 1e-4), Y))  # a real load on the outputs, as EP's nudge
        states[frac] = (free, nudged)
        assert kcl(c, system, free) < 1e-12 and kcl(c, system, nudged, (1e-4, Y)) < 1e-12
    # the free state: the ideal diodes change only their branch rows (8 of 19 unknowns), so the Woodbury path took
    # every Newton step; a Shockley diode changes its node's row (8 of 11): only the first step (from 0 V, J = J0)
    assert newton_steps >= 3 and woodbury == (newton_steps if diode == "ideal" else 1)
    for a, b in zip(states[0.0], states[mna.WOODBURY_FRACTION]):
        np.testing.assert_allclose(b[:, :c.n], a[:, :c.n], rtol=0, atol=1e-12)
    if diode == "ideal":  # both kinds of diode state occur
        i = states[0.0][0][:, c.n:]
        assert (i > 1e-9).any() and (np.abs(i) <= 1e-15).any()


def test_newton_in_chunks_gives_the_states_of_one_block_and_names_the_example(monkeypatch):
    c = drn("ideal")
    X = np.random.default_rng(2).uniform(-1, 1, (9, len(c.inputs)))
    system = System(c)
    whole = newton(system, start(system, X))
    u = len(system.unknowns())
    monkeypatch.setattr(mna, "CHUNK_BYTES", 8 * 2 * max(u * u, system._lin_i.shape[0]))  # 2 examples a chunk
    parts = newton(system, start(system, X))
    np.testing.assert_allclose(parts, whole, rtol=0, atol=1e-13)
    # every example but #4 starts at its solution; with one iteration allowed, #4 (in the third chunk) fails
    monkeypatch.setattr(mna, "MAX_ITER", 1)
    monkeypatch.setattr(mna, "RTOL", 1e-9)  # the solutions count as converged as they stand
    x0 = whole.copy()
    x0[4] = start(system, X[4:5])[0]
    with pytest.raises(SubstrateError, match=r"circuit 'drn_ideal': the free state of example 4 did not converge"):
        newton(system, x0)


def dense_step_curvature(c, X, W=None):
    lo, hi = c.bounds()
    moving = np.flatnonzero(hi > lo)
    return float(np.linalg.eigvalsh(exact.gauss_newton(c, X, c.theta, W)[np.ix_(moving, moving)]).max())


@pytest.mark.parametrize("name", ["board", "random_fixed", "drn"])
def test_the_curvature_by_lanczos_equals_the_dense_lambda_max(name):
    from hil.train import curvature
    if name == "board":
        c = board_classifier(12, 3, seed=0)  # 78 edges: Lanczos (the dense columns only below 64)
    elif name == "random_fixed":
        import tomllib
        c0 = random_network(40, 4, seed=3)
        d = tomllib.loads(c0.to_toml())
        d["edge"][0]["fixed"] = True  # a fixed edge stays out of H
        c = circuit_from_dict(d, source="test")
    else:
        c = drn("ideal", n_in=6, hidden=10, n_out=4)
    assert c.m > 64 and c.reciprocal
    X = np.random.default_rng(4).uniform(-1, 1, (40, len(c.inputs)))
    for W in (None, np.linalg.inv(exact.output_green(c))):  # ep's W = I; cl's K^-1
        ref = dense_step_curvature(c, X, W)
        assert curvature(c, c.theta, X, W) == pytest.approx(ref, rel=1e-10)
