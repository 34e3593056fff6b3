"""Element kinds (hil.elements) and the embedded Newton solver (hil.mna): circuit files, currents against the
closed-form equations, KCL at every free node, gradients against finite differences, EP's orders."""

import numpy as np
import pytest

from hil import exact
from hil.circuit import CircuitError, load_circuit
from hil.circuits import random_network, with_elements
from hil.elements import VT
from hil.ideal import IdealSubstrate
from hil.mna import operating_point
from hil.rules import make_rule
from hil.substrate import Adjoint, Clamp, Free, Nudge, SubstrateError

MIX = """name = "mix"
ground = "gnd"
inputs = ["x1", "x2"]
outputs = ["o1"]
g_min = 1.0e-5
g_max = 1.0e-2

[[edge]]
name = "R1"
a = "x1"
b = "h1"
g = 1.0e-3

[[edge]]
name = "R2"
a = "x2"
b = "h2"
g = 2.0e-3

[[edge]]
name = "R3"
a = "h2"
b = "o1"
g = 1.0e-3
fixed = true

[[edge]]
name = "R4"
a = "o1"
b = "gnd"
g = 5.0e-4

[[edge]]
name = "R5"
a = "vb1"
b = "h1"
g = 1.0e-4

[[edge]]
name = "R6"
a = "h3"
b = "o1"
g = 1.0e-3

[[bias]]
node = "vb1"
v = 0.3

[[diode]]
name = "D1"
a = "h1"
b = "gnd"
is = 1.0e-12
n = 1.0
rs = 20.0

[[mosfet]]
name = "M1"
d = "h1"
s = "h2"
gate = "ground"
vg = 3.0
vg_min = 0.0
vg_max = 5.0
kp = 2.0e-4
vto = 0.7
lambda = 0.02

[[vcvs]]
name = "E1"
out_p = "h3"
out_n = "gnd"
ctrl_p = "h2"
ctrl_n = "gnd"
gain = 0.5
"""


def write(tmp_path, text):
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


def mixed(seed, **kw):
    opts = dict(diodes=3, mosfets=2, midpoint=2, vcvs=1, vccs=1, biases=1, rs=10.0 * (seed % 2))
    opts.update(kw)
    return with_elements(random_network(10, 3, seed=seed), seed=seed, **opts)


def test_every_kind_loads_and_round_trips(tmp_path):
    c = load_circuit(write(tmp_path, MIX))
    assert [type(g).__name__ for g in c.elements] == ["Diode", "Mosfet", "VCVS"]
    assert [c.nodes[i] for i in c.sources] == ["gnd", "x1", "x2", "vb1"]
    assert c.param_names == ("R1", "R2", "R3", "R4", "R5", "R6", "M1")
    lo, hi = c.bounds()
    assert lo[2] == hi[2] == 1e-3  # the fixed edge cannot move
    assert (lo[-1], hi[-1]) == (0.0, 5.0) and not c.reciprocal and not c.linear
    again = load_circuit(c.save(tmp_path / "again.toml"))
    assert again.to_toml() == c.to_toml()
    X = np.array([[1.0, -0.5], [2.0, 0.7]])
    np.testing.assert_allclose(exact.free_state(again, X), exact.free_state(c, X), rtol=0, atol=1e-13)


