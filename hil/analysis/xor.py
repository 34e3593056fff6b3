"""Dillavou et al.'s two results on circuits, reproduced: XOR on transistor edges, Iris on a board.

- XOR (Dillavou et al., PNAS 121, e2319718121, 2024): :func:`hil.circuits.transistor_network`
  (n-channel MOSFET edges, gate voltages trained) learns the generated XOR data set
  (``--dataset xor``) with coupled learning, on the embedded substrate and on ngspice;
  :func:`xor` returns the accuracies and how many of the four noise-free corners
  (+-1, +-1) the trained network classifies right.

- Iris on a board (Dillavou et al., Phys. Rev. Applied 18, 014040, 2022):
  :func:`hil.circuits.board_classifier` (30 edges) trained with the hinge cost
  (``--cost hinge``: an output already past its target on the right side is not nudged),
  by cl and ep-sym on the embedded substrate, by cl on ngspice's digital potentiometers and
  through the emulated bench; :func:`iris` returns those rows, :func:`linear_ceiling` what
  scikit-learn's linear classifiers reach on the same split, and :func:`board_optimum` the
  best the board's conductances can do under either cost (scipy, independent of the loop).

Each function returns plain numbers (a dict per run) so that a report can lay them out;
``quick=True`` is the short version (one seed, one split), the default the full one.
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


def _train(circuit, task, rule, epochs, batch, backend="ideal", options=None, nudge=None, seed=0,
           rounding="nearest") -> tuple:
    """(result dict, trained circuit, seconds) of one run in a temporary run directory."""
    from hil.circuit import load_circuit
    from hil.train import TrainConfig, start_run, steps_per_epoch
    cfg = TrainConfig(rule=rule, nudge=nudge, batch=batch, epochs=epochs, seed=seed,
                      steps=epochs * steps_per_epoch(task.n_train, batch), backend=backend,
                      backend_options=dict(options or {}), rounding=rounding)
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
    or 0 to 4. One row per (seed, backend): accuracies, the corners classified right (of 4), the losses."""
    from hil.circuits import transistor_network
    from hil.classify import classification_task, load_dataset, predict
    from hil.elements import Mosfet

    rows = []
    data = load_dataset("xor", 0)
    truth = (CORNERS.prod(axis=1) > 0).astype(int)  # class 1: both features of one sign
    for seed in ((0,) if quick else range(5)):
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


#: the Iris protocol: split 120/30 (stratified, --seed), 30 epochs of 10, sources at 0.5 V per standard deviation
#: (inside the emulated bench's +-2 V), the hinge cost with targets a board's outputs reach (see docs)
IRIS = {"epochs": 30, "batch": 10, "volts": 0.5, "cost": "hinge", "v_on": 0.2, "v_off": 0.15}
#: what the field quotes for Iris on a coupled-learning resistor board
IRIS_PAPER = "> 95 % (Dillavou et al. 2022, as quoted)"


def iris_task(seed: int = 0, cost: str = "hinge"):
    """(board, task): :func:`hil.circuits.board_classifier` (4 features, 3 classes, seed 0) and Iris split with
    ``seed`` under the :data:`IRIS` encoding and ``cost``."""
    from hil.circuits import board_classifier
    from hil.classify import classification_task, load_dataset
    c = board_classifier(4, 3, seed=0)
    return c, classification_task(c, load_dataset("iris"), 0.2, seed=seed, v_on=IRIS["v_on"], v_off=IRIS["v_off"],
                                  volts=IRIS["volts"], cost=cost)


def linear_ceiling(task) -> dict:
    """Train and test accuracy of scikit-learn's linear classifiers on the task's standardised features (the +x
    sources): logistic regression, a one-vs-rest linear SVM (squared hinge, C = 100) and Crammer and Singer's
    multiclass SVM (C = 10). {name: {"train": ..., "test": ...}}."""
    import warnings

    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import LinearSVC
    d = len(task.encoding["features"])
    Ztr, Zte = task.X_train[:, 0:2 * d:2], task.X_test[:, 0:2 * d:2]
    models = {"logistic regression": LogisticRegression(max_iter=5000),
              "linear SVM, one-vs-rest": LinearSVC(C=100, max_iter=200000),
              "linear SVM, Crammer-Singer": LinearSVC(C=10, multi_class="crammer_singer", max_iter=200000)}
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # liblinear's convergence notes: the accuracies are what is compared
        for name, m in models.items():
            m.fit(Ztr, task.labels_train)
            out[name] = {"train": float(m.score(Ztr, task.labels_train)), "test": float(m.score(Zte, task.labels_test))}
    return out


