"""Layered circuits as ordinary circuits of elements (``hil generate layered``): solve, file table, gd and fa."""

import numpy as np
import pytest

from hil.circuit import CircuitError, circuit_from_dict
from hil.circuits import layered
from hil.ideal import IdealSubstrate
from hil.matrices import weights
from hil.rules import draw_feedback, make_rule
from hil.substrate import Free
from hil.tasks import factorize_task

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover
    import tomli as tomllib


def _outputs(c, X):
    sub = IdealSubstrate(c)
    return sub.measure(X, np.zeros((len(X), len(c.outputs))), [Free()])[Free()][:, list(c.outputs)]


@pytest.mark.parametrize("sizes", [(8, 3, 6), (5, 4, 3, 2)])
def test_ideal_solve_of_a_generated_layered_circuit_is_the_product_of_its_matrices(sizes):
    c = layered(sizes, seed=3, init=2.0)
    X = np.random.default_rng(0).standard_normal((7, sizes[0]))
    want = X
    for W in weights(c):
        want = want @ W.T
    o = _outputs(c, X)
    assert np.abs(want).max() > 1e-2  # a map worth comparing
    assert np.abs(o - want).max() <= 1e-9 * np.abs(want).max()


def test_finite_gain_op_amps_follow_the_closed_form_of_each_stage():
    A = 1e3
    c = layered((4, 3, 2), seed=1, init=2.0, gain=A)
    X = np.random.default_rng(2).standard_normal((5, 4))
    # independent of the solver: an inverting stage with finite gain A gives t = -R sum g v / (1 + (1 + R G) / A),
    # G the conductances into the summing line; the buffer u = -t / (1 + 2 / A)
    plus, minus = X, -X
    g = c.g
    for mat in c.matrices:
        gp, gm, R = g[mat.plus], g[mat.minus], 1.0 / g[mat.feedback]
        G = gp.sum(1) + gm.sum(1)
        t = -R * (plus @ gp.T + minus @ gm.T) / (1 + (1 + R * G) / A)
        u = -t / (1 + 2 / A)
        plus, minus = u, t
    o = _outputs(c, X)
    ideal = X @ (weights(c)[1] @ weights(c)[0]).T
    assert np.abs(o - plus).max() <= 1e-12 * np.abs(plus).max()
    assert np.abs(o - ideal).max() > 1e-4 * np.abs(ideal).max()  # the finite gain does show


def test_matrix_table_round_trips_and_errors_name_the_line_and_matrix():
    c = layered((3, 2, 2), seed=0)
    text = c.to_toml()
    c2 = circuit_from_dict(tomllib.loads(text), "l.toml", text)
    assert [m.name for m in c2.matrices] == ["W", "Z"]
    assert all(np.array_equal(a, b) for a, b in zip(weights(c), weights(c2)))
    bad = text.replace('feedback = ["Wf0", "Wf1"]', 'feedback = ["Wf0", "nope"]')
    line = next(i + 1 for i, ln in enumerate(bad.splitlines()) if ln.startswith('feedback = ["Wf0", "nope"]'))
    with pytest.raises(CircuitError, match=rf"l.toml:{line}: matrix 'W': feedback must list one edge name per row"):
        circuit_from_dict(tomllib.loads(bad), "l.toml", bad)
    bad = text.replace('plus = [["Wp_0_0"', 'plus = [["Wf0"', 1)
    with pytest.raises(CircuitError, match=r"matrix 'W': plus\[0\]\[0\]: edge 'Wf0' is fixed"):
        circuit_from_dict(tomllib.loads(bad), "l.toml", bad)


def test_gd_and_fa_updates_equal_backprop_and_feedback_alignment_in_numpy():
    c = layered((6, 3, 5), seed=4, init=1.0)
    t = factorize_task(c, 2, seed=1)
    X, Y = t.X_train, t.Y_train
    W, Z = weights(c)
    Rw, Rz = (1.0 / c.g[m.feedback] for m in c.matrices)
    E = X @ (Z @ W).T - Y  # the independent forward pass
    h = X @ W.T
    dZ = E.T @ h / len(X)
    dW_gd = Z.T @ E.T @ X / len(X)
    B = draw_feedback(c, 7)[0]
    dW_fa = B @ E.T @ X / len(X)
    sub = IdealSubstrate(c)
    for name, dW in (("gd", dW_gd), ("fa", dW_fa)):
        rule = make_rule(name, seed=7).configure(sub.kappa_max())
        ghat = rule.estimate(sub.measure(X, Y, rule.states()))
        Wm, Zm = c.matrices
        for idx, want in ((Zm.plus, Rz[:, None] * dZ), (Zm.minus, -Rz[:, None] * dZ),
                          (Wm.plus, Rw[:, None] * dW), (Wm.minus, -Rw[:, None] * dW)):
            assert np.abs(ghat[idx] - want).max() <= 1e-12 * np.abs(want).max(), name
        fixed = np.flatnonzero(c.edge_fixed)
        if name == "fa":
            assert not ghat[fixed].any()
    assert abs(np.sum(dW_gd * dW_fa)) < 0.999 * np.linalg.norm(dW_gd) * np.linalg.norm(dW_fa)  # B is not Z^T


def test_ep_sym_cannot_move_a_buffered_output_so_it_reaches_no_crossbar():
    c = layered((4, 2, 3), seed=0, init=1.0)
    t = factorize_task(c, 2)
    sub = IdealSubstrate(c)
    rule = make_rule("ep-sym").configure(sub.kappa_max())
    ghat = rule.estimate(sub.measure(t.X_train, t.Y_train, rule.states()))
    gd = make_rule("gd").configure(0.0)
    exact = gd.estimate(sub.measure(t.X_train, t.Y_train, gd.states()))
    assert sub.kappa_max() == 0.0  # the outputs are ideal sources
    assert np.abs(ghat).max() <= 1e-12 * np.abs(exact).max()  # rounding only, on every crossbar


def test_fa_refuses_a_circuit_without_weight_matrices():
    from hil.circuits import random_network
    c = random_network(8, 3.0, 0, 2, 1)
    rule = make_rule("fa")
    sub = IdealSubstrate(c)
    with pytest.raises(ValueError, match="names no weight matrices"):
        rule.estimate(sub.measure(np.ones((1, 2)), np.zeros((1, 1)), rule.states()))
