"""One epoch of digits on a deep resistive network: the embedded substrate beside ngspice, and peak memory.

One command: ``python benchmarks/drn_epoch.py`` (``--quick``: the report's quick network on 300 images).

1. One epoch of digits (scikit-learn's 8 x 8 images: 1,438 training images, batch 10, ep-sym at
   the default nudge and step) on ``hil generate drn --sizes 64,100,10`` (ideal diodes, 15,040
   edges) on the embedded substrate, through the loop as ``hil train --epochs 1`` runs it:
   seconds per epoch (medians of ``--repeats``) and the test accuracy after it.
2. The same network with Shockley diodes (``--diode shockley``: ngspice has no ideal diode),
   ``--steps`` steps of the loop's own work (measure ep-sym's three states on a minibatch,
   estimate, write; a fixed step) on the embedded substrate and on ngspice (resistor device):
   the median seconds per step, solves per second (3 x 10 a step), the ratio, and each projected
   to an epoch (steps per epoch x seconds per step).
3. Peak resident memory of the process.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    from hil.analysis.reproductions import BATCH, MODES, digits_task, loop_seconds
    from hil.circuits import deep_resistive_network
    from hil.train import TrainConfig, by_epochs, start_run, steps_per_epoch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=1, help="epochs timed on the embedded substrate (median)")
    ap.add_argument("--steps", type=int, default=5, help="steps timed on each substrate for the ratio (median)")
    a = ap.parse_args()
    m = MODES["quick" if a.quick else "full"]
    H = m["hidden"]
    c = deep_resistive_network((64, H, 10))
    task = digits_task(c, m["images"])
    spe = steps_per_epoch(task.n_train, BATCH)
    epochs, acc = [], None
    for _ in range(a.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            res = start_run(c, task, by_epochs(TrainConfig(rule="ep-sym", batch=BATCH), task.n_train, 1),
                            Path(tmp) / "r", progress=False, plot=False)
            epochs.append(time.perf_counter() - t0)
            acc = res["test_accuracy"]
    se = statistics.median(epochs)
    print(f"digits on a 64x2-{H}-10x2 DRN ({c.m} edges, ideal diodes): {task.n_train} training images, {spe} steps "
          f"an epoch, ep-sym, batch {BATCH}")
    print(f"  embedded, one epoch at the default step: {se:.1f} s (median of {a.repeats}; "
          f"{3 * BATCH * spe / se:.0f} solves/s with the loop's evaluations); test accuracy after it {acc:.3f}")
    cs = deep_resistive_network((64, H, 10), diode="shockley")
    ts = digits_task(cs, m["images"])
    ideal = loop_seconds(cs, ts, "ideal", a.steps, 1e-9)
    spice = loop_seconds(cs, ts, "ngspice", a.steps, 1e-9, device="resistor")
    print(f"  Shockley diodes, {a.steps} steps at a fixed step (measure, estimate, write), median per step: embedded "
          f"{ideal * 1e3:.0f} ms ({3 * BATCH / ideal:.0f} solves/s), ngspice {spice * 1e3:.0f} ms "
          f"({3 * BATCH / spice:.0f} solves/s)")
    print(f"  ratio ngspice / embedded per step: {spice / ideal:.1f}; an epoch projected: embedded {ideal * spe:.0f} s, "
          f"ngspice {spice * spe:.0f} s")
    print(f"  peak resident memory: {_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
