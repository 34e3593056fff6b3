"""Element kinds on ngspice: each its own card; the embedded Newton solver and ngspice agree."""

import shutil
import subprocess

import numpy as np
import pytest

from helpers import HIL
from hil import exact
from hil.circuit import load_circuit
from hil.circuits import random_network, with_elements
from hil.gradients import reference_gradient
from hil.ideal import IdealSubstrate
from hil.runs import Run
from hil.substrate import Clamp, Free, Nudge
from test_elements import MIX


@pytest.fixture
def pair(ngspice):
    from hil.spice.substrate import NgSpiceSubstrate
    made = []

    def make(c, **kw):
        ng = NgSpiceSubstrate(c, **kw)
        made.append(ng)
        return IdealSubstrate(c), ng

    yield make
    for ng in made:
        ng.close()


@pytest.mark.parametrize("seed, vccs, batched", [(0, 0, True), (1, 1, False), (2, 0, False)])
def test_states_and_gradients_agree_with_ngspice_on_random_circuits_of_every_kind(pair, seed, vccs, batched):
    c = with_elements(random_network(10, 3, seed=seed), seed=seed, diodes=3, mosfets=2, midpoint=2, vcvs=1,
                      vccs=vccs, biases=1, rs=10.0 * (seed % 2))
    rng = np.random.default_rng(seed)
    X, Y = rng.uniform(-1.5, 1.5, (5, 2)), rng.uniform(-0.5, 0.5, (5, 2))
    ideal, ng = pair(c, batched=batched)
    states = [Free(), Nudge(1e-4), Nudge(-1e-4), Clamp(0.2)]
    a, b = ng.measure(X, Y, states), ideal.measure(X, Y, states)
    for s in states:
        np.testing.assert_allclose(a[s], b[s], rtol=0, atol=1e-6)
    # the gradient: central differences through ngspice against the adjoint of the linearised embedded circuit
    ref = exact.gradient(c, X, Y)
    np.testing.assert_allclose(reference_gradient(ng, X, Y), ref, rtol=0, atol=1e-5 * np.abs(ref).max())
    # parameters written (conductances and channel gates) reach every deck
    lo, hi = c.bounds()
    theta = np.clip(c.theta * 1.1, lo, hi)
    ng.write(theta)
    ideal.write(theta)
    np.testing.assert_allclose(ng.read(), theta)
    np.testing.assert_allclose(ng.measure(X, Y, [Free()])[Free()], ideal.measure(X, Y, [Free()])[Free()], atol=1e-6)
    # dV/dbeta at 0 (an AC analysis on ngspice, the linearised circuit embedded)
    np.testing.assert_allclose(ng.nudge_derivative(X, Y), ideal.nudge_derivative(X, Y), rtol=1e-6,
                               atol=1e-6 * np.abs(ideal.nudge_derivative(X, Y)).max())