def board_optimum(circuit, task, starts: int = 5) -> dict:
    """The board's best conductances for the task's cost, found by scipy (L-BFGS-B over log g in [g_min, g_max],
    ``starts`` seeded starts), independently of the circuit code: each output of the board joins only sources
    (ground one of them), so it reads V_c = sum_i g_ci s_i / sum_i g_ci. {"loss", "train", "test"}."""
    from scipy.optimize import minimize

    from hil.classify import accuracy, predict
    outs = list(circuit.outputs)
    src = list(circuit.inputs) + [circuit.ground]
    C = len(outs)
    k = {(int(a), int(b)): e for e, (a, b) in enumerate(zip(circuit.a, circuit.b))}
    idx = np.array([[k.get((i, o), k.get((o, i), -1)) for i in src] for o in outs])
    if np.any(idx < 0) or circuit.m != idx.size:
        raise ValueError(f"board_optimum: circuit '{circuit.name}' is not a board (every source joined to every output)")
    S = lambda X: np.hstack([X, np.zeros((len(X), 1))])
    V = lambda lg, X: S(X) @ (np.exp(lg).reshape(C, -1) / np.exp(lg).reshape(C, -1).sum(1, keepdims=True)).T

    def cost(lg):
        VO = V(lg, task.X_train)
        r = VO - task.targets_at(task.Y_train, VO)
        return 0.5 * np.mean(np.sum(r * r, axis=1))
    lo, hi = np.log(circuit.g_min), np.log(circuit.g_max)
    best = min((minimize(cost, np.random.default_rng(s).uniform(lo, hi, idx.size), method="L-BFGS-B",
                         bounds=[(lo, hi)] * idx.size, options={"maxiter": 5000}) for s in range(starts)),
               key=lambda r: r.fun)
    return {"loss": float(best.fun),
            "train": accuracy(predict(task.encoding, V(best.x, task.X_train)), task.labels_train),
            "test": accuracy(predict(task.encoding, V(best.x, task.X_test)), task.labels_test)}


def _row(substrate, rule, cost, res, secs, **extra) -> dict:
    return {"substrate": substrate, "rule": rule, "cost": cost, "nudge": res["nudge"], "steps": res["steps"],
            "train_accuracy": res["train_accuracy"], "test_accuracy": res["test_accuracy"],
            "final_loss": res["final_loss"], "seconds": secs, **extra}


def iris(quick: bool = False, ngspice: bool = True, bench: bool = True, progress=print) -> dict:
    """Iris on the 30-edge board under the :data:`IRIS` protocol, split seed 0: cl with the squared cost (the
    report's baseline), cl and ep-sym with the hinge on the embedded substrate; cl with the hinge on ngspice's
    digital potentiometers (``--rounding stochastic``: nearest rounding stalls) and through the emulated bench
    (``hil emulate`` in a subprocess, ``--backend bench``). Beside them the linear ceiling and the board's own
    optimum on the same split. ``quick=False`` adds splits 1 to 4 on the embedded substrate (cl and ep-sym with
    the hinge, and the linear ceiling on each). {"rows", "ceiling", "optimum", "splits"}."""
    rows = []
    c, sq = iris_task(0, "squared")
    _, task = iris_task(0)
    E, B = IRIS["epochs"], IRIS["batch"]
    progress("iris: board, cl, squared error, ideal")
    res, _, secs = _train(c, sq, "cl", E, B)
    rows.append(_row("ideal", "cl", "squared", res, secs))
    for rule in ("cl", "ep-sym"):
        progress(f"iris: board, {rule}, hinge, ideal")
        res, _, secs = _train(c, task, rule, E, B)
        rows.append(_row("ideal", rule, "hinge", res, secs))
    if ngspice:
        progress("iris: board, cl, hinge, ngspice digipot (stochastic rounding)")
        res, _, secs = _train(c, task, "cl", E, B, "ngspice", {"device": "digipot"}, rounding="stochastic")
        rows.append(_row("ngspice digipot, --rounding stochastic", "cl", "hinge", res, secs))
    if bench:
        progress("iris: board, cl, hinge, emulated bench")
        with _emulated(c) as bench_file:
            res, _, secs = _train(c, task, "cl", E, B, "bench", {"bench": str(bench_file)})
        rows.append(_row("emulated bench", "cl", "hinge", res, secs))
    out = {"rows": rows, "ceiling": linear_ceiling(task), "optimum": {"hinge": board_optimum(c, task),
                                                                     "squared": board_optimum(c, sq)}, "splits": []}
    for seed in (() if quick else (1, 2, 3, 4)):
        _, t = iris_task(seed)
        row = {"seed": seed, "ceiling": linear_ceiling(t)}
        for rule in ("cl", "ep-sym"):
            progress(f"iris: board, {rule}, hinge, ideal, split {seed}")
            row[rule] = _train(c, t, rule, E, B, seed=seed)[0]["test_accuracy"]
        out["splits"].append(row)
    return out


