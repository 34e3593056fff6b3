"""The hinge cost of a classification (--cost hinge) and Iris on the 30-edge board under it."""

import json

import numpy as np
import pytest

from helpers import run_hil
from hil import classify as cl
from hil.circuits import board_classifier


def test_hinge_targets_leave_the_outputs_past_their_targets_alone():
    """y'_o = V_o where output o is past its target on the right side, y_o elsewhere; by hand, one per case."""
    enc = {"classes": ["a", "b", "c"], "differential": False, "v_on": 0.2, "v_off": 0.15}
    Y = cl.encode_targets(enc, [0, 2])  # [[0.2, 0.15, 0.15], [0.15, 0.15, 0.2]]
    VO = np.array([[0.3, 0.1, 0.16],     # true class 0 above v_on: kept; class 1 below v_off: kept; 2 above: pulled
                   [0.19, 0.15, 0.1]])   # class 0 above v_off: pulled; 1 at v_off: kept; true class 2 below: pulled
    assert cl.hinge_targets(enc, Y, VO).tolist() == [[0.3, 0.1, 0.15], [0.15, 0.15, 0.2]]
    # a pair per class: the + side's upper target is +v_on/2, the - side's is -v_off/2
    enc2 = dict(enc, classes=["a", "b"], differential=True, v_on=0.5, v_off=-0.5)
    Y2 = cl.encode_targets(enc2, [0])  # [[0.25, -0.25, -0.25, 0.25]]
    VO2 = np.array([[0.3, -0.2, -0.3, 0.2]])
    assert cl.hinge_targets(enc2, Y2, VO2).tolist() == [[0.3, -0.25, -0.3, 0.25]]


def test_gd_on_the_hinge_targets_is_the_gradient_of_the_hinge_cost():
    """The rules are unchanged: the exact gradient (gd's adjoint) at the hinge targets y'(V_O) equals central
    differences of C = 1/2 mean ||V_O - y'(V_O)||^2 in every conductance (the squared hinge is C^1)."""
    import hil
    from hil.rules import make_rule
    from hil.substrate import Free
    from hil.train import open_substrate
    c = board_classifier(4, 3, seed=1)
    task = cl.classification_task(c, cl.load_dataset("iris"), 0.2, seed=0, v_on=0.2, v_off=0.15, volts=0.5,
                                  cost="hinge")
    X, Y = task.X_train[:40], task.Y_train[:40]

    def cost(g):
        VO = hil.predict(c.with_g(g), X)
        r = VO - task.targets_at(Y, VO)
        return 0.5 * np.mean(np.sum(r * r, axis=1))
    with open_substrate(c) as sub:
        VO = sub.measure(X, Y, [Free()]).voltages["free"][:, list(c.outputs)]
        Yh = task.targets_at(Y, VO)
        assert 0 < np.mean(Yh == VO) < 1  # some outputs past their targets, some not
        rule = make_rule("gd", None)
        ghat = rule.estimate(sub.measure(X, Yh, rule.states()))
    h = 1e-4 * c.g
    fd = np.array([(cost(c.g + h[e] * np.eye(c.m)[e]) - cost(c.g - h[e] * np.eye(c.m)[e])) / (2 * h[e])
                   for e in range(c.m)])
    np.testing.assert_allclose(ghat, fd, rtol=1e-5, atol=1e-8 * np.abs(fd).max())


def test_the_hinge_lifts_the_iris_board_to_the_linear_ceiling(tmp_path):
    """Reproduction (a), seconds long: the 30-edge board, cl, 30 epochs, split seed 0, sources at 0.5 V per
    standard deviation, targets 0.2 / 0.15 V. With the squared error it stays at its own optimum's 85 %; with
    the hinge it classifies >= 95 % of the training flowers and 27 of the 30 test flowers, what a linear SVM
    (scikit-learn, one-vs-rest and Crammer-Singer) reaches on the same split."""
    from sklearn.svm import LinearSVC
    board = tmp_path / "board.toml"
    assert run_hil("generate", "board", "-o", board).returncode == 0
    base = ["train", board, "--dataset", "iris", "--epochs", "30", "--rule", "cl", "--input-volts", "0.5",
            "--v-on", "0.2", "--v-off", "0.15", "--json"]
    res = {}
    for cost in ("squared", "hinge"):
        r = run_hil(*base, "--cost", cost, "--out", tmp_path / cost)
        assert r.returncode == 0, r.stderr
        res[cost] = json.loads(r.stdout.strip().splitlines()[-1])
    assert json.loads((tmp_path / "hinge" / "task.json").read_text())["encoding"]["cost"] == "hinge"
    assert res["squared"]["train_accuracy"] <= 0.86
    assert res["hinge"]["train_accuracy"] >= 0.95
    # the test flowers the hinge gets right, counted from the confusion matrix's diagonal
    assert int(np.trace(res["hinge"]["confusion_test"])) == 27
    task = cl.classification_task(board_classifier(4, 3), cl.load_dataset("iris"), 0.2, seed=0)
    Z, Zt = task.X_train[:, 0:8:2], task.X_test[:, 0:8:2]
    for svm in (LinearSVC(C=100, max_iter=200000, random_state=0),
                LinearSVC(C=10, multi_class="crammer_singer", max_iter=200000, random_state=0)):
        assert svm.fit(Z, task.labels_train).score(Zt, task.labels_test) == pytest.approx(27 / 30)


