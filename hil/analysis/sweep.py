"""Sweeps: a grid of (rule, nudge, seed, non-ideality, homeostasis weight, coupling scale, asymmetry)
training runs, on every core or on a Dask cluster.

Each point is an independent run directory ``out/points/pNNNN``. A point that
fails is reported with its error and the others go on; the results are gathered
into ``out/sweep.csv`` (one row a point), ``out/summary.csv`` (one row per
combination of the axes other than the seed: median, lowest and highest final
loss over the seeds) and ``out/sweep.png``, and returned. The coupling axes
rescale and (a)symmetrise the circuit's VCCS pairs (:func:`hil.circuits.couplings`).

Where the runs execute:

- ``scheduler=None``: worker processes of this machine (libngspice is
  process-global, so processes, not threads); each writes its own run directory.
- ``scheduler="tcp://HOST:PORT"`` (a running Dask scheduler) or ``"local"`` (a
  Dask LocalCluster of ``workers`` processes, one thread each): each point is one
  Dask task. The task carries everything it needs (the circuit's and the
  non-ideality files' text, not their paths), trains in a temporary directory on
  the worker and *returns* the run directory's files; the client writes them
  under ``out``. No shared filesystem is needed and the client is a run
  directory's only writer. A worker that dies mid-task leaves nothing behind:
  the scheduler runs the task again on another worker (up to Dask's
  ``distributed.scheduler.allowed-failures``, 3 by default), and only a finished
  run reaches ``out``.

Both ways build the run from the same task description, so the run directories
and the table are identical (apart from the wall-clock ``seconds`` column of
each ``log.csv``).
"""

from __future__ import annotations

import csv
import itertools
import os
import re
import tempfile
import threading
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

#: the axes a point varies, beside the seed; None: the circuit's own value (or the rule's default nudge)
AXES = ["rule", "nudge", "nonideal", "homeostasis", "vccs_scale", "asymmetry"]
FIELDS = ["point", "rule", "nudge", "seed", "nonideal", "homeostasis", "vccs_scale", "asymmetry", "status",
          "initial_loss", "final_loss", "final_H", "measured_rate", "predicted_rate", "run_dir", "error"]
SUMMARY_FIELDS = AXES + ["seeds", "failed", "final_loss_median", "final_loss_min", "final_loss_max",
                         "final_H_median"]

SCHEDULER_RE = re.compile(r"^(tcp|tls)://[A-Za-z0-9.\-]+:\d{1,5}$")

# libngspice is one per process: a worker started with several threads still runs one point at a time
_ONE_RUN_PER_PROCESS = threading.Lock()


def grid(rules, nudges, seeds, nonideals, homeostasis=None, vccs_scales=None, asymmetries=None) -> list:
    """Every combination, as dicts; nudge None means the rule's default, vccs_scale and asymmetry None the
    circuit's own couplings, homeostasis 0 none."""
    return [{"rule": r, "nudge": n, "seed": s, "nonideal": ni, "homeostasis": w, "vccs_scale": vs, "asymmetry": a}
            for r, n, s, ni, w, vs, a in itertools.product(rules, nudges or [None], seeds or [0], nonideals or [None],
                                                           homeostasis or [0.0], vccs_scales or [None],
                                                           asymmetries or [None])]


def task_spec(circuit_path, teacher, examples, steps, batch, backend, device, data=None, amplitude=None) -> dict:
    """What every point needs, read on the client: the circuit file's (and a CSV task's) text travels, not its path."""
    from hil.circuit import load_circuit
    from hil.tasks import teacher_amplitude
    c = load_circuit(circuit_path)
    spec = {"circuit_text": Path(c.source).read_text(), "circuit_source": c.source, "teacher": teacher,
            "examples": examples, "steps": steps, "batch": batch, "backend": backend, "device": device,
            "amplitude": amplitude if amplitude is not None else teacher_amplitude(device)}
    if data is not None:
        from hil.tasks import TaskError
        p = Path(data)
        if not p.is_file():
            raise TaskError(f"{p}: no such task file" if not p.exists() else f"{p}: not a file (a CSV task file is needed)")
        spec.update(data_text=p.read_text(encoding="utf-8-sig"), data_source=str(p))
    return spec


def _point_files(point) -> dict:
    """The point's non-ideality file as (resolved path, text or None if missing), read on the client."""
    if not point["nonideal"]:
        return {}
    p = Path(point["nonideal"]).resolve()
    return {"nonideal_path": str(p), "nonideal_text": p.read_text() if p.is_file() else None}


