"""Devices (digipot, mosfet) and non-idealities on the ngspice substrate."""

import numpy as np
import pytest

from hil.circuit import load_circuit
from hil.gradients import finite_difference_gradient, reference_gradient
from hil.ideal import IdealSubstrate
from hil.runs import Run
from hil.substrate import Free
from hil.tasks import teacher_task
from hil.train import TrainConfig, start_run


@pytest.fixture
def sub(ngspice):
    from hil.spice.substrate import NgSpiceSubstrate
    made = []

    def make(c, **kw):
        s = NgSpiceSubstrate(c, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def test_mosfet_calibration_round_trips_and_matches_a_fresh_operating_point(sub):
    c = load_circuit("divider")
    s = sub(c, device="mosfet")
    d = s.device
    g = np.geomspace(1e-5, 1e-2, 9)
    vg = d.param_from_g(g)
    assert np.all(np.diff(vg) > 0) and vg.min() > 0.5 and vg.max() < 10
    np.testing.assert_allclose(d.g_from_param(vg), g, rtol=1e-9)
    # an independent check: a channel at V_ds = 1 mV, gate at vg[4], simulated now
    from hil.spice.session import session
    ss = session()
    ss.load("hilchk", f".title hilchk\n{d.model_card}\nVd d 0 dc 1e-3\nM1 d g 0 hb hil_nmos w={d.W!r} l={d.L!r}\n"
                      f"Vg g 0 dc {float(vg[4])!r}\nVb hb 0 dc -3\n.end\n")
    try:
        ss.op("check")
        gi = -ss.vector("vd#branch")[0] / 1e-3
    finally:
        ss.destroy_plots()
        ss.remove("hilchk")
    assert abs(gi / g[4] - 1) < 2e-3  # the calibration grid is 2 mV of gate


def test_mosfet_channel_is_nonlinear_and_sens_matches_finite_differences(sub):
    c = load_circuit("net16")
    task = teacher_task(c, seed=1, examples=4)
    s = sub(c, device="mosfet")
    X, Y = task.X_train, task.Y_train
    sens = reference_gradient(s, X, Y, "sens")
    fd = finite_difference_gradient(s, X, Y, rel_step=1e-5)
    np.testing.assert_allclose(sens, fd, rtol=1e-6, atol=1e-6 * np.abs(fd).max())
    # the transistor circuit's own gradient is not the ideal-resistor formula at the same conductances
    ideal = IdealSubstrate(c, g=s.read())
    V_ideal = ideal.measure(X, Y, [Free()])[Free()]
    V_mos = s.measure(X, Y, [Free()])[Free()]
    assert np.abs(V_mos - V_ideal).max() > 1e-3


def test_digipot_only_ever_writes_whole_taps(tmp_path, sub):
    c = load_circuit("net16")
    task = teacher_task(c, seed=1, examples=4)
    s = sub(c, device="digipot")
    written = []
    orig = s.write_params

    def spy(p):
        written.append(np.array(p))
        return orig(p)

    s.write_params = spy
    start_run(c, task, TrainConfig(rule="gd", steps=15), tmp_path / "d", progress=False, substrate=s)
    assert written and all(np.array_equal(p, np.round(p)) and p.min() >= 0 and p.max() <= 128 for p in written)
    g = Run(tmp_path / "d").load_checkpoint()["g"]
    np.testing.assert_allclose(g, s.device.g_from_param(s.device.param_from_g(g)))  # a tap's conductance
    from hil.spice.devices import DeviceRangeError
    with pytest.raises(DeviceRangeError, match=r"edge 'R1': tap 2.5 is not a whole tap"):
        s.write_params(np.full(c.m, 2.5))
    with pytest.raises(DeviceRangeError, match=r"edge 'R1': digipot parameter 200.0 tap is outside"):
        s.write_params(np.full(c.m, 200.0))


def test_gate_voltage_past_its_limits_is_refused(sub):
    from hil.spice.devices import DeviceRangeError
    c = load_circuit("divider")
    s = sub(c, device="mosfet")
    with pytest.raises(DeviceRangeError, match=r"edge 'R2': mosfet parameter 12.0 V is outside the device's range \[0.0, 10.0\]"):
        s.write_params(np.array([1.0, 12.0]))


def test_cl_trains_a_mosfet_network(tmp_path, sub):
    c = load_circuit("net16")
    task = teacher_task(c, seed=1, examples=6)
    s = sub(c, device="mosfet")
    res = start_run(c, task, TrainConfig(rule="cl", steps=40), tmp_path / "m", progress=False, substrate=s)
    assert res["final_loss"] < 0.3 * res["initial_loss"]


NONIDEAL = """seed = 3
tolerance = 0.05
wire_resistance = 2.0
source_resistance = 20.0
noise = 1e-3
adc_bits = 12
adc_range = 2.5
"""


def test_nonidealities_change_the_circuit_and_are_seeded(tmp_path, sub):
    from hil.spice.nonideal import load_nonideal
    f = tmp_path / "ni.toml"
    f.write_text(NONIDEAL)
    ni = load_nonideal(f)
    c = load_circuit("net16")
    X = np.random.default_rng(0).uniform(-1, 1, (5, 2))
    Y = np.zeros((5, 2))
    a, b = sub(c, nonideal=ni), sub(c, nonideal=ni)
    Va, Vb = a.measure(X, Y, [Free()])[Free()], b.measure(X, Y, [Free()])[Free()]
    np.testing.assert_array_equal(Va, Vb)  # same seed, same parts, same noise
    lsb = 5.0 / 2 ** 12
    np.testing.assert_allclose(Va[:, 1:] / lsb, np.round(Va[:, 1:] / lsb), atol=1e-6)  # ADC codes
    V_ideal = IdealSubstrate(c).measure(X, Y, [Free()])[Free()]
    with a.noiseless():
        Vq = a.measure(X, Y, [Free()])[Free()]
    dev = np.abs(Vq - V_ideal).max()
    assert 1e-4 < dev < 0.1  # tolerance and wire resistance move the voltages, a little
    # source resistance: an input node no longer sits exactly at its source's value
    assert np.abs(Vq[:, list(c.inputs)] - X).max() > 1e-6


@pytest.mark.parametrize("text, message", [
    ("noise = -1\n", ":1: noise = -1 must be a non-negative finite number"),
    ("seed = 1\ncolour = 2\n", ":2: unknown key 'colour'"),
    ("adc_bits = 2.5\n", "adc_bits = 2.5 must be a whole number"),
    ("adc_bits = 64\n", "adc_bits = 64 is beyond any real ADC"),
])
def test_nonideal_file_errors(tmp_path, text, message):
    from hil.spice.nonideal import NonIdealError, load_nonideal
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(NonIdealError) as err:
        load_nonideal(f)
    assert str(f) in str(err.value) and message in str(err.value)


def test_shipped_nonideal_example_loads():
    from hil.data import folder
    from hil.spice.nonideal import load_nonideal
    ni = load_nonideal(folder("netlists") / "nonideal-example.toml")
    assert ni.noise == 1e-4 and ni.adc_bits == 16 and not ni.ideal
