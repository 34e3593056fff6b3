"""hil calibrate against `hil emulate --nonideal` (ngspice parts with a hidden tolerance, noisy voltmeters).

The emulator runs in its own process, as a bench would; the calibration sees only
SCPI replies. The hidden per-edge deviations are the non-ideality file's own draws.
"""

import json
import subprocess
import time

import numpy as np
import pytest
from helpers import HIL, run_hil

from hil.circuit import load_circuit
from hil.spice.nonideal import load_nonideal

TOLERANCE, NOISE = 0.05, 1e-4


def hil(*args, timeout=300):
    return run_hil(*args, timeout=timeout)


@pytest.fixture()
def emulated_nonideal(tmp_path, ngspice):
    """`hil emulate net16 --backend ngspice --nonideal F` in a second process; yields (bench file, nonideal file)."""
    nonideal = tmp_path / "tolerance.toml"
    nonideal.write_text(f"seed = 3\ntolerance = {TOLERANCE}\nnoise = {NOISE}\n")
    bench = tmp_path / "bench.toml"
    emu = subprocess.Popen(HIL + ["emulate", "net16", "--backend", "ngspice", "--nonideal",
                            str(nonideal), "--bench-file", str(bench), "--json"],
                           stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        line, deadline = "", time.time() + 60
        while not line.startswith("{") and time.time() < deadline:
            line = emu.stdout.readline()
        assert line.startswith("{"), "the emulator did not start"
        yield bench, nonideal
    finally:
        emu.terminate()
        emu.wait(timeout=30)


def test_calibrate_recovers_the_emulators_hidden_tolerances(tmp_path, emulated_nonideal):
    bench, nonideal = emulated_nonideal
    out = tmp_path / "calibrated.toml"
    p = hil("calibrate", "--bench", bench, "-o", out, "--json")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout.strip().splitlines()[-1])
    c = load_circuit("net16")
    truth = load_nonideal(nonideal).draws(c.m)["scale"]  # actual / written, hidden from the bench
    scale, sigma = np.array(r["scale"]), np.array(r["sigma"])
    z = (scale - truth) / sigma
    assert np.abs(z).max() < 4, z                       # within the stated uncertainty, every edge
    assert np.sqrt(np.mean(z ** 2)) < 2, z              # and the uncertainty is not understated
    assert np.median(sigma) < TOLERANCE / 10            # nor so wide that the test says nothing
    assert np.mean(np.abs(truth - 1) > 3 * sigma) > 0.8  # the deviations are resolved, not within the noise
    np.testing.assert_allclose(r["written"], c.g, rtol=1e-12)
    assert 0.3 < r["chi2_dof"] < 3

    cal = load_circuit(out)  # a circuit file: g as written, the calibration beside it
    np.testing.assert_allclose(cal.g, c.g, rtol=1e-12)
    np.testing.assert_allclose(cal.calibration["scale"], scale, rtol=1e-12)
    assert (tmp_path / "calibrated.png").stat().st_size > 1000
    probes = np.load(tmp_path / "calibrated.probes.npz")
    assert probes["V"].shape == (40, c.n) and probes["I"].shape == (40, c.n)

    again = hil("calibrate", "--bench", bench, "-o", out)
    assert again.returncode == 2 and f"{out}: already exists" in again.stderr and "--force" in again.stderr
    bad = hil("calibrate", "--bench", bench, "-o", tmp_path / "x.toml", "--patterns", "0")
    assert bad.returncode == 2 and "--patterns 0" in bad.stderr


def test_the_calibrated_twin_realises_the_fitted_conductances(tmp_path):
    """A calibrated circuit on the ideal backend: writing g realises scale * g (checked against Kirchhoff)."""
    from hil.train import open_substrate
    from hil.substrate import Free
    import dataclasses

    c = load_circuit("divider")
    scale = np.array([1.1, 0.8])
    cal = dataclasses.replace(c, calibration={"bench": "b", "written": c.g, "scale": scale, "sigma": [0.01, 0.01]})
    path = tmp_path / "cal.toml"
    path.write_text(cal.to_toml())
    loaded = load_circuit(path)
    with open_substrate(loaded, "ideal") as twin:
        g = np.array([2e-3, 1e-3])
        assert np.allclose(twin.write(g), g)
        V = twin.measure([[1.0]], [[0.0]], [Free()])[Free()][0]
    g1, g2 = g * scale
    assert abs(V[c.node("out")] - g1 / (g1 + g2)) < 1e-14  # the divider of the actual parts
    bad = cal.to_toml().replace("scale = [1.1, 0.8]", "scale = [1.1, -0.8]")
    path.write_text(bad)
    with pytest.raises(Exception, match=r"cal.toml:\d+: \[calibration\]: scale\[1\] = -0.8 must be positive"):
        load_circuit(path)