KIND_ERRORS = [
    # (table text replaced, replacement, the message's words); every message names the line and the element
    ('name = "D1"', 'name = "D 1"', ":50: diode name 'D 1' is not a plain identifier"),
    ('name = "D1"', 'name = "R1"', ":50: duplicate element name 'R1'"),
    ('a = "h1"\nb = "gnd"\nis', 'a = "h1"\nb = "h1"\nis', ":52: diode 'D1' is a self-loop on node 'h1'"),
    ('a = "h1"\nb = "gnd"\nis', 'a = "h-1"\nb = "gnd"\nis', ":51: node name 'h-1' is not a plain identifier"),
    ("is = 1.0e-12", "is = -1.0e-12", ":53: diode 'D1': is = -1e-12 must be positive (A)"),
    ("is = 1.0e-12", "", ":49: diode 'D1': missing 'is'"),
    ("\nn = 1.0", "\nn = 0", ":54: diode 'D1': n = 0 must be positive (1)"),
    ("rs = 20.0", "rs = -1.0", ":55: diode 'D1': rs = -1.0 must not be negative (ohms)"),
    ("rs = 20.0", 'model = "spice"', ":55: diode 'D1': model = 'spice' is not supported"),
    ("rs = 20.0", "colour = 1", ":55: diode 'D1': unknown key 'colour'"),
    ('name = "M1"', 'name = "M1;"', ":58: mosfet name 'M1;' is not a plain identifier"),
    ('d = "h1"', 'd = "h2"', ":60: mosfet 'M1' is a self-loop on node 'h2'"),
    ('gate = "ground"', 'gate = "drain"', ":61: mosfet 'M1': gate = 'drain' (expected \"ground\" or \"midpoint\")"),
    ("vg = 3.0", "vg = 6.0", ":62: mosfet 'M1': vg = 6.0 V is outside [vg_min, vg_max] = [0.0, 5.0]"),
    ("vg = 3.0", 'vg = "3V"', ":62: mosfet 'M1': vg = '3V' is not a finite number (V)"),
    ("vg_min = 0.0", "vg_min = 5.0", ":63: mosfet 'M1': vg_min = 5.0 must be below vg_max = 5.0"),
    ("vg_max = 5.0", "vg_max = inf", ":64: mosfet 'M1': vg_max = inf is not a finite number (V)"),
    ("kp = 2.0e-4", "kp = 0.0", ":65: mosfet 'M1': kp = 0.0 must be positive (A/V^2)"),
    ("vto = 0.7", "vto = nan", ":66: mosfet 'M1': vto = nan is not a finite number (V)"),
    ("lambda = 0.02", "lambda = -0.1", ":67: mosfet 'M1': lambda = -0.1 must not be negative (1/V)"),
    ("lambda = 0.02", "w = 0", ":67: mosfet 'M1': w = 0 must be positive (m)"),
    ("lambda = 0.02", "l = -1e-6", ":67: mosfet 'M1': l = -1e-06 must be positive (m)"),
    ("lambda = 0.02", "fixed = 1", ":67: mosfet 'M1': fixed = 1 must be true or false"),
    ("lambda = 0.02", "bulk = 0", ":67: mosfet 'M1': unknown key 'bulk'"),
    ('name = "E1"', 'name = "1E"', ":70: vcvs name '1E' is not a plain identifier"),
    ('out_p = "h3"', 'out_p = "gnd"', ":72: vcvs 'E1': out_p and out_n are both node 'gnd'"),
    ('ctrl_p = "h2"', 'ctrl_p = "gnd"', ":74: vcvs 'E1': ctrl_p and ctrl_n are both node 'gnd'"),
    ("gain = 0.5", "gain = true", ":75: vcvs 'E1': gain = True is not a finite number (V/V)"),
    ("gain = 0.5", "", ":69: vcvs 'E1': missing 'gain'"),
    ('out_n = "gnd"', 'out_n = "x y"', ":72: node name 'x y' is not a plain identifier"),
    ('node = "vb1"', 'node = "zz"', ":46: bias #1: unknown node 'zz'"),
    ('node = "vb1"', 'node = "x1"', ":46: bias 'x1': the node is an input"),
    ('node = "vb1"', 'node = "o1"', ":46: bias 'o1': the node is an output"),
    ('node = "vb1"', 'node = "gnd"', ":46: bias 'gnd': the node is the ground node"),
    ("v = 0.3", 'v = "0.3"', ":47: bias 'vb1': v = '0.3' is not a finite number (volts)"),
    ("v = 0.3", "v = 0.3\nvolts = 1", ":48: bias #1: unknown key 'volts'"),
    ("v = 0.3", "", ":45: bias #1: missing 'v'"),
    ("g = 1.0e-3\nfixed = true", "g = 1.0e-3\nfixed = 1", ":25: edge 'R3': fixed = 1 must be true or false"),
]


