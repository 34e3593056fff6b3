"""Training: loss reduction on a teacher task, exact resume, interruption, run contents."""

import json

import numpy as np
import pytest

from hil.circuits import random_network
from hil.ideal import IdealSubstrate
from hil.runs import Run, RunError
from hil.tasks import teacher_task
from hil.train import TrainConfig, resume_run, start_run


@pytest.fixture(scope="module")
def teacher():
    c = random_network(20, 4.0, seed=5)
    return c, teacher_task(c, seed=1, examples=16)


@pytest.mark.parametrize("rule", ["gd", "ep-sym", "al", "cl"])
def test_rule_drives_teacher_loss_down_six_orders(tmp_path, teacher, rule):
    """At the full curvature step 1 / lambda_max (the default keeps a factor 4 in hand for stability)."""
    from hil.rules import make_rule
    from hil.train import LR_FRACTION, default_lr
    c, task = teacher
    lr = default_lr(c, c.g, task.X_train, make_rule(rule)) / LR_FRACTION
    res = start_run(c, task, TrainConfig(rule=rule, steps=3000, lr=lr), tmp_path / rule, progress=False)
    assert res["final_loss"] < 1e-6 * res["initial_loss"], res
    log = Run(tmp_path / rule).read_log()
    assert len(log["step"]) == 3001 and log["step"][-1] == 3000
    assert log["test_loss"][-1] < 1e-5 * log["test_loss"][0]  # the teacher generalises


