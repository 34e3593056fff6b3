"""Classification: data, encoding, accuracy and the confusion matrix, epochs, and every bad input."""

import json

import numpy as np
import pytest

from helpers import run_hil
from hil import classify as cl
from hil.circuits import board_classifier, load
from hil.runs import Run
from hil.tasks import TaskError
from hil.train import TrainConfig, resume_run, start_run, steps_per_epoch


def test_accuracy_and_confusion_against_an_independent_count():
    enc = {"differential": False}
    VO = np.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.2], [0.0, 0.1, 0.3], [0.5, 0.4, 0.6], [0.2, 0.7, 0.1]])
    labels = np.array([1, 0, 1, 2, 0])
    pred = cl.predict(enc, VO)
    # by hand: argmax of each row is 1, 0, 2, 2, 1 -> right, right, wrong, right, wrong
    assert pred.tolist() == [1, 0, 2, 2, 1]
    assert cl.accuracy(pred, labels) == 3 / 5
    assert cl.confusion(pred, labels, 3).tolist() == [[1, 1, 0], [0, 1, 1], [0, 0, 1]]
    # a differential pair per class: the reading is V_c+ - V_c-
    D = np.array([[0.3, 0.1, 0.0, 0.5], [0.0, 0.4, 0.2, 0.1]])  # readings (0.2, -0.5) and (-0.4, 0.1)
    assert cl.predict({"differential": True}, D).tolist() == [0, 1]