@pytest.mark.parametrize("old, new, message", KIND_ERRORS, ids=[m for _, _, m in KIND_ERRORS])
def test_bad_element_entries_name_file_line_and_element(tmp_path, old, new, message):
    assert MIX.count(old) == 1
    p = write(tmp_path, MIX.replace(old, new))
    with pytest.raises(CircuitError) as err:
        load_circuit(p)
    assert f"{p}{message}" in str(err.value)


def test_a_fixed_edge_may_lie_outside_the_bounds(tmp_path):
    c = load_circuit(write(tmp_path, MIX.replace("g = 1.0e-3\nfixed = true", "g = 5.0\nfixed = true")))
    assert c.g[2] == 5.0
    with pytest.raises(CircuitError, match=r":24: edge 'R3': conductance 5.0 S is outside"):
        load_circuit(write(tmp_path, MIX.replace("g = 1.0e-3\nfixed = true", "g = 5.0")))


def diode_i(dv, Is, n, rs):
    """The Shockley current with series resistance by bisection on i = Is (exp((dv - i rs)/(n VT)) - 1)."""
    if rs == 0:
        return Is * np.expm1(dv / (n * VT))
    lo, hi = -Is, max(dv / rs, 0.0) + Is
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid - Is * np.expm1((dv - mid * rs) / (n * VT)) < 0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


@pytest.mark.parametrize("rs", [0.0, 50.0])
def test_diode_current_against_the_closed_form(tmp_path, rs):
    c = load_circuit(write(tmp_path, MIX.replace("rs = 20.0", f"rs = {rs}").replace("\nn = 1.0", "\nn = 1.5")))
    d = c.elements[0]
    dv = np.array([-1.0, -0.05, 0.0, 0.3, 0.6, 0.75, 0.9])
    i, G = d.evaluate(np.stack([dv, np.zeros_like(dv)], -1)[:, None, :])
    want = np.array([diode_i(v, 1e-12, 1.5, rs) for v in dv])
    np.testing.assert_allclose(i[:, 0, 0], want, rtol=1e-9, atol=1e-24)
    np.testing.assert_array_equal(i[:, 0, 1], -i[:, 0, 0])
    h = 1e-7
    fd = [(diode_i(v + h, 1e-12, 1.5, rs) - diode_i(v - h, 1e-12, 1.5, rs)) / (2 * h) for v in dv]
    np.testing.assert_allclose(G[:, 0, 0, 0], fd, rtol=1e-5, atol=1e-20)


def level1(vd, vs, vg, k, vto, lam):
    """SPICE level 1, drain d, source s (swapped when V_DS < 0): the current from d to s."""
    if vd < vs:
        return -level1(vs, vd, vg, k, vto, lam)
    vds, vov = vd - vs, vg - vs - vto
    if vov <= 0:
        return 0.0
    if vds < vov:
        return k * (vov * vds - vds * vds / 2) * (1 + lam * vds)
    return k / 2 * vov * vov * (1 + lam * vds)


