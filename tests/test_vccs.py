"""Non-reciprocal circuits (spec 7.1): VCCS elements in circuit files, the ideal and ngspice substrates."""

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
    assert hasattr(g, "_dlu") and not np.allclose(g.K, g.K.T)


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
    from hil.drivers.bench import BenchError, BenchSubstrate
    from hil.drivers.emulator import build
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
