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


# -- moved from the second stack's tests: the same assertions, through the one loop -----------------------------

def _setup(sizes=(5, 3, 4), seed=3):
    c = layered(sizes, seed=seed, init=2.0)
    rng = np.random.default_rng(1)
    X = rng.normal(size=(6, sizes[0]))
    Y = rng.normal(size=(6, sizes[-1]))
    return c, X, Y, IdealSubstrate(c)


def _loss(c, X, Y, g):
    from hil.exact import free_state
    r = free_state(c, X, g)[:, list(c.outputs)] - Y
    return np.mean(0.5 * np.sum(r * r, axis=1))


@pytest.mark.parametrize("sizes", [(5, 3, 4), (4, 3, 3, 2)])
def test_gd_matches_central_differences_through_the_circuit(sizes):
    c, X, Y, sub = _setup(sizes)
    rule = make_rule("gd").configure(sub.kappa_max())
    ghat = rule.estimate(sub.measure(X, Y, rule.states()))
    idx = np.concatenate([np.concatenate([m.plus.ravel(), m.minus.ravel()]) for m in c.matrices])
    fd = np.zeros(len(idx))
    for k, e in enumerate(idx):
        h = 1e-4 * c.g[e]
        gp, gm = c.g.copy(), c.g.copy()
        gp[e] += h
        gm[e] -= h
        fd[k] = (_loss(c, X, Y, gp) - _loss(c, X, Y, gm)) / (2 * h)
    assert np.linalg.norm(ghat[idx] - fd) / np.linalg.norm(fd) < 1e-6


def test_fa_last_matrix_gets_the_gradient_and_the_first_does_not():
    c, X, Y, sub = _setup()
    fa, gd = make_rule("fa", seed=11), make_rule("gd").configure(0.0)
    ghat = fa.estimate(sub.measure(X, Y, fa.states()))
    exact = gd.estimate(sub.measure(X, Y, gd.states()))
    Wm, Zm = c.matrices
    last = np.concatenate([Zm.plus.ravel(), Zm.minus.ravel()])
    first = np.concatenate([Wm.plus.ravel(), Wm.minus.ravel()])
    assert np.allclose(ghat[last], exact[last], rtol=1e-12)
    assert not np.allclose(ghat[first], exact[first], rtol=1e-2)  # B is not Z^T
    # the feedback crossbar's matrix is the one its clipped pairs realise, drawn from the seed
    B1, B2 = draw_feedback(c, 11)[0], draw_feedback(c, 11)[0]
    assert np.array_equal(B1, B2) and not np.array_equal(B1, draw_feedback(c, 12)[0])


def test_factorize_task_has_the_rank_and_eckart_young_is_the_truncated_svd_loss():
    import math

    from hil.tasks import eckart_young
    c = layered((8, 2, 6))
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


def test_fa_converges_when_r_is_at_least_the_rank_and_the_alignment_angle_falls(tmp_path):
    from hil.analysis.factorize import train_one
    res = train_one(tmp_path, (8, 2, 6), 0, 2, "fa", 400, every=40)
    assert res["relative_excess"] < 1e-3
    assert res["angle_end"] < res["angle_start"] - 10
    assert np.all(np.isfinite([a for _, a in res["angles"]]))


def test_gd_reaches_eckart_young_below_the_rank_where_fa_does_not(tmp_path):
    from hil.analysis.factorize import train_one
    gd = train_one(tmp_path, (8, 2, 6), 0, 4, "gd", 400)
    fa = train_one(tmp_path, (8, 2, 6), 0, 4, "fa", 400)
    assert gd["relative_excess"] < 1e-6
    assert fa["relative_excess"] > 1e-2


def test_gd_with_random_inputs_reaches_the_eckart_young_loss_of_the_projected_targets(tmp_path):
    import math

    from hil.runs import Run
    from hil.tasks import eckart_young
    from hil.train import TrainConfig, start_run
    # random inputs (N > m): C* is the tail of Y X^T's singular values; a noise term no linear map fits adds to it
    c = layered((5, 2, 4), seed=2)
    t = factorize_task(c, 3, seed=2, inputs="random", examples=12)
    t.Y_train = t.Y_train + 0.05 * np.random.default_rng(9).normal(size=t.Y_train.shape)
    res = start_run(c, t, TrainConfig(rule="gd", steps=1200, seed=2), tmp_path / "gd", progress=False, plot=False)
    # independent: the least-squares map, then its best rank-2 approximation in the metric of X^T X
    X, Y = t.X_train, t.Y_train
    M = np.linalg.lstsq(X, Y, rcond=None)[0].T                  # n x m
    S = np.linalg.cholesky(X.T @ X)                            # X^T X = S S^T
    U, s, Vt = np.linalg.svd(M @ S)
    M2 = (U[:, :2] * s[:2]) @ Vt[:2] @ np.linalg.inv(S)
    direct = np.mean(0.5 * np.sum((X @ M2.T - Y) ** 2, axis=1))
    assert math.isclose(eckart_young(X, Y, 2), direct, rel_tol=1e-10)
    assert res["final_loss"] - direct < 1e-6 * direct
    tl = Run(res["run_dir"]).read_log()["test_loss"]  # the one loop logs the test loss every --log-every steps
    assert len(t.X_test) == 3 and np.isfinite(tl[[0, -1]]).all() and np.isfinite(tl).sum() > 2