def run_point(idx: int, point: dict, spec: dict, run_dir, final_dir=None) -> dict:
    """One training run recorded into ``run_dir``; never raises: a failure comes back as the row's error.

    ``final_dir`` is where the run directory will finally live (its ``result.json``
    names it), when the run is trained elsewhere and moved there.
    """
    final_dir = str(final_dir or run_dir)
    row = {"point": idx, **{k: point.get(k) for k in AXES + ["seed"]}, "status": "ok", "run_dir": final_dir}
    try:
        with _ONE_RUN_PER_PROCESS:
            res = _train_point(point, spec, run_dir)
        if final_dir != str(run_dir):
            from hil.runs import read_json, write_json
            res["run_dir"] = final_dir
            result = read_json(Path(run_dir) / "result.json")
            result["run_dir"] = final_dir
            write_json(Path(run_dir) / "result.json", result)
        row.update({k: res.get(k) for k in ("initial_loss", "final_loss", "final_H", "measured_rate", "predicted_rate")})
    except Exception as exc:  # reported in the table, the sweep goes on
        row.update(status="failed", error=f"{type(exc).__name__}: {exc}")
    return row


def _train_point(point, spec, run_dir) -> dict:
    from hil.circuit import CircuitError, circuit_from_dict
    from hil.tasks import teacher_task
    from hil.train import TrainConfig, open_substrate, start_run

    try:
        import tomllib
    except ModuleNotFoundError:  # pragma: no cover
        import tomli as tomllib
    try:
        data = tomllib.loads(spec["circuit_text"])
    except tomllib.TOMLDecodeError as exc:
        raise CircuitError(f"{spec['circuit_source']}: not valid TOML: {exc}") from None
    c = circuit_from_dict(data, source=spec["circuit_source"], text=spec["circuit_text"])
    if point.get("vccs_scale") is not None or point.get("asymmetry") is not None:
        from hil.circuits import couplings
        c = couplings(c, point.get("vccs_scale"), point.get("asymmetry"))
    task = _task(c, spec, point["seed"])
    opts, sub_opts = {}, {}
    if spec["backend"] == "ngspice":
        opts = sub_opts = {"device": spec["device"]}
        if point.get("nonideal_path"):
            from hil.spice.nonideal import NonIdealError, nonideal_from_text
            if point["nonideal_text"] is None:
                raise NonIdealError(f"{point['nonideal_path']}: no such non-ideality file")
            opts = {**opts, "nonideal": point["nonideal_path"]}  # recorded as the user named it
            sub_opts = {**sub_opts, "nonideal": nonideal_from_text(point["nonideal_text"], point["nonideal_path"])}
    elif point["nonideal"]:
        raise ValueError("a non-ideality needs --backend ngspice")
    cfg = TrainConfig(rule=point["rule"], nudge=point["nudge"], steps=spec["steps"], seed=point["seed"],
                      batch=spec["batch"], backend=spec["backend"], backend_options=opts,
                      homeostasis=float(point.get("homeostasis") or 0.0))
    with open_substrate(c, spec["backend"], **sub_opts) as sub:
        return start_run(c, task, cfg, run_dir, progress=False, substrate=sub)


def _task(c, spec, seed):
    """The point's task: the CSV the sweep names (its text, written where the worker reads it), or the teacher."""
    from hil.tasks import load_csv_task, teacher_task
    if "data_text" not in spec:
        return teacher_task(c, spec["teacher"], spec["examples"], amplitude=spec.get("amplitude", 1.0))
    with tempfile.TemporaryDirectory(prefix="hil-task-") as tmp:
        p = Path(tmp) / Path(spec["data_source"]).name
        p.write_text(spec["data_text"])
        try:
            task = load_csv_task(c, p, 0.2, seed=seed)
        except ValueError as exc:  # name the user's file, not the copy
            raise type(exc)(str(exc).replace(str(p), spec["data_source"])) from None
    task.description, task.meta = f"csv:{spec['data_source']}", {"csv": spec["data_source"]}
    return task


def run_point_remote(idx: int, point: dict, spec: dict, final_dir: str) -> tuple:
    """A Dask task: the run trained in a temporary directory; returns (row, {relative path: bytes})."""
    with tempfile.TemporaryDirectory(prefix="hil-point-") as tmp:
        run_dir = Path(tmp) / Path(final_dir).name
        row = run_point(idx, point, spec, run_dir, final_dir)
        files = {}
        if run_dir.exists():
            for f in sorted(run_dir.rglob("*")):
                if f.is_file():
                    files[f.relative_to(run_dir).as_posix()] = f.read_bytes()
    return row, files


