"""The Python API a script or notebook uses (``hil.train``, ``hil.predict``, ...) and its progress bar."""

import importlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import hil
from helpers import run_hil

ROOT = Path(__file__).resolve().parents[1]
#: the names the API page (docs/api.md) documents
DOCUMENTED = {"Circuit", "CircuitError", "load_circuit", "make_circuit", "circuits", "Task", "TaskError",
              "teacher_task", "circuit_teacher_task", "load_csv_task", "write_csv_task", "factorize_task", "train", "TrainResult",
              "predict", "free_state"}


def test_hil_exports_the_documented_api():
    assert set(hil.__all__) == DOCUMENTED
    assert all(callable(getattr(hil, n)) or n == "circuits" for n in hil.__all__)
    page = (ROOT / "docs" / "api.md").read_text()
    assert all(f"hil.{n}" in page for n in DOCUMENTED), [n for n in DOCUMENTED if f"hil.{n}" not in page]
    loop = importlib.import_module("hil.train")  # the loop's module, imported by name
    assert loop.TrainConfig and callable(hil.train) and hil.train is hil.api.train


def test_make_circuit_defaults_to_the_files_range():
    """A circuit built in Python gets the shipped files' bounds, 1e-5 .. 1e-2 S (not 1e-6 .. 1)."""
    c = hil.make_circuit("d", [("R1", "vin", "out", 1e-3), ("R2", "out", "gnd", 1e-3)], "gnd", ["vin"], ["out"])
    net16 = hil.load_circuit("net16")
    assert (c.g_min, c.g_max) == (net16.g_min, net16.g_max) == (1e-5, 1e-2)
    with pytest.raises(hil.CircuitError, match="R1"):
        hil.make_circuit("d", [("R1", "vin", "out", 0.5), ("R2", "out", "gnd", 1e-3)], "gnd", ["vin"], ["out"])


def test_train_without_a_run_directory(tmp_path, monkeypatch):
    """hil.train writes nothing where it runs, and returns the trained circuit, its log and the config;
    the trained circuit's loss, recomputed by the exact solve, is the log's last loss."""
    from hil.exact import free_state, laplacian, loss

    monkeypatch.chdir(tmp_path)
    c = hil.load_circuit("net16")
    task = hil.load_csv_task(c, ROOT / "circuits" / "net16-data.csv")
    res = hil.train(c, task, steps=60, progress=False)
    assert list(tmp_path.iterdir()) == [] and res.run_dir is None
    assert res.accuracy is None  # a regression task has no classes
    assert res.log["step"][0] == 0 and res.log["step"][-1] == 60 and res.config.lr > 0 and res.config.nudge > 0
    assert loss(res.circuit, task.X_train, task.Y_train) == pytest.approx(res.final_loss, rel=1e-9)
    assert loss(c, task.X_train, task.Y_train) == pytest.approx(res.initial_loss, rel=1e-9)
    assert res.final_loss < res.initial_loss / 10
    assert np.all((res.circuit.g >= c.g_min) & (res.circuit.g <= c.g_max)) and not np.allclose(res.circuit.g, c.g)
    # predict: the outputs of the free state, whose free nodes obey Kirchhoff's current law
    V = hil.free_state(res.circuit, task.X_test)
    I = (laplacian(res.circuit) @ V.T).T
    assert np.abs(I[:, res.circuit.free]).max() < 1e-12 * np.abs(I).max()
    np.testing.assert_allclose(hil.predict(res.circuit, task.X_test), V[:, list(c.outputs)], rtol=0, atol=1e-14)
    np.testing.assert_allclose(V, free_state(res.circuit, task.X_test), rtol=0, atol=1e-12)


