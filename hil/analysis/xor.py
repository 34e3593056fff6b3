"""Dillavou et al.'s two results on circuits, reproduced: XOR on transistor edges, Iris on a board.

- XOR (Dillavou et al., PNAS 121, e2319718121, 2024): :func:`hil.circuits.transistor_network`
  (n-channel MOSFET edges, gate voltages trained) learns the generated XOR data set
  (``--dataset xor``) with coupled learning, on the embedded substrate and on ngspice;
  :func:`xor` returns the accuracies and how many of the four noise-free corners
  (+-1, +-1) the trained network classifies right.

Each function returns plain numbers (a dict per run) so that a report can lay them out;
``quick=True`` is the short version (one seed), the default the full one.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

#: the XOR protocol: generated data (200 examples, split 160/40 with seed 0), sources at 2 V per standard deviation
XOR_VOLTS, XOR_EPOCHS, XOR_BATCH, XOR_HIDDEN = 2.0, 20, 10, 6
#: what the paper reports: XOR learned by a network of transistor edges with coupled learning
XOR_PAPER = "XOR learned (Dillavou et al. 2024)"
CORNERS = np.array([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]])


def _train(circuit, task, rule, epochs, batch, backend="ideal", options=None, nudge=None, seed=0) -> tuple:
    """(result dict, trained circuit, seconds) of one run in a temporary run directory."""
    from hil.circuit import load_circuit
    from hil.train import TrainConfig, start_run, steps_per_epoch
    cfg = TrainConfig(rule=rule, nudge=nudge, batch=batch, epochs=epochs, seed=seed,
                      steps=epochs * steps_per_epoch(task.n_train, batch), backend=backend,
                      backend_options=dict(options or {}))
    with tempfile.TemporaryDirectory(prefix="hil-xor-") as tmp:
        t0 = time.perf_counter()
        res = start_run(circuit, task, cfg, Path(tmp) / "run", progress=False)
        seconds = time.perf_counter() - t0
        trained = load_circuit(Path(tmp) / "run" / "trained.toml")
    res["nudge"] = cfg.nudge
    return res, trained, seconds


def corner_readings(circuit, task, backend="ideal", **options) -> np.ndarray:
    """The class readings (4, C), volts, of ``circuit`` at the four noise-free corners :data:`CORNERS`, encoded
    as the task's training split was (same mean, scale and volts per standard deviation)."""
    from hil.api import predict
    from hil.classify import encode_inputs, readings
    return readings(task.encoding, predict(circuit, encode_inputs(task.encoding, CORNERS), backend, **options))


def xor(quick: bool = False, ngspice: bool = True, progress=print) -> list:
    """XOR on :func:`hil.circuits.transistor_network` (2 features, 2 classes, :data:`XOR_HIDDEN` hidden nodes)
    with coupled learning at its default nudge (eta = 0.05), :data:`XOR_EPOCHS` epochs of batch
    :data:`XOR_BATCH`, sources at :data:`XOR_VOLTS` V per standard deviation; generator seeds 0 (``quick``)
    or 0, 1, 2. One row per (seed, backend): accuracies, the corners classified right (of 4), the losses."""
    from hil.circuits import transistor_network
    from hil.classify import classification_task, load_dataset, predict
    from hil.elements import Mosfet

    rows = []
    data = load_dataset("xor", 0)
    truth = (CORNERS.prod(axis=1) > 0).astype(int)  # class 1: both features of one sign
    for seed in ((0,) if quick else (0, 1, 2)):
        c = transistor_network(2, 2, XOR_HIDDEN, seed)
        task = classification_task(c, data, 0.2, seed=0, volts=XOR_VOLTS)
        for backend in ("ideal",) + (("ngspice",) if ngspice else ()):
            progress(f"xor: transistor network (seed {seed}), cl, {backend}")
            res, trained, secs = _train(c, task, "cl", XOR_EPOCHS, XOR_BATCH, backend)
            corners = int(np.sum(predict(task.encoding, corner_readings(trained, task, backend)) == truth))
            rows.append({"seed": seed, "backend": backend, "rule": "cl", "nudge": res["nudge"], "steps": res["steps"],
                         "epochs": XOR_EPOCHS, "channels": len(c.group(Mosfet)),
                         "train_accuracy": res["train_accuracy"], "test_accuracy": res["test_accuracy"],
                         "corners": corners, "initial_loss": res["initial_loss"], "final_loss": res["final_loss"],
                         "seconds": secs})
    return rows
