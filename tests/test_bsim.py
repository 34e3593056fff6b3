"""The BSIM4 channel (PTM 65 nm card) beside the level-1 one: what the midpoint gate leaves on a realistic channel."""

import subprocess

import numpy as np
import pytest
from helpers import ep_sym_richardson

from hil.circuits import load
from hil.gradients import decomposition, ep_limit, reference_gradient
from hil.substrate import SubstrateError
from hil.tasks import teacher_task


@pytest.fixture(scope="module")
def task():
    c = load("net16")
    t = teacher_task(c, 1, 4)
    return c, 0.1 * t.X_train, 0.1 * t.Y_train  # signals x 0.1: the channels in triode


def test_bsim_card_calibration_and_standalone_deck(ngspice, tmp_path):
    from hil.spice.devices import make_device
    from hil.spice.netlist import standalone_deck
    from hil.spice.nonideal import NonIdeal
    c = load("net16")
    dev = make_device("mosfet-mid-bsim", c, NonIdeal())
    assert "level=54" in dev.model_card and "vth0 = 0.423" in dev.model_card and dev.model_card.count("\n+") > 50
    # g(V_c) rises strictly above threshold over the whole gate range and spans the circuit's conductances
    assert np.all(np.diff(dev._g_on) > 0) and dev.vg[-1] == pytest.approx(dev.param_range[1])
    assert dev._g_on[0] < c.g.min() and dev._g_on[-1] > c.g.max()
    np.testing.assert_allclose(dev.g_from_param(dev.param_from_g(c.g)), c.g, rtol=1e-9)
    # the deck with the multi-line card runs in ngspice on its own
    deck = tmp_path / "n.cir"
    deck.write_text(standalone_deck(c, dev.param_from_g(c.g), np.ones(len(c.inputs)), device=dev))
    r = subprocess.run(["ngspice", "-b", str(deck)], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert not [p.name for p in tmp_path.iterdir() if p.name != "n.cir"]  # BSIM4 leaves no check log behind


def test_bsim_midpoint_gate_leaves_a_small_asymmetry_bias(ngspice, task):
    """Ground-referenced BSIM4 gate: non-reciprocal, as level 1. Midpoint gate: the square-law cancellation is
    no longer exact (body effect, mobility degradation, series resistance), so a bias remains, far smaller."""
    from hil.spice.substrate import NgSpiceSubstrate
    c, X, Y = task
    res = {}
    for dev in ("mosfet-bsim", "mosfet-mid-bsim"):
        with NgSpiceSubstrate(c, device=dev) as sub:
            assert not sub.has_sens
            with pytest.raises(SubstrateError, match="--reference fd"):
                reference_gradient(sub, X, Y, "sens")  # refused before ngspice is asked: it would not recover
            ref = reference_gradient(sub, X, Y)  # auto: central differences
            res[dev] = decomposition(sub, X, Y, reference=ref)
    assert res["mosfet-bsim"]["asymmetry_bias"] > 0.05
    assert 1e-3 < res["mosfet-mid-bsim"]["asymmetry_bias"] < 0.5 * res["mosfet-bsim"]["asymmetry_bias"]


def test_bsim_ac_limit_is_the_limit_of_real_nudges(ngspice, task):
    """ghat(0) from the AC analysis against ep-sym's Richardson extrapolation on the BSIM4 network (its
    capacitances admit ~1e-14 S at the AC analysis' 1 Hz, far below the channels' ~1e-4 S)."""
    from hil.spice.substrate import NgSpiceSubstrate
    c, X, Y = task
    with NgSpiceSubstrate(c, device="mosfet-bsim") as ng:
        k = ng.kappa_max(X)
        g0 = ep_limit(ng, X, Y)
        est, rich = ep_sym_richardson(ng, X, Y, k)
    rel = lambda a: float(np.linalg.norm(a - g0) / np.linalg.norm(g0))
    assert rel(est[0.01]) / rel(est[0.005]) == pytest.approx(4, rel=0.05)
    assert rel(rich) < 1e-6 and rel(rich) < 1e-2 * rel(est[0.005])
