"""Sweeps: a grid of (rule, nudge, seed, non-ideality) training runs on every core.

Each point is an independent run directory under ``out/points/``, run in its
own process (libngspice is process-global, so processes, not threads). A
point that fails is reported with its error and the others go on; the results
are gathered into ``out/sweep.csv`` and returned.
"""

from __future__ import annotations

import csv
import itertools
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

FIELDS = ["point", "rule", "nudge", "seed", "nonideal", "status", "initial_loss", "final_loss",
          "measured_rate", "predicted_rate", "run_dir", "error"]


def grid(rules, nudges, seeds, nonideals) -> list:
    """Every combination, as dicts; nudge None means the rule's default."""
    return [{"rule": r, "nudge": n, "seed": s, "nonideal": ni}
            for r, n, s, ni in itertools.product(rules, nudges or [None], seeds or [0], nonideals or [None])]


def _run_point(args) -> dict:
    """One training run (in a worker process); never raises: failures come back as rows."""
    idx, point, circuit_path, teacher, examples, steps, batch, backend, device, out = args
    row = {"point": idx, **point, "status": "ok", "run_dir": str(Path(out) / "points" / f"p{idx:04d}")}
    try:
        from hil.circuit import load_circuit
        from hil.tasks import teacher_task
        from hil.train import TrainConfig, start_run

        c = load_circuit(circuit_path)
        task = teacher_task(c, teacher, examples)
        opts = {}
        if backend == "ngspice":
            opts = {"device": device}
            if point["nonideal"]:
                opts["nonideal"] = str(Path(point["nonideal"]).resolve())
        elif point["nonideal"]:
            raise ValueError("a non-ideality needs --backend ngspice")
        cfg = TrainConfig(rule=point["rule"], nudge=point["nudge"], steps=steps, seed=point["seed"], batch=batch,
                          backend=backend, backend_options=opts)
        res = start_run(c, task, cfg, row["run_dir"], progress=False)
        row.update({k: res.get(k) for k in ("initial_loss", "final_loss", "measured_rate", "predicted_rate")})
    except Exception as exc:  # reported in the table, the sweep goes on
        row.update(status="failed", error=f"{type(exc).__name__}: {exc}")
    return row


def run_sweep(circuit_path, points: list, out, teacher: int = 1, examples: int = 16, steps: int = 200,
              backend: str = "ideal", device: str = "resistor", workers: int | None = None, progress=None,
              batch: int | None = None) -> list:
    """Run every point, ``workers`` at a time (default: every core); write and return the table."""
    out = Path(out)
    (out / "points").mkdir(parents=True, exist_ok=True)
    jobs = [(i, p, str(circuit_path), teacher, examples, steps, batch, backend, device, str(out)) for i, p in enumerate(points)]
    rows = []
    with ProcessPoolExecutor(max_workers=workers or os.cpu_count()) as pool:
        futures = [pool.submit(_run_point, j) for j in jobs]
        for f in as_completed(futures):
            rows.append(f.result())
            if progress:
                progress(len(rows), len(jobs))
    rows.sort(key=lambda r: r["point"])
    with open(out / "sweep.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in FIELDS})
    return rows