@pytest.mark.parametrize("gate", ["ground", "midpoint"])
def test_channel_current_in_all_three_regions_and_swapped(tmp_path, gate):
    c = load_circuit(write(tmp_path, MIX.replace('gate = "ground"', f'gate = "{gate}"')))
    m = c.elements[1]
    k, vg = 2e-4, 3.0
    pts = [(0.5, 0.4), (0.4, 0.5), (2.0, 0.1), (0.1, 2.0), (4.0, 3.5), (3.5, 4.0), (5.0, 0.0), (0.0, 5.0), (1.0, 1.0)]
    V = np.array(pts)[:, None, :]
    i, G = m.evaluate(V)
    gate_v = lambda d, s: vg + (0.5 * (d + s) if gate == "midpoint" else 0.0)
    want = [level1(d, s, gate_v(d, s), k, 0.7, 0.02) for d, s in pts]
    np.testing.assert_allclose(i[:, 0, 0], want, rtol=1e-13, atol=1e-20)
    regions = m.regions(V)[:, 0]
    assert set(regions.tolist()) == ({0, 1, 2} if gate == "ground" else {1, 2})
    h = 1e-6
    for t in range(2):  # the stamp against central differences of the closed form
        e = np.eye(2)[t] * h
        fd = [(level1(*(np.add(p, e)), gate_v(*np.add(p, e)), k, 0.7, 0.02)
               - level1(*(np.subtract(p, e)), gate_v(*np.subtract(p, e)), k, 0.7, 0.02)) / (2 * h) for p in pts]
        np.testing.assert_allclose(G[:, 0, 0, t], fd, rtol=1e-6, atol=1e-12)
    if gate == "midpoint":  # in triode the channel is the conductance k (vg - vto) (1 + lambda |dv|)
        tri = regions == 1
        dv = np.array(pts)[:, 0] - np.array(pts)[:, 1]
        np.testing.assert_allclose(i[tri, 0, 0], k * (vg - 0.7) * dv[tri] * (1 + 0.02 * np.abs(dv[tri])), rtol=1e-13)


@pytest.mark.parametrize("seed", range(4))
def test_kcl_at_every_free_node_on_random_circuits_of_every_kind(seed):
    c = mixed(seed)
    X = np.random.default_rng(seed).uniform(-2, 2, (16, len(c.inputs)))
    system, x = operating_point(c, X)
    V = x[:, :c.n]
    # the currents recomputed independently of the solver, element by element from each kind's equation
    F = np.zeros_like(V)
    imax = np.zeros(len(V))
    for grp, i in zip(system.groups, system.currents(x)):
        nodes = grp.nodes
        for t in range(nodes.shape[1]):
            np.add.at(F.T, nodes[:, t], i[:, :, t].T)
        imax = np.maximum(imax, np.abs(i[:, :, :2 if grp.branch else None]).reshape(len(V), -1).max(axis=1))
        if grp.branch:  # the VCVS's branch current and its constraint V_op - V_on = gain (V_cp - V_cn)
            nd = grp.nodes
            con = V[:, nd[:, 0]] - V[:, nd[:, 1]] - grp.values["gain"] * (V[:, nd[:, 2]] - V[:, nd[:, 3]])
            assert np.abs(con).max() <= 1e-12 * np.abs(V).max()
    g, _ = c.split(c.theta)
    ir = g * c.drops(V)  # resistors directly
    assert np.abs(ir).max() <= imax.max() * (1 + 1e-12)
    kcl = np.abs(F[:, c.free]).max(axis=1) / imax
    assert kcl.max() < 1e-12, kcl


def test_nonconvergence_names_circuit_example_node_and_residual(monkeypatch):
    import hil.mna
    c = mixed(1)
    monkeypatch.setattr(hil.mna, "MAX_ITER", 1)
    X = np.array([[0.0, 0.0], [2.0, -2.0]])
    with pytest.raises(SubstrateError, match=r"circuit 'random10_d3_s1_el1': the free state of example 1 did not "
                                             r"converge \(Newton, 1 iterations\): residual \S+ A at node '\w+'"):
        exact.free_state(c, X)


def fd_gradient(c, X, Y, rel=1e-6):
    th = c.theta
    out = np.zeros_like(th)
    for e in range(len(th)):
        h = rel * max(abs(th[e]), 1e-3)
        up, dn = th.copy(), th.copy()
        up[e] += h
        dn[e] -= h
        out[e] = (exact.loss(c, X, Y, up) - exact.loss(c, X, Y, dn)) / (2 * h)
    return out


