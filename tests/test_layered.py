"""Layered circuits with one-way stages, and their rules (docs/math.md, section 8)."""

import json
import math

import numpy as np
import pytest

from hil import layered as ly
from hil.circuit import CircuitError, load_any, load_circuit
from hil.layered_train import (Backward, Forward, LayeredConfig, LayeredIdealSubstrate, OutputNudge, draw_feedback,
                               eckart_young, factorize_task, feedback_matrices, make_layered_rule,
                               relative_excess, start_layered_run)
from hil.runs import Run
from helpers import run_hil


def _circuit(sizes=(5, 3, 4), seed=3, init=2.0):
    return ly.generate_layered(sizes, seed=seed, init=init)


def _fd_kcl(c, X, Y, rel=1e-4):
    """dC/dg by central differences of the loss computed from the node-level KCL solve."""
    g0 = c.g
    out = np.zeros_like(g0)
    for e in range(len(g0)):
        h = rel * g0[e]
        L = []
        for s in (1, -1):
            g = g0.copy()
            g[e] += s * h
            r = ly.outputs_kcl(c, X, g) - Y
            L.append(np.mean(0.5 * np.sum(r * r, axis=1)))
        out[e] = (L[0] - L[1]) / (2 * h)
    return out


# -- the circuit and its ideal solve -------------------------------------------------------

def test_outputs_are_the_product_of_conductance_differences_scaled_by_the_feedback_resistances():
    c = _circuit((6, 4, 3, 2))
    X = np.random.default_rng(0).normal(size=(7, 6))
    # independent: element by element, o_j = sum over paths of R (g+ - g-) products
    h = X.copy()
    for gp, gm, R in zip(c.g_plus, c.g_minus, c.r_f):
        nxt = np.zeros((len(X), gp.shape[0]))
        for b in range(len(X)):
            for j in range(gp.shape[0]):
                nxt[b, j] = R[j] * sum((gp[j, i] - gm[j, i]) * h[b, i] for i in range(gp.shape[1]))
        h = nxt
    o = ly.forward(c, X)[-1]
    assert np.allclose(o, h, rtol=1e-12, atol=1e-14)
    assert np.abs(o).max() > 1e-3  # not a vacuous comparison


def test_node_level_kcl_with_ideal_op_amps_matches_the_ideal_solve_and_satisfies_kcl():
    c = _circuit((5, 3, 4))
    X = np.random.default_rng(1).normal(size=(4, 5))
    V = ly.node_voltages(c, X)
    assert np.allclose(V["u"][-1], ly.forward(c, X)[-1], rtol=1e-10, atol=1e-12)
    plus, minus = X, -X
    for k, (gp, gm, R) in enumerate(zip(c.g_plus, c.g_minus, c.r_f)):
        s, t, a, u = (V[q][k] for q in "stau")
        assert np.abs(s).max() < 1e-12 and np.abs(a).max() < 1e-12  # virtual grounds
        i_cross = plus @ gp.T + minus @ gm.T - s * (gp.sum(1) + gm.sum(1))
        assert np.allclose(i_cross + (t - s) / R, 0, atol=1e-15)  # KCL at every summing line
        assert np.allclose(u, -t, rtol=1e-12)  # the buffer inverts
        plus, minus = u, t


def test_finite_gain_op_amps_converge_to_the_ideal_solve_as_one_over_the_gain():
    c = _circuit((5, 3, 4))
    X = np.random.default_rng(2).normal(size=(3, 5))
    o = ly.forward(c, X)[-1]
    errs = [np.abs(ly.outputs_kcl(c, X, opamp=ly.OpAmp(A, 1e6)) - o).max() for A in (1e3, 1e4, 1e5)]
    assert errs[0] > 1e-4
    assert 8 < errs[0] / errs[1] < 12 and 8 < errs[1] / errs[2] < 12


def test_toml_round_trip_and_loaders():
    c = _circuit()
    p = c.save(__import__("tempfile").mkdtemp() + "/l.toml")
    back = load_any(p)
    assert back.sizes == c.sizes and np.array_equal(back.g, c.g)
    assert all(np.array_equal(a, b) for a, b in zip(back.r_f, c.r_f))
    with pytest.raises(CircuitError, match='kind = "layered": this command works on reciprocal networks only'):
        load_circuit(p)