def test_train_into_a_run_directory_resumes_from_the_cli(tmp_path):
    """With out=, the run directory is the command line's: hil train --resume continues it."""
    c = hil.load_circuit("divider")
    X = np.linspace(-1, 1, 9)[:, None]
    task = hil.Task(X, 0.5 * X, X[:0], X[:0])
    res = hil.train(c, task, rule="cl", steps=30, out=tmp_path / "run", progress=False)
    assert res.run_dir == tmp_path / "run" and (res.run_dir / "log.csv").exists()
    ck = json.loads((res.run_dir / "checkpoint.json").read_text())
    np.testing.assert_array_equal(np.array(ck["g"]), res.circuit.g)
    p = run_hil("train", "--resume", res.run_dir, "--steps", 60, "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout.splitlines()[-1])["steps"] == 60
    with pytest.raises(Exception, match="already holds a run"):
        hil.train(c, task, rule="cl", steps=5, out=tmp_path / "run", progress=False)


def test_train_a_layered_circuit_by_feedback_alignment():
    """A layered circuit (crossbars, op-amps as VCVS elements) trains through the same call with rule fa;
    predict on the trained circuit equals the product of its trained weight matrices, W_1 W_0 x."""
    from hil.circuits import layered
    from hil.matrices import weights

    c = layered((4, 2, 3), seed=0)
    task = hil.factorize_task(c, rank=2)
    res = hil.train(c, task, rule="fa", steps=300, progress=False)
    assert res.config.rule == "fa" and res.final_loss < res.initial_loss / 10
    X = np.random.default_rng(1).normal(size=(5, 4))
    want = X
    for W in weights(res.circuit):
        want = want @ W.T
    np.testing.assert_allclose(hil.predict(res.circuit, X), want, rtol=1e-9, atol=1e-12 * np.abs(want).max())


def test_progress_draws_where_stderr_is_not_a_terminal():
    """tqdm's bar on any stream (a notebook, a log file), quiet when disabled (--json)."""
    from hil.progress import Progress

    shown, quiet = io.StringIO(), io.StringIO()
    with Progress(40, "train ep-sym", stream=shown) as bar:
        for k in range(1, 41):
            bar.update(k, loss=1.5e-3)
    with Progress(40, "train", stream=quiet, enabled=False) as bar:
        bar.update(40)
    assert "train ep-sym" in shown.getvalue() and "40/40" in shown.getvalue() and "loss=0.0015" in shown.getvalue()
    assert quiet.getvalue() == ""


def test_cli_progress_shows_without_a_terminal_and_not_with_json(tmp_path):
    p = run_hil("train", "divider", "--teacher", 1, "--steps", 20, "--out", tmp_path / "a")
    assert p.returncode == 0 and "20/20" in p.stderr, p.stderr
    p = run_hil("train", "divider", "--teacher", 1, "--steps", 20, "--out", tmp_path / "b", "--json")
    assert p.returncode == 0 and "20/20" not in p.stderr and "it/s" not in p.stderr, p.stderr


def test_example_script_runs_as_written(tmp_path):
    """examples/train_in_python.py, run as a user runs it, from another folder; it writes nothing."""
    env = {**os.environ, "PYTHONPATH": ""}
    p = subprocess.run([sys.executable, str(ROOT / "examples" / "train_in_python.py")], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 0, p.stderr
    assert list(tmp_path.iterdir()) == []
    lines = dict(line.split(" ", 1) for line in p.stdout.splitlines() if " " in line)
    before, after = (float(x) for x in lines["loss"].split(" V^2")[0].split(" -> "))
    assert after < before / 100
    assert float(lines["divider"].split()[1]) == pytest.approx(0.5, abs=1e-6)


def test_example_data_set_is_what_its_script_makes(tmp_path):
    """circuits/net16-data.csv is regenerated byte for byte by examples/make_net16_data.py."""
    out = tmp_path / "d.csv"
    subprocess.run([sys.executable, str(ROOT / "examples" / "make_net16_data.py"), str(out)], check=True, timeout=60)
    assert out.read_bytes() == (ROOT / "circuits" / "net16-data.csv").read_bytes()
