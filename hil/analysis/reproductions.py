"""The report's section "The field's results, reproduced": each number measured here beside the paper's.

- (a) Iris on a board-sized network (Dillavou et al., Phys. Rev. Applied 18, 014040, 2022): what
  section 8 measures, quoted; and Iris on the deep resistive network of ``hil generate drn --sizes
  4,8,3`` at the defaults (the issue's acceptance run).
- (b) XOR on a transistor-edge network with coupled learning (Dillavou et al., PNAS 2024):
  :func:`hil.analysis.xor.xor`'s runs (``hil generate transistor``), on the embedded substrate
  and on ngspice: the four noise-free corners classified right and the test accuracy.
- (c) digits (scikit-learn's 8 x 8 images, standing in for MNIST) on a deep resistive network
  (Kendall et al. 2020; Scellier, ICML 2024) of 64 x 2 inputs (and a bias pair), H hidden units
  and 10 output pairs: ep-sym and gd (the exact gradient, backprop's part) on the same circuit and
  split, trained by epochs at the defaults, and scikit-learn's logistic regression on the same
  split; beside the papers' MNIST 96.54 % (EP) and 96.70 % (backprop), 1568-100-10.
- (d) the time of one epoch of (c): on the embedded substrate, and on ngspice (the same network
  with Shockley diodes, which ngspice simulates; a few steps timed and projected to an epoch).

:data:`MODES` sets the sizes: ``full`` is the papers' network on every digit, ``quick`` a smaller
one on a subset (what the test suite runs).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

#: each mode's digits experiment: images (None: all 1,797), hidden units, epochs, and the steps timed for (d)
MODES = {"full": {"images": None, "hidden": 100, "epochs": 10, "timed_steps": 5},
         "quick": {"images": 300, "hidden": 16, "epochs": 4, "timed_steps": 3}}
BATCH = 10
IRIS_SIZES, IRIS_EPOCHS = (4, 8, 3), 30
PAPER = {"a": "> 95 % (Dillavou et al. 2022, as quoted)",
         "b": "4 of 4 (Dillavou et al. 2024)",
         "c-ep": "96.54 % (MNIST, 1568-100-10; Kendall et al. 2020, Scellier 2024)",
         "c-bp": "96.70 % (backprop, same network)"}


def _run(circuit, task, rule, epochs, lr=None, backend="ideal", options=None) -> tuple:
    """(result, per-epoch log rows, seconds): one run by epochs through the loop, in a temporary folder."""
    from hil.runs import Run
    from hil.train import TrainConfig, by_epochs, start_run
    cfg = by_epochs(TrainConfig(rule=rule, batch=BATCH, lr=lr, backend=backend, backend_options=options or {}),
                    task.n_train, epochs)
    with tempfile.TemporaryDirectory(prefix="hil-repro-") as tmp:
        t0 = time.perf_counter()
        res = start_run(circuit, task, cfg, Path(tmp) / "run", progress=False, plot=False)
        seconds = time.perf_counter() - t0
        log = Run(Path(tmp) / "run").read_log()
    rows = {k: np.asarray(log[k]).tolist() for k in ("step", "train_accuracy", "test_accuracy")}
    return res, rows, seconds


def logistic(task) -> dict:
    """scikit-learn's logistic regression on the task's split and standardised features (the +x sources)."""
    from sklearn.linear_model import LogisticRegression
    d = len(task.encoding["features"])
    Ztr, Zte = task.X_train[:, 0:2 * d:2], task.X_test[:, 0:2 * d:2]
    lr = LogisticRegression(max_iter=5000).fit(Ztr, task.labels_train)
    return {"train": float(lr.score(Ztr, task.labels_train)), "test": float(lr.score(Zte, task.labels_test))}


def digits_task(circuit, images):
    """digits (first ``images`` of them, or all) encoded onto ``circuit``: split 80/20, stratified, seed 0."""
    from hil import classify as cl
    data = cl.load_dataset("digits")
    if images:
        data = cl.Labelled(data.X[:images], data.y[:images], data.classes, data.features, data.source)
    return cl.classification_task(circuit, data, 0.2, seed=0)


def iris_drn(progress=print) -> dict:
    """(a'): the generated 4-8-3 DRN on Iris, 30 epochs at the defaults, beside logistic regression."""
    from hil.circuits import deep_resistive_network
    from hil.classify import classification_task, load_dataset
    c = deep_resistive_network(IRIS_SIZES)
    task = classification_task(c, load_dataset("iris"), 0.2, seed=0)
    progress("reproductions: iris on a 4-8-3 deep resistive network")
    res, _, sec = _run(c, task, "ep-sym", IRIS_EPOCHS)
    return {"train": res["train_accuracy"], "test": res["test_accuracy"], "seconds": sec, "edges": c.m,
            "logistic": logistic(task)}


def digits(mode: str = "full", progress=print) -> dict:
    """(c): ep-sym and gd on the same DRN and split, by epochs at the defaults; logistic regression beside."""
    from hil.circuits import deep_resistive_network
    m = MODES[mode]
    c = deep_resistive_network((64, m["hidden"], 10))
    task = digits_task(c, m["images"])
    out = {"hidden": m["hidden"], "edges": c.m, "n_train": task.n_train, "n_test": len(task.X_test),
           "epochs": m["epochs"], "logistic": logistic(task), "runs": {}}
    for rule in ("ep-sym", "gd"):
        progress(f"reproductions: digits on a 64x2-{m['hidden']}-10x2 DRN, {rule}")
        res, rows, sec = _run(c, task, rule, m["epochs"])
        out["runs"][rule] = {"train": res["train_accuracy"], "test": res["test_accuracy"], "log": rows,
                             "seconds_per_epoch": sec / m["epochs"]}
    return out


def loop_seconds(circuit, task, backend: str, steps: int, lr: float, batch: int = BATCH, **options) -> float:
    """Median seconds of one step of the loop's own work (measure ep-sym's three states on a minibatch,
    estimate, write) at a fixed step ``lr``, over ``steps`` minibatches in epoch order, on ``backend``."""
    from hil.rules import make_rule
    from hil.train import epoch_batch, open_substrate
    rule = make_rule("ep-sym")
    times = []
    with open_substrate(circuit, backend, **options) as sub:
        rule.configure(sub.kappa_max(task.X_train[:batch]))
        g = sub.read()
        lo, hi = circuit.bounds()
        for k in range(steps):
            t0 = time.perf_counter()
            idx = epoch_batch(0, task.n_train, batch, k)
            ghat = rule.estimate(sub.measure(task.X_train[idx], task.Y_train[idx], rule.states()))
            g = sub.write(np.clip(g - lr * ghat, lo, hi))
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def epoch_time(mode: str = "full", ngspice: bool = True, progress=print) -> dict:
    """(d): seconds per step (and per epoch, steps x that) of (c)'s network with Shockley diodes, embedded and on
    ngspice, at one fixed step; solves per second (ep-sym: 3 states x batch examples a step)."""
    from hil.circuits import deep_resistive_network
    from hil.train import steps_per_epoch
    m = MODES[mode]
    c = deep_resistive_network((64, m["hidden"], 10), diode="shockley")
    task = digits_task(c, m["images"])
    spe = steps_per_epoch(task.n_train, BATCH)
    lr = 1e-9  # small: the timed steps stay near the start on both substrates
    out = {"steps_per_epoch": spe, "timed_steps": m["timed_steps"], "edges": c.m}
    backends = [("ideal", {})] + ([("ngspice", {"device": "resistor"})] if ngspice else [])
    for name, opts in backends:
        progress(f"reproductions: epoch time, {name}")
        s = loop_seconds(c, task, name, m["timed_steps"], lr, **opts)
        out[name] = {"step": s, "epoch": s * spe, "solves_per_s": 3 * BATCH / s}
    return out


def plot(dig: dict, path) -> None:
    """Test accuracy per epoch of ep-sym and gd on digits, logistic regression and the papers' lines beside."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.5, 4.0))
    spe = None
    for rule, r in dig["runs"].items():
        steps = np.asarray(r["log"]["step"], float)
        spe = spe or (steps[1] if len(steps) > 1 else 1.0)
        ax.plot(steps / spe, r["log"]["test_accuracy"], "o-", label=f"{rule} (DRN, test)")
    ax.axhline(dig["logistic"]["test"], color="gray", ls="--", label="logistic regression (test)")
    ax.axhline(0.9654, color="C0", ls=":", label="paper: EP, MNIST 96.54 %")
    ax.axhline(0.9670, color="C1", ls=":", label="paper: backprop 96.70 %")
    ax.axhline(0.1, color="k", ls=":", lw=0.8, label="chance")
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy")
    ax.set_title(f"digits on a 64x2-{dig['hidden']}-10x2 deep resistive network ({dig['edges']} edges)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def section(out, ngspice: bool = False, progress=print, number: int = 10, mode: str = "full",
            board: list | None = None) -> list:
    """The report's Markdown lines; ``board``: section 8's rows [(backend, rule, result)] for (a)."""
    out = Path(out)
    iris = iris_drn(progress)
    dig = digits(mode, progress)
    from hil.analysis.xor import xor
    xr = xor(quick=mode == "quick", ngspice=ngspice, progress=progress)
    et = epoch_time(mode, ngspice, progress)
    plot(dig, out / "reproductions.png")
    from hil.runs import write_json
    write_json(out / "reproductions.json", {"mode": mode, "iris_drn": iris, "xor": xr, "digits": dig,
                                                  "epoch_time": et})
    pct = lambda x: f"{100 * x:.1f} %"
    H = dig["hidden"]
    md = [f"## {number}. The field's results, reproduced", "",
          f"Each measured number beside the paper's (`hil report --reproductions {mode}`). Digits: "
          f"{dig['n_train']} training and {dig['n_test']} test images (stratified, seed 0), "
          f"{dig['epochs']} epochs, batch {BATCH}, the default nudge and step.", "",
          "| result | network | substrate | rule | measured | paper |", "|---|---|---|---|---|---|"]
    for backend, rule, res in board or []:
        md.append(f"| (a) Iris, test accuracy | board, 30 edges (section 8) | {backend} | {rule} | "
                  f"{pct(res['test_accuracy'])} | {PAPER['a']} |")
    md += [f"| (a) Iris, test accuracy | DRN 4x2-8-3x2, {iris['edges']} edges | ideal | ep-sym | "
           f"{pct(iris['test'])} | {PAPER['a']} |",
           f"| (a) Iris, test accuracy | logistic regression, same split | - | - | {pct(iris['logistic']['test'])} | |",
           ]
    for r in xr:
        md.append(f"| (b) XOR, corners right (test accuracy) | transistor edges, {r['channels']} channels, seed "
                  f"{r['seed']} | {r['backend']} | {r['rule']} | {r['corners']} of 4 ({pct(r['test_accuracy'])}) | "
                  f"{PAPER['b']} |")
    for rule, paper in (("ep-sym", PAPER["c-ep"]), ("gd", PAPER["c-bp"])):
        r = dig["runs"][rule]
        md.append(f"| (c) digits, test accuracy | DRN 64x2-{H}-10x2, {dig['edges']} edges | ideal | {rule} | "
                  f"{pct(r['test'])} | {paper} |")
    md.append(f"| (c) digits, test accuracy | logistic regression, same split | - | - | "
              f"{pct(dig['logistic']['test'])} | |")
    spe = et["steps_per_epoch"]
    md.append(f"| (d) seconds per epoch ({spe} steps) | DRN 64x2-{H}-10x2, Shockley diodes | ideal | ep-sym | "
              f"{et['ideal']['epoch']:.1f} s ({et['ideal']['solves_per_s']:.0f} solves/s) | |")
    if "ngspice" in et:
        md.append(f"| (d) seconds per epoch ({spe} steps) | the same | ngspice | ep-sym | "
                  f"{et['ngspice']['epoch']:.1f} s ({et['ngspice']['solves_per_s']:.0f} solves/s; "
                  f"ngspice / ideal {et['ngspice']['step'] / et['ideal']['step']:.1f}) | |")
    else:
        md.append("| (d) seconds per epoch | the same | ngspice | ep-sym | not run (`--ngspice`) | |")
    gap = 100 * (dig["runs"]["gd"]["test"] - dig["runs"]["ep-sym"]["test"])
    md += ["", f"![digits on a deep resistive network](reproductions.png)", "",
           f"(c) EP's test accuracy is {gap:+.1f} points from gd's on the same circuit (the papers: 0.16 points "
           "on MNIST). An epoch of the embedded substrate is timed whole in (c) "
           f"({dig['runs']['ep-sym']['seconds_per_epoch']:.1f} s with ideal diodes, evaluation of both splits "
           f"included); (d) times {et['timed_steps']} steps of the loop's own work (measure, estimate, write) at a "
           "fixed step and multiplies by the steps in an epoch."]
    return md
