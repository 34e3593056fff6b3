"""The Python API a script or a notebook uses: build or load a circuit, make a task, train, predict.

Everything here is exported from :mod:`hil` itself::

    import hil
    c = hil.load_circuit("net16")                    # a shipped circuit, or a path to a .toml file
    task = hil.teacher_task(c, seed=1)               # or hil.load_csv_task(c, "my.csv")
    result = hil.train(c, task, rule="ep-sym", steps=500)
    result.final_loss, result.log["train_loss"]      # V^2
    V_O = hil.predict(result.circuit, task.X_test)   # (batch, |O|) volts

:func:`train` runs the same loop as ``hil train`` (:class:`hil.train.Trainer`), with the same
defaults; it keeps no files unless ``out`` names a run directory.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hil.circuit import Circuit, load_circuit
from hil.runs import Run
from hil.substrate import Experiment
from hil.tasks import Task, factorize_task  # noqa: F401  (exported by hil)
# imported here, before hil/__init__ binds the name hil.train to the function below: a first
# import of the module later would rebind hil.train to the module
from hil.train import TrainConfig, check_config, open_substrate, start_run


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes
    ----------
    circuit : Circuit
        The trained circuit: the starting circuit with the final parameters theta (S).
    log : dict of str to ndarray
        The run's log, one array per column of ``log.csv``: ``step``, ``train_loss`` and
        ``test_loss`` (V^2, NaN on steps where a loss was not measured), ``grad_norm``,
        ``seconds``, ``lr`` (S^2/V^2), and any column the run adds (``homeostasis_H``, an accuracy).
    task : Task
        The task trained on.
    config : TrainConfig
        The options in force, defaults resolved (nudge, lr, kappa_max, log_every).
    initial_loss, final_loss : float
        Mean training loss 1/2 ||V_O - y||^2 at step 0 and at the last step, V^2.
    accuracy : dict or None
        Where the task has classes: the final fraction of examples classified correctly, by
        split (``{"train": ..., "test": ...}``); None for a regression task.
    run_dir : Path or None
        The run directory, where ``out`` was given.
    summary : dict
        Everything ``result.json`` holds (measured and predicted decay rates, substrate messages).
    """

    circuit: Circuit
    log: dict
    task: Task
    config: object
    initial_loss: float
    final_loss: float
    accuracy: dict | None = None
    run_dir: Path | None = None
    summary: dict = field(default_factory=dict)


def _accuracy(log: dict, summary: dict) -> dict | None:
    """The final accuracy per split where the run logged one (a classification task), else None."""
    if isinstance(summary.get("accuracy"), dict):
        return dict(summary["accuracy"])
    acc = {}
    for key, col in log.items():
        if "accuracy" in key:
            good = np.asarray(col, float)[np.isfinite(col)]
            if len(good):
                acc[key.replace("_accuracy", "").replace("accuracy_", "") or key] = float(good[-1])
    return acc or None


def _circuit(circuit) -> Circuit:
    return circuit if isinstance(circuit, Circuit) else load_circuit(circuit)


def train(circuit, task: Task, *, rule: str = "ep-sym", steps: int = 1000, lr: float | None = None,
          nudge: float | None = None, batch: int | None = None, seed: int = 0, epochs: int | None = None,
          backend: str = "ideal",
          out=None, force: bool = False, progress: bool = True, **options) -> TrainResult:
    """Train ``circuit`` on ``task`` and return the trained circuit with its log.

    The update is theta <- clip(theta - alpha ghat, g_min, g_max), ghat the rule's estimate
    of dC/dtheta from measured node voltages (see the rules page of the documentation).

    Parameters
    ----------
    circuit : Circuit, str or path
        A :class:`Circuit`, a shipped circuit's name (``"net16"``) or a circuit file.
    task : Task
        Examples in volts (:func:`hil.teacher_task`, :func:`hil.load_csv_task`, or ``Task(...)``).
    rule : str
        ``gd``, ``ep``, ``ep-sym``, ``ep-holo:N``, ``ep-open``, ``ep-stencil:N``, ``cl`` or ``al``.
    steps : int
        Number of updates.
    lr : float, optional
        Step alpha in S^2/V^2; by default 0.25 / lambda_max of the loss's Gauss-Newton curvature
        (the circuit file's ``lr_fraction`` in place of 0.25 where it has one), re-estimated every 10 steps.
    nudge : float, optional
        EP's beta in siemens (default 0.05 / kappa_max) or CL's and AL's eta (default 0.05).
    batch : int, optional
        Examples per step (default: the whole training split).
    seed : int
        Seeds the batches (and nothing else).
    epochs : int, optional
        Train by epochs instead of ``steps``: passes through the training split in minibatches of
        ``batch`` (default 10) shuffled from ``seed``.
    backend : str
        ``ideal`` (default), ``ngspice`` or ``bench``; further keyword ``options`` go to the
        substrate (``device="mosfet"``, ``nonideal="tol.toml"``, ``bench="net16-bench.toml"``).
    out : str or path, optional
        A run directory to record into (``log.csv``, checkpoints, ``loss.png``) and resume later
        with ``hil train --resume``; must be new or empty unless ``force``. Without it the run
        trains in a temporary folder that is removed afterwards.
    progress : bool
        Show tqdm's bar (a widget in a notebook).

    Returns
    -------
    TrainResult
    """
    c = _circuit(circuit)
    cfg = check_config(TrainConfig(rule=rule, steps=steps, lr=lr, nudge=nudge, batch=batch, seed=seed,
                                   backend=backend, backend_options=dict(options)))
    if epochs is not None:
        from hil.train import by_epochs
        by_epochs(cfg, task.n_train, epochs)
    with tempfile.TemporaryDirectory(prefix="hil-train-") as tmp:
        where = Path(out) if out is not None else Path(tmp) / "run"
        summary = start_run(c, task, cfg, where, progress=bool(progress), force=force)
        run = Run(where)
        log = run.read_log()
        trained = c.with_g(run.load_checkpoint()["g"])
    return TrainResult(circuit=trained, log=log, task=task, config=cfg,
                       initial_loss=float(summary["initial_loss"]), final_loss=float(summary["final_loss"]),
                       accuracy=_accuracy(log, summary), run_dir=where if out is not None else None,
                       summary={k: v for k, v in summary.items() if k != "run_dir"})


def predict(circuit, X, backend: str = "ideal", **options) -> np.ndarray:
    """The circuit's outputs V_O (batch, |O|), volts, for inputs ``X`` (batch, |inputs|) volts.

    The free state with every input source at its value (no nudge, no clamp), measured on
    ``backend`` (``ideal``: the exact linear solve; ``ngspice``: the device ``options`` name).
    """
    c = _circuit(circuit)
    return free_state(c, X, backend, **options)[:, list(c.outputs)]


def free_state(circuit, X, backend: str = "ideal", **options) -> np.ndarray:
    """Every node voltage of the free state, (batch, n) volts, columns in ``circuit.nodes`` order."""
    c = _circuit(circuit)
    X = np.atleast_2d(np.asarray(X, dtype=float))
    with open_substrate(c, backend, **options) as sub:
        return sub.run(X, [Experiment.free(len(X), len(c.outputs))])[0]