def test_encoding_standardises_on_the_training_split_and_lays_out_pairs_and_bias():
    c = board_classifier(4, 3)  # 4 features -> 8 pair inputs + 1 bias
    data = cl.load_dataset("iris")
    task = cl.classification_task(c, data, 0.2, seed=1)
    enc = task.encoding
    assert enc["pairs"] and enc["bias"] == [cl.BIAS_VOLTS] and not enc["differential"]
    # the training split's features come back with mean 0 and standard deviation 1; the test split's do not exactly
    Z = task.X_train[:, 0:8:2]
    np.testing.assert_allclose(Z.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(Z.std(axis=0), 1, atol=1e-12)
    np.testing.assert_array_equal(task.X_train[:, 1:8:2], -Z)
    np.testing.assert_array_equal(task.X_train[:, 8], 1.0)
    assert abs(task.X_test[:, 0:8:2].mean()) > 1e-6
    # the stratified split: 10 of each class held out, labels and targets agree
    assert np.bincount(task.labels_test).tolist() == [10, 10, 10]
    np.testing.assert_array_equal(np.argmax(task.Y_train, axis=1), task.labels_train)
    assert set(np.unique(task.Y_train)) == {cl.V_ON, cl.V_OFF}
    # the standardisation uses the training rows only: the split drawn again from its seed
    tr, te = cl.stratified_split(data.y, 3, 0.2, 1, data.classes, "iris")
    np.testing.assert_allclose(enc["mean"], data.X[tr].mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(enc["scale"], data.X[tr].std(axis=0), rtol=1e-13)
    np.testing.assert_array_equal(task.labels_test, data.y[te])


def test_features_named_after_input_nodes_drive_those_nodes(tmp_path):
    c = load("net16")  # inputs n1, n2; outputs n6, n7
    p = tmp_path / "d.csv"
    p.write_text("n2,cls,n1\n" + "".join(f"{10 + i},{'ab'[i % 2]},{i}\n" for i in range(20)))
    data = cl.load_labelled_csv(p, "cls")
    task = cl.classification_task(c, data, 0.0)
    # column n1 (0..19) drives input n1, the first input; standardised it is a line in the row index
    np.testing.assert_allclose(task.X_train[:, 0], (np.arange(20) - 9.5) / np.arange(20).std())
    assert task.encoding["classes"] == ["a", "b"]


def test_training_logs_accuracy_equal_to_an_independent_count(tmp_path):
    """The run's accuracies and confusion matrix against argmax of the exact free state at the final conductances."""
    from hil.exact import free_state
    c = board_classifier(4, 3, seed=2)
    task = cl.classification_task(c, cl.load_dataset("iris"), 0.2, seed=2)
    res = start_run(c, task, TrainConfig(rule="cl", epochs=3, batch=10, steps=3 * 12, seed=2), tmp_path / "r",
                    progress=False)
    g = Run(tmp_path / "r").load_checkpoint()["g"]
    for split, X, y in (("train", task.X_train, task.labels_train), ("test", task.X_test, task.labels_test)):
        VO = free_state(c, X, g)[:, list(c.outputs)]
        pred = np.argmax(VO, axis=1)
        assert res[f"{split}_accuracy"] == sum(int(p == t) for p, t in zip(pred, y)) / len(y)
        M = np.zeros((3, 3), int)
        for p, t in zip(pred, y):
            M[t, p] += 1
        assert res[f"confusion_{split}"] == M.tolist()
    assert res["test_accuracy"] > 0.6  # three epochs learn well above chance (1/3)
    log = Run(tmp_path / "r").read_log()
    assert log["step"].tolist() == [0, 12, 24, 36]  # a row per epoch
    assert log["train_accuracy"][-1] == res["train_accuracy"] and log["test_accuracy"][-1] == res["test_accuracy"]
    assert json.loads((tmp_path / "r" / "result.json").read_text())["confusion_test"] == res["confusion_test"]
    assert (tmp_path / "r" / "confusion.png").read_bytes()[:4] == b"\x89PNG"


def test_epochs_visit_each_example_once_and_resume_bit_for_bit(tmp_path):
    from hil.train import epoch_batch
    n, batch = 23, 5
    spe = steps_per_epoch(n, batch)
    for epoch in range(3):
        seen = np.concatenate([epoch_batch(7, n, batch, epoch * spe + j) for j in range(spe)])
        assert sorted(seen.tolist()) == list(range(n))
    assert epoch_batch(7, n, batch, 0).tolist() != epoch_batch(7, n, batch, spe).tolist()  # reshuffled
    c = board_classifier(4, 3, seed=1)
    task = cl.classification_task(c, cl.load_dataset("iris"), 0.2, seed=1)
    cfg = dict(rule="ep-sym", batch=batch, epochs=4, seed=5, checkpoint_every=10)
    start_run(c, task, TrainConfig(steps=4 * 24, **cfg), tmp_path / "whole", progress=False)
    start_run(c, task, TrainConfig(steps=30, **cfg), tmp_path / "part", progress=False)
    resume_run(tmp_path / "part", steps=4 * 24, progress=False)
    a, b = Run(tmp_path / "whole"), Run(tmp_path / "part")
    np.testing.assert_array_equal(a.load_checkpoint()["g"], b.load_checkpoint()["g"])
    for col in ("step", "train_loss", "train_accuracy", "test_accuracy"):
        np.testing.assert_array_equal(a.read_log()[col], b.read_log()[col], err_msg=col)


def _fails(args, *words):
    r = run_hil(*args)
    assert r.returncode == 2, r.stderr
    for w in words:
        assert w in r.stderr, (w, r.stderr)
    assert "Traceback" not in r.stderr
    return r.stderr


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    p = tmp_path_factory.mktemp("b") / "board.toml"
    assert run_hil("generate", "board", "-o", p).returncode == 0
    return p


def _csv(folder, text, name="d.csv"):
    p = folder / name
    p.write_text(text)
    return p


HEAD = "a,b,c,d,species\n"
ROWS = "".join(f"{i},{i % 3},{i % 5},{i % 7},{'xyz'[i % 3]}\n" for i in range(30))
TWO = "".join(f"{i},1,2,3,{'xy'[i % 2]}\n" for i in range(20))


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path


# (name, what the file holds or makes, extra options, words the message must hold: {file} is the data file)
BAD = [
    ("no label column", lambda d: _csv(d, HEAD + ROWS), ["--label", "kind"], ["{file}", "'kind'", "no such column"]),
    ("one class", lambda d: _csv(d, HEAD + "".join(f"{i},1,2,3,x\n" for i in range(10))), ["--label", "species"],
     ["{file}", "one class only ('x')"]),
    ("no training example", lambda d: _csv(d, HEAD + TWO + "1,2,3,4,w\n"),
     ["--label", "species", "--test-fraction", "0.6"], ["{file}", "class 'w'", "none is left for training"]),
    ("more classes than outputs", lambda d: _csv(d, HEAD + "".join(f"{i},1,2,3,c{i % 4}\n" for i in range(20))),
     ["--label", "species"], ["{file}", "3 outputs for 4 classes", "more classes than outputs"]),
    ("NaN feature", lambda d: _csv(d, HEAD + ROWS + "1,nan,3,4,x\n"), ["--label", "species"],
     ["{file}:32", "column 2 'b'", "missing"]),
    ("npz without X", lambda d: _npz(d / "d.npz", y=np.zeros(4)), [], ["{file}", "no array 'X'"]),
    ("npz without y", lambda d: _npz(d / "d.npz", X=np.zeros((4, 4))), [], ["{file}", "no array 'y'"]),
]


@pytest.mark.parametrize("case", BAD, ids=[b[0] for b in BAD])
def test_a_bad_classification_input_is_named(tmp_path, board, case):
    _, make, options, words = case
    f = make(tmp_path)
    _fails(["train", board, "--data", f, *options, "--out", tmp_path / "r"], *[w.format(file=f) for w in words])
    assert not (tmp_path / "r").exists()  # refused before a run started


def test_a_circuit_whose_inputs_fit_no_layout_is_named(tmp_path):
    _fails(["train", "net16", "--dataset", "iris", "--out", tmp_path / "r"], "net16",
           "2 inputs do not fit 4 features", "2d (+-x pairs)")


def test_npz_and_the_shipped_csv_train_through_the_cli(tmp_path, board):
    from sklearn.datasets import load_iris
    d = load_iris()
    np.savez(tmp_path / "iris.npz", X=d.data, y=d.target)
    r = run_hil("train", board, "--data", tmp_path / "iris.npz", "--epochs", "2", "--out", tmp_path / "n", "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.splitlines()[-1])
    assert 0 <= res["test_accuracy"] <= 1 and res["classes"] == ["0", "1", "2"]
    r = run_hil("train", board, "--data", "iris.csv", "--label", "species", "--epochs", "2", "--out", tmp_path / "c",
                "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.splitlines()[-1])
    assert res["classes"] == ["setosa", "versicolor", "virginica"] and res["steps"] == 24
    assert sum(map(sum, res["confusion_test"])) == res["test_examples"] == 30


def test_a_sweep_carries_each_points_accuracy(tmp_path, board):
    from hil.analysis.sweep import grid, run_sweep
    rows = run_sweep(board, grid(["cl", "ep-sym"], None, [0], None), tmp_path / "s", steps=24, batch=10, workers=1,
                     dataset="iris")
    assert [r["status"] for r in rows] == ["ok", "ok"]
    table = (tmp_path / "s" / "sweep.csv").read_text().splitlines()
    assert table[0].endswith("train_accuracy,test_accuracy")
    for r, line in zip(rows, table[1:]):
        res = json.loads((tmp_path / "s" / "points" / f"p{r['point']:04d}" / "result.json").read_text())
        assert r["test_accuracy"] == res["test_accuracy"] and line.endswith(f",{res['test_accuracy']!r}")
        assert 1 / 3 < res["train_accuracy"] <= 1


def test_digits_on_a_linear_crossbar_learns_far_above_chance(tmp_path):
    """A subset of digits (8 x 8 images, 10 classes) on a 64-feature board: chance is 10 %."""
    c = board_classifier(64, 10, seed=0)
    data = cl.load_dataset("digits")
    keep = np.arange(len(data.y)) < 400
    sub = cl.Labelled(data.X[keep], data.y[keep], data.classes, data.features, data.source)
    task = cl.classification_task(c, sub, 0.25, seed=0)
    res = start_run(c, task, TrainConfig(rule="ep-sym", batch=20, epochs=3, steps=3 * 15), tmp_path / "d",
                    progress=False)
    assert res["test_accuracy"] > 0.5, res["test_accuracy"]


def test_the_analyses_take_a_classification_task_on_every_example(board):
    r = run_hil("info", board, "--dataset", "iris", "--json")
    assert r.returncode == 0, r.stderr
    assert "150 examples used" in r.stdout  # the analyses use every example, none held out
    r = run_hil("grad", board, "--dataset", "iris", "--rule", "ep-sym", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.splitlines()[-1])["cosine"] > 0.9999  # ep-sym's O(beta^2) bias at 5 % of the radius


@pytest.mark.parametrize("rule", ["cl", "ep-sym"])
def test_the_iris_board_reaches_its_squared_error_optimum(tmp_path, rule):
    """Reproduction (a), seconds long: 30 epochs on the 30-edge board. Each output of the board joins only sources,
    so it reads V_c = sum_i w_ci s_i with w_ci = g_ci / sum_i g_ci >= 0, sum_i w_ci = 1 (ground one of the s_i):
    the best the squared error allows is a non-negative least-squares fit with that constraint (scipy's nnls,
    independent of the circuit code). Both rules come within 0.01 V^2 of it, within 3 examples of its training
    accuracy; no linear map does much better (numpy's lstsq: 85 % of the training flowers)."""
    from scipy.optimize import nnls
    c = board_classifier(4, 3, seed=0)
    task = cl.classification_task(c, cl.load_dataset("iris"), 0.2, seed=0)
    res = start_run(c, task, TrainConfig(rule=rule, batch=10, epochs=30, steps=360), tmp_path / rule, progress=False)
    S = np.hstack([task.X_train, np.zeros((task.n_train, 1))])  # the sources in file order, ground last
    A = np.vstack([S, 1e4 * np.ones((1, S.shape[1]))])  # the weights of each output sum to 1
    W = np.array([nnls(A, np.r_[y, 1e4])[0] for y in task.Y_train.T]).T
    best = 0.5 * np.mean(np.sum((S @ W - task.Y_train) ** 2, axis=1))
    assert best - 1e-9 <= res["final_loss"] < best + 0.01, (best, res["final_loss"])
    best_acc = np.mean(np.argmax(S @ W, axis=1) == task.labels_train)
    assert abs(res["train_accuracy"] - best_acc) <= 3 / task.n_train, (best_acc, res["train_accuracy"])
    L = np.hstack([task.X_train, np.ones((task.n_train, 1))])
    ls = np.mean(np.argmax(L @ np.linalg.lstsq(L, task.Y_train, rcond=None)[0], axis=1) == task.labels_train)
    assert ls < 0.9  # the squared error's ceiling on Iris, whatever the circuit


def test_force_replaces_a_classification_run(tmp_path, board):
    """A classification run's own files (task.npz, confusion.png, trained.toml) are a run's: --force moves them aside."""
    run = tmp_path / "run"
    assert run_hil("train", board, "--dataset", "iris", "--epochs", "1", "--out", run).returncode == 0
    assert {"task.npz", "confusion.png", "trained.toml"} <= {p.name for p in run.iterdir()}
    r = run_hil("train", board, "--dataset", "iris", "--epochs", "2", "--out", run, "--force")
    assert r.returncode == 0, r.stderr
    aside = [d for d in run.iterdir() if d.name.startswith("replaced-")]
    assert len(aside) == 1 and (aside[0] / "task.npz").is_file()