@pytest.mark.parametrize("seed", range(3))
def test_gd_equals_central_differences_on_random_nonlinear_circuits(seed):
    c = mixed(seed, vccs=2)
    assert {"G1", "G2", "M1", "M3"} <= set(c.param_names)  # g, gm and vg are all trained
    rng = np.random.default_rng(seed)
    X, Y = rng.uniform(-1.5, 1.5, (6, 2)), rng.uniform(-0.5, 0.5, (6, 2))
    ref = fd_gradient(c, X, Y)
    np.testing.assert_allclose(exact.gradient(c, X, Y), ref, rtol=2e-6, atol=2e-6 * np.abs(ref).max())
    sub = IdealSubstrate(c)
    rule = make_rule("gd").configure(sub.kappa_max())
    est = rule.estimate(sub.measure(X, Y, rule.states()))
    np.testing.assert_allclose(est, ref, rtol=2e-6, atol=2e-6 * np.abs(ref).max())
    # the Jacobian dV_O/dtheta of the nonlinear circuit against the loss gradient it implies
    J = exact.jacobian(c, X).reshape(len(X), len(c.outputs), -1)
    r = exact.free_state(c, X)[:, list(c.outputs)] - Y
    np.testing.assert_allclose(np.einsum("io,iop->p", r, J) / len(X), ref, rtol=2e-6, atol=2e-6 * np.abs(ref).max())


def reciprocal_circuit(seed):
    return mixed(seed, mosfets=0, midpoint=3, vcvs=0, vccs=0, biases=1, diodes=3)


@pytest.mark.parametrize("rule, order", [("ep", 1), ("ep-sym", 2), ("ep-holo:4", 4), ("ep-stencil:2", 4)])
def test_ep_converges_to_the_exact_gradient_at_its_order_on_reciprocal_nonlinear_circuits(rule, order):
    c = reciprocal_circuit(2)
    assert c.reciprocal and not c.linear
    rng = np.random.default_rng(7)
    X, Y = rng.uniform(-1, 2, (6, 2)), rng.uniform(-0.3, 0.6, (6, 2))
    sub = IdealSubstrate(c)
    g = exact.gradient(c, X, Y)
    np.testing.assert_allclose(exact.ep_limit(c, X, Y), g, rtol=1e-12, atol=1e-12 * np.abs(g).max())
    kappa = sub.kappa_max()
    errs = []
    for frac in (0.02, 0.01):
        r = make_rule(rule, frac / kappa).configure(kappa)
        errs.append(np.linalg.norm(r.estimate(sub.measure(X, Y, r.states())) - g) / np.linalg.norm(g))
    assert 2 ** order * 0.8 < errs[0] / errs[1] < 2 ** order * 1.25, errs


def test_every_experiment_mode_on_a_nonlinear_circuit(tmp_path):
    c = load_circuit(write(tmp_path, MIX))
    sub = IdealSubstrate(c)
    X, Y = np.array([[1.0, -0.5], [2.0, 0.7]]), np.array([[0.2], [-0.1]])
    beta = 1e-4
    m = sub.measure(X, Y, [Free(), Nudge(beta), Clamp(0.3), Adjoint(), Nudge(0.5 * beta, open_loop=True)])
    Vf, out = m[Free()], list(c.outputs)
    np.testing.assert_allclose(Vf, exact.free_state(c, X), atol=1e-13)
    # the clamped outputs sit where the clamp holds them; the nudged state: F = beta (y - V_O), checked by a
    # second solve with the nudge's current injected
    np.testing.assert_allclose(m[Clamp(0.3)][:, out], Vf[:, out] + 0.3 * (Y - Vf[:, out]), atol=1e-15)
    Vn = m[Nudge(beta)]
    from hil.substrate import Experiment
    again = sub.run(X, [Experiment(True, "current", beta * (Y - Vn[:, out]))])[0]
    np.testing.assert_allclose(again, Vn, atol=1e-11)
    # the adjoint state: A^T lambda = P^T r at the free operating point, against exact.adjoint_state
    np.testing.assert_allclose(m[Adjoint()], exact.adjoint_state(c, X, Y), rtol=1e-9, atol=1e-12)
    # a linearised (complex) nudge tends to the nudged state's derivative: (V(i b) - V_f) / (i b) -> -mu
    Vc = sub.measure(X, Y, [Free(), Nudge(1j * 1e-9)])[Nudge(1j * 1e-9)]
    np.testing.assert_allclose((Vc - Vf) / (1j * 1e-9), -exact.error_vector(c, X, Y), rtol=1e-6, atol=1e-9)