BASE = """kind = "layered"
name = "t"
g_min = 1e-6
g_max = 1e-4
[[layer]]
name = "W"
r_f = [1e5, 1e5]
g_plus = [[5e-5, 5e-5, 5e-5], [5e-5, 5e-5, 5e-5]]
g_minus = [[5e-5, 5e-5, 5e-5], [5e-5, 5e-5, 5e-5]]
[[layer]]
name = "Z"
r_f = [1e5]
g_plus = [[5e-5, 5e-5]]
g_minus = [[5e-5, 5e-5]]
"""


@pytest.mark.parametrize("old,new,message", [
    ("g_plus = [[5e-5, 5e-5]]", "g_plus = [[5e-5, 2e-3]]", r":13: layer 'Z': g_plus\[0\]\[1\] = 0.002 S is outside"),
    ("g_minus = [[5e-5, 5e-5]]", "g_minus = [[5e-5, -1.0]]", r":14: layer 'Z': g_minus\[0\]\[1\] = -1.0 is not a positive"),
    ("g_plus = [[5e-5, 5e-5]]\ng_minus = [[5e-5, 5e-5]]", "g_plus = [[5e-5, 5e-5, 5e-5]]\ng_minus = [[5e-5, 5e-5, 5e-5]]",
     r":13: layer 'Z': 3 input lines, but the layer before has 2"),
    ("r_f = [1e5]", "r_f = [1e5, 1e5]", r":12: layer 'Z': r_f needs one resistance per summing line \(1\)"),
    ("r_f = [1e5]", "r_f = [0]", r":12: layer 'Z': r_f\[0\] = 0 is not a positive finite number \(ohms\)"),
    ('name = "Z"', 'name = "W"', r":11: duplicate layer name 'W' \(first at .*bad\.toml:5\)"),
    ('name = "Z"', 'name = "Z"\ngain = 3', r":12: layer #2: unknown key 'gain'"),
    ('kind = "layered"', 'kind = "layerd"', r":1: unknown kind 'layerd'"),
    ("g_minus = [[5e-5, 5e-5, 5e-5], [5e-5, 5e-5, 5e-5]]", "g_minus = [[5e-5, 5e-5, 5e-5]]",
     r":9: layer 'W': g_minus is 1 x 3, g_plus 2 x 3"),
])
def test_layered_file_errors_name_file_line_layer_and_crosspoint(tmp_path, old, new, message):
    p = tmp_path / "bad.toml"
    assert old in BASE
    p.write_text(BASE.replace(old, new, 1))
    with pytest.raises(CircuitError, match=str(p).replace(".", r"\.") + message):
        load_any(p)


# -- rules ---------------------------------------------------------------------------------

def _setup(sizes=(5, 3, 4), seed=3):
    c = _circuit(sizes, seed)
    rng = np.random.default_rng(seed)
    X, Y = rng.normal(size=(6, sizes[0])), rng.normal(size=(6, sizes[-1]))
    sub = LayeredIdealSubstrate(c)
    sub.feedback = feedback_matrices(draw_feedback(c, seed=11))
    return c, X, Y, sub


@pytest.mark.parametrize("sizes", [(5, 3, 4), (4, 3, 3, 2)])
def test_gd_matches_central_differences_through_the_kcl_circuit(sizes):
    c, X, Y, sub = _setup(sizes)
    rule = make_layered_rule("gd").configure(c)
    ghat = rule.estimate(sub.measure(X, Y, rule.states()))
    fd = _fd_kcl(c, X, Y)
    assert np.linalg.norm(ghat - fd) / np.linalg.norm(fd) < 1e-6
    assert np.allclose(ghat, ly.gradient(c, X, Y), rtol=1e-12)