def _write_files(run_dir: Path, files: dict) -> None:
    """The client writes a returned run directory, each file atomically."""
    from hil.runs import atomic_write
    for rel, data in files.items():
        p = run_dir / rel
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            raise ValueError(f"a worker returned the path {rel!r}, outside its run directory")
        p.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(p, data)


def _occupied(run_dir: Path) -> str | None:
    """The error a point gets when its run directory already holds a run (nothing is overwritten)."""
    if (run_dir / "checkpoint.json").exists():
        return (f"RunError: {run_dir}: already holds a run; resume it with `hil train --resume {run_dir}` "
                "or choose another --out")
    return None


def run_sweep(circuit_path, points: list, out, teacher: int = 1, examples: int = 16, steps: int = 200,
              backend: str = "ideal", device: str = "resistor", workers: int | None = None, progress=None,
              batch: int | None = None, scheduler: str | None = None, data=None, amplitude=None) -> list:
    """Run every point and write and return the table (and the summary and plot: :func:`write_summary`).

    ``data``: a CSV task file for every point (its rows split 80/20 by each point's seed) instead
    of the teacher task; ``amplitude``: the teacher's input amplitude (V; default by device).

    ``scheduler``: None (``workers`` processes here, default every core), ``"local"``
    (a Dask LocalCluster of ``workers`` processes) or a Dask scheduler's address
    ``tcp://HOST:PORT``. ``progress(done, total)`` is called as each point finishes.
    """
    if scheduler is not None and scheduler != "local" and not SCHEDULER_RE.match(scheduler):
        raise ValueError(f"--scheduler {scheduler!r}: expected 'local' or a Dask scheduler address tcp://HOST:PORT")
    out = Path(out)
    spec = task_spec(circuit_path, teacher, examples, steps, batch, backend, device, data, amplitude)
    _claim(out)
    try:
        return _sweep_into(out, spec, points, workers, progress, scheduler)
    finally:
        (out / SWEEP_LOCK).unlink(missing_ok=True)


SWEEP_LOCK = "sweep.lock"
#: what a sweep writes in its folder (anything else there is someone else's)
SWEEP_FILES = frozenset({"sweep.csv", "summary.csv", "sweep.png", "points", SWEEP_LOCK})


def _claim(out: Path) -> None:
    """Make ``out`` and take its ``sweep.lock``: one sweep writes a sweep directory at a time.

    RunError naming the holder if a live process has it, or naming what the folder holds when
    that is not a sweep's (a sweep writes points/, sweep.csv, summary.csv, sweep.png and replaced-*/ only).
    """
    from hil.runs import RunError, is_run_file, take_lock
    if out.exists() and not out.is_dir():
        raise RunError(f"--out {out}: exists and is not a folder")
    if out.is_dir():
        theirs = sorted(x.name for x in out.iterdir() if not is_run_file(x.name, SWEEP_FILES))
        if theirs:
            shown = ", ".join(theirs[:6]) + (" ..." if len(theirs) > 6 else "")
            raise RunError(f"--out {out}: not a sweep directory (it holds {shown}); a sweep writes into a new "
                           "folder or one an earlier sweep wrote")
    try:
        (out / "points").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunError(f"--out {out}: cannot create the folder: {exc.strerror}") from None
    take_lock(out / SWEEP_LOCK, f"--out {out}", "one sweep writes a sweep directory at a time")


def _sweep_into(out: Path, spec: dict, points: list, workers, progress, scheduler) -> list:
    """run_sweep's work, with ``out`` claimed."""
    jobs, rows = [], []
    for i, p in enumerate(points):
        run_dir = out / "points" / f"p{i:04d}"
        busy = _occupied(run_dir)
        if busy:
            rows.append({"point": i, **p, "status": "failed", "run_dir": str(run_dir), "error": busy})
        else:
            jobs.append((i, {**p, **_point_files(p)}, spec, str(run_dir)))
    done = lambda: progress and progress(len(rows), len(points))  # noqa: E731
    done()
    if scheduler is None:
        with ProcessPoolExecutor(max_workers=workers or os.cpu_count()) as pool:
            for f in as_completed([pool.submit(run_point, *j) for j in jobs]):
                rows.append(f.result())
                done()
    else:
        for row in _run_dask(jobs, scheduler, workers):
            rows.append(row)
            done()
    rows.sort(key=lambda r: r["point"])
    table = out / "sweep.csv"
    if table.exists():  # an earlier sweep's table: kept, as a run's replaced files are
        from hil.runs import _stamp
        aside = out / f"replaced-{_stamp()}"
        aside.mkdir(exist_ok=True)
        os.replace(table, aside / "sweep.csv")
    with open(table, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in FIELDS})
    write_summary(rows, out)
    return rows