def test_info_describes_a_circuit_of_every_kind(tmp_path):
    import json
    import subprocess

    from helpers import HIL
    p = write(tmp_path, MIX)
    run = subprocess.run(HIL + ["info", str(p), "--json"], capture_output=True, text=True, check=True)
    obj = json.loads(run.stdout.splitlines()[-1])
    assert obj["elements"] == {"diode": ["D1"], "mosfet": ["M1"], "vcvs": ["E1"]} and obj["biases"] == {"vb1": 0.3}
    assert "8 nodes, 6 edges, 1 diode, 1 mosfet, 1 vcvs, 1 bias" in run.stdout
    c = load_circuit(p)
    # K about the operating point at 0 V inputs, against the response of a small current at the output
    X = np.zeros((1, 2))
    V0 = exact.free_state(c, X)
    sub = IdealSubstrate(c)
    from hil.substrate import Experiment
    h = 1e-7
    Vp, Vm = sub.run(X, [Experiment(True, "current", np.array([[h]])), Experiment(True, "current", np.array([[-h]]))])
    np.testing.assert_allclose(obj["K_eigenvalues"][0][0], (Vp - Vm)[0, c.outputs[0]] / (2 * h), rtol=1e-6)
    assert obj["symmetry_index"] < 1  # the ground-referenced channel and the buffer: A is not symmetric
    # H = 1/2 ||A - A^T||^2 from the Jacobian at that operating point
    A = exact.operating_jacobian(c)
    assert obj["homeostasis_H"] == pytest.approx(0.5 * np.sum((A - A.T) ** 2), rel=1e-12)
    assert np.isfinite(V0).all()


def test_al_and_cl_on_a_reciprocal_nonlinear_circuit():
    c = reciprocal_circuit(2)
    rng = np.random.default_rng(7)
    X, Y = rng.uniform(-1, 2, (6, 2)), rng.uniform(-0.3, 0.6, (6, 2))
    sub = IdealSubstrate(c)
    g = exact.gradient(c, X, Y)
    kappa = sub.kappa_max()
    errs = []
    for eta in (0.02, 0.01):  # AL's clamp from the adjoint (small-signal) experiment: first order in eta
        r = make_rule("al", eta).configure(kappa)
        errs.append(np.linalg.norm(r.estimate(sub.measure(X, Y, r.states())) - g) / np.linalg.norm(g))
    assert 1.6 < errs[0] / errs[1] < 2.5 and errs[1] < 0.05
    # CL: the clamped state by Newton, the outputs exactly at V_O + eta (y - V_O)
    m = sub.measure(X, Y, [Free(), Clamp(0.1)])
    out = list(c.outputs)
    np.testing.assert_allclose(m[Clamp(0.1)][:, out], m[Free()][:, out] + 0.1 * (Y - m[Free()][:, out]), atol=1e-15)


def test_a_run_with_channels_resumes_with_its_gate_voltages(tmp_path):
    import subprocess

    from helpers import HIL
    from hil.runs import Run
    p = write(tmp_path, MIX)
    base = HIL + ["train", str(p), "--teacher", "1", "--rule", "ep-sym", "--checkpoint-every", "2", "--log-every", "1"]
    subprocess.run(base + ["--steps", "6", "--out", str(tmp_path / "a")], check=True, capture_output=True)
    subprocess.run(HIL + ["train", "--resume", str(tmp_path / "a"), "--steps", "10"], check=True, capture_output=True)
    subprocess.run(base + ["--steps", "10", "--out", str(tmp_path / "b")], check=True, capture_output=True)
    a, b = Run(tmp_path / "a"), Run(tmp_path / "b")
    np.testing.assert_allclose(a.read_log()["train_loss"], b.read_log()["train_loss"], rtol=1e-12)
    ga, gb = a.load_checkpoint()["g"], b.load_checkpoint()["g"]
    assert len(ga) == 7 and ga[-1] != 3.0  # the channel's vg was trained and kept
    np.testing.assert_allclose(ga, gb, rtol=1e-12)


