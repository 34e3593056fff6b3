"""Sweeps: a grid of (rule, nudge, seed, non-ideality) training runs, on every core or on a Dask cluster.

Each point is an independent run directory ``out/points/pNNNN``. A point that
fails is reported with its error and the others go on; the results are gathered
into ``out/sweep.csv`` and returned.

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

FIELDS = ["point", "rule", "nudge", "seed", "nonideal", "status", "initial_loss", "final_loss",
          "measured_rate", "predicted_rate", "run_dir", "error"]

SCHEDULER_RE = re.compile(r"^(tcp|tls)://[A-Za-z0-9.\-]+:\d{1,5}$")

# libngspice is one per process: a worker started with several threads still runs one point at a time
_ONE_RUN_PER_PROCESS = threading.Lock()


def grid(rules, nudges, seeds, nonideals) -> list:
    """Every combination, as dicts; nudge None means the rule's default."""
    return [{"rule": r, "nudge": n, "seed": s, "nonideal": ni}
            for r, n, s, ni in itertools.product(rules, nudges or [None], seeds or [0], nonideals or [None])]


def task_spec(circuit_path, teacher, examples, steps, batch, backend, device) -> dict:
    """What every point needs, read on the client: the circuit file's text travels, not its path."""
    from hil.circuit import load_circuit
    c = load_circuit(circuit_path)
    return {"circuit_text": Path(c.source).read_text(), "circuit_source": c.source, "teacher": teacher,
            "examples": examples, "steps": steps, "batch": batch, "backend": backend, "device": device}


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
    row = {"point": idx, **{k: point[k] for k in ("rule", "nudge", "seed", "nonideal")}, "status": "ok",
           "run_dir": final_dir}
    try:
        with _ONE_RUN_PER_PROCESS:
            res = _train_point(point, spec, run_dir)
        if final_dir != str(run_dir):
            from hil.runs import read_json, write_json
            res["run_dir"] = final_dir
            result = read_json(Path(run_dir) / "result.json")
            result["run_dir"] = final_dir
            write_json(Path(run_dir) / "result.json", result)
        row.update({k: res.get(k) for k in ("initial_loss", "final_loss", "measured_rate", "predicted_rate")})
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
    task = teacher_task(c, spec["teacher"], spec["examples"])
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
                      batch=spec["batch"], backend=spec["backend"], backend_options=opts)
    with open_substrate(c, spec["backend"], **sub_opts) as sub:
        return start_run(c, task, cfg, run_dir, progress=False, substrate=sub)


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
              batch: int | None = None, scheduler: str | None = None) -> list:
    """Run every point and write and return the table.

    ``scheduler``: None (``workers`` processes here, default every core), ``"local"``
    (a Dask LocalCluster of ``workers`` processes) or a Dask scheduler's address
    ``tcp://HOST:PORT``. ``progress(done, total)`` is called as each point finishes.
    """
    if scheduler is not None and scheduler != "local" and not SCHEDULER_RE.match(scheduler):
        raise ValueError(f"--scheduler {scheduler!r}: expected 'local' or a Dask scheduler address tcp://HOST:PORT")
    out = Path(out)
    spec = task_spec(circuit_path, teacher, examples, steps, batch, backend, device)
    _claim(out)
    try:
        return _sweep_into(out, spec, points, workers, progress, scheduler)
    finally:
        (out / SWEEP_LOCK).unlink(missing_ok=True)


SWEEP_LOCK = "sweep.lock"
#: what a sweep writes in its folder (anything else there is someone else's)
SWEEP_FILES = frozenset({"sweep.csv", "points", SWEEP_LOCK})


def _claim(out: Path) -> None:
    """Make ``out`` and take its ``sweep.lock``: one sweep writes a sweep directory at a time.

    RunError naming the holder if a live process has it, or naming what the folder holds when
    that is not a sweep's (a sweep writes points/, sweep.csv and replaced-*/ only).
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
    return rows


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
                    row = {"point": idx, **{k: point[k] for k in ("rule", "nudge", "seed", "nonideal")},
                           "status": "failed", "run_dir": run_dir, "error": f"{type(exc).__name__}: {exc}"}
                yield row
    finally:
        if cluster is not None:
            cluster.close()
