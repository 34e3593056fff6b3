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
    from hil.circuits import layered
    from hil.tasks import factorize_task
    from hil.train import TrainConfig, start_run
    c = layered((4, 2, 3), 0)
    task = factorize_task(c, 2, 0, 1.0, "onehot", None)
    start_run(c, task, TrainConfig(rule="gd", steps=5, checkpoint_every=5), tmp_path / "l", progress=False)
    t = load_any(tmp_path / "l")
    assert [m.name for m in t.matrices] == ["W", "Z"]  # the weight matrices travel with the trained circuit
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
    # the coercivity prediction (a decay to zero) is not drawn against a loss that stopped falling
    assert res["measured_rate"] == 0 and "stopped falling" in res["predicted_rate_note"]
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


# -- emulated transistor and digipot benches ----------------------------------------------------

@pytest.mark.parametrize("device", ["mosfet", "digipot"])
def test_emulated_transistor_and_digipot_benches_train(ngspice, tmp_path, device):
    """`hil emulate --backend ngspice --device X`, then the train line it prints, trains: the bench file
    declares the parts ([board] device) and the wiring check compares with their model."""
    import shlex
    import subprocess
    import time
    from helpers import HIL
    bench = tmp_path / "b.toml"
    emu = subprocess.Popen(HIL + ["emulate", "net16", "--backend", "ngspice", "--device", device, "--bench-file",
                                  str(bench)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        line, deadline = "", time.time() + 60
        while not line.startswith("train on it:") and time.time() < deadline and emu.poll() is None:
            line = emu.stdout.readline()
        assert line.startswith("train on it:"), emu.stderr.read() if emu.poll() is not None else line
        assert f'device = "{device}"' in bench.read_text()
        cmd = shlex.split(line.split(":", 1)[1])[1:] + ["--steps", "3"]
        r = run_hil(*cmd, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        L = Run(tmp_path / "runs" / "bench").read_log()["train_loss"]
        L = L[np.isfinite(L)]
        assert L[-1] < L[0]
    finally:
        emu.terminate()
        emu.wait(timeout=30)


def test_a_model_mismatch_is_not_blamed_on_wiring(ngspice, tmp_path, emulated):
    """A mosfet bench whose file declares no parts (resistors): the readings differ from the linear circuit,
    and the check says the parts or the model are the cause, not the wiring; declared, the check passes."""
    from helpers import bench_of
    from hil.bench.substrate import BenchError, BenchSubstrate
    from hil.spice.substrate import NgSpiceSubstrate
    c = load_circuit("net16")
    emu, path = emulated(NgSpiceSubstrate(c, device="mosfet"))
    cfg = bench_of(path)
    with pytest.raises(BenchError, match=r"differ from the circuit at the board's conductances, and not as swapped "
                                         r"wiring would") as err:
        BenchSubstrate(c, cfg)
    assert "swapped channels" not in str(err.value) and "[board] device" in str(err.value)
    with BenchSubstrate(c, {**cfg, "board": {**cfg["board"], "device": "mosfet"}}) as b:
        assert b.small_signal
    chans = dict(cfg["scanner"]["channels"])  # the declared model with swapped channels: wiring again
    a, b_ = list(chans)[:2]
    chans[a], chans[b_] = chans[b_], chans[a]
    with pytest.raises(BenchError, match=r"wiring check failed \(swapped channels"):
        BenchSubstrate(c, {**cfg, "board": {**cfg["board"], "device": "mosfet"},
                           "scanner": {**cfg["scanner"], "channels": chans}})


# -- the sweep's axes (homeostasis weight, coupling strength, asymmetry), --data, summary -------

@pytest.fixture(scope="module")
def nr(tmp_path_factory):
    """A 12-node network with two VCCS pairs and one single, one-way (as `hil generate` writes it)."""
    d = tmp_path_factory.mktemp("nr")
    r = run_hil("generate", "random", "--nodes", "12", "--vccs-pairs", "2", "--vccs-singles", "1", "--asymmetry", "1",
                "-o", d / "nr.toml", cwd=d)
    assert r.returncode == 0, r.stderr
    return d / "nr.toml"


def test_sweep_over_homeostasis_weights(nr, tmp_path):
    r = run_hil("sweep", nr, "--rules", "ep-sym", "--homeostasis", "0,1e4", "--seeds", "0", "--steps", "20",
                "--out", tmp_path / "s", "--json", "--workers", "1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout.splitlines()[-1])["rows"]
    assert [row["homeostasis"] for row in rows] == [0.0, 1e4] and all(row["status"] == "ok" for row in rows)
    for row in rows:  # each point trained with its weight: the run's own config and log say so
        cfg = json.loads((tmp_path / "s" / "points" / f"p{row['point']:04d}" / "config.json").read_text())
        assert cfg["homeostasis"] == row["homeostasis"]
        H = Run(tmp_path / "s" / "points" / f"p{row['point']:04d}").read_log()["homeostasis_H"]
        assert row["final_H"] == pytest.approx(H[-1], rel=1e-12)
    assert rows[1]["final_H"] < rows[0]["final_H"]  # the homeostatic term lowers H = 1/2 ||A - A^T||_F^2
    for name in ("sweep.csv", "summary.csv", "sweep.png"):
        assert (tmp_path / "s" / name).stat().st_size > 0


def test_sweep_over_coupling_strength_and_asymmetry(nr, tmp_path):
    from hil.circuits import vccs_pairs
    r = run_hil("sweep", nr, "--rules", "ep-sym", "--vccs-scale", "1e-3", "--asymmetry", "0,1", "--seeds", "0,1",
                "--batch", "8", "--steps", "3", "--out", tmp_path / "s", "--json", "--workers", "1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.splitlines()[-1])
    assert len(out["rows"]) == 4 and len(out["summary"]) == 2 and [s["seeds"] for s in out["summary"]] == [2, 2]
    for row in out["rows"]:
        c = load_circuit(tmp_path / "s" / "points" / f"p{row['point']:04d}" / "circuit.toml")
        assert np.max(np.abs(c.gm)) == pytest.approx(1e-3, rel=1e-12)
        pairs = vccs_pairs(c)
        assert len(pairs) == 2
        for f, rv in pairs:
            assert c.gm[rv] == pytest.approx(c.gm[f] * (1 - row["asymmetry"]), rel=1e-12, abs=0)
    for bad, msg in ((["--asymmetry", "2"], "must be in [0, 1]"), (["--vccs-scale", "1"], "gm_max"),
                     (["--homeostasis", "x"], "not a finite number")):
        r = run_hil("sweep", nr, *bad, "--out", tmp_path / "bad", cwd=tmp_path)
        assert r.returncode == 2 and msg in r.stderr, r.stderr
    r = run_hil("sweep", "net16", "--asymmetry", "0.5", "--out", tmp_path / "bad", cwd=tmp_path)
    assert r.returncode == 2 and "no VCCS pair" in r.stderr
    assert not (tmp_path / "bad").exists()  # refused before any point ran


def test_sweep_takes_a_csv_task(tmp_path):
    c = load_circuit("net16")
    t = teacher_task(c, 3, 20)
    from hil.tasks import write_csv_task
    write_csv_task(c, t.X_train, t.Y_train, tmp_path / "task.csv")
    r = run_hil("sweep", "net16", "--data", tmp_path / "task.csv", "--rules", "gd", "--steps", "5", "--out",
                tmp_path / "s", "--json", "--workers", "1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    task = json.loads((tmp_path / "s" / "points" / "p0000" / "task.json").read_text())
    assert task["description"] == f"csv:{tmp_path / 'task.csv'}" and len(task["X_train"]) == 16
    rows = np.array(task["X_train"] + task["X_test"])
    np.testing.assert_array_equal(np.sort(rows, axis=0), np.sort(t.X_train, axis=0))  # every row, split 16/4


# -- issue 24: the stencil inside the radius, the homeostatic rate, CL's own gradient -----------

def test_bias_keeps_the_stencil_inside_the_radius(nr, tmp_path):
    """ep-stencil:N's outer nudges sit at N beta: on the default grid (to 0.5/kappa_max) the points whose N beta
    passes half the radius are left out, said so, and every other point is finite (before: 'Singular matrix'
    on this circuit, rel_error 1.4e31 on net16)."""
    for circuit in (nr, "net16"):
        r = run_hil("bias", circuit, "--teacher", "1", "--rules", "ep-stencil:2,ep-stencil:3,ep-sym", "--out",
                    tmp_path / "b", "--json", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout.splitlines()[-1])
        radius, grid = out["radius"], np.array(out["nudges"])
        for name, n in (("ep-stencil:2", 2), ("ep-stencil:3", 3), ("ep-sym", 1)):
            rows = out["rules"][name]
            assert rows["skipped"] == pytest.approx(list(grid[n * grid > 0.5 * radius * (1 + 1e-9)]))
        assert "left out" in r.stdout
        import csv
        with open(tmp_path / "b" / "bias.csv") as fh:
            errs = [float(x["rel_error"]) for x in csv.DictReader(fh) if x["rel_error"] not in ("", "nan")]
        assert max(errs) < 10


def test_homeostasis_run_says_the_prediction_leaves_out_its_term(nr, tmp_path):
    r = run_hil("train", nr, "--teacher", "1", "--homeostasis", "1e4", "--steps", "40", "--out", tmp_path / "h",
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "h" / "result.json").read_text())
    assert "homeostatic term" in res["predicted_rate_note"]


def test_cl_error_is_against_its_weighted_gradient():
    """CL estimates mean_i J_i^T K^-1 r_i: its error against it falls as eta (order 1), where its error against
    dC/dg stays near 1 (||ghat_CL|| is a small fraction of ||dC/dg|| on this circuit)."""
    from hil.analysis.report import weighted_gradient
    from hil.gradients import reference_gradient
    from hil.ideal import IdealSubstrate
    from hil.rules import make_rule
    c = random_network(10, 3.0, seed=2026)
    t = teacher_task(c, seed=2026, examples=6)
    sub = IdealSubstrate(c)
    kappa = sub.kappa_max(t.X_train)
    ref, gC = weighted_gradient(c, t.X_train, t.Y_train), reference_gradient(sub, t.X_train, t.Y_train)
    err = []
    for eta in (1e-2, 1e-3):
        rule = make_rule("cl", eta).configure(kappa)
        est = rule.estimate(sub.measure(t.X_train, t.Y_train, rule.states()))
        err.append(np.linalg.norm(est - ref) / np.linalg.norm(ref))
        assert np.linalg.norm(est - gC) / np.linalg.norm(gC) > 0.9
    assert err[1] < 1e-3 and err[0] / err[1] == pytest.approx(10, rel=0.05)


# -- targets out of reach, smaller fixes -----------------------------------------------------------

def test_coercivity_says_when_targets_are_out_of_reach(tmp_path):
    """out = in1 - in2 is no weighted mean of the inputs and 0 V: the floor is above zero, it agrees with an
    independent solver (NNLS with the weights' sum as a heavy row), and a trained circuit stays above it."""
    from scipy.optimize import nnls
    from hil.analysis.coercivity import passive_floor
    c = load_circuit("net16")
    X = np.random.default_rng(0).uniform(-1, 1, (20, 2))
    Y = np.column_stack([X[:, 0] - X[:, 1], X.mean(axis=1)])
    floor = passive_floor(c, X, Y)
    M, total = 1e4, 0.0
    A = np.vstack([np.hstack([X, np.zeros((20, 1))]), M * np.ones((1, 3))])
    for y in Y.T:
        t, _ = nnls(A, np.append(y, M))
        total += 0.5 * np.mean((np.hstack([X, np.zeros((20, 1))]) @ t - y) ** 2)
    assert floor == pytest.approx(total, rel=1e-4) and floor > 0.1
    from hil.tasks import write_csv_task
    write_csv_task(c, X, Y, tmp_path / "diff.csv")
    r = run_hil("coercivity", "net16", "--data", tmp_path / "diff.csv", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.splitlines()[-1])
    assert out["floor"] == pytest.approx(floor, rel=1e-6) and out["reachable"] is False
    assert "OUT OF REACH" in r.stdout
    r = run_hil("coercivity", "net16", "--teacher", "1", "--json", cwd=tmp_path)
    assert json.loads(r.stdout.splitlines()[-1])["reachable"] is True and "OUT OF REACH" not in r.stdout


def test_smaller_fixes(tmp_path):
    from hil.runs import loss_title
    r = run_hil("train", "net16", "--teacher", "1", cwd=tmp_path)
    assert r.returncode == 2 and "--out are needed" in r.stderr and "Traceback" not in r.stderr
    r = run_hil("train", "--help", cwd=tmp_path)
    assert "under 5% of a step" in " ".join(r.stdout.split())
    r = run_hil("generate", "--help", cwd=tmp_path)
    text = " ".join(r.stdout.split())
    for opt in ("--nodes NODES random: nodes", "--degree DEGREE random: mean degree", "--rows ROWS lattice",
                "--cols COLS lattice", "--layers LAYERS crossbar", "--inputs INPUTS random, lattice",
                "--outputs OUTPUTS random, lattice"):
        assert opt in text, opt
    assert loss_title({"circuit_name": "net16", "rule": "cl", "backend": "ngspice",
                       "backend_options": {"device": "digipot"}}).endswith("device=digipot")
    from hil.spice.devices import make_device
    from hil.spice.netlist import standalone_deck
    from hil.spice.nonideal import NonIdeal
    c = load_circuit("net16")
    for dev, words in (("resistor", "edges are resistors of 1/g ohms"), ("mosfet", "edges are mosfet NMOS channels"),
                       ("digipot", "edges are digipots")):
        d = make_device(dev, c, NonIdeal())
        assert words in standalone_deck(c, d.param_from_g(c.g), [1.0, 1.0], d).splitlines()[0]