def test_fa_update_is_the_outer_product_of_B_times_the_error_and_the_forward_signal():
    c, X, Y, sub = _setup()
    fb = draw_feedback(c, seed=11)
    B = np.array(fb["crossbars"][0]["B"])
    # the stored matrix is the one the stored conductance pairs realise
    assert np.allclose(B, fb["crossbars"][0]["r_f"] * (np.array(fb["crossbars"][0]["g_plus"])
                                                        - np.array(fb["crossbars"][0]["g_minus"])))
    rule = make_layered_rule("fa")
    ghat = rule.estimate(sub.measure(X, Y, rule.states()))
    Wm, Zm = c.weights()
    N = len(X)
    E = X @ Wm.T @ Zm.T - Y                       # output error e = o - y, per example
    H = X @ Wm.T                                  # hidden forward signal
    dW_first = np.einsum("bj,bi->ji", E @ B.T, X) / N     # (B e) x^T
    dZ = np.einsum("bj,bi->ji", E, H) / N                 # e h^T
    R1, R2 = c.r_f
    expected = np.concatenate([(R1[:, None] * dW_first).ravel(), -(R1[:, None] * dW_first).ravel(),
                               (R2[:, None] * dZ).ravel(), -(R2[:, None] * dZ).ravel()])
    assert np.allclose(ghat, expected, rtol=1e-12, atol=1e-20)
    exact = ly.gradient(c, X, Y)
    k = 2 * Wm.size
    assert np.allclose(ghat[k:], exact[k:], rtol=1e-12)   # the last stage's update is the gradient
    assert not np.allclose(ghat[:k], exact[:k], rtol=1e-2)  # the first is not (B is not Z^T)


def test_ep_sym_cannot_train_the_first_layer_and_gets_the_last_with_its_exact_bias():
    c, X, Y, sub = _setup()
    rule = make_layered_rule("ep-sym").configure(c)
    meas = sub.measure(X, Y, rule.states())
    # the one-way stage: the nudge does not reach the hidden layer at all
    assert np.array_equal(meas[OutputNudge(rule.nudge)][1], meas[Forward()][1])
    ghat = rule.estimate(meas)
    k = 2 * c.g_plus[0].size
    assert np.all(ghat[:k] == 0.0)
    R, b = c.r_f[-1][0], rule.nudge
    exact = ly.gradient(c, X, Y)
    assert np.allclose(ghat[k:], exact[k:] / (1 - (R * b) ** 2), rtol=1e-9)


def test_substrate_backward_signals_are_the_transposed_and_feedback_products():
    c, X, Y, sub = _setup()
    m = sub.measure(X, Y, [Backward("transpose"), Backward("feedback")])
    e = ly.forward(c, X)[-1] - Y
    assert np.allclose(m[Backward("transpose")][0], e @ c.weights()[1])
    assert np.allclose(m[Backward("feedback")][0], e @ sub.feedback[0].T)


# -- the task and the experiment -----------------------------------------------------------

def test_factorize_task_has_the_rank_and_eckart_young_is_the_truncated_svd_loss():
    c = ly.generate_layered((8, 2, 6))
    t = factorize_task(c, 3, seed=4, scale=2.0)
    Y = np.array(t.meta["Y"])
    s = np.linalg.svd(Y, compute_uv=False)
    assert np.linalg.matrix_rank(Y) == 3 and math.isclose(s[0], 2.0) and math.isclose(s[2], 1.0)
    assert np.allclose(t.Y_train, Y.T)  # one-hot inputs: the targets are Y's columns
    U, S, Vt = np.linalg.svd(Y)
    Y2 = U[:, :2] @ np.diag(S[:2]) @ Vt[:2]
    direct = np.mean(0.5 * np.sum((t.X_train @ Y2.T - t.Y_train) ** 2, axis=1))
    assert math.isclose(eckart_young(t.X_train, t.Y_train, 2), direct, rel_tol=1e-12)
    assert eckart_young(t.X_train, t.Y_train, 3) < 1e-25
    tr = factorize_task(c, 2, seed=4, inputs="random", examples=20)
    assert tr.X_train.shape == (20, 8) and np.allclose(tr.Y_train, tr.X_train @ np.array(tr.meta["Y"]).T)


def _train(tmp_path, sizes, rank, rule, seed, steps):
    c = ly.generate_layered(sizes, seed=seed)
    t = factorize_task(c, rank, seed=seed)
    return start_layered_run(c, t, LayeredConfig(rule=rule, steps=steps, seed=seed),
                             tmp_path / f"{rule}{sizes[1]}_{seed}", progress=False, plot=False)


def test_fa_converges_when_r_is_at_least_the_rank_and_the_alignment_angle_falls(tmp_path):
    res = _train(tmp_path, (8, 2, 6), 2, "fa", 0, 800)
    assert res["relative_excess"] < 1e-3
    assert res["angle_end"] < res["angle_start"] - 10
    log = Run(res["run_dir"]).read_log()
    assert np.all(np.isfinite(log["angle"]))