def test_run_directory_contents(tmp_path, teacher):
    c, task = teacher
    start_run(c, task, TrainConfig(rule="ep", steps=40, checkpoint_every=10), tmp_path / "r", progress=False)
    run = Run(tmp_path / "r")
    for f in ("config.json", "circuit.toml", "task.json", "log.csv", "checkpoint.json", "loss.png", "result.json"):
        assert (run.path / f).exists(), f
    assert sorted(p.name for p in (run.path / "checkpoints").iterdir()) == [f"step_{k:06d}.npz" for k in (0, 10, 20, 30, 40)]
    cfg = run.config
    assert cfg["lr"] > 0 and cfg["nudge"] > 0 and cfg["kappa_max"] > 0  # defaults resolved and recorded
    ck = run.load_checkpoint()
    assert ck["step"] == 40 and np.all((ck["g"] >= c.g_min) & (ck["g"] <= c.g_max))
    assert (run.path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(RunError, match="already holds a run"):
        start_run(c, task, TrainConfig(steps=5), tmp_path / "r", progress=False)


@pytest.mark.parametrize("rule", ["al", "ep-holo"])
def test_resume_continues_exactly(tmp_path, teacher, rule):
    """A run stopped at its checkpoint and resumed equals the run that never stopped."""
    c, task = teacher
    cfg = dict(rule=rule, steps=60, batch=5, seed=3, checkpoint_every=10)
    start_run(c, task, TrainConfig(**cfg), tmp_path / "whole", progress=False)
    start_run(c, task, TrainConfig(**{**cfg, "steps": 30}), tmp_path / "part", progress=False)
    resume_run(tmp_path / "part", steps=60, progress=False)
    a, b = Run(tmp_path / "whole"), Run(tmp_path / "part")
    np.testing.assert_array_equal(a.load_checkpoint()["g"], b.load_checkpoint()["g"])
    np.testing.assert_array_equal(a.read_log()["train_loss"], b.read_log()["train_loss"])


class Interrupting(IdealSubstrate):
    """Raises KeyboardInterrupt at the n-th write, as a user's Ctrl-C would."""

    def __init__(self, circuit, after):
        """``after``: how many update writes succeed before the interrupt."""
        self.after = after + 1  # the constructor's own write does not count
        super().__init__(circuit)

    def write(self, g):
        self.after -= 1
        if self.after < 0:
            raise KeyboardInterrupt
        return super().write(g)


@pytest.mark.parametrize("batch", [4, None])
def test_interrupted_run_loses_nothing_and_resumes_exactly(tmp_path, teacher, batch):
    c, task = teacher
    cfg = dict(rule="cl", steps=50, batch=batch, seed=9, checkpoint_every=20, log_every=4)
    start_run(c, task, TrainConfig(**cfg), tmp_path / "whole", progress=False)
    with pytest.raises(KeyboardInterrupt):
        # the 27th update write is refused: steps 1..26 completed, step 27 did not
        start_run(c, task, TrainConfig(**cfg), tmp_path / "cut", progress=False,
                  substrate=Interrupting(c, after=26))
    cut = Run(tmp_path / "cut")
    assert cut.load_checkpoint()["step"] == 26  # every completed step was kept
    # every logged step that completed: all of them with a full batch, else every 4th
    assert cut.read_log()["step"][-1] == (26 if batch is None else 24)
    resume_run(tmp_path / "cut", progress=False)
    whole = Run(tmp_path / "whole")
    np.testing.assert_array_equal(whole.load_checkpoint()["g"], cut.load_checkpoint()["g"])
    for col in ("step", "train_loss", "test_loss", "grad_norm", "lr"):
        np.testing.assert_array_equal(whole.read_log()[col], cut.read_log()[col], err_msg=col)
    # the curvature step in force at step 26 (set at step 20) came back from the checkpoint (lr column)


def test_resume_errors(tmp_path):
    with pytest.raises(RunError, match="no checkpoint.json"):
        resume_run(tmp_path, progress=False)


def test_updates_stay_within_bounds(tmp_path, teacher):
    c, task = teacher
    start_run(c, task, TrainConfig(rule="gd", steps=20, lr=1.0), tmp_path / "big", progress=False)
    g = Run(tmp_path / "big").load_checkpoint()["g"]
    assert np.all((g >= c.g_min) & (g <= c.g_max))
    assert np.any(g == c.g_min) or np.any(g == c.g_max)  # the huge step really was clipped


class Counting(IdealSubstrate):
    """Counts the free-state passes measure() makes, by the batch it was given."""

    def __init__(self, circuit):
        super().__init__(circuit)
        self.passes = []

    def measure(self, inputs, targets, states):
        self.passes.append((len(inputs), tuple(type(s).__name__ for s in states)))
        return super().measure(inputs, targets, states)


def test_full_batch_logs_every_train_loss_from_the_steps_own_free_state(tmp_path, teacher):
    """The logged losses are the exact losses at each step's conductances, with no extra training-set pass."""
    from hil.exact import free_state
    c, task = teacher
    sub = Counting(c)
    steps, every = 30, 10
    start_run(c, task, TrainConfig(rule="ep-sym", steps=steps, checkpoint_every=every, log_every=5),
              tmp_path / "r", progress=False, substrate=sub)
    run = Run(tmp_path / "r")
    log = run.read_log()
    np.testing.assert_array_equal(log["step"], np.arange(steps + 1))
    for k in (0, 10, 20, 30):  # checkpointed conductances: the loss recomputed from scratch
        g = np.load(run.path / "checkpoints" / f"step_{k:06d}.npz")["g"]
        r = free_state(c, task.X_train, g)[:, list(c.outputs)] - task.Y_train
        assert log["train_loss"][k] == pytest.approx(0.5 * np.mean(np.sum(r * r, axis=1)), rel=1e-12)
    assert np.isfinite(log["test_loss"][::5]).all() and np.isnan(log["test_loss"][1:5]).all()
    n, n_test = task.n_train, len(task.X_test)
    train_passes = [p for p in sub.passes if p == (n, ("Free",))]
    test_passes = [p for p in sub.passes if p[0] == n_test]
    assert len(train_passes) == 1  # only at the end, where no next step follows
    assert len(test_passes) == steps // 5 + 1


def test_minibatch_logs_every_log_every_steps_and_the_rate_fit_still_works(tmp_path, teacher):
    from hil.rules import make_rule
    from hil.train import LR_FRACTION, default_lr
    c, task = teacher
    lr = default_lr(c, c.g, task.X_train, make_rule("gd")) / LR_FRACTION
    cfg = dict(rule="gd", steps=400, batch=6, seed=1, lr=lr)
    a = start_run(c, task, TrainConfig(**cfg, log_every=1), tmp_path / "a", progress=False)
    b = start_run(c, task, TrainConfig(**cfg, log_every=7), tmp_path / "b", progress=False)
    la, lb = Run(tmp_path / "a").read_log(), Run(tmp_path / "b").read_log()
    assert list(lb["step"]) == list(range(0, 400, 7)) + [400]
    np.testing.assert_array_equal(la["train_loss"][lb["step"].astype(int)], lb["train_loss"])  # same run, fewer rows
    assert a["final_loss"] == b["final_loss"]
    assert np.isfinite(a["measured_rate"]) and b["measured_rate"] == pytest.approx(a["measured_rate"], rel=0.05)
    assert Run(tmp_path / "b").config["log_every"] == 7
    assert (tmp_path / "b" / "loss.png").exists()


def test_default_log_every_keeps_logging_under_a_tenth_of_a_step(tmp_path, teacher):
    from hil.losslog import ROUND_COST, default_log_every, step_cost
    from hil.rules import make_rule
    c, task = teacher
    n, n_test = task.n_train, len(task.X_test)
    for rule in ("ep-sym", "cl", "al", "gd"):
        states = make_rule(rule).configure(1.0).states()
        for batch in (2, 6, n):
            k = default_log_every(states, batch, n, n_test)
            logging = ROUND_COST + n_test + (0 if batch == n else ROUND_COST + n)
            assert logging / k <= 0.05 * step_cost(states, batch) < logging / max(k - 1, 1e-9), (rule, batch, k)
    start_run(c, task, TrainConfig(rule="cl", steps=3, batch=4), tmp_path / "r", progress=False)
    states = make_rule("cl").configure(1.0).states()
    assert Run(tmp_path / "r").config["log_every"] == default_log_every(states, 4, n, n_test)
    with pytest.raises(ValueError, match="--log-every 0: log every must be a whole number >= 1"):
        start_run(c, task, TrainConfig(rule="cl", steps=3, log_every=0), tmp_path / "bad", progress=False)


KILLER = """
import os, signal, sys
from hil.circuits import random_network
from hil.ideal import IdealSubstrate
from hil.tasks import teacher_task
from hil.train import TrainConfig, start_run

class Killed(IdealSubstrate):
    writes = 0
    def write(self, g):
        Killed.writes += 1
        if Killed.writes == 1 + int(sys.argv[2]):  # the constructor's write, then the updates
            os.kill(os.getpid(), signal.SIGKILL)   # no handler runs: what is on disk is what a kill leaves
        return super().write(g)

c = random_network(20, 4.0, seed=5)
start_run(c, teacher_task(c, seed=1, examples=16), TrainConfig(**eval(sys.argv[3])), sys.argv[1],
          progress=False, substrate=Killed(c))
"""


@pytest.mark.parametrize("batch", [None, 5])
def test_killed_run_resumes_to_the_uninterrupted_log(tmp_path, teacher, batch):
    """SIGKILL mid-run (between checkpoints), then --resume: log and conductances as if never stopped."""
    import subprocess
    import sys
    c, task = teacher
    cfg = dict(rule="ep-sym", steps=40, batch=batch, seed=4, checkpoint_every=10, log_every=3)
    start_run(c, task, TrainConfig(**cfg), tmp_path / "whole", progress=False)
    p = subprocess.run([sys.executable, "-c", KILLER, str(tmp_path / "cut"), "23", repr(cfg)], capture_output=True)
    assert p.returncode == -9, p.stderr
    cut = Run(tmp_path / "cut")
    assert cut.load_checkpoint()["step"] == 20 and cut.read_log()["step"][-1] < 20
    resume_run(tmp_path / "cut", progress=False)
    whole = Run(tmp_path / "whole")
    np.testing.assert_array_equal(whole.load_checkpoint()["g"], cut.load_checkpoint()["g"])
    for col in ("step", "train_loss", "test_loss", "grad_norm", "lr"):
        np.testing.assert_array_equal(whole.read_log()[col], cut.read_log()[col], err_msg=col)


def _max_step_increase(log):
    """The largest ratio L_{k+1} / L_k over the steps whose loss is above rounding (1e-12 of the start)."""
    L = log["train_loss"]
    above = L[:-1] > 1e-12 * L[0]
    return float(np.max((L[1:] / L[:-1])[above]))


def test_demo_descends_without_a_burst_and_the_step_follows_the_curvature(tmp_path):
    """The README's demo (net16, ep-sym, 2,000 steps, defaults): a fixed initial step burst 2x per step near step 85."""
    from hil.circuit import load_circuit
    from hil.rules import make_rule
    from hil.train import LR_EVERY, default_lr

    c = load_circuit("net16")
    task = teacher_task(c, seed=1, examples=16)
    res = start_run(c, task, TrainConfig(rule="ep-sym", steps=2000), tmp_path / "demo", progress=False)
    run = Run(tmp_path / "demo")
    log = run.read_log()
    assert _max_step_increase(log) < 1.03
    assert res["final_loss"] < 1e-3 * res["initial_loss"]
    cfg = run.config
    assert cfg["lr_every"] == LR_EVERY and cfg["lr"] == log["lr"][0]
    # the step of steps 101..110 is the curvature step at the conductances written after step 100
    g100 = np.load(run.path / "checkpoints" / "step_000100.npz")["g"]
    want = default_lr(c, g100, task.X_train, make_rule("ep-sym"))
    assert log["lr"][101] == pytest.approx(want, rel=1e-12) and np.all(log["lr"][101:111] == log["lr"][101])
    assert log["lr"][101] < 0.5 * log["lr"][0]  # the curvature grew as conductances shrank


@pytest.mark.parametrize("circuit, rules", [
    ("net16", ["gd", "ep", "ep-holo", "ep-open", "cl", "al"]),
    ("lattice4x4", ["ep-sym", "cl"]), ("crossbar3x4x2", ["ep-sym", "al"]), ("bridge", ["ep-sym"]),
    ("divider", ["ep-sym"]), ("kite", ["ep-sym"]),
])
def test_no_default_step_raises_the_loss_more_than_a_few_percent(tmp_path, circuit, rules):
    from hil.circuit import load_circuit
    c = load_circuit(circuit)
    task = teacher_task(c, seed=1, examples=16)
    for rule in rules:
        start_run(c, task, TrainConfig(rule=rule, steps=400), tmp_path / rule, progress=False)
        assert _max_step_increase(Run(tmp_path / rule).read_log()) < 1.03, rule


def test_an_explicit_learning_rate_stays_fixed(tmp_path, teacher):
    c, task = teacher
    start_run(c, task, TrainConfig(rule="gd", steps=30, lr=1e-6), tmp_path / "r", progress=False)
    run = Run(tmp_path / "r")
    assert run.config["lr_every"] is None and np.all(run.read_log()["lr"] == 1e-6)
