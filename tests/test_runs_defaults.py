"""What a user meets around runs and defaults: trained circuits out of runs, default nudges on
transistor circuits, the teacher's amplitude, digipot stalls, the sweep's axes (docs/runs-and-defaults.md)."""

import json
import re

import numpy as np
import pytest

from helpers import run_hil
from hil.circuit import CircuitError, load_any, load_circuit
from hil.circuits import random_network
from hil.exact import loss
from hil.runs import Run
from hil.tasks import teacher_task
from hil.train import TrainConfig, start_run


# -- a trained circuit out of every run and checkpoint ----------------------------------------

@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    c = random_network(10, 3.0, seed=4)
    task = teacher_task(c, seed=1, examples=8)
    out = tmp_path_factory.mktemp("trained") / "run"
    res = start_run(c, task, TrainConfig(steps=30, checkpoint_every=10), out, progress=False)
    return c, task, out, res


def test_run_directory_is_its_trained_circuit(trained_run):
    c, task, out, res = trained_run
    t = load_any(out)
    assert t.source == str(out / "trained.toml")
    assert not np.allclose(t.g, c.g)  # the trained parameters, not the start
    # Kirchhoff on the loaded file gives the loss the run measured at its end (ideal substrate: to rounding)
    assert loss(t, task.X_train, task.Y_train) == pytest.approx(res["final_loss"], rel=1e-9)
    np.testing.assert_array_equal(t.g, Run(out).load_checkpoint()["g"])


def test_every_checkpoint_is_a_circuit(trained_run):
    c, task, out, res = trained_run
    log = Run(out).read_log()
    for step in (10, 20):
        t = load_any(out / "checkpoints" / f"step_{step:06d}.npz")
        row = list(log["step"]).index(step)
        assert loss(t, task.X_train, task.Y_train) == pytest.approx(log["train_loss"][row], rel=1e-9)


def test_run_from_before_trained_toml(trained_run, tmp_path):
    """A run written before trained.toml existed: circuit.toml at checkpoint.json's parameters."""
    import shutil
    c, task, out, res = trained_run
    old = tmp_path / "old"
    shutil.copytree(out, old)
    (old / "trained.toml").unlink()
    t = load_circuit(old)
    np.testing.assert_array_equal(t.g, load_any(out).g)
    assert t.source == str(old)


