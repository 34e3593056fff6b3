"""The report's classification section: Iris on a board-sized linear network, beside the papers and baselines.

The board is :func:`hil.circuits.board_classifier` (30 edges, Dillavou et al., Phys. Rev. Applied
18, 014040, 2022); the task Iris from scikit-learn, split 120/30 (stratified, seed 0), trained
by epochs through the same loop as every run. Beside it, on the same split and encoding: the
least-squares optimum of *any* linear map onto the same targets (what squared error on a
linear circuit can reach at best) and scikit-learn's logistic regression.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

EPOCHS, BATCH = 30, 10
#: what the field reports for Iris on a 16-edge coupled-learning resistor board (secondary sources)
PAPER = "> 95 % (Dillavou et al. 2022, as quoted)"


def _train(circuit, task, rule, backend="ideal", options=None, rounding="nearest") -> dict:
    from hil.train import TrainConfig, start_run, steps_per_epoch
    cfg = TrainConfig(rule=rule, batch=BATCH, epochs=EPOCHS, steps=EPOCHS * steps_per_epoch(task.n_train, BATCH),
                      backend=backend, backend_options=options or {}, rounding=rounding)
    with tempfile.TemporaryDirectory(prefix="hil-report-") as tmp:
        return start_run(circuit, task, cfg, Path(tmp) / "run", progress=False)


def baselines(task, X, y) -> dict:
    """Least squares (any linear map with an offset, onto the task's targets) and logistic regression, same split."""
    from sklearn.linear_model import LogisticRegression

    from hil.classify import accuracy, predict
    A = lambda Z: np.hstack([Z, np.ones((len(Z), 1))])
    W = np.linalg.lstsq(A(task.X_train), task.Y_train, rcond=None)[0]
    ls = {s: accuracy(predict(task.encoding, A(Z) @ W), lab) for s, Z, lab in
          (("train", task.X_train, task.labels_train), ("test", task.X_test, task.labels_test))}
    d = len(task.encoding["features"])
    Ztr, Zte = task.X_train[:, 0:2 * d:2], task.X_test[:, 0:2 * d:2]  # the standardised features (the +x sources)
    lr = LogisticRegression(max_iter=2000).fit(Ztr, task.labels_train)
    return {"ls": ls, "logistic": {"train": float(lr.score(Ztr, task.labels_train)),
                                   "test": float(lr.score(Zte, task.labels_test))}}


def experiment(ngspice: bool = False, progress=print) -> dict:
    from hil.circuits import board_classifier
    from hil.classify import classification_task, load_dataset

    c = board_classifier(4, 3, seed=0)
    data = load_dataset("iris")
    task = classification_task(c, data, 0.2, seed=0)
    rows = []
    for rule in ("cl", "ep-sym", "gd"):
        progress(f"classification: iris, board, {rule}")
        rows.append(("ideal", rule, _train(c, task, rule)))
    if ngspice:
        progress("classification: iris, board, cl on ngspice (digipot)")
        rows.append(("ngspice digipot", "cl", _train(c, task, "cl", "ngspice", {"device": "digipot"})))
        progress("classification: iris, board, cl on ngspice (digipot, stochastic rounding)")
        rows.append(("ngspice digipot, --rounding stochastic", "cl",
                     _train(c, task, "cl", "ngspice", {"device": "digipot"}, "stochastic")))
    return {"circuit": c, "task": task, "rows": rows, "base": baselines(task, data.X, data.y)}


#: the other shipped data sets trained on their own boards (features, classes from the data)
OTHERS = ("wine", "breast-cancer")


def others(progress=print) -> list:
    """Each of OTHERS on ``board_classifier(d, C)``: cl and ep-sym, beside logistic regression on the same split."""
    from hil.circuits import board_classifier
    from hil.classify import classification_task, load_dataset

    rows = []
    for name in OTHERS:
        data = load_dataset(name)
        c = board_classifier(data.X.shape[1], len(data.classes), seed=0)
        task = classification_task(c, data, 0.2, seed=0)
        base = baselines(task, data.X, data.y)
        for rule in ("cl", "ep-sym"):
            progress(f"classification: {name}, {rule}")
            rows.append((name, data.X.shape[1], len(data.classes), c.m, rule, _train(c, task, rule), base))
    return rows


def section(out: Path, ngspice: bool = False, progress=print, number: int = 8, keep: dict | None = None) -> list:
    """The report's Markdown lines for the classification experiments (``keep``: given a dict, the board's rows
    [(backend, rule, result)] are left in it under "rows", for the reproductions section)."""
    r = experiment(ngspice, progress)
    if keep is not None:
        keep["rows"] = r["rows"]
    c, task, base = r["circuit"], r["task"], r["base"]
    md = [f"## {number}. Classification: Iris on a board-sized network", "",
          f"`hil generate board -o board.toml` ({c.m} edges: a +-x pair per feature, a +1 V bias and ground, each "
          "joined to each of the 3 class outputs), then `hil train board.toml --dataset iris --epochs "
          f"{EPOCHS} --rule RULE` (batch {BATCH}, defaults otherwise; {task.n_train} training and "
          f"{len(task.X_test)} test flowers, stratified, seed 0).", "",
          "| backend | rule | train accuracy | test accuracy | paper |", "|---|---|---|---|---|"]
    for backend, rule, res in r["rows"]:
        md.append(f"| {backend} | {rule} | {res['train_accuracy']:.3f} | {res['test_accuracy']:.3f} | {PAPER} |")
    md += [f"| least squares, any linear map | - | {base['ls']['train']:.3f} | {base['ls']['test']:.3f} | |",
           f"| logistic regression (scikit-learn) | - | {base['logistic']['train']:.3f} | "
           f"{base['logistic']['test']:.3f} | |", "",
           "A resistor network is linear in its sources, and the rules descend the squared error to the target "
           "voltages: their optimum is the least-squares line of the table, which on Iris classifies "
           f"{base['ls']['train']:.1%} of the training flowers (versicolor lies between the other two species "
           "along every feature, so a least-squares fit to one-hot targets masks it). The trained boards sit at "
           "or below it (positive conductances constrain the map further; on the digipot device each small update "
           "is rounded to the nearest of 129 taps, and most round to no change: the run stalls, unless each "
           "update is rounded to the tap above or below at random in proportion, `--rounding stochastic`); logistic regression, whose cost is "
           "not the squared error, separates the classes. 93 % on Iris needs a nonlinearity (diodes, the deep "
           "resistive networks of Kendall et al. and Scellier) or a cost other than the squared error.", "",
           "The other shipped data sets, each on its own board (`hil generate board --sizes FEATURES,CLASSES`), "
           f"{EPOCHS} epochs, batch {BATCH}, the same split rule:", "",
           "| data set | features | classes | edges | rule | train accuracy | test accuracy | "
           "logistic regression, test |", "|---|---|---|---|---|---|---|---|"]
    for name, d, C, m, rule, res, base in others(progress):
        md.append(f"| {name} | {d} | {C} | {m} | {rule} | {res['train_accuracy']:.3f} | "
                  f"{res['test_accuracy']:.3f} | {base['logistic']['test']:.3f} |")
    return md
