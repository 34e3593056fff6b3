"""Non-reciprocal circuits (docs/math.md, section 7.1): VCCS elements in circuit files, the ideal and ngspice substrates."""

import subprocess
import sys

import numpy as np
import pytest

from hil import exact
from hil.circuit import CircuitError, load_circuit
from hil.circuits import add_vccs, load, shipped
from hil.ideal import IdealSubstrate
from hil.substrate import Adjoint, Clamp, Free, Nudge
from hil.tasks import teacher_task

VCCS = """name = "nr"
ground = "gnd"
inputs = ["vin"]
outputs = ["out"]
g_min = 1.0e-5
g_max = 1.0e-2

[[edge]]
name = "R1"
a = "vin"
b = "h"
g = 1.0e-3

[[edge]]
name = "R2"
a = "h"
b = "gnd"
g = 2.0e-3

[[edge]]
name = "R3"
a = "h"
b = "out"
g = 1.5e-3

[[edge]]
name = "R4"
a = "out"
b = "gnd"
g = 1.0e-3

[[vccs]]
name = "G1"
out_p = "out"
out_n = "gnd"
ctrl_p = "h"
ctrl_n = "gnd"
gm = 4.0e-4

[[vccs]]
name = "G2"
out_p = "h"
out_n = "gnd"
ctrl_p = "vin"
ctrl_n = "out"
gm = -3.0e-4
fixed = true
"""


