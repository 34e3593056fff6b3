"""Classification epochs: digits on a 64-feature linear classifier, ideal beside ngspice; and a large .npz.

One command: ``python benchmarks/classify_epoch.py`` (``--quick``: fewer examples).

1. One epoch of digits (scikit-learn's 8 x 8 images, 1,438 training images, batch 10) with
   ep-sym on ``hil generate board --sizes 64,10`` (a +-x pair per pixel, a bias, ground, each
   joined to each of 10 outputs: 1,300 edges) on the ideal substrate at the default step:
   seconds per epoch; then ``--spice-steps`` steps at a fixed step on the ideal substrate and on
   ngspice (resistor device), seconds per step and solves per second, and their ratio.
   Medians of ``--repeats``.
2. ``--npz N``: a synthetic N x 784 uint8 data set written as .npz (random pixels, 10 labels),
   read and encoded as ``hil train --data FILE.npz`` does, then ``--npz-steps`` steps (batch 100,
   a fixed ``--lr``) on a 784-feature classifier (15,700 edges): peak resident memory beside the
   size of the encoded inputs, and seconds per step beside the same steps for N / 10 examples (a
   step reads its minibatch only, so its time does not grow with N).
3. ``--drn``: one epoch of digits on the deep resistive network of ``drn_ideal_diodes.py``
   (64 x 2 inputs, 100 hidden nodes with ideal diodes, 10 x 2 outputs, 15,040 edges) with
   ep-sym, batch 10, at the default step (its curvature re-estimated every 10 steps over the
   1,438 training images): seconds per epoch (wall clock and CPU time: the machine is shared),
   solves per second (free, +beta and -beta for every image), the default step's first
   estimate alone, peak resident memory and test accuracy. Before this round (main at f03299f)
   one estimate of that step took 40 s and 5.4 GB on 240 of the images (the dense 15,040 x 15,040
   curvature of the generated 64-100-10 network); an epoch did not finish in 14 minutes.

Medians where repeated; the first section's figure on main at f03299f was 10.5 s per epoch in
the same session (24.6 s in an earlier one), nearly all of it the curvature's m x m matrix.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _steps(circuit, task, backend, steps, batch=10, lr=None, device=None):
    """Seconds per step over ``steps`` training steps (a run of its own, in a temporary folder)."""
    from hil.train import TrainConfig, start_run
    opts = {"device": device} if device else {}
    cfg = TrainConfig(rule="ep-sym", batch=batch, epochs=1, steps=steps, backend=backend, backend_options=opts,
                      lr=lr, checkpoint_every=steps, log_every=steps)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = start_run(circuit, task, cfg, Path(tmp) / "r", progress=False)
        return (time.perf_counter() - t0) / steps, res


def _loop(circuit, task, backend, steps, lr, batch=10, device=None) -> float:
    """Seconds per step of the loop's own work, nothing else: measure the rule's states on a minibatch, estimate,
    write (ep-sym, a fixed step ``lr``), over ``steps`` minibatches in epoch order."""
    from hil.rules import make_rule
    from hil.train import epoch_batch, open_substrate
    opts = {"device": device} if device else {}
    rule = make_rule("ep-sym")
    with open_substrate(circuit, backend, **opts) as sub:
        rule.configure(sub.kappa_max(task.X_train))
        g = sub.read()
        lo, hi = circuit.bounds()
        t0 = time.perf_counter()
        for k in range(steps):
            idx = epoch_batch(0, task.n_train, batch, k)
            ghat = rule.estimate(sub.measure(task.X_train[idx], task.Y_train[idx], rule.states()))
            g = sub.write(np.clip(g - lr * ghat, lo, hi))
        return (time.perf_counter() - t0) / steps


def digits(repeats: int, spice_steps: int, quick: bool) -> None:
    from hil import classify as cl
    from hil.circuits import board_classifier
    from hil.train import steps_per_epoch

    c = board_classifier(64, 10, seed=0)
    data = cl.load_dataset("digits")
    if quick:
        keep = np.arange(len(data.y)) < 400
        data = cl.Labelled(data.X[keep], data.y[keep], data.classes, data.features, data.source)
    task = cl.classification_task(c, data, 0.2, seed=0)
    spe = steps_per_epoch(task.n_train, 10)
    from hil.rules import make_rule
    from hil.train import default_lr
    t0 = time.perf_counter()
    lr0 = default_lr(c, c.g, task.X_train, make_rule("ep-sym"))  # the fixed step of the side-by-side steps
    t_lanczos = time.perf_counter() - t0
    t0 = time.perf_counter()
    from scipy.sparse.linalg import eigsh

    from hil.exact import gauss_newton
    H = gauss_newton(c, task.X_train, c.g)  # main's way (f03299f): the m x m H formed, then Lanczos on it
    lam = float(eigsh(H, k=1, which="LA", return_eigenvectors=False, v0=np.ones(len(H)), tol=0)[0])
    t_dense = time.perf_counter() - t0
    print(f"digits board ({c.m} edges): the default step's curvature by Lanczos on H v {t_lanczos:.3f} s, on the "
          f"formed H {t_dense:.3f} s (ratio {t_dense / t_lanczos:.1f}); lambda_max equal to "
          f"{abs(0.25 / lr0 - lam) / lam:.1e}")
    epoch, ideal, spice = [], [], []
    for _ in range(repeats):
        s, res = _steps(c, task, "ideal", spe)
        epoch.append(s * spe)
        ideal.append(_loop(c, task, "ideal", spice_steps, lr0))
        spice.append(_loop(c, task, "ngspice", spice_steps, lr0, device="resistor"))
    se, si, ss = statistics.median(epoch), statistics.median(ideal), statistics.median(spice)
    solves = 3 * 10  # ep-sym: free, +beta, -beta for each of 10 examples
    print(f"digits: {task.n_train} training images, {spe} steps an epoch, {c.m} edges, ep-sym, batch 10")
    print(f"  ideal, one epoch at the default step (curvature re-estimated every 10 steps): {se:.1f} s; "
          f"test accuracy after it {res['test_accuracy']:.3f}; peak resident {_rss_mib():.0f} MiB")
    print(f"  {spice_steps} steps at a fixed step (measure, estimate, write), per step: ideal "
          f"{si * 1e3:.1f} ms ({solves / si:.0f} solves/s), ngspice {ss * 1e3:.1f} ms ({solves / ss:.0f} solves/s)")
    print(f"  ratio ngspice / ideal per step: {ss / si:.1f}; an ngspice epoch projected {ss * spe:.0f} s")


def big_npz(n: int, steps: int, lr: float) -> None:
    from hil import classify as cl
    from hil.circuits import board_classifier

    rng = np.random.default_rng(0)
    c = board_classifier(784, 10, seed=0)
    times = {}
    for size in (n // 10, n):
        with tempfile.TemporaryDirectory() as tmp:
            p = Path(tmp) / "big.npz"
            np.savez(p, X=rng.integers(0, 256, (size, 784), dtype=np.uint8), y=rng.integers(0, 10, size))
            before = _rss_mib()
            task = cl.classification_task(c, cl.load_npz(p), 0.2, seed=0)
            encoded = (task.X_train.nbytes + task.X_test.nbytes) / 2**20
            s = _loop(c, task, "ideal", steps, lr, batch=100)
            times[size] = s
            print(f"npz {size} x 784: encoded inputs {encoded:.0f} MiB; peak resident {_rss_mib():.0f} MiB "
                  f"(before {before:.0f}); {s * 1e3:.1f} ms a step (batch 100, {c.m} edges)")
            del task
    print(f"  seconds per step, {n} against {n // 10} examples: ratio {times[n] / times[n // 10]:.2f}")


def drn_epoch() -> None:
    from drn_ideal_diodes import drn

    from hil import classify as cl
    from hil.rules import make_rule
    from hil.train import default_lr, steps_per_epoch

    c, _, _ = drn()
    task = cl.classification_task(c, cl.load_dataset("digits"), 0.2, seed=0)
    t0 = time.perf_counter()
    default_lr(c, c.g, task.X_train, make_rule("ep-sym"))
    first = time.perf_counter() - t0
    spe = steps_per_epoch(task.n_train, 10)
    cpu = time.process_time()
    wall, res = _steps(c, task, "ideal", spe)
    cpu = time.process_time() - cpu
    solves = 3 * task.n_train
    print(f"DRN 64x2-100-10x2 (ideal diodes, {c.m} edges), digits: {task.n_train} training images, {spe} steps, "
          "ep-sym, batch 10, the default step")
    print(f"  one epoch: {wall * spe:.1f} s wall, {cpu:.1f} s CPU ({solves / (wall * spe):.0f} solves/s wall, "
          f"{solves / cpu:.0f} per CPU second); test accuracy after it {res['test_accuracy']:.3f}")
    print(f"  the default step's curvature over the training set, once: {first:.1f} s; "
          f"peak resident {_rss_mib():.0f} MiB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--spice-steps", type=int, default=10)
    ap.add_argument("--npz", type=int, default=0, metavar="N", help="also the large-.npz check with N examples")
    ap.add_argument("--npz-steps", type=int, default=5)
    ap.add_argument("--lr", type=float, default=1e-6, help="the fixed step of the .npz check (S^2/V^2)")
    ap.add_argument("--drn", action="store_true", help="also one digits epoch on a deep resistive network")
    a = ap.parse_args()
    digits(1 if a.quick else a.repeats, a.spice_steps, a.quick)
    if a.drn:
        drn_epoch()
    if a.npz:
        big_npz(a.npz, a.npz_steps, a.lr)


if __name__ == "__main__":
    main()