def test_cli_generate_info_train_resume_grad_bias_and_refusals(tmp_path):
    import json

    from hil.circuit import load_circuit
    from hil.runs import Run
    from helpers import run_hil
    lt = tmp_path / "l.toml"
    r = run_hil("generate", "layered", "--sizes", "8,3,6", "-o", lt)
    assert r.returncode == 0, r.stderr
    c = load_circuit(lt)
    r = run_hil("info", lt, "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout.strip().splitlines()[-1])
    assert np.allclose(info["matrices"]["Z"], weights(c)[1], rtol=1e-12) and info["nudge_radius"] is None
    out = tmp_path / "runs" / "fa"
    train = ["train", lt, "--task", "factorize", "--rank", "2", "--rule", "fa"]
    r = run_hil(*train, "--steps", "150", "--out", out, "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    for f in ("config.json", "circuit.toml", "task.json", "log.csv", "loss.png", "result.json", "trained.toml"):
        assert (out / f).exists(), f
    assert res["final_loss"] < res["initial_loss"] and res["angle_end"] < res["angle_start"]
    # a resumed run continues exactly where an uninterrupted one would be (the same feedback crossbar)
    r = run_hil("train", "--resume", out, "--steps", "200", "--json")
    assert r.returncode == 0, r.stderr
    ref = tmp_path / "ref"
    assert run_hil(*train, "--steps", "200", "--out", ref).returncode == 0
    assert np.allclose(Run(out).load_checkpoint()["g"], Run(ref).load_checkpoint()["g"], rtol=1e-12)
    r = run_hil(*train, "--steps", "3", "--out", out)
    assert r.returncode == 2 and "already holds a run" in r.stderr
    r = run_hil("train", lt, "--task", "factorize", "--rank", "7", "--out", tmp_path / "c")
    assert r.returncode == 2 and "--rank 7 must be between 1 and" in r.stderr
    r = run_hil("grad", lt, "--task", "factorize", "--rank", "2", "--rule", "ep-sym", "--json")
    assert r.returncode == 0, r.stderr
    g = json.loads(r.stdout.strip().splitlines()[-1])
    assert g["cosine_per_matrix"] == {"W": None, "Z": None} and "reaches no crosspoint of W, Z" in r.stdout
    r = run_hil("grad", lt, "--task", "factorize", "--rank", "2", "--rule", "fa", "--json")
    g = json.loads(r.stdout.strip().splitlines()[-1])
    assert g["cosine_per_matrix"]["Z"] > 1 - 1e-12 and g["cosine_per_matrix"]["W"] < 0.99
    r = run_hil("bias", lt, "--task", "factorize", "--rank", "2", "--rules", "gd,fa", "--out", tmp_path / "b", "--json")
    assert r.returncode == 0, r.stderr
    b = json.loads(r.stdout.strip().splitlines()[-1])
    assert b["rules"]["gd"]["best_mse"] < 1e-20 < b["rules"]["fa"]["best_mse"]
    old = tmp_path / "old.toml"
    old.write_text('kind = "layered"\nname = "x"\n')
    r = run_hil("info", old)
    assert r.returncode == 2 and "old.toml:1: kind = \"layered\" is the matrix format" in r.stderr


def test_sweep_runs_on_a_generated_layered_circuit(tmp_path):
    import csv

    from helpers import run_hil
    lt = tmp_path / "l.toml"
    assert run_hil("generate", "layered", "--sizes", "4,2,3", "-o", lt).returncode == 0
    r = run_hil("sweep", lt, "--teacher", "1", "--rules", "gd,fa", "--steps", "10", "--workers", "1",
                "--out", tmp_path / "sw")
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(open(tmp_path / "sw" / "sweep.csv")))
    assert [x["rule"] for x in rows] == ["gd", "fa"] and all(x["status"] == "ok" for x in rows)
    assert all(float(x["final_loss"]) < float(x["initial_loss"]) for x in rows)


def test_training_on_ngspice_follows_the_ideal_substrate(tmp_path, ngspice):
    from hil.runs import Run
    from hil.train import TrainConfig, start_run
    c = layered((4, 2, 3), seed=1)
    t = factorize_task(c, 2, seed=1)
    runs = {b: start_run(c, t, TrainConfig(rule="fa", steps=15, seed=1, backend=b), tmp_path / b, progress=False,
                         plot=False) for b in ("ideal", "ngspice")}
    g_ideal, g_ng = (Run(runs[b]["run_dir"]).load_checkpoint()["g"] for b in ("ideal", "ngspice"))
    assert np.allclose(g_ng, g_ideal, rtol=1e-7)
    assert runs["ngspice"]["final_loss"] < 0.5 * runs["ngspice"]["initial_loss"]


def test_finite_gain_standalone_deck_runs_in_ngspice_batch_mode(tmp_path, ngspice):
    import shutil
    import subprocess

    from helpers import run_hil
    if not shutil.which("ngspice", path="/usr/bin:/bin"):
        pytest.fail("the ngspice program is missing (Debian package `ngspice`)")
    lt, deck = tmp_path / "l.toml", tmp_path / "l.cir"
    assert run_hil("generate", "layered", "--sizes", "4,3,2", "--opamp-gain", "1e5", "-o", lt).returncode == 0
    r = run_hil("netlist", lt, "--inputs", "0.5,-0.25,1,0.1", "-o", deck)
    assert r.returncode == 0, r.stderr
    run = subprocess.run(["/usr/bin/ngspice", "-b", str(deck)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    got = {ln.split("=")[0].strip(): float(ln.split("=")[1]) for ln in run.stdout.splitlines() if ln.startswith("v(")}
    from hil.circuit import load_circuit
    c = load_circuit(lt)
    V = _outputs(c, np.array([[0.5, -0.25, 1, 0.1]]))[0]
    names = [k for k in got if k.startswith("v(nd_zu")]
    assert len(names) == 2
    for j in range(2):
        want = V[j]  # the deck prints 5 significant digits
        assert abs(got[f"v(nd_zu{j})"] - want) <= 2e-5 * abs(want) + 1e-12