def test_cli_takes_a_run_directory(trained_run, tmp_path):
    c, task, out, res = trained_run
    t = load_any(out)
    r = run_hil("info", out, "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.splitlines()[-1])["n_edges"] == c.m
    r = run_hil("netlist", out, "-o", tmp_path / "t.cir", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    ohms = [float(line.split()[-1]) for line in (tmp_path / "t.cir").read_text().splitlines() if line.startswith("Re_")]
    np.testing.assert_allclose(ohms, 1 / t.g, rtol=1e-12)
    r = run_hil("info", tmp_path, cwd=tmp_path)  # a folder that is no run
    assert r.returncode == 2 and "not a circuit file" in r.stderr and "Traceback" not in r.stderr


def test_layered_run_leaves_its_circuit(tmp_path):
    from hil.layered import generate_layered
    from hil.layered_train import LayeredConfig, factorize_task, start_layered_run
    c = generate_layered((4, 2, 3), 0)
    task = factorize_task(c, 2, 0, 1.0, "onehot", None)
    start_layered_run(c, task, LayeredConfig(rule="gd", steps=5, checkpoint_every=5), tmp_path / "l", progress=False)
    t = load_any(tmp_path / "l")
    assert t.kind == "layered"
    np.testing.assert_array_equal(t.g, Run(tmp_path / "l").load_checkpoint()["g"])
    assert not np.allclose(t.g, c.g)


# -- the teacher's signal amplitude ------------------------------------------------------------

def test_teacher_amplitude_scales_the_signals():
    from hil.tasks import TaskError, teacher_amplitude
    c = load_circuit("net16")
    one, tenth = teacher_task(c, 1, 8), teacher_task(c, 1, 8, amplitude=0.1)
    np.testing.assert_allclose(tenth.X_train, 0.1 * one.X_train, rtol=1e-15)
    np.testing.assert_allclose(tenth.Y_train, 0.1 * one.Y_train, rtol=1e-12)  # a linear teacher
    assert np.abs(tenth.X_train).max() <= 0.1 and tenth.meta["amplitude"] == 0.1
    assert teacher_amplitude("resistor") == 1.0 and teacher_amplitude("mosfet-mid") == 0.1
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(TaskError, match="--amplitude"):
            teacher_task(c, 1, 8, amplitude=bad)


def test_amplitude_on_the_command_line(tmp_path):
    r = run_hil("info", "net16", "--teacher", "1", "--amplitude", "0.25", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "amplitude=0.25V" in r.stdout
    r = run_hil("info", "net16", "--teacher", "1", "--amplitude", "0", cwd=tmp_path)
    assert r.returncode == 2 and "--amplitude 0.0" in r.stderr
    (tmp_path / "t.csv").write_text("n1,n2,n6,n7\n0,0,0,0\n")
    r = run_hil("info", "net16", "--data", tmp_path / "t.csv", "--amplitude", "0.5", cwd=tmp_path)
    assert r.returncode == 2 and "CSV task" in r.stderr


# -- digipot stalls and stochastic rounding ----------------------------------------------------

def test_stochastic_rounding_is_unbiased():
    from hil.train import stochastic_round
    levels = np.tile(1.0 / (75.0 + np.arange(129) * 100e3 / 128), (3, 1))[:, ::-1]  # a digipot's taps, ascending
    x = np.array([levels[0, 40] + 0.3 * (levels[0, 41] - levels[0, 40]), levels[0, 0] / 2, levels[0, 7]])
    rng = np.random.default_rng(0)
    draws = np.array([stochastic_round(x, levels, rng) for _ in range(4000)])
    assert set(np.unique(draws[:, 0])) == {levels[0, 40], levels[0, 41]}
    gap = levels[0, 41] - levels[0, 40]
    # the upper tap with probability 0.3: the mean within 4 standard errors of x
    assert abs(draws[:, 0].mean() - x[0]) < 4 * gap * np.sqrt(0.3 * 0.7 / len(draws))
    assert np.all(draws[:, 1] == levels[0, 0]) and np.all(draws[:, 2] == levels[0, 7])


def test_digipot_stall_is_said_and_stochastic_rounding_moves_on(ngspice, tmp_path):
    """net16 on digipots with cl: every tap stays put from step 11 on (the updates are below half a tap);
    the run says so at step 31, in history.log, result.json and on screen. Stochastic rounding keeps
    the taps moving and the loss falling."""
    base = ["train", "net16", "--teacher", "1", "--backend", "ngspice", "--device", "digipot", "--rule", "cl",
            "--steps", "40", "--checkpoint-every", "10"]
    r = run_hil(*base, "--out", tmp_path / "near", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "stalled: no parameter has changed for 20 steps" in r.stderr and "--rounding stochastic" in r.stderr
    res = json.loads((tmp_path / "near" / "result.json").read_text())
    step = res["stalled"][0]["step"]
    assert "stalled" in (tmp_path / "near" / "history.log").read_text()
    # independently: the checkpoints' taps are the same from the stall's first step on
    g = {k: load_any(tmp_path / "near" / "checkpoints" / f"step_{k:06d}.npz").g for k in (10, 20, 30, 40)}
    first = step - 20 + 1
    assert 10 < first <= 20  # the run: taps stop moving from step ~20
    assert np.array_equal(g[20], g[40]) and np.array_equal(g[30], g[40]) and not np.array_equal(g[10], g[40])
    r = run_hil(*base, "--rounding", "stochastic", "--out", tmp_path / "stoch", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    res2 = json.loads((tmp_path / "stoch" / "result.json").read_text())
    assert "stalled" not in res2 and res2["final_loss"] < res["final_loss"] / 2
    r = run_hil("train", "net16", "--teacher", "1", "--rounding", "stochastic", "--out", tmp_path / "x", cwd=tmp_path)
    assert r.returncode == 2 and "no taps to round to" in r.stderr
