"""Sweeps on a real Dask cluster: a scheduler and two worker processes on loopback, started here.

What is checked: the cluster's run directories and table equal the local sweep's
(byte for byte, apart from the wall-clock column of log.csv); a failing point
comes back with its error; a worker killed mid-task has its task run again on
the other worker, and only the finished run reaches the output directory.
"""

import csv
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import HIL

from hil.analysis.sweep import grid, run_sweep
from hil.circuit import load_circuit

STEPS = 400  # long enough (about a second a run) to kill a worker in the middle of one


def _start(cmd, log, cwd):
    # outside the checkout, so that `-m` imports the installed hil, not the source tree
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=cwd)


class Cluster:
    """A Dask scheduler and single-threaded worker processes (no nanny: a killed worker stays dead)."""

    def __init__(self, path: Path):
        self.path, self.log = path, open(path / "cluster.log", "wb")
        sched_file = path / "scheduler.json"
        self.scheduler = _start([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                                 "--port", "0", "--no-dashboard", "--scheduler-file", str(sched_file)], self.log, path)
        self.workers = []
        deadline = time.monotonic() + 60
        while not sched_file.exists() or not sched_file.read_text().strip():
            assert time.monotonic() < deadline, (path / "cluster.log").read_text()
            time.sleep(0.1)
        self.addr = json.loads(sched_file.read_text())["address"]

    def ensure_workers(self, n: int = 2) -> list:
        """Start workers until n are alive; wait until the scheduler sees them."""
        from distributed import Client
        self.workers = [w for w in self.workers if w.poll() is None]
        while len(self.workers) < n:
            k = len(list(self.path.glob("w*")))
            self.workers.append(_start([sys.executable, "-m", "distributed.cli.dask_worker", self.addr, "--nthreads",
                                        "1", "--no-nanny", "--no-dashboard", "--host", "127.0.0.1",
                                        "--local-directory", str(self.path / f"w{k}")], self.log, self.path))
        with Client(self.addr, timeout="30s") as client:
            deadline = time.monotonic() + 60
            while len(client.scheduler_info()["workers"]) != n:
                assert time.monotonic() < deadline, (self.path / "cluster.log").read_text()
                time.sleep(0.1)
        return self.workers

    def stop(self):
        for w in self.workers:  # ours: killed outright, nothing of theirs needs a clean exit
            if w.poll() is None:
                w.kill()
            w.wait(10)
        self.scheduler.terminate()
        try:
            self.scheduler.wait(10)
        except subprocess.TimeoutExpired:
            self.scheduler.kill()
        self.log.close()


@pytest.fixture(scope="module")
def _cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    yield c
    c.stop()


@pytest.fixture()
def cluster(_cluster):
    """(scheduler address, the two live worker processes)."""
    return _cluster.addr, _cluster.ensure_workers(2)


