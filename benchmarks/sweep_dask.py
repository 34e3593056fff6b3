"""The same 16-run sweep on local worker processes and on a 2-worker Dask cluster.

One command: ``python benchmarks/sweep_dask.py``. The grid: net16, rules
ep-sym, cl, al, gd x seeds 0-3, batch 4, 300 steps (ideal substrate). Measured
interleaved in one run, medians of repeats:

- the whole grid with 2 local processes (``hil sweep --workers 2``) and on a
  running 2-worker LocalCluster (``--scheduler tcp://...``), and their ratio;
- the cluster's start-up (``--scheduler local`` pays it once per sweep);
- the per-task overhead: each run submitted alone, the client's round trip minus
  the time the task spent inside its worker (submission, scheduling, the run
  directory's files coming back, writing them here).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from hil.analysis.sweep import grid, run_point_remote, run_sweep, task_spec
from hil.circuit import load_circuit

STEPS, BATCH, REPEATS = 300, 4, 3


def timed_point(*args):
    t = time.perf_counter()
    row, files = run_point_remote(*args)
    return time.perf_counter() - t, sum(len(b) for b in files.values())


def main():
    from distributed import Client, LocalCluster

    src = load_circuit("net16").source
    points = grid(["ep-sym", "cl", "al", "gd"], None, [0, 1, 2, 3], None)
    tmp = Path(tempfile.mkdtemp(prefix="hil-sweep-bench-"))
    t = time.perf_counter()
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address="127.0.0.1:0")
    startup = time.perf_counter() - t
    local, dask = [], []
    with Client(cluster) as client:
        for k in range(REPEATS):
            t = time.perf_counter()
            run_sweep(src, points, tmp / f"local{k}", steps=STEPS, batch=BATCH, workers=2)
            local.append(time.perf_counter() - t)
            t = time.perf_counter()
            run_sweep(src, points, tmp / f"dask{k}", steps=STEPS, batch=BATCH, scheduler=cluster.scheduler_address)
            dask.append(time.perf_counter() - t)
        spec = task_spec(src, 1, 16, STEPS, BATCH, "ideal", "resistor")
        over, inside, size = [], [], []
        for i, p in enumerate(points):
            t = time.perf_counter()
            fut = client.submit(timed_point, i, p, spec, str(tmp / "one" / f"p{i:04d}"), pure=False)
            t_in, nbytes = fut.result()
            over.append(time.perf_counter() - t - t_in)
            inside.append(t_in)
            size.append(nbytes)
    cluster.close()
    med = statistics.median
    print(f"16-run grid (net16, ep-sym/cl/al/gd x 4 seeds, batch {BATCH}, {STEPS} steps), medians of {REPEATS}:")
    print(f"  local, 2 processes:        {med(local):6.2f} s")
    print(f"  Dask, 2-worker cluster:    {med(dask):6.2f} s   ratio Dask / local = {med(dask) / med(local):.2f}")
    print(f"  LocalCluster start-up:     {startup:6.2f} s   (paid once per `--scheduler local` sweep)")
    print(f"  per task: run {med(inside) * 1e3:.0f} ms inside the worker, overhead {med(over) * 1e3:.1f} ms "
          f"(median of 16; {med(size) / 1e3:.0f} kB of run directory returned per task)")


if __name__ == "__main__":
    main()