def write(tmp_path, text, name="c.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def nonreciprocal(seed=3, asymmetry=0.7):
    """net16 with two a->b / b->a VCCS pairs and one one-way coupling."""
    return add_vccs(load("net16"), pairs=2, singles=1, seed=seed, asymmetry=asymmetry)


def test_vccs_file_loads_with_theta_and_round_trips(tmp_path):
    c = load_circuit(write(tmp_path, VCCS))
    assert c.vccs_names == ("G1", "G2") and c.k == 2
    assert c.nodes[c.vccs_nodes[0, 0]] == "out" and c.nodes[c.vccs_nodes[1, 3]] == "out"
    np.testing.assert_array_equal(c.gm, [4e-4, -3e-4])
    assert c.param_names == ("R1", "R2", "R3", "R4", "G1")  # G2 is fixed
    np.testing.assert_array_equal(c.theta, [1e-3, 2e-3, 1.5e-3, 1e-3, 4e-4])
    c2 = load_circuit(write(tmp_path, c.to_toml(), "again.toml"))
    assert c2.vccs_names == c.vccs_names
    np.testing.assert_array_equal(c2.vccs_nodes, c.vccs_nodes)
    np.testing.assert_array_equal(c2.gm, c.gm)
    np.testing.assert_array_equal(c2.gm_fixed, c.gm_fixed)
    c.with_g(c.theta * 1.1).save(tmp_path / "saved.toml")
    np.testing.assert_allclose(load_circuit(tmp_path / "saved.toml").theta, c.theta * 1.1, rtol=0)


def test_shipped_circuit_files_are_written_back_unchanged():
    for name, path in shipped().items():
        c = load_circuit(path)
        assert c.reciprocal and np.array_equal(c.theta, c.g)
        c2 = load_circuit(path)
        assert c2.to_toml() == c.to_toml() and "vccs" not in c.to_toml()


@pytest.mark.parametrize("old,new,where,msg", [
    ('ctrl_p = "h"', 'ctrl_p = "nowhere"', 36, "vccs 'G1': ctrl_p: unknown node 'nowhere'"),
    ('out_n = "gnd"\nctrl_p = "h"', 'out_n = "out"\nctrl_p = "h"', 35, "out_p and out_n are both node 'out'"),
    ('ctrl_p = "vin"', 'ctrl_p = "out"', 45, "ctrl_p and ctrl_n are both node 'out'"),
    ("gm = 4.0e-4", 'gm = "big"', 38, "transconductance 'big' is not a finite number"),
    ("gm = 4.0e-4", "gm = 0.5", 38, "outside [-gm_max, gm_max] = [-0.01, 0.01]"),
    ('name = "G2"', 'name = "R3"', 41, "duplicate element name 'R3'"),
    ('name = "G2"', 'name = "G 2"', 41, "vccs name 'G 2' is not a plain identifier"),
    ("fixed = true", "fixed = 1", 47, "fixed = 1 must be true or false"),
    ("fixed = true", "fixed = true\ngain = 2", 48, "unknown key 'gain'"),
])
def test_vccs_errors_name_file_line_and_element(tmp_path, old, new, where, msg):
    assert old in VCCS
    p = write(tmp_path, VCCS.replace(old, new, 1))
    with pytest.raises(CircuitError) as e:
        load_circuit(p)
    assert f"{p}:{where}:" in str(e.value) and msg in str(e.value)


def test_singular_transconductance_is_refused(tmp_path):
    # det A_FF = A_hh A_oo - A_ho A_oh = 4.5e-3 * 2.5e-3 - (-1.2e-3)(gm - 1.5e-3) = 0 at gm = -7.875e-3
    text = VCCS.replace("gm = 4.0e-4", "gm = -7.875e-3")
    text = text.replace("g_max = 1.0e-2", "g_max = 1.0e-2\ngm_max = 1.0e-2")
    p = write(tmp_path, text)
    with pytest.raises(CircuitError, match="no unique operating point"):
        load_circuit(p)


def test_ideal_state_satisfies_kcl_with_the_g_stamps():
    c = nonreciprocal()
    t = teacher_task(c, 1, 6)
    sub = IdealSubstrate(c)
    k = sub.kappa_max()
    m = sub.measure(t.X_train, t.Y_train, [Free(), Nudge(0.2 / k), Clamp(0.3)])
    A = exact.conductance_matrix(c).toarray()
    # KCL by hand: every element's current, summed at each free node (not A itself)
    for V in (m[Free()], m[Clamp(0.3)]):
        I = np.zeros_like(V)
        cur = c.g * c.drops(V)
        np.add.at(I.T, c.a, cur.T)
        np.add.at(I.T, c.b, -cur.T)
        ivc = c.gm * c.control_drops(V)
        np.add.at(I.T, c.vccs_nodes[:, 0], ivc.T)
        np.add.at(I.T, c.vccs_nodes[:, 1], -ivc.T)
        free_not_out = [i for i in c.free if i not in c.outputs] if V is m[Clamp(0.3)] else list(c.free)
        assert np.abs(I[:, free_not_out]).max() < 1e-12 * np.abs(cur).max()
        np.testing.assert_allclose((V @ A.T)[:, free_not_out], I[:, free_not_out], atol=1e-18)
    # the nudged state: the load current beta (y - V_O) is what the outputs receive
    V = m[Nudge(0.2 / k)]
    res = (V @ A.T)[:, list(c.outputs)] - 0.2 / k * (t.Y_train - V[:, list(c.outputs)])
    assert np.abs(res).max() < 1e-12 * np.abs(c.g).max()
    assert not np.allclose(A[np.ix_(c.free, c.free)], A[np.ix_(c.free, c.free)].T)


def test_resistor_circuits_keep_the_cholesky_and_vccs_circuits_use_lu():
    f = IdealSubstrate(load("net16")).factorization()
    assert hasattr(f, "_cho") and f.Zt is f.Z
    g = IdealSubstrate(nonreciprocal()).factorization()
    assert hasattr(g, "_inv") and not hasattr(g, "_cho") and not np.allclose(g.K, g.K.T)


def test_exact_gradient_matches_central_differences_with_vccs():
    c = nonreciprocal()
    t = teacher_task(c, 2, 5)
    th = c.theta * np.random.default_rng(0).uniform(0.7, 1.3, c.n_params)  # off the teacher
    grad = exact.gradient(c, t.X_train, t.Y_train, th)
    fd = np.zeros_like(th)
    for i in range(len(th)):
        h = 1e-5 * abs(th[i])
        tp, tm = th.copy(), th.copy()
        tp[i] += h
        tm[i] -= h
        fd[i] = (exact.loss(c, t.X_train, t.Y_train, tp) - exact.loss(c, t.X_train, t.Y_train, tm)) / (2 * h)
    assert np.abs(grad - fd).max() < 1e-7 * np.abs(fd).max()
    assert np.abs(grad[c.m:]).min() > 0  # the transconductances do get a gradient
    # the jacobian dV_O/dtheta against the same differences
    J = exact.jacobian(c, t.X_train, th)
    r = (exact.free_state(c, t.X_train, th)[:, list(c.outputs)] - t.Y_train).ravel()
    np.testing.assert_allclose(J.T @ r / len(t.X_train), grad, rtol=1e-9, atol=1e-12 * np.abs(grad).max())


def test_gd_rule_reads_the_adjoint_network_and_is_exact():
    from hil.rules import make_rule
    c = nonreciprocal()
    t = teacher_task(c, 2, 5)
    sub = IdealSubstrate(c, c.theta * 1.2)
    rule = make_rule("gd").configure(sub.kappa_max())
    est = rule.estimate(sub.measure(t.X_train, t.Y_train, rule.states()))
    ref = exact.gradient(c, t.X_train, t.Y_train, sub.read())
    assert np.abs(est - ref).max() < 1e-12 * np.abs(ref).max()


def test_ngspice_matches_the_ideal_substrate_with_g_elements(ngspice):
    from hil.spice.substrate import NgSpiceSubstrate
    c = nonreciprocal()
    t = teacher_task(c, 1, 3)
    X, Y = t.X_train, t.Y_train
    ide, ng = IdealSubstrate(c), NgSpiceSubstrate(c)
    try:
        k = ide.kappa_max()
        assert abs(ng.kappa_max() - k) < 1e-9 * k
        states = [Free(), Nudge(0.1 / k), Nudge(-0.1 / k), Clamp(0.1), Adjoint()]
        th = c.theta.copy()
        th[[2, c.m, c.m + 2]] *= [0.8, 1.3, -0.5]  # one conductance, two transconductances (one sign flip)
        for theta in (c.theta, th):
            ide.write(theta)
            np.testing.assert_array_equal(ng.write(theta), theta)
            a, b = ide.measure(X, Y, states), ng.measure(X, Y, states)
            for s in states[:-1]:
                assert np.abs(a[s] - b[s]).max() < 1e-9
            # the adjoint network (G elements turned round), volts per volt of error
            assert np.abs(a[Adjoint()] - b[Adjoint()]).max() < 1e-9 * np.abs(a[Adjoint()]).max()
        ref = exact.gradient(c, X, Y, th)
        sens = ng.sens_gradient(X, Y)
        assert np.abs(sens - ref).max() < 1e-5 * np.abs(ref).max()
    finally:
        ng.close()


def test_netlist_writes_g_elements_that_ngspice_runs(tmp_path, ngspice):
    import shutil
    if not shutil.which("ngspice"):
        pytest.fail("the ngspice program is missing (Debian package `ngspice`)")
    p = write(tmp_path, VCCS)
    f = tmp_path / "nr.cir"
    subprocess.run([sys.executable, "-m", "hil.cli", "netlist", str(p), "--inputs", "0.7", "-o", str(f)], check=True,
                   cwd=tmp_path)
    deck = f.read_text()
    assert "Gv_G1 nd_out 0 nd_h 0 0.0004" in deck and "Gv_G2 nd_h 0 nd_vin nd_out -0.0003" in deck
    out = subprocess.run(["ngspice", "-b", str(f)], capture_output=True, text=True, timeout=60).stdout
    c = load_circuit(p)
    V = exact.free_state(c, [[0.7]])[0]
    got = {ln.split("=")[0].strip(): float(ln.split("=")[1]) for ln in out.splitlines() if ln.startswith("v(nd_")}
    assert len(got) == c.n - 1
    for i, name in enumerate(c.nodes):
        if i != c.ground:
            assert abs(got[f"v(nd_{name})"] - V[i]) < 1e-6


def test_bench_refuses_vccs_circuits_with_a_clear_message(tmp_path):
    from hil.bench.substrate import BenchError, BenchSubstrate
    from hil.emulator.bench import build
    c = load_circuit(write(tmp_path, VCCS))
    with pytest.raises(BenchError, match=r"circuit 'nr' has 2 voltage-controlled current source\(s\) \(G1, G2\)"):
        BenchSubstrate(c, {"smu": [], "_path": "b.toml"})
    with pytest.raises(BenchError, match="resistor networks only"):
        build(IdealSubstrate(c))
    r = subprocess.run([sys.executable, "-m", "hil.cli", "train", str(tmp_path / "c.toml"), "--teacher", "1",
                        "--backend", "bench", "--bench", str(tmp_path / "none.toml"), "--out", str(tmp_path / "r")],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "resistor networks only" in r.stderr


def test_training_a_vccs_circuit_keeps_gm_in_its_bounds_and_lowers_the_loss(tmp_path):
    from hil.train import TrainConfig, start_run
    c = nonreciprocal()
    t = teacher_task(c, 4, 8)
    res = start_run(c, t, TrainConfig(rule="gd", steps=40), tmp_path / "run", progress=False)
    assert res["final_loss"] < 0.5 * res["initial_loss"]
    from hil.runs import Run
    g = Run(tmp_path / "run").load_checkpoint()["g"]
    lo, hi = c.bounds()
    assert g.shape == (c.n_params,) and np.all(g >= lo) and np.all(g <= hi)
    assert load_circuit(tmp_path / "run" / "circuit.toml").k == c.k


# -- generalised EP and the two biases (docs/math.md, section 7.2) ----------------------------------

def kcl(c, V, theta):
    """Current leaving each node through the elements, (batch, n), summed element by element."""
    g, gm = c.split(theta)
    I = np.zeros_like(V)
    for e in range(c.m):
        i = g[e] * (V[:, c.a[e]] - V[:, c.b[e]])
        I[:, c.a[e]] += i
        I[:, c.b[e]] -= i
    for j in range(c.k):
        op, on, cp, cn = c.vccs_nodes[j]
        i = gm[j] * (V[:, cp] - V[:, cn])
        I[:, op] += i
        I[:, on] -= i
    return I


def independent_split(c, X, Y, theta):
    """(ghat(0), dC/dtheta) from A and dF/dtheta differentiated numerically out of :func:`kcl`."""
    V = exact.free_state(c, X, theta)
    F = c.free
    h = 1e-3
    A = np.zeros((len(F), len(F)))
    for k, i in enumerate(F):  # F is linear in V: central differences are exact to rounding
        dV = np.zeros(c.n)
        dV[i] = h
        A[:, k] = (kcl(c, V[:1] + dV, theta) - kcl(c, V[:1] - dV, theta))[0, F] / (2 * h)
    r = V[:, list(c.outputs)] - Y
    Pt = np.zeros((len(F), len(c.outputs)))
    Pt[c.out_in_free, np.arange(len(c.outputs))] = 1
    mu = np.linalg.solve(A, Pt @ r.T).T
    lam = np.linalg.solve(A.T, Pt @ r.T).T
    D = np.zeros((len(X), len(F), c.n_params))
    for p in range(c.n_params):
        dt = np.zeros(c.n_params)
        dt[p] = 1e-3 * abs(theta[p])
        D[:, :, p] = (kcl(c, V, theta + dt) - kcl(c, V, theta - dt))[:, F] / (2 * dt[p])
    limit = -np.mean(np.einsum("if,ifp->ip", mu, D), axis=0)
    grad = -np.mean(np.einsum("if,ifp->ip", lam, D), axis=0)
    return limit, grad, np.mean(np.einsum("if,ifp->ip", lam - mu, D), axis=0)


def test_generalised_ep_limit_and_asymmetry_bias_against_an_independent_computation():
    from hil.gradients import decomposition
    c = nonreciprocal()
    t = teacher_task(c, 2, 5)
    th = c.theta * np.random.default_rng(1).uniform(0.8, 1.2, c.n_params)
    limit, grad, asym = independent_split(c, t.X_train, t.Y_train, th)
    dec = decomposition(IdealSubstrate(c, th), t.X_train, t.Y_train)
    scale = np.abs(grad).max()
    assert np.abs(dec["reference"] - grad).max() < 1e-9 * scale
    assert np.abs(dec["limit"] - limit).max() < 1e-9 * scale
    assert np.abs((dec["limit"] - dec["reference"]) - asym).max() < 1e-9 * scale
    # the asymmetry bias is real here, not rounding: a few per cent of the gradient
    assert 1e-3 < dec["asymmetry_bias"] < 0.5
    assert dec["symmetry_index"] < 1 - 1e-4 and min(dec["cos_mu_lambda"]) < 1 - 1e-6


@pytest.mark.parametrize("rule,order", [("ep", 1), ("ep-sym", 2), ("ep-holo:4", 4), ("ep-stencil:2", 4),
                                        ("ep-stencil:3", 6)])
def test_generalised_ep_converges_to_minus_mu_dF_with_its_order(rule, order):
    from hil.gradients import ep_limit
    from hil.rules import make_rule
    c = nonreciprocal()
    t = teacher_task(c, 2, 5)
    sub = IdealSubstrate(c, c.theta * 1.15)
    X, Y = t.X_train, t.Y_train
    g0 = ep_limit(sub, X, Y)
    k = sub.kappa_max()
    errs = []
    for frac in (0.04, 0.02):
        r = make_rule(rule, frac / k).configure(k)
        errs.append(np.linalg.norm(r.estimate(sub.measure(X, Y, r.states())) - g0) / np.linalg.norm(g0))
    assert errs[1] > 1e-13  # above rounding, so the ratio measures the order
    assert abs(np.log2(errs[0] / errs[1]) - order) < 0.15, errs


def test_on_resistor_circuits_the_asymmetry_bias_is_zero_and_the_nudge_bias_is_the_error(net):
    from hil.gradients import decomposition, nudge_bias
    from hil.rules import make_rule
    c, X, Y = net
    sub = IdealSubstrate(c)
    dec = decomposition(sub, X, Y)
    assert dec["asymmetry_bias"] < 1e-13 and dec["symmetry_index"] == 1.0
    assert min(dec["cos_mu_lambda"]) > 1 - 1e-14 and dec["cos_limit"] > 1 - 1e-14
    k = sub.kappa_max()
    r = make_rule("ep-sym", 0.1 / k).configure(k)
    est = r.estimate(sub.measure(X, Y, r.states()))
    err = np.linalg.norm(est - dec["reference"]) / dec["ref_norm"]
    assert abs(nudge_bias(est, dec) - err) < 1e-12 + 1e-9 * err


def test_ep_limit_on_ngspice_matches_the_exact_one(ngspice):
    from hil.gradients import decomposition
    from hil.spice.substrate import NgSpiceSubstrate
    c = nonreciprocal()
    t = teacher_task(c, 2, 3)
    with NgSpiceSubstrate(c) as ng:
        dec = decomposition(ng, t.X_train, t.Y_train)
    ide = decomposition(IdealSubstrate(c), t.X_train, t.Y_train)
    assert np.linalg.norm(dec["limit"] - ide["limit"]) < 1e-5 * np.linalg.norm(ide["limit"])
    assert abs(dec["asymmetry_bias"] - ide["asymmetry_bias"]) < 1e-4 * ide["asymmetry_bias"]
    assert dec["symmetry_index"] == pytest.approx(ide["symmetry_index"], rel=1e-12)
    np.testing.assert_allclose(dec["cos_mu_lambda"], ide["cos_mu_lambda"], rtol=1e-9)


def hil(*args, cwd):
    r = subprocess.run([sys.executable, "-m", "hil.cli", *args], capture_output=True, text=True, cwd=cwd)
    assert r.returncode == 0, r.stderr
    return r


def test_grad_bias_and_info_report_the_two_biases(tmp_path):
    import json
    c = nonreciprocal()
    p = c.save(tmp_path / "nr.toml")
    t = teacher_task(c, 1, 16)
    from hil.gradients import decomposition
    ide = decomposition(IdealSubstrate(c), t.X_train, t.Y_train)
    g = json.loads(hil("grad", str(p), "--teacher", "1", "--rule", "ep-sym", "--json", cwd=tmp_path).stdout.splitlines()[-1])
    assert g["asymmetry_bias"] == pytest.approx(ide["asymmetry_bias"], rel=1e-9)
    assert g["symmetry_index"] == pytest.approx(ide["symmetry_index"], rel=1e-12) and g["symmetry_index"] < 1
    # the total error is the two parts; the default nudge (5 % of the radius) leaves a small nudge bias
    assert 0 < g["nudge_bias"] < g["asymmetry_bias"]
    assert abs(g["rel_error"] - g["asymmetry_bias"]) <= g["nudge_bias"] * (1 + 1e-9)
    assert len(g["params"]) == c.n_params == len(g["estimate"])
    out = tmp_path / "b"
    b = json.loads(hil("bias", str(p), "--teacher", "1", "--rules", "ep,ep-sym", "--nudges", "1e-6:1e-4:4",
                       "--out", str(out), "--json", cwd=tmp_path).stdout.splitlines()[-1])
    assert b["asymmetry_bias"] == pytest.approx(ide["asymmetry_bias"], rel=1e-9)
    nb = b["nudge_bias"]["ep"]
    assert len(nb) == 4 and nb[0] < nb[-1] and nb[-1] / nb[0] == pytest.approx(100, rel=0.1)  # order 1
    assert (out / "bias.png").stat().st_size > 0 and "nudge_bias" in (out / "bias.csv").read_text()
    i = json.loads(hil("info", str(p), "--json", cwd=tmp_path).stdout.splitlines()[-1])
    assert i["symmetry_index"] == pytest.approx(ide["symmetry_index"], rel=1e-12)
    assert "symmetry index" in hil("info", "net16", cwd=tmp_path).stdout


# -- homeostasis (docs/math.md, section 7.3) and generated couplings ----------------------------------

def test_homeostasis_exact_gradient_and_the_stochastic_estimator():
    c = nonreciprocal()
    A = exact.conductance_matrix(c).toarray()[np.ix_(c.free, c.free)]
    H = exact.homeostasis(c)
    assert H == pytest.approx(0.5 * np.sum((A - A.T) ** 2), rel=1e-12) and H > 0
    mean, se = exact.homeostasis_stochastic(lambda E: A @ E, lambda E: A.T @ E, len(A), 4000, 7)
    assert abs(mean - H) < 3 * se and se < 0.2 * H  # within its standard error, and the error is informative
    # dH/dtheta against central differences (conductances enter A symmetrically: zero)
    th = c.theta
    dH = exact.homeostasis_gradient(c, th)
    fd = np.zeros_like(th)
    for i in range(len(th)):
        h = 1e-4 * abs(th[i])
        tp, tm = th.copy(), th.copy()
        tp[i] += h
        tm[i] -= h
        fd[i] = (exact.homeostasis(c, tp) - exact.homeostasis(c, tm)) / (2 * h)
    np.testing.assert_allclose(dH, fd, rtol=1e-6, atol=1e-9 * np.abs(fd).max())
    assert np.all(dH[:c.m] == 0) and np.abs(dH[c.m:]).min() > 0
    assert exact.homeostasis(load("net16")) == 0
    # a reciprocal pair (asymmetry 0) has H = 0 although A holds VCCS
    assert exact.homeostasis(add_vccs(load("net16"), pairs=3, asymmetry=0.0)) == pytest.approx(0, abs=1e-30)


def test_training_with_homeostasis_lowers_H_and_logs_it(tmp_path):
    from hil.runs import Run
    from hil.train import TrainConfig, default_lr, start_run
    from hil.rules import make_rule
    c = nonreciprocal(asymmetry=1.0)
    t = teacher_task(c, 4, 8)
    lr = default_lr(c, c.theta, t.X_train, make_rule("ep-sym"))
    res = {}
    for w in (0.0, 0.1 / lr):
        out = tmp_path / f"w{w:g}"
        res[w] = start_run(c, t, TrainConfig(rule="ep-sym", steps=60, lr=lr, homeostasis=w), out, progress=False)
        log = Run(out).read_log()
        assert len(log["homeostasis_H"]) == 61 and np.all(np.isfinite(log["homeostasis_H"]))
        assert log["homeostasis_H"][0] == pytest.approx(exact.homeostasis(c), rel=1e-12)
        assert (out / "homeostasis.png").stat().st_size > 0
    assert res[0.1 / lr]["final_H"] < 0.2 * res[0.1 / lr]["initial_H"]
    assert res[0.1 / lr]["final_H"] < 0.2 * res[0.0]["final_H"]
    assert res[0.1 / lr]["final_loss"] < res[0.1 / lr]["initial_loss"]  # the task still trains


def test_resistor_runs_log_no_H_and_bad_weights_are_refused(tmp_path):
    from hil.runs import LOG_FIELDS, Run
    from hil.train import TrainConfig, start_run
    t = teacher_task(load("net16"), 1, 4)
    start_run(load("net16"), t, TrainConfig(steps=3), tmp_path / "r", progress=False)
    assert Run(tmp_path / "r").log_fields() == LOG_FIELDS
    r = subprocess.run([sys.executable, "-m", "hil.cli", "train", "net16", "--teacher", "1", "--homeostasis", "-1",
                        "--out", str(tmp_path / "bad")], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2 and "--homeostasis -1.0: the weight w must be a finite number >= 0" in r.stderr


def test_generate_adds_vccs_pairs_with_the_chosen_asymmetry(tmp_path):
    import json
    out = json.loads(hil("generate", "random", "--nodes", "12", "--degree", "3", "--vccs-pairs", "3",
                         "--vccs-singles", "1", "--asymmetry", "0.4", "-o", str(tmp_path / "g.toml"), "--json",
                         cwd=tmp_path).stdout.splitlines()[-1])
    c = load_circuit(tmp_path / "g.toml")
    assert c.k == 7 == out["vccs"] and out["symmetry_index"] < 1
    for p in range(3):  # G(2p+1): a->b with gm s, G(2p+2): b->a with s (1 - 0.4)
        ab, ba = c.vccs_nodes[2 * p], c.vccs_nodes[2 * p + 1]
        assert ab[0] == ba[2] and ab[2] == ba[0] and ab[1] == ab[3] == c.ground
        assert c.gm[2 * p + 1] == pytest.approx(0.6 * c.gm[2 * p], rel=1e-12)
    A = exact.conductance_matrix(c).toarray()[np.ix_(c.free, c.free)]
    assert exact.homeostasis(c) == pytest.approx(0.5 * np.sum((A - A.T) ** 2), rel=1e-12)
    sym = add_vccs(load("net16"), pairs=2, asymmetry=0.0)
    assert exact.symmetry_index(exact.conductance_matrix(sym)[sym.free][:, sym.free]) == pytest.approx(1, abs=1e-15)


# -- small-signal experiments on a nonlinear substrate (the mosfet network) ----------------------

def test_mosfet_small_signal_K_and_error_vector_match_the_nudge_response(ngspice):
    from hil.gradients import decomposition, nudge_bias
    from hil.rules import make_rule
    from hil.spice.substrate import NgSpiceSubstrate
    c = load("net16")
    t = teacher_task(c, 1, 4)
    X, Y = t.X_train, t.Y_train
    with NgSpiceSubstrate(c, device="mosfet") as sub:
        assert sub.small_signal and not NgSpiceSubstrate.small_signal.fget(NgSpiceSubstrate(c))
        b = 1e-9  # S: a nudge far inside the radius, large against ngspice's tolerances
        m = sub.measure(X, Y, [Free(), Nudge(b), Nudge(-b), Adjoint()])
        dVdb = (m[Nudge(b)] - m[Nudge(-b)]) / (2 * b)  # = -mu, to O(b^2)
        mu = m[Adjoint()]
        assert np.abs(dVdb + mu).max() < 1e-4 * np.abs(mu).max()
        out = list(c.outputs)
        for i in range(len(X)):  # K at each operating point answers the nudge as -K r
            K = sub.output_green(X[i:i + 1])
            np.testing.assert_allclose(-dVdb[i, out], K @ m.residual[i], rtol=1e-4, atol=1e-4 * np.abs(mu).max())
        # the mosfet circuit is non-reciprocal: the small-signal K is not symmetric ...
        K = sub.output_green(X)
        assert abs(K[0, 1] - K[1, 0]) > 1e-3 * np.abs(K).max()
        # ... and the radius is the small-signal one (old probe: 1 A with the sources grounded, ~1e-12 S)
        kappa = sub.kappa_max(X)
        assert 1e-6 < 1 / kappa < 1e-2
        # generalised EP's limit is the beta -> 0 limit of ep-sym on the circuit itself
        ref = np.ones(c.m)  # any non-zero reference: only the nudge bias is compared here
        dec = decomposition(sub, X, Y, reference=ref)
        nb = []
        for beta in (1e-5, 5e-6):  # 2 % and 1 % of the small-signal radius, far above the floor (~1e-7)
            r = make_rule("ep-sym", beta).configure(kappa)
            nb.append(nudge_bias(r.estimate(sub.measure(X, Y, r.states())), dec) * np.sqrt(c.m))
        assert nb[1] < 1e-2 * np.linalg.norm(dec["limit"])
        assert 3.5 < nb[0] / nb[1] < 4.5  # order 2 in beta: the small-signal limit is ep-sym's own


def level1_small_signal_A(c, V, gates, k=200e-6 * 6, vt=0.5):
    """A_FF of a network of level-1 NMOS channels (gate at ``gates`` against ground, LAMBDA = GAMMA = 0)
    at node voltages V (n,): the stamps of docs/math.md, section 7.1, triode and saturation, from the device equations."""
    A = np.zeros((c.n, c.n))
    for e in range(c.m):
        d, s = (c.a[e], c.b[e]) if V[c.a[e]] >= V[c.b[e]] else (c.b[e], c.a[e])
        vov_s, vov_d = gates[e] - vt - V[s], gates[e] - vt - V[d]
        if vov_s <= 0:
            continue  # cut off
        dId = k * max(vov_d, 0.0)  # triode: k (V_G - V_T - V_d); saturation: 0
        dIs = -k * vov_s
        for row, sign in ((d, 1), (s, -1)):
            A[row, d] += sign * dId
            A[row, s] += sign * dIs
    return A[np.ix_(c.free, c.free)]


def test_mosfet_radius_is_the_small_signal_one_and_the_midpoint_gate_removes_the_asymmetry_bias(ngspice):
    from hil.gradients import decomposition, reference_gradient
    from hil.rules import make_rule
    from hil.spice.substrate import NgSpiceSubstrate
    c = load("net16")
    t = teacher_task(c, 1, 4)
    X, Y = 0.1 * t.X_train, 0.1 * t.Y_train  # a linear teacher: scaled inputs, scaled targets
    res = {}
    for dev in ("mosfet", "mosfet-mid"):
        with NgSpiceSubstrate(c, device=dev) as sub:
            kappa = sub.kappa_max(X)
            ref = reference_gradient(sub, X, Y)
            res[dev] = decomposition(sub, X, Y, reference=ref)
            al = make_rule("al").configure(kappa)
            res[dev]["al_error"] = np.linalg.norm(al.estimate(sub.measure(X, Y, al.states())) - ref) / np.linalg.norm(ref)
            if dev == "mosfet":  # the radius read off the small-signal conductance matrix of the device equations
                V = sub.measure(X, Y, [Free()])[Free()]
                gates = sub.read_params()
                rho = []
                for v in V:
                    A = level1_small_signal_A(c, v, gates)
                    assert exact.symmetry_index(A) < 1 - 1e-4  # the ground-referenced gate: non-reciprocal
                    K = np.linalg.inv(A)[np.ix_(c.out_in_free, c.out_in_free)]
                    rho.append(np.abs(np.linalg.eigvals(K)).max())
                assert 1 / kappa == pytest.approx(1 / max(rho), rel=1e-3)
            else:  # reciprocal and linear in triode: the radius is the resistor network's
                assert 1 / kappa == pytest.approx(1 / exact.kappa_max(exact.output_green(c, sub.read())), rel=1e-4)  # calibration grid
    assert res["mosfet"]["asymmetry_bias"] > 1e-2
    assert res["mosfet-mid"]["asymmetry_bias"] < 1e-8
    assert res["mosfet"]["al_error"] < 1 and res["mosfet-mid"]["al_error"] < 0.1


def test_stencil_noise_optimal_nudge_is_larger_than_ep_syms():
    """Higher nudge order, more noise amplification: the stencil's best nudge under noise is the larger (docs/math.md, section 7.2)."""
    from hil.analysis.bias import sweep
    c = load("net16")
    t = teacher_task(c, 1, 6)
    sub = IdealSubstrate(c)
    k = sub.kappa_max()
    res = sweep(sub, t.X_train, t.Y_train, ["ep-sym", "ep-stencil:2"], np.geomspace(1e-3 / k, 0.4 / k, 10),
                noise=1e-4, repeats=12, seed=3)
    r = res["rules"]
    assert r["ep-stencil:2"]["best_beta"] > r["ep-sym"]["best_beta"]
    assert r["ep-stencil:2"]["best_mse"] < r["ep-sym"]["best_mse"]


def test_bias_plot_and_table_keep_points_without_an_operating_point(tmp_path):
    from hil.analysis.bias import write_outputs
    pts = [{"rule": "ep-sym", "beta": b, "nudge": b, "rel_error": e, "cosine": 0.9, "bias2": 0.0, "variance": 0.0,
            "mse": 0.0, "nudge_bias": nb, "asymmetry_bias": 0.2} for b, e, nb in
           ((1e-8, 0.2, 1e-4), (1e-7, 0.21, 1e-2), (1e-6, float("nan"), None))]
    pts[-1]["failed"] = "ngspice found no operating point"
    res = {"points": pts, "rules": {"ep-sym": {"slope": 2.0}}, "radius": 1e-5, "asymmetry_bias": 0.2,
           "symmetry_index": None}
    csv_path, png = write_outputs(res, tmp_path)
    assert png.read_bytes()[:4] == b"\x89PNG" and csv_path.read_text().count("\n") == 4


def test_an_output_joined_to_ground_only_by_edges_is_accepted_when_a_vccs_drives_it(tmp_path):
    """The check that an output whose every edge goes to ground stays at 0 V does not apply past a VCCS."""
    def circuit_from_text(text, name):
        (tmp_path / name).write_text(text)
        return load_circuit(tmp_path / name)
    base = ('name = "vo"\nground = "gnd"\ninputs = ["vin"]\noutputs = ["out"]\n'
            '[[edge]]\nname = "R1"\na = "vin"\nb = "h"\ng = 1e-3\n'
            '[[edge]]\nname = "R2"\na = "h"\nb = "gnd"\ng = 1e-3\n'
            '[[edge]]\nname = "R3"\na = "out"\nb = "gnd"\ng = 1e-3\n')
    with pytest.raises(CircuitError, match="output 'out' is joined only to ground"):
        circuit_from_text(base, "vo.toml")
    c = circuit_from_text(base + '[[vccs]]\nname = "G1"\nout_p = "out"\nout_n = "gnd"\nctrl_p = "h"\nctrl_n = "gnd"\n'
                                 'gm = 5e-4\n', "vo.toml")
    V = IdealSubstrate(c).measure([[1.0]], [[0.0]], [Free()])[Free()]
    # h = 0.5 V (divider); out: 5e-4 * 0.5 A leaves out through G1 into ground, so V_out = -0.25 V over R3
    assert V[0, c.node("out")] == pytest.approx(-0.25, rel=1e-12)