def _table(path: Path) -> list:
    with open(path / "sweep.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        r["run_dir"] = Path(r["run_dir"]).relative_to(path).as_posix()
    return rows


def _files(run_dir: Path) -> dict:
    """Every file's bytes; log.csv and the .npz checkpoints' awaiting row without the wall-clock ``seconds``."""
    out = {}
    for f in sorted(run_dir.rglob("*")):
        if not f.is_file():
            continue
        data = f.read_bytes()
        if f.name == "log.csv":
            rows = [line.split(b",") for line in data.splitlines()]
            col = rows[0].index(b"seconds")
            data = b"\n".join(b",".join(r[:col] + r[col + 1:]) for r in rows)
        if f.suffix == ".npz":  # its extras hold the awaiting log row, whose wall-clock seconds differ
            with np.load(f) as z:
                extra = json.loads(str(z["extra"])) if "extra" in z.files else {}
                extra.get("awaiting_row", {}).pop("seconds", None)
                data = repr(({k: z[k].tolist() for k in z.files if k != "extra"}, extra)).encode()
        if f.name == "result.json":
            r = json.loads(data)
            r["run_dir"] = Path(r["run_dir"]).relative_to(run_dir.parent.parent).as_posix()
            data = json.dumps(r, sort_keys=True).encode()
        out[f.relative_to(run_dir).as_posix()] = data
    return out


def _executing(client) -> dict:
    """Worker address -> keys of the tasks it is executing right now."""
    return client.run(lambda dask_worker: [k for k, ts in dask_worker.state.tasks.items() if ts.state == "executing"])


def test_dask_sweep_equals_local_sweep_and_survives_a_killed_worker(cluster, tmp_path):
    from distributed import Client

    addr, workers = cluster
    src = load_circuit("net16").source
    points = grid(["ep-sym", "cl"], [None, -1.0], [0, 1], None)[:6]  # 4 runs, 2 failing points
    local, remote = tmp_path / "local", tmp_path / "dask"
    rows_local = run_sweep(src, points, local, steps=STEPS, batch=4, workers=2)

    seen, result = [], {}
    t = threading.Thread(target=lambda: result.update(rows=run_sweep(
        src, points, remote, steps=STEPS, batch=4, scheduler=addr, progress=lambda d, n: seen.append(d))))
    t.start()
    killed_key = None
    with Client(addr, timeout="30s") as client:
        pids = client.run(os.getpid)
        deadline = time.monotonic() + 60
        while killed_key is None and time.monotonic() < deadline:
            for w, keys in _executing(client).items():
                runs = [k for k in keys if int(k.split("-")[2]) in (0, 1, 4, 5)]  # not the failing points
                if runs:  # just started: a run takes about a second, so this is mid-task
                    next(p for p in workers if p.pid == pids[w]).kill()
                    killed_key, killed_worker = runs[0], w
                    break
            time.sleep(0.02)
        t.join(180)
        story = client.story(killed_key) if killed_key else []
    t.join(180)
    assert not t.is_alive(), "the Dask sweep did not finish"
    assert killed_key is not None, "no task was seen executing"
    assert sum(p.poll() is not None for p in workers) == 1  # one worker is dead, the other did the rest

    rows = result["rows"]
    assert [r["status"] for r in rows] == [r["status"] for r in rows_local] == ["ok", "ok", "failed", "failed"] + \
        ["ok", "ok"]
    assert all("nudge must be a positive finite number" in r["error"] for r in rows if r["status"] == "failed")
    assert seen[-1] == len(points) and seen == sorted(seen)  # progress as tasks complete
    assert _table(remote) == _table(local)
    for r in rows:
        name = Path(r["run_dir"]).name
        if r["status"] == "ok":
            ck = json.loads((remote / "points" / name / "checkpoint.json").read_text())
            assert ck["step"] == STEPS  # the retried run is complete
        assert _files(remote / "points" / name) == _files(local / "points" / name)
    # the killed task's point was run again, on the other worker, and its run directory written once, here
    idx = int(killed_key.split("-")[2])
    assert rows[idx]["status"] == "ok"
    sched = [e for e in story if e[0] == "scheduler"]
    lost = [k for k, e in enumerate(sched) if e[2:4] == ("processing", "released") and "worker-cleanup" in e[5]]
    assert lost and any(e[2:4] == ("processing", "memory") for e in sched[lost[0]:]), story
    survivor = [e for e in story if e[0] not in ("scheduler", killed_worker) and e[2:4] == ("executing", "memory")]
    assert survivor, story
    assert not list((remote / "points").rglob(".*tmp"))  # no partial files left behind


def test_sweep_cli_on_the_cluster_and_a_bad_scheduler(cluster, tmp_path):
    addr, _ = cluster
    out = tmp_path / "cli"
    p = subprocess.run(HIL + ["sweep", "divider", "--rules", "ep-sym,cl", "--steps", "20",
                        "--scheduler", addr, "--out", str(out), "--json"], capture_output=True, text=True, timeout=120,
                       cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r["points"] == 2 and r["failed"] == 0
    assert all(row["final_loss"] < row["initial_loss"] for row in r["rows"])
    assert (out / "points" / "p0001" / "loss.png").exists()
    # a second sweep into the same place overwrites nothing: each point says where its run already is
    again = subprocess.run(HIL + ["sweep", "divider", "--rules", "ep-sym", "--steps", "20",
                            "--scheduler", addr, "--out", str(out), "--json"], capture_output=True, text=True,
                           timeout=120, cwd=tmp_path)
    r2 = json.loads(again.stdout.strip().splitlines()[-1])
    assert r2["failed"] == 1 and "already holds a run" in r2["rows"][0]["error"]
    kept = list(out.glob("replaced-*/sweep.csv"))  # the first sweep's table is kept, not overwritten
    assert len(kept) == 1 and "ok" in kept[0].read_text()
    bad = subprocess.run(HIL + ["sweep", "divider", "--scheduler", "http://x:1",
                          "--out", str(tmp_path / "bad")], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert bad.returncode == 2 and "--scheduler 'http://x:1'" in bad.stderr and "Traceback" not in bad.stderr


def test_ngspice_points_with_a_nonideality_file_on_the_cluster_equal_the_local_ones(cluster, tmp_path, ngspice):
    """The file's text travels with the task; the run records the path the user gave; one libngspice per worker."""
    addr, _ = cluster
    tol = tmp_path / "tol.toml"
    tol.write_text("seed = 5\ntolerance = 0.1\n")
    src = load_circuit("bridge").source
    points = grid(["cl", "ep-sym"], None, [0], [str(tol), None])
    kw = dict(steps=15, backend="ngspice", device="resistor")
    rows_local = run_sweep(src, points, tmp_path / "local", workers=2, **kw)
    rows = run_sweep(src, points, tmp_path / "dask", scheduler=addr, **kw)
    assert [r["status"] for r in rows] == ["ok"] * 4, rows
    assert _table(tmp_path / "dask") == _table(tmp_path / "local")
    for r in rows:
        name = Path(r["run_dir"]).name
        assert _files(tmp_path / "dask" / "points" / name) == _files(tmp_path / "local" / "points" / name)
    cfg = json.loads((tmp_path / "dask" / "points" / "p0000" / "config.json").read_text())
    assert cfg["backend_options"] == {"device": "resistor", "nonideal": str(tol.resolve())}
    # the tolerance changes the circuit the run trained on
    assert rows[0]["initial_loss"] != rows[1]["initial_loss"]
    assert rows_local[0]["final_loss"] == rows[0]["final_loss"]


def test_scheduler_local_starts_a_cluster_of_worker_processes(tmp_path):
    src = load_circuit("divider").source
    points = grid(["ep-sym", "cl"], None, [0], None)
    rows = run_sweep(src, points, tmp_path / "dask", steps=20, workers=2, scheduler="local")
    rows_local = run_sweep(src, points, tmp_path / "local", steps=20, workers=2)
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert _table(tmp_path / "dask") == _table(tmp_path / "local")
