"""The `hil` command as a user runs it: the installed entry point, in a subprocess."""

import json
import subprocess
import sys

import numpy as np
import pytest

from helpers import HIL


def hil(*args, ok=True):
    p = subprocess.run(HIL + [str(a) for a in args], capture_output=True, text=True, timeout=300)
    if ok:
        assert p.returncode == 0, p.stderr
    return p


def last_json(p):
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_train_json_and_resume(tmp_path):
    out = tmp_path / "run"
    r = last_json(hil("train", "net16", "--teacher", 1, "--rule", "ep-sym", "--steps", 200, "--out", out, "--json"))
    assert r["steps"] == 200 and r["final_loss"] < r["initial_loss"] and r["run_dir"] == str(out)
    r2 = last_json(hil("train", "--resume", out, "--steps", 300, "--json"))
    assert r2["steps"] == 300 and r2["final_loss"] <= r["final_loss"]


def test_grad_json_reports_estimate_against_exact():
    r = last_json(hil("grad", "bridge", "--teacher", 2, "--rule", "ep-open", "--json"))
    assert r["edges"] == ["R1", "R2", "R3", "R4", "R5"]
    assert r["rel_error"] < 1e-10 and abs(r["cosine"] - 1) < 1e-12
    r1 = last_json(hil("grad", "bridge", "--teacher", 2, "--rule", "ep", "--json"))
    assert 1e-4 < r1["rel_error"] < 0.2  # one-sided EP at the default nudge: biased, not wrong
    np.testing.assert_allclose(r1["exact"], r["exact"])


def test_info_reports_green_matrix_and_coercivity():
    r = last_json(hil("info", "net16", "--teacher", 1, "--json"))
    assert r["n_edges"] == 16 and len(r["K_eigenvalues"]) == 2
    assert abs(r["nudge_radius"] - 1 / r["kappa_max"]) < 1e-15
    assert r["rank"] == r["constraints"] == 4 and r["coercivity"] > 0


def test_circuits_lists_shipped():
    names = {c["name"] for c in last_json(hil("circuits", "--json"))["circuits"]}
    assert {"divider", "bridge", "net16"} <= names


def test_generate_then_train(tmp_path):
    f = tmp_path / "lat.toml"
    hil("generate", "lattice", "--rows", 4, "--cols", 5, "-o", f)
    r = last_json(hil("train", f, "--teacher", 0, "--rule", "al", "--steps", 50, "--out", tmp_path / "r", "--json"))
    assert r["final_loss"] < r["initial_loss"]


@pytest.mark.parametrize("args, message", [
    (["train", "nosuch.toml", "--teacher", "1", "--out", "x"], "nosuch.toml: no such circuit file"),
    (["grad", "net16", "--teacher", "1", "--rule", "sgd"], "unknown rule 'sgd'"),
    (["train", "--resume", "/nonexistent/run"], "no checkpoint.json"),
    (["grad", "net16", "--data", "/nonexistent.csv"], "/nonexistent.csv: no such task file"),
    (["coercivity", "kite", "--teacher-circuit", "bridge"], "inputs differ (top instead of in)"),
    (["perturb", "kite", "--scale", "-1", "-o", "x.toml"], "scale must be a finite number >= 0"),
])
def test_errors_exit_2_with_a_message(args, message):
    p = hil(*args, ok=False)
    assert p.returncode == 2 and message in p.stderr and "Traceback" not in p.stderr


def test_kite_coercivity_at_its_symmetric_teacher_and_after_hil_perturb(tmp_path):
    sym = last_json(hil("coercivity", "kite", "--teacher-circuit", "kite", "--json"))
    assert (sym["rank"], sym["constraints"]) == (1, 2) and len(sym["dead_edges"]) == 4
    assert "0.707 out1 - 0.707 out2" in hil("coercivity", "kite", "--teacher-circuit", "kite").stdout
    start = tmp_path / "start.toml"
    moved = last_json(hil("perturb", "kite", "--scale", "0.1", "--seed", "7", "-o", str(start), "--json"))
    assert 0.8 < moved["ratio_min"] < 1 < moved["ratio_max"] < 1.25
    near = last_json(hil("coercivity", str(start), "--teacher-circuit", "kite", "--json"))
    assert near["rank"] == 2 and near["constant"] > 0 and near["unreachable"] == []
    at = hil("grad", "kite", "--teacher-circuit", "kite", "--rule", "ep-sym", "--json")
    assert "RuntimeWarning" not in at.stderr and "the reference gradient is zero" in at.stdout
    g = last_json(at)  # at the teacher the loss and its gradient vanish: no relative error to give
    assert g["rel_error"] is None and g["abs_error"] < 1e-12
    res = last_json(hil("train", str(start), "--teacher-circuit", "kite", "--rule", "ep-sym", "--steps", "300",
                        "--out", str(tmp_path / "run"), "--json"))
    assert res["final_loss"] < 1e-3 * res["initial_loss"]


def test_analyses_use_every_row_of_a_csv_task_and_say_how_many(tmp_path):
    from hil.circuit import load_circuit
    from hil.exact import gradient
    from hil.tasks import teacher_task, write_csv_task

    c = load_circuit("net16")
    t = teacher_task(c, seed=3, examples=10, test_examples=0)
    data = write_csv_task(c, t.X_train, t.Y_train, tmp_path / "d.csv")
    want = gradient(c, t.X_train, t.Y_train)  # the user's own gradient of the loss over their file
    g = last_json(hil("grad", "net16", "--data", data, "--rule", "gd", "--json"))
    assert g["examples"] == 10
    np.testing.assert_allclose(g["exact"], want, rtol=1e-9, atol=1e-12 * np.abs(want).max())
    assert "task csv:" in hil("grad", "net16", "--data", data, "--rule", "gd").stdout
    for cmd in (["info"], ["coercivity"], ["bias", "--rules", "ep-sym", "--out", tmp_path / "b"]):
        p = hil(*cmd[:1], "net16", "--data", data, *cmd[1:], "--json")
        assert last_json(p)["examples"] == 10 and "10 examples used (every row of the file)" in p.stdout
    # training holds out --test-fraction, and says so
    r = hil("train", "net16", "--data", data, "--steps", 5, "--out", tmp_path / "run", "--json")
    assert "8 training examples, 2 held out" in r.stdout and last_json(r)["examples"] == 8
    # --test-fraction belongs to training only
    p = hil("grad", "net16", "--data", data, "--test-fraction", 0.5, ok=False)
    assert p.returncode == 2 and "unrecognized arguments: --test-fraction" in p.stderr