def _ctrl_c_stops():
    """In the emulator's process before it starts: Ctrl-C (SIGINT) stops it, even when this process was started
    in the background of a shell (which ignores SIGINT there, and a child would inherit that)."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class _emulated:
    """``with _emulated(circuit) as bench_file``: ``hil emulate`` serving ``circuit`` in a subprocess (the
    command a user runs), its bench file; stopped (Ctrl-C, as a user stops it) on the way out."""

    def __init__(self, circuit):
        self.circuit = circuit

    def __enter__(self):
        import json
        import subprocess
        import sys
        self.tmp = tempfile.TemporaryDirectory(prefix="hil-emulate-")
        path = Path(self.tmp.name) / "board.toml"
        self.circuit.save(path)
        bench_file = Path(self.tmp.name) / "board-bench.toml"
        self.proc = subprocess.Popen([sys.executable, "-m", "hil", "emulate", str(path), "--bench-file", str(bench_file),
                                      "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     cwd=self.tmp.name, preexec_fn=_ctrl_c_stops)
        line = ""
        while not line.startswith("{"):
            line = self.proc.stdout.readline()
            if not line:
                err = self.proc.stderr.read()
                self.__exit__(None, None, None)
                raise RuntimeError(f"hil emulate stopped before serving: {err.strip()}")
        json.loads(line)
        return bench_file

    def __exit__(self, *exc):
        import signal
        import subprocess
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()
        self.tmp.cleanup()


# -- Markdown, for the docs and the report ------------------------------------------------------------

def xor_markdown(rows: list) -> list:
    """The XOR rows of :func:`xor` as a Markdown table (lines)."""
    md = ["| seed | substrate | rule | nudge | steps | train accuracy | test accuracy | corners | loss (V^2) |",
          "|---|---|---|---|---|---|---|---|---|"]
    md += [f"| {r['seed']} | {r['backend']} | {r['rule']} | {r['nudge']:g} | {r['steps']} | {r['train_accuracy']:.3f} | "
           f"{r['test_accuracy']:.3f} | {r['corners']} of 4 | {r['initial_loss']:.4f} -> {r['final_loss']:.4f} |"
           for r in rows]
    return md


def iris_markdown(result: dict) -> list:
    """The Iris result of :func:`iris` as Markdown tables (lines): the runs, then the ceilings on the same split,
    then (full version) the other splits."""
    md = ["| substrate | rule | cost | train accuracy | test accuracy | paper |", "|---|---|---|---|---|---|"]
    md += [f"| {r['substrate']} | {r['rule']} | {r['cost']} | {r['train_accuracy']:.3f} | {r['test_accuracy']:.3f} | "
           f"{IRIS_PAPER} |" for r in result["rows"]]
    md += ["", "| on the same split | train accuracy | test accuracy |", "|---|---|---|"]
    md += [f"| the board's best conductances, {cost} (scipy) | {o['train']:.3f} | {o['test']:.3f} |"
           for cost, o in result["optimum"].items()]
    md += [f"| {name} (scikit-learn) | {v['train']:.3f} | {v['test']:.3f} |" for name, v in result["ceiling"].items()]
    if result["splits"]:
        md += ["", "| split seed | cl, test | ep-sym, test | best linear classifier, test |", "|---|---|---|---|"]
        md += [f"| {s['seed']} | {s['cl']:.3f} | {s['ep-sym']:.3f} | "
               f"{max(v['test'] for v in s['ceiling'].values()):.3f} |" for s in result["splits"]]
    return md


def main(argv=None) -> int:
    """``python -m hil.analysis.xor [--quick] [--no-ngspice] [--no-bench]``: both experiments, as Markdown."""
    import argparse
    p = argparse.ArgumentParser(prog="python -m hil.analysis.xor", description=main.__doc__)
    p.add_argument("--quick", action="store_true", help="one seed (XOR) and one split (Iris)")
    p.add_argument("--no-ngspice", action="store_true", help="the embedded substrate only")
    p.add_argument("--no-bench", action="store_true", help="no emulated bench (Iris)")
    args = p.parse_args(argv)
    say = lambda msg: print(msg, flush=True)
    rows = xor(args.quick, not args.no_ngspice, say)
    res = iris(args.quick, not args.no_ngspice, not args.no_bench, say)
    print("\n".join(["", "XOR on transistor edges", ""] + xor_markdown(rows) + ["", "Iris on the board", ""]
                    + iris_markdown(res)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