def test_netlist_deck_has_every_card_and_runs_in_ngspice(tmp_path, ngspice):
    if not shutil.which("ngspice"):
        pytest.fail("the ngspice program is missing (Debian package `ngspice`)")
    src = tmp_path / "mix.toml"
    src.write_text(MIX)
    f = tmp_path / "mix.cir"
    subprocess.run(HIL + ["netlist", str(src), "--inputs", "1.0,-0.5", "-o", str(f)], check=True)
    deck = f.read_text()
    for card in (".model dm_d1 d is=1e-12 n=1.0 rs=20.0", "Dd_D1 nd_h1 0 dm_d1",
                 ".model mm_m1 nmos level=1 vto=0.7 kp=0.0002 lambda=0.02", "Mm_M1 nd_h1 hg_m1 nd_h2 hb_el mm_m1",
                 "Vg_M1 hg_m1 0 3.0", "Ee_E1 nd_h3 0 nd_h2 0 0.5", "Vbi_vb1 nd_vb1 0 0.3"):
        assert card in deck, card
    run = subprocess.run(["ngspice", "-b", str(f)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    c = load_circuit(src)
    V = exact.free_state(c, [[1.0, -0.5]])[0]
    got = {ln.split("=")[0].strip(): float(ln.split("=")[1]) for ln in run.stdout.splitlines() if ln.startswith("v(nd_")}
    assert len(got) == c.n - 1
    for i, name in enumerate(c.nodes):
        if i != c.ground:
            assert abs(got[f"v(nd_{name})"] - V[i]) < 1e-6 * max(1.0, abs(V[i]))


def test_training_with_diodes_biases_and_channels_has_the_same_curve_on_both_backends(tmp_path, ngspice):
    src = tmp_path / "mix.toml"
    src.write_text(MIX)
    for backend in ("ideal", "ngspice"):
        subprocess.run(HIL + ["train", str(src), "--teacher", "1", "--rule", "ep-sym", "--steps", "12", "--batch", "4",
                              "--log-every", "1", "--out", str(tmp_path / backend), "--backend", backend], check=True, capture_output=True)
    a = Run(tmp_path / "ideal").read_log()["train_loss"]
    b = Run(tmp_path / "ngspice").read_log()["train_loss"]
    assert len(a) == 13 and a[-1] < 0.5 * a[0]
    np.testing.assert_allclose(b, a, rtol=1e-4)


def scaled_teacher(c, scale, examples=8):
    from hil.tasks import teacher_task
    base = teacher_task(c, seed=1, examples=examples)
    return scale * base.X_train, scale * base.Y_train


@pytest.mark.parametrize("device", ["mosfet", "mosfet-mid"])
def test_level1_devices_on_the_ideal_backend_match_ngspice(ngspice, device):
    from hil.ideal import IdealChannelSubstrate
    from hil.spice.substrate import NgSpiceSubstrate
    c = load_circuit("net16")
    ideal = IdealChannelSubstrate(c, device)
    with NgSpiceSubstrate(c, device=device) as ng:
        # the calibration g(vg): ngspice's dc sweep (at its default tolerances) against the level-1 equation
        np.testing.assert_allclose(ideal.g, ng.device.g, rtol=0, atol=1e-6 * ideal.g.max())
        np.testing.assert_allclose(ideal.gates(), ng.read_params(), rtol=0, atol=1e-5)
        ng.write_params(ideal.gates())  # the same gates: the channels' physics compared alone
        # in triode, and with channels saturated and cut off: a node held only by the junctions' gmin (1e-12 S)
        # is where ngspice stops at its current tolerance abstol = 1e-16 A, ~1e-5 V there
        for scale, tol in ((0.1, 1e-6), (1.0, 1e-5)):
            X, Y = scaled_teacher(c, scale)
            states = [Free(), Nudge(1e-7), Clamp(0.1)]
            a, b = ideal.measure(X, Y, states), ng.measure(X, Y, states)
            for s in states:
                np.testing.assert_allclose(a[s], b[s], rtol=0, atol=tol)
        X, Y = scaled_teacher(c, 0.1)
        p = ideal.gates()
        dvg_ng = reference_gradient(ng, X, Y) / ng.device.dparam_dg(p)  # dC/dvg, V^2/V^2
        dvg_ideal = reference_gradient(ideal, X, Y) / ideal.dparam_dg(p)
        np.testing.assert_allclose(dvg_ideal, dvg_ng, rtol=0, atol=1e-5 * np.abs(dvg_ng).max())
        d = ng.nudge_derivative(X, Y)
        np.testing.assert_allclose(ideal.nudge_derivative(X, Y), d, rtol=0, atol=1e-6 * np.abs(d).max())


def test_the_three_terms_split_the_error_of_ep_on_ground_referenced_channels(ngspice):
    from hil.gradients import decomposition
    from hil.ideal import IdealChannelSubstrate
    from hil.rules import make_rule
    from hil.spice.substrate import NgSpiceSubstrate
    c = load_circuit("net16")
    ideal = IdealChannelSubstrate(c, "mosfet")
    X, Y = scaled_teacher(c, 0.1)
    dec = decomposition(ideal, X, Y)
    ref = dec["reference"]
    # the reference and -mu^T dF/dtheta from the channel circuit's own mathematics (vg), chained to g
    ch, theta = ideal.channels, ideal.inner.read()
    dvg = ideal.dparam_dg(ideal.gates())
    np.testing.assert_allclose(ref, exact.gradient(ch, X, Y, theta)[2 * c.m:] * dvg, rtol=1e-10)
    np.testing.assert_allclose(dec["true_limit"], exact.ep_limit(ch, X, Y, theta)[2 * c.m:] * dvg, rtol=1e-8,
                               atol=1e-10 * np.abs(ref).max())
    rule = make_rule("ep-sym", 1e-8).configure(ideal.kappa_max(X))
    est = rule.estimate(ideal.measure(X, Y, rule.states()))
    terms = [est - dec["limit"], dec["limit"] - dec["true_limit"], dec["true_limit"] - ref]
    np.testing.assert_allclose(sum(terms), est - ref, rtol=0, atol=1e-12 * np.linalg.norm(ref))
    n = np.linalg.norm(ref)
    assert np.linalg.norm(terms[0]) / n < 1e-4  # the nudge bias is small at this nudge
    np.testing.assert_allclose([np.linalg.norm(terms[1]) / n, np.linalg.norm(terms[2]) / n],
                               [dec["local_signal_bias"], dec["asymmetry_bias"]], rtol=1e-12)
    # one example has channels out of triode; there the rule's 1/2 dV^2 is not dI/dg: the local-signal bias
    counts = dec["outside_linear"]
    assert sum(counts) == counts[4] > 0 and dec["local_signal_bias"] > 5 * dec["asymmetry_bias"] > 0
    # ngspice's level-1 device splits the same way
    with NgSpiceSubstrate(c, device="mosfet") as ng:
        dn = decomposition(ng, X, Y)
    assert dn["outside_linear"] == counts
    np.testing.assert_allclose([dn["local_signal_bias"], dn["asymmetry_bias"]],
                               [dec["local_signal_bias"], dec["asymmetry_bias"]], rtol=1e-3)
    # with smaller signals every channel is in triode and the local-signal bias is rounding
    small = decomposition(ideal, *scaled_teacher(c, 0.02))
    assert not any(small["outside_linear"]) and small["local_signal_bias"] < 1e-12 < small["asymmetry_bias"]


def test_grad_json_carries_the_local_signal_bias_on_both_backends(tmp_path, ngspice):
    import json
    out = {}
    for backend in ("ideal", "ngspice"):
        run = subprocess.run(HIL + ["grad", "net16", "--teacher", "1", "--amplitude", "1", "--examples", "8", "--device", "mosfet-mid",
                                    "--backend", backend, "--json"], capture_output=True, text=True, check=True)
        out[backend] = json.loads(run.stdout.splitlines()[-1])  # the last line of stdout
    for backend, obj in out.items():
        assert obj["local_signal_bias"] > 0.01 and len(obj["outside_linear"]) == 8 and sum(obj["outside_linear"]) > 0
    assert out["ideal"]["local_signal_bias"] == pytest.approx(out["ngspice"]["local_signal_bias"], rel=1e-4)