def test_the_bench_refuses_the_kinds_it_has_no_part_for(tmp_path):
    from hil.train import open_substrate
    c = load_circuit(write(tmp_path, MIX))
    with pytest.raises(ValueError, match=r"c.toml: the bench has no part for diode 'D1' \(and 3 more\); circuits "
                                         r"with diodes, channels, VCVS or biases run on --backend ideal or ngspice"):
        open_substrate(c, "bench", bench=str(tmp_path / "bench.toml"))


IDEAL = MIX.replace("is = 1.0e-12\nn = 1.0\nrs = 20.0", 'model = "ideal"').replace(
    '[[mosfet]]\nname = "M1"\nd = "h1"\ns = "h2"\ngate = "ground"', '[[mosfet]]\nname = "M1"\nd = "h1"\ns = "h2"\ngate = "midpoint"')


def ideal_diode_circuit(seed):
    import tomllib

    from hil.circuit import circuit_from_dict
    c0 = random_network(12, 3, seed=seed)
    d = tomllib.loads(c0.to_toml())
    rng = np.random.default_rng(seed)
    d["diode"] = [{"name": f"D{j}", "a": c0.nodes[a], "b": c0.nodes[b], "model": "ideal"}
                  for j, (a, b) in enumerate(rng.choice(c0.n, 2, replace=False) for _ in range(5))]
    return circuit_from_dict(d, source=f"ideal diodes {seed}")


@pytest.mark.parametrize("seed", range(3))
def test_ideal_diodes_are_solved_exactly(seed):
    c = ideal_diode_circuit(seed)
    assert c.reciprocal and [type(g).__name__ for g in c.elements] == ["IdealDiode"]
    rng = np.random.default_rng(seed)
    X, Y = rng.uniform(-1, 1, (20, 2)), rng.uniform(-0.3, 0.3, (20, 2))
    system, x = operating_point(c, X)
    idx = system.idx[-1]
    i, dv = x[:, idx[:, 2]], x[:, idx[:, 0]] - x[:, idx[:, 1]]
    # complementarity: each diode conducts with no drop or blocks with no current (to rounding: the Newton step
    # by the Woodbury identity leaves ~1e-20 A in a blocking diode), both in some example
    assert i.min() >= -1e-12 * i.max() and dv.max() <= 1e-15 and np.abs(i * dv).max() <= 1e-18
    on = i > 0
    assert on.any() and (~on).any()
    R, _, imax = system.evaluate(x, False)
    assert (np.abs(R[:, system.unknowns()]).max(axis=1) / imax).max() < 1e-12
    # the state minimises the co-content: every diode's constraint dv <= 0, and among the states that keep the
    # conducting diodes shorted and the others open it is the linear one (KCL above); gd = central differences
    ref = fd_gradient(c, X, Y)
    np.testing.assert_allclose(exact.gradient(c, X, Y), ref, rtol=1e-6, atol=1e-6 * np.abs(ref).max())


def test_an_ideal_diode_loads_round_trips_and_is_refused_by_ngspice(tmp_path):
    c = load_circuit(write(tmp_path, IDEAL))
    assert [type(g).__name__ for g in c.elements] == ["IdealDiode", "Mosfet", "VCVS"]
    assert load_circuit(c.save(tmp_path / "again.toml")).to_toml() == c.to_toml()
    with pytest.raises(CircuitError, match=r":53: diode 'D1': an ideal diode has no 'is'"):
        load_circuit(write(tmp_path, MIX.replace("rs = 20.0", 'model = "ideal"')))
    from hil.spice.netlist import standalone_deck
    with pytest.raises(ValueError, match="diode 'D1': an ideal diode has no SPICE card"):
        standalone_deck(c, c.g, [0.0, 0.0])