def test_cost_applies_to_a_classification_only(tmp_path):
    r = run_hil("train", "net16", "--teacher", "1", "--cost", "hinge", "--steps", "2", "--out", tmp_path / "r")
    assert r.returncode == 2 and "--cost" in r.stderr and "classification" in r.stderr, r.stderr
    r = run_hil("train", "net16", "--dataset", "xor", "--cost", "margin", "--out", tmp_path / "r")
    assert r.returncode == 2 and "--cost" in r.stderr, r.stderr
    r = run_hil("grad", "net16", "--dataset", "xor", "--cost", "hinge")  # an analysis would ignore it
    assert r.returncode == 2 and "--cost hinge" in r.stderr and "hil grad" in r.stderr, r.stderr


def test_a_hinge_run_resumes_bit_for_bit(tmp_path):
    """The cost is recorded with the encoding (task.json): a resumed hinge run draws the same targets and ends
    where the run that never stopped ends, its hinge loss logged the same."""
    from hil.runs import Run
    from hil.train import TrainConfig, resume_run, start_run
    c = board_classifier(4, 3, seed=1)
    task = cl.classification_task(c, cl.load_dataset("iris"), 0.2, seed=1, v_on=0.2, v_off=0.15, volts=0.5,
                                  cost="hinge")
    cfg = dict(rule="cl", batch=10, epochs=2, seed=5, checkpoint_every=5)
    start_run(c, task, TrainConfig(steps=24, **cfg), tmp_path / "whole", progress=False)
    start_run(c, task, TrainConfig(steps=10, **cfg), tmp_path / "part", progress=False)
    resume_run(tmp_path / "part", steps=24, progress=False)
    a, b = Run(tmp_path / "whole"), Run(tmp_path / "part")
    assert json.loads((tmp_path / "part" / "task.json").read_text())["encoding"]["cost"] == "hinge"
    np.testing.assert_array_equal(a.load_checkpoint()["g"], b.load_checkpoint()["g"])
    for col in ("step", "train_loss", "test_loss", "train_accuracy"):
        np.testing.assert_array_equal(a.read_log()[col], b.read_log()[col], err_msg=col)
    # the logged loss is the hinge's, below the squared error to the same targets at the same conductances
    import hil
    VO = hil.predict(c.with_g(a.load_checkpoint()["g"]), task.X_train)
    squared = 0.5 * np.mean(np.sum((VO - task.Y_train) ** 2, axis=1))
    r = VO - task.targets_at(task.Y_train, VO)
    assert a.read_log()["train_loss"][-1] == pytest.approx(0.5 * np.mean(np.sum(r * r, axis=1)), rel=1e-9)
    assert a.read_log()["train_loss"][-1] < squared


def test_the_board_optimum_of_the_squared_error_is_the_constrained_least_squares_fit():
    """hil.analysis.xor.board_optimum (L-BFGS-B over the board's conductances) against scipy's nnls with the
    weights of each output summing to 1: the same loss to 1e-4 V^2, the hinge's optimum below the squared one's."""
    from scipy.optimize import nnls

    from hil.analysis.xor import board_optimum, iris_task
    c, sq = iris_task(0, "squared")
    S = np.hstack([sq.X_train, np.zeros((sq.n_train, 1))])
    A = np.vstack([S, 1e4 * np.ones((1, S.shape[1]))])
    W = np.array([nnls(A, np.r_[y, 1e4])[0] for y in sq.Y_train.T]).T
    best = 0.5 * np.mean(np.sum((S @ W - sq.Y_train) ** 2, axis=1))
    got = board_optimum(c, sq, starts=2)
    assert best - 1e-9 <= got["loss"] <= best + 1e-4, (best, got)
    assert board_optimum(c, iris_task(0)[1], starts=2)["loss"] < got["loss"]