def summarize(rows: list) -> list:
    """One row per combination of the axes other than the seed (in the points' order): how many seeds ran,
    how many failed, and the median, lowest and highest final loss (V^2) and median final H (S^2) of those
    that ran."""
    import numpy as np
    groups = {}
    for r in rows:
        groups.setdefault(tuple(r.get(k) for k in AXES), []).append(r)
    out = []
    for key, rs in groups.items():
        ok = [r for r in rs if r["status"] == "ok" and r.get("final_loss") is not None]
        L = np.array([r["final_loss"] for r in ok], float)
        H = np.array([r["final_H"] for r in ok if r.get("final_H") is not None], float)
        out.append({**dict(zip(AXES, key)), "seeds": len(rs), "failed": len(rs) - len(ok),
                    "final_loss_median": float(np.median(L)) if len(L) else None,
                    "final_loss_min": float(L.min()) if len(L) else None,
                    "final_loss_max": float(L.max()) if len(L) else None,
                    "final_H_median": float(np.median(H)) if len(H) else None})
    return out


def _label(s: dict) -> str:
    """A summary row's axes that vary in the sweep or are set, in words (the plot's tick labels)."""
    parts = [s["rule"]] + [f"{k}={s[k]:g}" for k in ("nudge", "homeostasis", "vccs_scale", "asymmetry")
                           if s.get(k) is not None and not (k == "homeostasis" and not s[k])]
    if s.get("nonideal"):
        parts.append(Path(s["nonideal"]).stem)
    return ", ".join(parts)


def write_summary(rows: list, out) -> tuple:
    """Write ``out/summary.csv`` (:func:`summarize`) and ``out/sweep.png`` (every point's final loss, one column
    per combination, its median marked); returns their paths."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    out = Path(out)
    summary = summarize(rows)
    with open(out / "summary.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=SUMMARY_FIELDS)
        w.writeheader()
        for s in summary:
            w.writerow({k: "" if s.get(k) is None else s[k] for k in SUMMARY_FIELDS})
    fig, ax = plt.subplots(figsize=(max(6.4, 0.6 * len(summary) + 2), 4.4))
    groups = {}
    for r in rows:
        groups.setdefault(tuple(r.get(k) for k in AXES), []).append(r)
    for x, (s, rs) in enumerate(zip(summary, groups.values())):
        L = [r["final_loss"] for r in rs if r["status"] == "ok" and r.get("final_loss")]
        ax.semilogy([x] * len(L), L, "o", color="C0", alpha=0.6, label="a seed's final loss" if x == 0 else None)
        if s["final_loss_median"]:
            ax.semilogy([x - 0.3, x + 0.3], [s["final_loss_median"]] * 2, "-", color="C3", lw=2,
                        label="median over seeds" if x == 0 else None)
    ax.set_xticks(np.arange(len(summary)), [_label(s) for s in summary], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("final train loss, V^2")
    ax.set_title(f"sweep: {len(rows)} points")
    ax.grid(True, which="both", axis="y", alpha=0.3)
    if rows:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "sweep.png", dpi=110)
    plt.close(fig)
    return out / "summary.csv", out / "sweep.png"


def _run_dask(jobs, scheduler: str, workers: int | None):
    """Yield each job's row as its Dask task completes, after writing its run directory here."""
    from distributed import Client, LocalCluster
    from distributed import as_completed as dask_completed

    cluster = None
    try:
        if scheduler == "local":
            # one thread per worker process (one libngspice each); its HTTP server on loopback, any free port
            cluster = LocalCluster(n_workers=workers or os.cpu_count(), threads_per_worker=1, processes=True,
                                   host="127.0.0.1", dashboard_address="127.0.0.1:0")
            client = Client(cluster)
        else:
            try:
                client = Client(scheduler, timeout="10s")
            except (OSError, TimeoutError) as exc:
                raise ValueError(f"--scheduler {scheduler}: no Dask scheduler answers there ({exc})") from None
        with client:
            futures = {client.submit(run_point_remote, *j, key=f"hil-point-{j[0]:04d}-{os.getpid()}-{id(jobs)}",
                                     pure=False): j for j in jobs}
            for fut in dask_completed(futures):
                idx, point, _, run_dir = futures[fut]
                try:
                    row, files = fut.result()
                    _write_files(Path(run_dir), files)
                except Exception as exc:  # the task itself was lost (e.g. its workers kept dying)
                    row = {"point": idx, **{k: point.get(k) for k in AXES + ["seed"]},
                           "status": "failed", "run_dir": run_dir, "error": f"{type(exc).__name__}: {exc}"}
                yield row
    finally:
        if cluster is not None:
            cluster.close()