def test_gd_reaches_eckart_young_below_the_rank_where_fa_does_not(tmp_path):
    gd = _train(tmp_path, (8, 2, 6), 4, "gd", 0, 800)
    fa = _train(tmp_path, (8, 2, 6), 4, "fa", 0, 800)
    assert gd["relative_excess"] < 1e-6
    assert fa["relative_excess"] > 1e-2


# -- the command line ----------------------------------------------------------------------

def test_cli_generate_train_resume_and_refusals(tmp_path):
    lt = tmp_path / "l.toml"
    r = run_hil("generate", "layered", "--sizes", "8,3,6", "-o", lt)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "runs" / "fa"
    r = run_hil("train", lt, "--task", "factorize", "--rank", "2", "--rule", "fa", "--steps", "300", "--out", out,
                "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    for f in ("config.json", "circuit.toml", "task.json", "log.csv", "loss.png", "feedback.json", "result.json"):
        assert (out / f).exists(), f
    fb = json.loads((out / "feedback.json").read_text())
    assert np.allclose(fb["crossbars"][0]["B"], draw_feedback(load_any(lt), 0)["crossbars"][0]["B"])
    assert res["final_loss"] < res["initial_loss"]
    # a resumed run continues exactly where an uninterrupted one would be
    r = run_hil("train", "--resume", out, "--steps", "400", "--json")
    assert r.returncode == 0, r.stderr
    ref = tmp_path / "ref"
    run_hil("train", lt, "--task", "factorize", "--rank", "2", "--rule", "fa", "--steps", "400", "--out", ref)
    assert np.allclose(Run(out).load_checkpoint()["g"], Run(ref).load_checkpoint()["g"], rtol=1e-12)
    r = run_hil("train", lt, "--task", "factorize", "--rank", "2", "--rule", "fa", "--steps", "3", "--out", out)
    assert r.returncode == 2 and "already holds a run" in r.stderr
    r = run_hil("train", lt, "--task", "factorize", "--rank", "2", "--backend", "bench", "--bench", "x.toml",
                "--out", tmp_path / "b")
    assert r.returncode == 2 and "the bench cannot hold a layered circuit" in r.stderr
    r = run_hil("bias", lt, "--teacher", "1", "--out", tmp_path / "x")
    assert r.returncode == 2 and "reciprocal networks only" in r.stderr
    r = run_hil("train", lt, "--task", "factorize", "--rank", "7", "--out", tmp_path / "c")
    assert r.returncode == 2 and "--rank 7 must be between 1 and" in r.stderr
    r = run_hil("grad", lt, "--task", "factorize", "--rank", "2", "--rule", "ep-sym", "--json")
    assert r.returncode == 0, r.stderr
    g = json.loads(r.stdout.strip().splitlines()[-1])
    assert g["cosine_per_layer"]["W"] is None and g["cosine_per_layer"]["Z"] > 0.999


# -- ngspice ---------------------------------------------------------------------------------

def test_ngspice_matches_the_ideal_solve_and_the_finite_gain_kcl_model(ngspice):
    from hil.spice.layered import ngspice_forward
    c = _circuit((5, 3, 4))
    X = np.random.default_rng(5).normal(size=(3, 5))
    h = ngspice_forward(c, X)
    ideal = ly.forward(c, X)
    for k in (1, 2):  # every stage, with ideal op-amps (E sources of gain 1e12)
        assert np.abs(h[k] - ideal[k]).max() < 1e-8 * np.abs(ideal[k]).max()
    op = ly.OpAmp(gain=1e4, r_in=1e5)
    h2 = ngspice_forward(c, X, opamp=op)
    kcl = ly.outputs_kcl(c, X, opamp=op)
    assert np.allclose(h2[-1], kcl, rtol=1e-9, atol=1e-12)
    assert np.abs(h2[-1] - ideal[-1]).max() > 1e-4 * np.abs(ideal[-1]).max()  # the non-ideality is visible


def test_layered_standalone_deck_runs_in_ngspice_batch_mode(tmp_path, ngspice):
    import shutil
    import subprocess
    if not shutil.which("ngspice", path="/usr/bin:/bin"):
        pytest.fail("the ngspice program is missing (Debian package `ngspice`)")
    c = _circuit((4, 3, 2))
    lt, deck = tmp_path / "l.toml", tmp_path / "l.cir"
    c.save(lt)
    r = run_hil("netlist", lt, "--inputs", "0.5,-0.25,1,0.1", "--opamp-gain", "1e5", "-o", deck)
    assert r.returncode == 0, r.stderr
    run = subprocess.run(["/usr/bin/ngspice", "-b", str(deck)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    got = {ln.split("=")[0].strip(): float(ln.split("=")[1]) for ln in run.stdout.splitlines() if ln.startswith("v(")}
    x = np.array([[0.5, -0.25, 1, 0.1]])
    V = ly.node_voltages(c, x, opamp=ly.OpAmp(1e5))
    for k, nm in enumerate(c.layer_names):
        for j in range(c.sizes[k + 1]):
            want = V["u"][k][0, j]  # the deck prints 12 significant digits
            assert abs(got[f"v({nm.lower()}_u{j})"] - want) <= 1e-10 * abs(want) + 1e-12


def test_gd_with_random_inputs_reaches_the_eckart_young_loss_of_the_projected_targets(tmp_path):
    # random inputs (N > m): C* is the tail of Y X^T's singular values; a noise term no linear map fits adds to it
    c = ly.generate_layered((5, 2, 4), seed=2)
    t = factorize_task(c, 3, seed=2, inputs="random", examples=12)
    t.Y_train = t.Y_train + 0.05 * np.random.default_rng(9).normal(size=t.Y_train.shape)
    res = start_layered_run(c, t, LayeredConfig(rule="gd", steps=1200, seed=2), tmp_path / "gd", progress=False,
                            plot=False)
    # independent: the least-squares map, then its best rank-2 approximation in the metric of X^T X
    X, Y = t.X_train, t.Y_train
    M = np.linalg.lstsq(X, Y, rcond=None)[0].T                  # n x m
    S = np.linalg.cholesky(X.T @ X)                            # X^T X = S S^T
    U, s, Vt = np.linalg.svd(M @ S)
    M2 = (U[:, :2] * s[:2]) @ Vt[:2] @ np.linalg.inv(S)
    direct = np.mean(0.5 * np.sum((X @ M2.T - Y) ** 2, axis=1))
    assert math.isclose(eckart_young(X, Y, 2), direct, rel_tol=1e-10)
    assert res["final_loss"] - direct < 1e-6 * direct
    assert len(t.X_test) == 3 and np.isfinite(Run(res["run_dir"]).read_log()["test_loss"]).all()


def test_training_on_ngspice_follows_the_ideal_substrate_and_finite_gain_bends_the_gradient(tmp_path, ngspice):
    from hil.layered_train import LayeredNgSpiceSubstrate
    c = ly.generate_layered((4, 2, 3), seed=1)
    t = factorize_task(c, 2, seed=1)
    runs = {}
    for backend in ("ideal", "ngspice"):
        runs[backend] = start_layered_run(c, t, LayeredConfig(rule="fa", steps=15, seed=1, backend=backend),
                                          tmp_path / backend, progress=False, plot=False)
    g_ideal, g_ng = (Run(runs[b]["run_dir"]).load_checkpoint()["g"] for b in ("ideal", "ngspice"))
    assert np.allclose(g_ng, g_ideal, rtol=1e-7)
    assert runs["ngspice"]["final_loss"] < 0.5 * runs["ngspice"]["initial_loss"]
    # op-amps of gain 300: gd's backward crossbar and the forward pass both feel it; the update is the
    # circuit's own gradient (central differences through the KCL model with that op-amp) only approximately
    op = ly.OpAmp(300.0, 1e5)
    sub = LayeredNgSpiceSubstrate(c, opamp=op)
    rule = make_layered_rule("gd")
    ghat = rule.estimate(sub.measure(t.X_train, t.Y_train, rule.states()))
    g0 = c.g
    own = np.zeros_like(g0)
    for e in range(len(g0)):
        h = 1e-4 * g0[e]
        L = []
        for s in (1, -1):
            g = g0.copy()
            g[e] += s * h
            r = ly.outputs_kcl(c, t.X_train, g, op) - t.Y_train
            L.append(np.mean(0.5 * np.sum(r * r, axis=1)))
        own[e] = (L[0] - L[1]) / (2 * h)
    cos = ghat @ own / (np.linalg.norm(ghat) * np.linalg.norm(own))
    assert 0.9 < cos < 1 - 1e-6
