"""Issue 27: nothing a user recorded is lost, nothing unsafe reaches a bench, nothing fails silently.

Each test runs the issue's repro through the installed ``hil`` (or the function it calls)
and checks the outcome against an independent reference: a resumed run against the
uninterrupted one, a folder's bytes before and after, the values an instrument received
against the configured limits.
"""

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from helpers import HIL
from hil.runs import Run


def hil(*args, cwd=None, **kw):
    return subprocess.run(HIL + [str(a) for a in args], capture_output=True, text=True,
                          timeout=300, cwd=cwd or Path.home(), **kw)


def snapshot(folder: Path) -> dict:
    """Every file's bytes under ``folder`` (what must be left untouched)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# -- item 1: a run with trainable VCCS resumes ------------------------------------------------

def test_a_run_with_trainable_vccs_resumes_to_the_uninterrupted_run(tmp_path):
    net = tmp_path / "nr.toml"
    assert hil("generate", "random", "--nodes", 12, "--vccs-pairs", 2, "-o", net).returncode == 0
    part, whole = tmp_path / "R", tmp_path / "W"
    assert hil("train", net, "--teacher", 1, "--steps", 6, "--out", part).returncode == 0
    p = hil("train", "--resume", part, "--steps", 12)
    assert p.returncode == 0, p.stderr
    assert hil("train", net, "--teacher", 1, "--steps", 12, "--out", whole).returncode == 0
    a, b = Run(part), Run(whole)
    assert len(a.load_checkpoint()["g"]) == 18 + 4  # theta: 18 conductances, then 4 transconductances
    for k in ("step", "train_loss", "lr", "homeostasis_H"):
        np.testing.assert_array_equal(a.read_log()[k], b.read_log()[k])
    np.testing.assert_array_equal(a.load_checkpoint()["g"], b.load_checkpoint()["g"])


def test_a_vccs_checkpoint_out_of_bounds_names_the_vccs(tmp_path):
    import json
    net = tmp_path / "nr.toml"
    assert hil("generate", "random", "--nodes", 12, "--vccs-pairs", 2, "-o", net).returncode == 0
    out = tmp_path / "R"
    assert hil("train", net, "--teacher", 1, "--steps", 2, "--out", out).returncode == 0
    ck = json.loads((out / "checkpoint.json").read_text())
    ck["g"][-1] = 1e9
    (out / "checkpoint.json").write_text(json.dumps(ck))
    for f in (out / "checkpoints").glob("*.npz"):
        f.unlink()
    p = hil("train", "--resume", out, "--steps", 4)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "checkpoint.json: vccs '" in p.stderr and "= 1000000000.0 S is outside its bounds" in p.stderr


# -- item 2: --force moves only what hil wrote -------------------------------------------------

def test_force_refuses_a_folder_holding_anything_but_a_run(tmp_path):
    home = tmp_path / "H"
    (home / ".pyenv" / "bin").mkdir(parents=True)
    (home / ".pyenv" / "bin" / "python").write_text("#!/bin/sh\n")
    (home / ".bashrc").write_text("x\n")
    before = snapshot(home)
    p = hil("train", "net16", "--teacher", 1, "--steps", 2, "--out", home, "--force")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "--force replaces only a run directory hil wrote, and this folder also holds .bashrc, .pyenv" in p.stderr
    assert snapshot(home) == before and sorted(x.name for x in home.iterdir()) == [".bashrc", ".pyenv"]
    # a run directory hil wrote is still replaced (moved aside, nothing deleted)
    run = tmp_path / "run"
    assert hil("train", "net16", "--teacher", 1, "--steps", 2, "--out", run).returncode == 0
    old = snapshot(run)
    assert hil("train", "net16", "--teacher", 2, "--steps", 3, "--out", run, "--force").returncode == 0
    aside = [d for d in run.iterdir() if d.name.startswith("replaced-")]
    assert len(aside) == 1 and snapshot(aside[0]) == old and Run(run).load_checkpoint()["step"] == 3


# -- item 3: a sweep directory has one writer --------------------------------------------------

def test_a_second_sweep_into_one_out_is_refused_naming_the_first(tmp_path):
    import time
    out = tmp_path / "X"
    first = subprocess.Popen(HIL + ["sweep", "net16", "--steps", "400", "--rules", "cl", "--seeds", "0,1",
                                    "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while not (out / "sweep.lock").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        second = hil("sweep", "net16", "--steps", 400, "--rules", "al", "--seeds", "0,1", "--out", out)
        assert second.returncode == 2 and "Traceback" not in second.stderr
        assert f"--out {out}: in use by process {first.pid} on {os.uname().nodename}" in second.stderr
        assert "one sweep writes a sweep directory at a time" in second.stderr
    finally:
        stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    import json
    rules = [json.loads((out / "points" / f"p{i:04d}" / "config.json").read_text())["rule"] for i in range(2)]
    assert rules == ["cl", "cl"] and not (out / "sweep.lock").exists()
    assert (out / "sweep.csv").read_text().count(",cl,") == 2


def test_a_sweep_refuses_a_folder_that_is_not_a_sweeps(tmp_path):
    (tmp_path / "notes.txt").write_text("mine\n")
    before = snapshot(tmp_path)
    p = hil("sweep", "divider", "--steps", 5, "--out", tmp_path)
    assert p.returncode == 2 and "not a sweep directory (it holds notes.txt)" in p.stderr
    assert snapshot(tmp_path) == before and not (tmp_path / "points").exists()


# -- items 4, 5: generate and perturb never replace a user's file --------------------------------

def test_generate_layered_keeps_a_hand_written_layered_circuit(tmp_path):
    mine = tmp_path / "L.toml"
    assert hil("generate", "layered", "--sizes", "3,2,2", "-o", mine).returncode == 0
    assert mine.read_text().startswith("# written by hil generate layered\n")
    assert hil("info", mine).returncode == 0  # the header line keeps it a layered circuit file
    hand = mine.read_text().split("\n", 1)[1].replace("name = ", "# my own edit\nname = ", 1)
    mine.write_text(hand)
    p = hil("generate", "layered", "--sizes", "3,2,2", "--seed", 4, "-o", mine)
    assert p.returncode == 2 and "exists and was not written by hil; refusing to overwrite it" in p.stderr
    assert mine.read_text() == hand
    again = tmp_path / "again.toml"  # a file hil generated is replaced
    assert hil("generate", "layered", "--sizes", "3,2,2", "-o", again).returncode == 0
    assert hil("generate", "layered", "--sizes", "3,2,2", "--seed", 4, "-o", again).returncode == 0


@pytest.mark.parametrize("command", [["generate", "random"], ["generate", "layered", "--sizes", "3,2,2"],
                                     ["perturb", "divider"]])
def test_a_users_tmp_file_beside_the_output_is_never_touched(tmp_path, command):
    precious = tmp_path / "net.toml.tmp"
    precious.write_text("precious\n")
    p = hil(*command, "-o", tmp_path / "net.toml")
    assert p.returncode == 0, p.stderr
    assert precious.read_text() == "precious\n"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["net.toml", "net.toml.tmp"]


def test_a_full_disk_leaves_no_temporary_file_and_the_old_circuit_whole(tmp_path):
    import resource
    import signal

    def small_disk():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails (EFBIG) as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (4_000, 4_000))

    net = tmp_path / "net.toml"
    assert hil("generate", "random", "--nodes", 8, "-o", net).returncode == 0
    old = net.read_bytes()
    assert len(old) < 4_000
    p = subprocess.run(HIL + ["generate", "random", "--nodes", "200", "-o", str(net)], capture_output=True,
                       text=True, timeout=120, preexec_fn=small_disk, cwd=tmp_path)
    assert p.returncode == 2 and "Traceback" not in p.stderr and str(net) in p.stderr, p.stderr
    assert net.read_bytes() == old and [x.name for x in tmp_path.iterdir()] == ["net.toml"]


# -- item 6: compliance limits reach the SMUs whole, rounded toward safety -----------------------

def test_limits_of_many_digits_are_never_exceeded_by_any_applied_state(emulated):
    """A bench file's limits of 9 and 8 significant digits; every state an emulated SMU applied
    during a 5-step CL run (its state log) is within them: output off, or levels and the other
    quantity's compliance at most the limits."""
    import re
    import time
    from hil.circuit import load_circuit
    from hil.bench.substrate import BenchSubstrate
    from hil.ideal import IdealSubstrate
    from hil.tasks import teacher_task
    from hil.train import TrainConfig, start_run

    V_LIM, I_LIM = 1.9999999, 0.0123456789
    c = load_circuit("net16")
    emu, path = emulated(IdealSubstrate(c))
    text = path.read_text()
    text = re.sub(r"voltage_limit = 2.0\ncurrent_limit = 0.02",
                  f"voltage_limit = {V_LIM!r}\ncurrent_limit = {I_LIM!r}", text)
    path.write_text(text)
    t0 = time.monotonic()
    with BenchSubstrate(c, path) as bench:
        start_run(c, teacher_task(c, 1, 16), TrainConfig(rule="cl", steps=5), path.parent / "run",
                  progress=False, substrate=bench)
    smus = [inst for name, inst in emu.instruments.items() if name.startswith("smu_")]
    states = [st for inst in smus for t, _, st in list(inst.state_log) if t >= t0]
    assert len(states) > 100
    on = [st for st in states if st["output"]]
    assert on and max(st["i_prot"] for st in on if st["func"] == "VOLT") \
        == I_LIM  # the limit itself, not 6 digits of it
    bad = []
    for st in on:
        func = st["func"]
        lim = V_LIM if func == "VOLT" else I_LIM
        levels = st["lists"][func] if st["mode"][func] == "LIST" else [st["volt"] if func == "VOLT" else st["curr"]]
        other = st["i_prot"] <= I_LIM if func == "VOLT" else st["v_prot"] <= V_LIM
        if not (all(abs(v) <= lim for v in levels) and other):
            bad.append(st)
    assert not bad, f"{len(bad)} of {len(on)} applied states above the limits, e.g. {bad[0]}"


# -- item 7: a message cut by a disconnect is never executed ------------------------------------

@pytest.mark.parametrize("cut", [":OUTP ON;:SOUR:FUNC VOLT;:SOUR:VOLT 1", ":SOUR:FUNC VOLT;:OUTP ON;:SOUR:VOLT 1e-3"[:-3]])
def test_the_emulator_discards_a_message_without_its_terminator(emulated, cut):
    import socket
    import time
    from hil.circuit import load_circuit
    from hil.ideal import IdealSubstrate
    emu, _ = emulated(IdealSubstrate(load_circuit("net16")))
    smu = emu.instruments["smu_n1"]
    port = emu.servers["smu_n1"][1]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(cut.encode())  # no newline, then the link closes
    time.sleep(0.3)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        f = s.makefile("rw", newline="\n")
        f.write(":OUTP?;:SOUR:VOLT?\n")
        f.flush()
        out, volts = f.readline().strip().split(";")
    assert out == "0" and float(volts) == 0.0  # the output stayed off at 0 V, as *RST left it
    assert not smu.state["output"] and cut not in list(smu.received)


# -- item 8: a bench has one user ----------------------------------------------------------------

def test_a_second_process_on_a_bench_is_refused_naming_the_holder(emulated, tmp_path):
    """Locked per bench file and per instrument resource: a copy of the bench file is refused too."""
    from hil.circuit import load_circuit
    from hil.bench.substrate import BenchSubstrate
    from hil.ideal import IdealSubstrate
    from hil.substrate import Free
    c = load_circuit("net16")
    emu, path = emulated(IdealSubstrate(c))
    copy = tmp_path / "copy.toml"
    copy.write_text(path.read_text())
    X = np.random.default_rng(0).uniform(-1, 1, (3, 2))
    with BenchSubstrate(c, path) as bench:
        before = bench.measure(X, np.zeros((3, 2)), [Free()])[Free()]
        for f, what in ((path, f"bench file {path.resolve()}"), (copy, "instrument TCPIP0::127.0.0.1::")):
            p = hil("train", "net16", "--teacher", 1, "--steps", 3, "--rule", "cl", "--backend", "bench", "--bench", f,
                    "--out", tmp_path / "second")
            assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
            assert what in p.stderr and f"in use by process {os.getpid()} on {os.uname().nodename}" in p.stderr
            assert "one process drives a bench at a time" in p.stderr
            assert not (tmp_path / "second").exists()
        # the holder's instruments were not touched: the same readings, the SMUs still on
        np.testing.assert_array_equal(bench.measure(X, np.zeros((3, 2)), [Free()])[Free()], before)
    p = hil("train", "net16", "--teacher", 1, "--steps", 3, "--rule", "cl", "--backend", "bench", "--bench", copy,
            "--out", tmp_path / "after")
    assert p.returncode == 0, p.stderr  # released on close


def test_a_bench_lock_of_a_dead_process_is_taken_over(emulated, tmp_path):
    import json
    import sys
    from hil.circuit import load_circuit
    from hil.bench.substrate import BenchSubstrate, bench_locks, load_bench
    from hil.ideal import IdealSubstrate
    c = load_circuit("net16")
    emu, path = emulated(IdealSubstrate(c))
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    lock, what = bench_locks(load_bench(path))[1]
    lock.write_text(json.dumps({"pid": dead, "host": os.uname().nodename, "since": "x"}))
    with BenchSubstrate(c, path) as bench:
        notes = [line for _, line in bench.diagnostics()]
        assert f"{what}: took over the lock of process {dead}" in "\n".join(notes)
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()


# -- item 10: loading is linear: the line numbers come from one index per file --------------------

def test_a_big_circuits_errors_name_their_lines_from_one_pass(tmp_path, monkeypatch):
    import sys
    sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))
    from load_circuit import ladder_text
    import hil.circuit as hc
    from hil.circuit import CircuitError, load_circuit
    m = 20_000
    text = ladder_text(m)
    good = tmp_path / "big.toml"
    good.write_text(text)
    passes = []
    build = hc._build_index
    monkeypatch.setattr(hc, "_build_index", lambda t: passes.append(len(t)) or build(t))
    for _ in range(2):  # a second load of the same file (a new text) indexes it once more, not once per element
        c = load_circuit(good)
    assert c.m == m and passes == [len(text), len(text)]
    lines = text.splitlines()
    last_g = max(i for i, ln in enumerate(lines) if ln.startswith("g = ")) + 1
    bad = tmp_path / "bad.toml"
    bad.write_text("\n".join(lines[:last_g - 1] + ["g = -1.0"] + lines[last_g:]))
    with pytest.raises(CircuitError, match=rf"bad.toml:{last_g}: edge 'E{m - 1}': conductance -1.0 is not"):
        load_circuit(bad)
    dup = tmp_path / "dup.toml"
    name_line = max(i for i, ln in enumerate(lines) if ln.startswith("name = ")) + 1
    dup.write_text("\n".join(lines[:name_line - 1] + ['name = "E0"'] + lines[name_line:]))
    with pytest.raises(CircuitError, match=rf"dup.toml:{name_line}: duplicate edge name 'E0' \(first at .*dup.toml:6\)"):
        load_circuit(dup)


# -- items 9, 12, 14: a Dask sweep never waits forever, never fails silently ----------------------

def _sweep(*args, cwd):
    return subprocess.Popen(HIL + ["sweep", *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=cwd)


def _wait_for(path: Path, seconds=120):
    import time
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.1)


def _rows(out: Path) -> list:
    import csv
    with open(out / "sweep.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_a_dask_sweep_without_workers_is_bounded_and_keeps_what_finished(tmp_path):
    from test_sweep_dask import Cluster
    cl = Cluster(tmp_path)
    try:
        p = _sweep("divider", "--steps", 20, "--scheduler", cl.addr, "--worker-wait", 3, "--out", tmp_path / "none",
                   cwd=tmp_path)
        _, err = p.communicate(timeout=120)
        assert p.returncode == 2 and "Traceback" not in err
        assert f"--scheduler {cl.addr}: no Dask worker joined in 3 s" in err
        cl.ensure_workers(1)
        out = tmp_path / "killed"
        p = _sweep("net16", "--rules", "cl", "--seeds", "0,1,2,3", "--steps", 3000, "--scheduler", cl.addr,
                   "--worker-wait", 3, "--out", out, cwd=tmp_path)
        _wait_for(out / "points" / "p0000" / "result.json")  # one point finished: then the only worker dies
        cl.workers[0].kill()
        _, err = p.communicate(timeout=180)
        assert p.returncode == 1 and "Traceback" not in err, err
        rows = _rows(out)
        ok = [r for r in rows if r["status"] == "ok"]
        lost = [r for r in rows if r["status"] == "failed"]
        assert len(rows) == 4 and ok and lost and ok[0]["point"] == "0"
        assert all("no Dask worker for 3 s" in r["error"] for r in lost)
        assert all((out / "points" / f"p{int(r['point']):04d}" / "checkpoint.json").exists() for r in ok)
        assert f"{len(lost)} of 4 points failed" in err and not (out / "sweep.lock").exists()
    finally:
        cl.stop()


def test_a_lost_scheduler_fails_the_points_left_plainly(tmp_path):
    from test_sweep_dask import Cluster
    cl = Cluster(tmp_path)
    try:
        cl.ensure_workers(1)
        out = tmp_path / "X"
        p = _sweep("net16", "--rules", "cl", "--seeds", "0,1,2,3", "--steps", 3000, "--scheduler", cl.addr,
                   "--out", out, cwd=tmp_path)
        _wait_for(out / "points" / "p0000" / "result.json")
        cl.scheduler.kill()
        _, err = p.communicate(timeout=180)
    finally:
        cl.stop()
    assert p.returncode == 1 and "Traceback" not in err, err
    rows = _rows(out)
    lost = [r for r in rows if r["status"] == "failed"]
    assert rows[0]["status"] == "ok" and lost
    assert all(f"the Dask scheduler at {cl.addr} was lost" in r["error"] for r in lost), lost


@pytest.mark.parametrize("args, message", [
    (["--scheduler", "tls://127.0.0.1:1"], "--scheduler tls://127.0.0.1:1: a TLS scheduler needs Dask's TLS "
                                           "configuration"),
    (["--teacher", "-1"], "--teacher -1: the teacher's seed must be a whole number >= 0"),
    (["--backend", "ngspice", "--nonideal-files", "/nope.toml"], "/nope.toml"),
    (["--nonideal-files", "{tmp}/tol.toml"], "--nonideal-files: non-idealities are simulated by --backend ngspice"),
    (["--rules", ","], "--rules ',': give at least one name"),
    (["--seeds", "1.5"], "--seeds '1.5': '1.5' is not a whole number"),
    (["--seeds", "-2"], "--seeds '-2': -2 must be >= 0"),
    (["--nudges", "abc"], "--nudges 'abc': 'abc' is not a finite number"),
    (["--worker-wait", "0", "--scheduler", "local"], "--worker-wait 0.0: must be a positive number of seconds"),
])
def test_a_sweep_refuses_what_can_be_checked_before_any_worker_starts(tmp_path, args, message):
    (tmp_path / "tol.toml").write_text("seed = 5\ntolerance = 0.1\n")
    out = tmp_path / "s"
    p = hil("sweep", "divider", "--steps", 5, "--out", out, *[a.format(tmp=tmp_path) for a in args])
    assert p.returncode == 2 and "Traceback" not in p.stderr and message in p.stderr, p.stderr
    assert not (out / "points").exists() or not any((out / "points").iterdir())


# -- item 15: a teacher circuit's VCCS make its targets ------------------------------------------

def test_a_teacher_circuits_transconductances_make_the_targets(tmp_path):
    """Targets against Kirchhoff's laws solved here (A V = 0 at the free nodes, A with the
    teacher's VCCS stamps); the student's own gm would give other targets."""
    import re
    from hil.circuit import load_circuit
    from hil.exact import conductance_matrix
    from hil.tasks import circuit_teacher_task
    net = tmp_path / "s.toml"
    assert hil("generate", "random", "--nodes", 12, "--vccs-pairs", 2, "--vccs-scale", 1e-3, "-o", net).returncode == 0
    text = net.read_text()
    teacher_file = tmp_path / "t.toml"
    teacher_file.write_text(re.sub(r"^gm = (\S+)$", lambda m: f"gm = {-float(m.group(1))!r}", text, flags=re.M))
    student, teacher = load_circuit(net), load_circuit(teacher_file)
    assert np.any(teacher.gm != student.gm)
    task = circuit_teacher_task(student, teacher, seed=0, examples=8)

    def outputs(c, X):
        A = conductance_matrix(c).toarray()
        F, S = c.free, c.sources
        VS = np.column_stack([np.zeros(len(X)), X])  # ground at 0 V, then the inputs
        VF = np.linalg.solve(A[np.ix_(F, F)], -A[np.ix_(F, S)] @ VS.T).T
        V = np.zeros((len(X), c.n))
        V[:, S], V[:, F] = VS, VF
        return V[:, c.outputs]

    np.testing.assert_allclose(task.Y_train, outputs(teacher, task.X_train), rtol=1e-9, atol=1e-12)
    assert np.max(np.abs(task.Y_train - outputs(student, task.X_train))) > 1e-3  # the student's gm differ
    p = hil("train", net, "--teacher-circuit", teacher_file, "--steps", 1, "--out", tmp_path / "r", "--json")
    assert p.returncode == 0, p.stderr
    other = tmp_path / "other.toml"  # a teacher without the VCCS is another topology
    other.write_text(text.split("[[vccs]]")[0])
    q = hil("train", net, "--teacher-circuit", other, "--steps", 1, "--out", tmp_path / "q")
    assert q.returncode == 2 and "0 VCCS instead of 4" in q.stderr


# -- item 16: a bench file names any circuit path -------------------------------------------------

def test_emulate_writes_a_valid_bench_file_for_a_path_with_quotes(tmp_path):
    import json
    import time
    from hil.circuit import load_circuit
    from hil.bench.substrate import load_bench
    folder = tmp_path / "it's \"mine\" \\ here"
    folder.mkdir()
    net = folder / "d.toml"
    net.write_text(load_circuit("divider").to_toml())
    bench = tmp_path / "b.toml"
    emu = subprocess.Popen(HIL + ["emulate", str(net), "--bench-file", str(bench), "--json"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        line, deadline = "", time.monotonic() + 60
        while not line.startswith("{") and time.monotonic() < deadline and emu.poll() is None:
            line = emu.stdout.readline()
        assert line.startswith("{"), emu.stderr.read()
        cfg = load_bench(bench)
        assert cfg["circuit"] == str(net.resolve()) or Path(cfg["circuit"]) == net
        p = hil("train", cfg["circuit"], "--teacher", 1, "--steps", 2, "--rule", "cl", "--backend", "bench",
                "--bench", bench, "--out", tmp_path / "run")
        assert p.returncode == 0, p.stderr
    finally:
        emu.terminate()
        emu.wait(30)


# -- item 13: damaged inputs are named, never a traceback ----------------------------------------

@pytest.fixture
def recorded_run(tmp_path, emulated):
    """A 3-step CL run on an emulated bench, recorded (bench/steps.000.jsonl.gz), and its replay's worst divergence."""
    import json
    from hil.circuit import load_circuit
    from hil.ideal import IdealSubstrate
    from hil.tasks import teacher_task
    from hil.train import TrainConfig, start_run
    c = load_circuit("net16")
    emu, bench = emulated(IdealSubstrate(c))
    run = tmp_path / "rec"
    start_run(c, teacher_task(c, 1, 16), TrainConfig(rule="cl", steps=3, batch=8, backend="bench",
                                                     backend_options={"bench": str(bench)}), run, progress=False)
    p = hil("replay", run, "--out", tmp_path / "ok", "--json")
    assert p.returncode == 0, p.stderr
    return run, json.loads(p.stdout.strip().splitlines()[-1])


def _damage_record(run, line_text: bytes):
    import gzip
    f = sorted((run / "bench").glob("steps.*.jsonl.gz"))[0]
    lines = gzip.decompress(f.read_bytes()).splitlines(keepends=True)
    f.write_bytes(gzip.compress(b"".join(lines[:2] + [line_text] + lines[2:])))
    return f


@pytest.mark.parametrize("damage, message", [
    ("list", "steps.001.jsonl.gz:3: a JSON list, not a record event"),
    ("no-g", "steps.001.jsonl.gz:3: 'start' event: no g"),
    ("not-gzip", "steps.001.jsonl.gz: not a gzip-compressed record"),
    ("kappa", "config.json: kappa_max = None: not a positive finite number"),
    ("nudge", "config.json: ValueError: rule cl: nudge must be a positive finite number, got 'big'"),
])
def test_replay_names_a_damaged_record_or_config(recorded_run, tmp_path, damage, message):
    import json
    run, good = recorded_run
    assert max(good["worst"]) < 1e-6  # the undamaged record replays (the reference)
    if damage == "list":
        _damage_record(run, b"[1, 2, 3]\n")
    elif damage == "no-g":
        _damage_record(run, b'{"kind": "start"}\n')
    elif damage == "not-gzip":
        sorted((run / "bench").glob("steps.*.jsonl.gz"))[0].write_bytes(b'{"kind": "start"}\n')
    else:
        cfg = json.loads((run / "config.json").read_text())
        if damage == "kappa":
            del cfg["kappa_max"]
        else:
            cfg["nudge"] = "big"
        (run / "config.json").write_text(json.dumps(cfg))
    p = hil("replay", run, "--out", tmp_path / "bad")
    assert p.returncode == 2 and "Traceback" not in p.stderr and message in p.stderr, p.stderr


# -- item 18: replay checks the record against the run --------------------------------------------

def _replay_json(run, out):
    import json
    p = hil("replay", run, "--out", out, "--json")
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1]), p


def test_replay_names_the_steps_an_empty_session_lost(recorded_run, tmp_path):
    """A run of 3 steps resumed to 5 (two sessions); the first session's file emptied: steps 0-3 are in no
    session (counted from the checkpoint's step, 5, and the steps the second session holds, 4 and 5)."""
    import gzip
    from hil.train import resume_run
    run, _ = recorded_run
    resume_run(run, steps=5, progress=False)
    whole, _ = _replay_json(run, tmp_path / "whole")
    assert whole["steps"] == [0, 1, 2, 3, 4, 5] and whole["missing_steps"] == [] and whole["empty_sessions"] == []
    (run / "bench" / "steps.001.jsonl.gz").write_bytes(gzip.compress(b""))
    cut, p = _replay_json(run, tmp_path / "cut")
    assert cut["steps"] == [4, 5] and cut["missing_steps"] == [0, 1, 2, 3]
    assert cut["empty_sessions"] == ["steps.001.jsonl.gz"]
    said = "record incomplete: steps 0-3 of the run not in it (bench/steps.001.jsonl.gz: no event)"
    assert said in p.stdout and said in p.stderr


def test_replay_refuses_a_session_file_that_repeats_another(recorded_run, tmp_path):
    import shutil
    run, _ = recorded_run
    shutil.copy(run / "bench" / "steps.001.jsonl.gz", run / "bench" / "steps.002.jsonl.gz")
    p = hil("replay", run, "--out", tmp_path / "dup")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "steps.002.jsonl.gz: the same session as bench/steps.001.jsonl.gz" in p.stderr
    assert "would be replayed twice" in p.stderr and not (tmp_path / "dup").exists()


def test_replay_counts_a_nan_voltage_as_a_mismatch(recorded_run, tmp_path):
    """One recorded reading of step 2 set to NaN: step 2 is beyond any threshold and named with its node; the
    other steps' divergences are those of the undamaged record."""
    import gzip
    import json
    run, good = recorded_run
    f = run / "bench" / "steps.001.jsonl.gz"
    events = [json.loads(line) for line in gzip.decompress(f.read_bytes()).splitlines()]
    at = next(i for i, ev in enumerate(events) if ev["kind"] == "mark" and ev["step"] == 2)
    run_ev = next(ev for ev in events[at:] if ev["kind"] == "run")
    nodes = good["nodes"]
    run_ev["V"][0][0][nodes.index("n3")] = float("nan")
    f.write_bytes(gzip.compress("".join(json.dumps(ev) + "\n" for ev in events).encode()))
    res, p = _replay_json(run, tmp_path / "nan")
    assert res["parted"] == [2] and res["nan"] == [[2, "n3", "bench"]]
    assert "not a number (NaN), counted beyond the threshold: step 2 node n3 (bench)" in p.stdout
    worst = np.array(res["worst"], float)
    assert np.isnan(worst[2]) and max(good["worst"]) < 1e-6
    np.testing.assert_array_equal(np.delete(worst, 2), np.delete(np.array(good["worst"]), 2))


def test_a_toml_file_nested_thousands_deep_is_named(tmp_path):
    deep = tmp_path / "deep.toml"
    deep.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    p = hil("info", deep)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert f"{deep}: not valid TOML: nested too deeply to read" in p.stderr
    p = hil("train", "net16", "--teacher", 1, "--steps", 2, "--rule", "cl", "--backend", "bench", "--bench", deep,
            "--out", tmp_path / "r")
    assert p.returncode == 2 and f"{deep}: not valid TOML: nested too deeply to read" in p.stderr


def test_a_damaged_awaiting_row_falls_back_to_the_npz_and_resumes_exactly(tmp_path):
    import json
    part, whole = tmp_path / "part", tmp_path / "whole"
    assert hil("train", "net16", "--teacher", 1, "--steps", 4, "--out", part).returncode == 0
    assert hil("train", "net16", "--teacher", 1, "--steps", 8, "--out", whole).returncode == 0
    ck = json.loads((part / "checkpoint.json").read_text())
    ck["awaiting_row"] = [1, 2]  # a mid-run checkpoint's row waiting for its train loss, damaged
    (part / "checkpoint.json").write_text(json.dumps(ck))
    p = hil("train", "--resume", part, "--steps", 8)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    assert "checkpoint.json refused (awaiting_row [1, 2] is not the log row of step 4" in p.stderr
    np.testing.assert_array_equal(Run(part).read_log()["train_loss"], Run(whole).read_log()["train_loss"])


# -- item 11: work that cannot fit in memory is refused before it is allocated --------------------

@pytest.mark.parametrize("args, message", [
    (["info", "net16", "--teacher", 1, "--examples", 100_000],
     "coercivity on 100000 examples: J J^T (100000 examples x 2 outputs squared): a 200,000 x 200,000 array of "
     "298 GiB does not fit in memory (half of this machine's 8 GiB); use fewer examples"),
    (["coercivity", "net16", "--teacher", 1, "--examples", 100_000], "a 200,000 x 200,000 array of 298 GiB"),
])
def test_a_matrix_that_cannot_fit_is_refused_naming_its_size(tmp_path, args, message):
    p = hil(*args, env={**os.environ, "HIL_MEMORY_BYTES": str(8 << 30)})
    assert p.returncode == 2 and "Traceback" not in p.stderr and message in p.stderr, p.stderr


def test_a_layered_jacobian_that_cannot_fit_is_refused_before_training(tmp_path):
    """The output Jacobian of a layered circuit (crossbars and op-amps as elements; the default step's curvature
    needs it) is refused, naming its shape and size, before it is allocated."""
    from hil.circuits import layered
    from hil.exact import jacobian
    from hil.memory import TooBig
    c = layered((30, 30, 30), 0)
    X = np.eye(30)
    os.environ["HIL_MEMORY_BYTES"] = str(1 << 20)
    try:
        with pytest.raises(TooBig, match=rf"output Jacobian dV_O/dtheta on 30 examples: a 900 x {c.n_params:,} array "
                                         r"of [0-9.]+ MiB does not fit in memory"):
            jacobian(c, X)
    finally:
        del os.environ["HIL_MEMORY_BYTES"]


def test_the_symmetry_index_and_homeostasis_of_a_large_circuit_stay_sparse():
    """Against the dense formulas on a small circuit with VCCS; then a 20,000-node lattice (a dense
    A would take 3.2 GB) in the sparse matrix's memory."""
    from hil.circuits import add_vccs, lattice, random_network
    from hil.exact import conductance_matrix, homeostasis, symmetry_index
    c = add_vccs(random_network(12, 3.0, seed=1), 2, seed=1)
    A = conductance_matrix(c)[c.free][:, c.free]
    D = A.toarray()
    s, a = np.linalg.norm(0.5 * (D + D.T)), np.linalg.norm(0.5 * (D - D.T))
    assert symmetry_index(A) == pytest.approx(s / (s + a), rel=1e-12) and s / (s + a) < 1
    assert homeostasis(c) == pytest.approx(0.5 * np.sum((D - D.T) ** 2), rel=1e-12) and homeostasis(c) > 0
    big = lattice(100, 200, seed=0)
    Ab = conductance_matrix(big)[big.free][:, big.free]
    assert symmetry_index(Ab) == 1.0 and homeostasis(big) == 0.0


# -- item 19: a failed resume changes nothing --------------------------------------------------

def test_a_resume_that_cannot_reach_its_bench_records_no_change(tmp_path, emulated):
    from hil.circuit import load_circuit
    from hil.ideal import IdealSubstrate
    c = load_circuit("net16")
    emu, bench = emulated(IdealSubstrate(c))
    out = tmp_path / "run"
    p = hil("train", "net16", "--teacher", 1, "--steps", 2, "--rule", "cl", "--backend", "bench", "--bench", bench,
            "--out", out)
    assert p.returncode == 0, p.stderr
    before = {f: (out / f).read_bytes() for f in ("config.json", "history.log", "log.csv") if (out / f).exists()}
    emu.stop()  # the bench is down; one try each
    bench.write_text("retries = 0\n" + bench.read_text())
    q = hil("train", "--resume", out, "--steps", 4)
    assert q.returncode == 2 and "Traceback" not in q.stderr and "cannot connect" in q.stderr, q.stderr
    assert {f: (out / f).read_bytes() for f in before} == before and not (out / "run.lock").exists()


@pytest.fixture(scope="module")
def eight_steps(tmp_path_factory):
    """net16 trained 8 steps uninterrupted: the log and parameters every resume below must reproduce."""
    out = tmp_path_factory.mktemp("whole") / "w8"
    assert hil("train", "net16", "--teacher", 1, "--steps", 8, "--out", out).returncode == 0
    return Run(out)


def _four_steps(tmp_path) -> Path:
    out = tmp_path / "run"
    assert hil("train", "net16", "--teacher", 1, "--steps", 4, "--out", out).returncode == 0
    return out


def _edit_json(path: Path, **changes):
    import json
    d = json.loads(path.read_text())
    d.update(changes)
    path.write_text(json.dumps(d))


def _unchanged_by(out: Path, *args):
    """Run ``hil train --resume out *args``; it must fail with exit 2 and leave every file as it was."""
    before = snapshot(out)
    p = hil("train", "--resume", out, *args)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert snapshot(out) == before and not (out / "history.log").exists()
    return p.stderr


def test_a_task_json_that_does_not_fit_the_circuit_is_refused_before_anything_is_written(tmp_path):
    out = _four_steps(tmp_path)
    import json
    task = json.loads((out / "task.json").read_text())
    _edit_json(out / "task.json", X_train=[x + [0.5] for x in task["X_train"]])
    err = _unchanged_by(out, "--steps", 8)
    assert f"{out / 'task.json'}: X_train has 3 columns; the run's circuit 'net16' has 2 inputs" in err


@pytest.mark.parametrize("edit, step, why", [
    ("forward", 7, "step 7 is past log.csv's last row (step 4): the rows from step 5 on are missing"),
    ("back", 2, "its parameters are not those of checkpoints/step_000002.npz (step 2)"),
])
def test_a_checkpoint_step_edited_by_hand_falls_back_to_the_npz_that_agrees(tmp_path, eight_steps, edit, step, why):
    """checkpoint.json's step edited forward (a gap of rows in log.csv) or back (another step's parameters):
    refused, kept in recovered/, and the run resumes from checkpoints/step_000004.npz to the uninterrupted run."""
    out = _four_steps(tmp_path)
    _edit_json(out / "checkpoint.json", step=step)
    p = hil("train", "--resume", out, "--steps", 8)
    assert p.returncode == 0, p.stderr
    assert f"checkpoint.json refused ({why}" in p.stderr and "resumed from checkpoints/step_000004.npz (step 4)" in p.stderr
    assert len(list((out / "recovered").glob("*-checkpoint.json"))) == 1
    for k in ("step", "train_loss", "lr"):
        np.testing.assert_array_equal(Run(out).read_log()[k], eight_steps.read_log()[k])
    np.testing.assert_array_equal(Run(out).load_checkpoint()["g"], eight_steps.load_checkpoint()["g"])


def test_a_checkpoint_edited_forward_with_no_npz_to_fall_back_on_is_refused(tmp_path):
    out = _four_steps(tmp_path)
    for f in (out / "checkpoints").glob("*.npz"):
        f.unlink()
    _edit_json(out / "checkpoint.json", step=7)
    err = _unchanged_by(out, "--steps", 8)
    assert "no usable checkpoint: checkpoint.json: step 7 is past log.csv's last row (step 4)" in err


def test_rows_after_a_checkpoint_edited_back_are_kept_in_recovered(tmp_path):
    """With no .npz to judge it, a checkpoint.json edited back to step 2 resumes there; log rows 3 and 4 are
    recomputed, and the log as it was (rows 0-4) is kept whole in recovered/."""
    out = _four_steps(tmp_path)
    old = (out / "log.csv").read_bytes()
    for f in (out / "checkpoints").glob("*.npz"):
        f.unlink()
    _edit_json(out / "checkpoint.json", step=2)
    p = hil("train", "--resume", out, "--steps", 8)
    assert p.returncode == 0, p.stderr
    assert "log.csv: 2 row(s) after step 2 (step 3-4) dropped, to be recomputed from the checkpoint" in p.stderr
    kept = list((out / "recovered").glob("*-log.csv"))
    assert len(kept) == 1 and kept[0].read_bytes() == old
    assert list(Run(out).read_log()["step"]) == list(range(9))


def test_a_rule_edited_in_config_json_is_refused_naming_both(tmp_path):
    out = _four_steps(tmp_path)
    _edit_json(out / "config.json", rule="cl")
    err = _unchanged_by(out, "--steps", 8)
    assert f"{out / 'config.json'}: rule = 'cl', but the run trained with rule 'ep-sym' (the checkpoint's)" in err


def test_a_log_row_cut_inside_its_last_number_is_dropped_and_recomputed(tmp_path, eight_steps):
    """The last row of log.csv loses the end of its lr (6.0495911528607 for 6.049591152860789e-06) and its line
    end: named by line, dropped (the log kept in recovered/), and recomputed: the log is the uninterrupted run's."""
    out = _four_steps(tmp_path)
    text = (out / "log.csv").read_bytes()
    lines = text.splitlines()
    (out / "log.csv").write_bytes(text.rstrip(b"\r\n")[:-6])
    p = hil("train", "--resume", out, "--steps", 8)
    assert p.returncode == 0, p.stderr
    assert f"log.csv: dropped 1 unreadable row(s) (line {len(lines)}: cut short: no line end after its last value" \
        in p.stderr
    for k in ("step", "train_loss", "lr"):
        np.testing.assert_array_equal(Run(out).read_log()[k], eight_steps.read_log()[k])


# -- items 17, 20: meaningless values refused, each named -----------------------------------------

@pytest.mark.parametrize("args, message", [
    (["bias", "divider", "--teacher", 1, "--noise", "nan", "--out", "{tmp}/b"], "--noise nan: must be a finite voltage"),
    (["bias", "divider", "--teacher", 1, "--noise", "inf", "--out", "{tmp}/b"], "--noise inf: must be a finite voltage"),
    (["bias", "divider", "--teacher", 1, "--repeats", 0, "--out", "{tmp}/b"], "--repeats 0: must be a whole number >= 1"),
    (["bias", "divider", "--teacher", 1, "--rules", ",", "--out", "{tmp}/b"], "--rules ',': give at least one name"),
    (["train", "net16", "--teacher", 1, "--nudge", "1e-320", "--out", "{tmp}/t"],
     "--nudge 1e-320: nudge is below the smallest normal number"),
    (["train", "net16", "--teacher", 1, "--lr", "1e-320", "--out", "{tmp}/t"], "--lr 1e-320: lr is below the smallest"),
    (["train", "net16", "--teacher", 1, "--rule", "cl", "--nudge", "1e6", "--out", "{tmp}/t"],
     "rule cl: nudge eta = 1000000.0 is above 1"),
    (["train", "net16", "--teacher", 1, "--rule", "al", "--nudge", "50", "--out", "{tmp}/t"],
     "rule al: nudge eta = 50.0 is above 1"),
    (["generate", "random", "--degree", "0", "-o", "{tmp}/g.toml"], "--degree 0.0: the mean node degree must be"),
    (["generate", "random", "--degree", "-1", "-o", "{tmp}/g.toml"], "--degree -1.0: the mean node degree must be"),
    (["generate", "random", "--degree", "nan", "-o", "{tmp}/g.toml"], "--degree nan: the mean node degree must be"),
    (["generate", "random", "--inputs", "0", "-o", "{tmp}/g.toml"], "--inputs 0: a generated circuit needs at least 1"),
    (["generate", "crossbar", "--layers", "a,b", "-o", "{tmp}/g.toml"], "--layers 'a,b': 'a' is not a whole number"),
    (["generate", "layered", "--sizes", "3,x", "-o", "{tmp}/g.toml"], "--sizes '3,x': 'x' is not a whole number"),
    (["generate", "layered", "--sizes", "3,0,2", "-o", "{tmp}/g.toml"], "--sizes '3,0,2': 0 must be >= 1"),
])
def test_meaningless_values_are_refused_naming_the_option(tmp_path, args, message):
    p = hil(*[a.format(tmp=tmp_path) if isinstance(a, str) else a for a in args])
    assert p.returncode == 2 and "Traceback" not in p.stderr and message in p.stderr, p.stderr
    assert not (tmp_path / "g.toml").exists() and not (tmp_path / "t").exists()


def test_replay_refuses_a_threshold_of_nan(recorded_run, tmp_path):
    run, _ = recorded_run
    p = hil("replay", run, "--threshold", "nan", "--out", tmp_path / "nan")
    assert p.returncode == 2 and "--threshold nan: must be a positive finite voltage" in p.stderr


def test_a_one_stage_layered_circuit_trains_to_its_full_rank_optimum(tmp_path):
    """--sizes 3,2: one stage, no bottleneck; the Eckart-Young bound at rank min(3, 2) = 2 is 0."""
    import json
    net = tmp_path / "l32.toml"
    assert hil("generate", "layered", "--sizes", "3,2", "-o", net).returncode == 0
    p = hil("train", net, "--task", "factorize", "--rank", 1, "--rule", "gd", "--steps", 3, "--out", tmp_path / "r",
            "--json")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r["eckart_young"] == pytest.approx(0.0, abs=1e-15) and r["final_loss"] < r["initial_loss"]


# -- item 17, the rest: values that make every step meaningless, options a task or rule would ignore ----

def test_an_lr_that_pins_every_moving_conductance_is_refused_naming_the_curvature_step(tmp_path):
    """--lr 1e308 on net16: the first update would put the 11 edges the gradient moves (counted here by finite
    differences of the loss: 5 of the 16 change nothing, joining two sources or hanging off the network) at a
    bound; the message gives the default step, the lr the same run logs without --lr. A step of 8 times the
    default (2 / lambda_max) clips some edges, not all: accepted."""
    import json
    from hil.circuit import load_circuit
    from hil.exact import loss
    from hil.tasks import teacher_task
    c = load_circuit("net16")
    task = teacher_task(c, 1, 16)
    c0 = loss(c, task.X_train, task.Y_train)
    moved = sum(abs(loss(c, task.X_train, task.Y_train, c.g * (1 + 1e-6 * (np.arange(c.m) == e))) - c0) > 1e-12 * c0
                for e in range(c.m))
    assert hil("train", "net16", "--teacher", 1, "--steps", 1, "--out", tmp_path / "d").returncode == 0
    a0 = float(Run(tmp_path / "d").read_log()["lr"][0])
    p = hil("train", "net16", "--teacher", 1, "--lr", "1e308", "--out", tmp_path / "t")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert f"--lr 1e+308: the first update would put every one of the {moved} parameters the gradient " \
           "moves at a bound" in p.stderr and moved == 11
    assert f"the curvature step here is {a0:.3g} S^2/V^2 (0.25 / lambda_max" in p.stderr
    assert not (tmp_path / "t").exists()
    q = hil("train", "net16", "--teacher", 1, "--lr", repr(8 * a0), "--steps", 1, "--out", tmp_path / "ok", "--json")
    assert q.returncode == 0, q.stderr
    g = np.array(json.loads((tmp_path / "ok" / "checkpoint.json").read_text())["g"])
    pinned = np.sum((g == c.g_min) | (g == c.g_max))
    assert 0 < pinned < moved


def test_a_nudge_past_the_precision_of_the_nudged_circuit_names_the_option(tmp_path):
    """--nudge 1e308 on net16 (it blamed the circuit: "edge 'R1': conductance nan"): named with its multiple of
    the convergence radius 1/kappa_max, kappa_max the largest eigenvalue of K computed here."""
    from hil.circuit import load_circuit
    from hil.exact import output_green
    kmax = float(np.linalg.eigvalsh(output_green(load_circuit("net16"))).max())
    p = hil("train", "net16", "--teacher", 1, "--nudge", "1e308", "--out", tmp_path / "t")
    assert p.returncode == 2 and "Traceback" not in p.stderr and "net16.toml" not in p.stderr
    assert f"--nudge 1e+308: beta is {1e308 * kmax:.3g} times the convergence radius 1/kappa_max = " \
           f"{1 / kmax:.3g} S" in p.stderr
    assert f"the default is 5% of the radius, {0.05 / kmax:.3g} S" in p.stderr and not (tmp_path / "t").exists()


@pytest.fixture(scope="module")
def layered_file(tmp_path_factory):
    net = tmp_path_factory.mktemp("layered") / "L.toml"
    assert hil("generate", "layered", "--sizes", "3,2,2", "-o", net).returncode == 0
    return net


@pytest.mark.parametrize("args, message", [
    (["train", "net16", "--teacher", 1, "--test-fraction", "0.5"],
     "--test-fraction 0.5: applies to a CSV or classification task (--data, --dataset), whose rows are split, not "
     "to the --teacher task"),
    (["train", "net16", "--teacher", 1, "--rank", 2], "--rank 2: applies to --task factorize (its map Y), not to the "
                                                     "--teacher task, which would ignore it"),
    (["train", "net16", "--teacher", 1, "--scale", 3], "--scale 3.0: applies to --task factorize"),
    (["info", "net16", "--teacher", 1, "--scale", 3], "--scale 3.0: applies to --task factorize"),
    (["train", "{L}", "--task", "factorize", "--rank", 1, "--scale", "1e300"],
     "factorize: --scale 1e+300: targets of up to 1e+300 V for 1 V inputs, beyond +-1e+06 V"),
    (["train", "{L}", "--task", "factorize", "--rank", 1, "--rule", "gd", "--homeostasis", "0.1"],
     "--homeostasis 0.1: circuit 'layered3x2x2_s0': its asymmetry is in fixed elements (vcvs '"),
    (["train", "net16", "--teacher", 1, "--homeostasis", "0.1"],
     "--homeostasis 0.1: circuit 'net16': it is reciprocal: H = 0 whatever its parameters"),
    (["train", "{L}", "--task", "factorize", "--rank", 1, "--rule", "fa", "--nudge", "0.1"],
     "--nudge 0.1: rule fa has no nudge (it drives the output error backward through fixed feedback crossbars)"),
    (["train", "net16", "--teacher", 1, "--rule", "cl", "--points", 4],
     "--points 4: applies to ep-holo (points on the circle) and ep-stencil"),
    (["generate", "layered", "--sizes", "3,2,2", "--vccs-pairs", 2],
     "--vccs-pairs 2: applies to hil generate random and lattice and crossbar and board, not layered: a layered "
     "circuit's stages are one-way"),
    (["generate", "layered", "--sizes", "3,2,2", "--vccs-scale", "1e-3"], "--vccs-scale 0.001: applies to hil generate"),
    (["generate", "random", "--vccs-scale", "1e-3"],
     "--vccs-scale 0.001: applies to the VCCS that --vccs-pairs or --vccs-singles add, and none is asked for"),
    (["generate", "random", "--sizes", "3,2"], "--sizes 3,2: applies to hil generate layered and board and transistor and drn, not random"),
])
def test_an_option_the_task_rule_or_generator_would_ignore_is_refused(tmp_path, layered_file, args, message):
    out = ["-o", tmp_path / "g.toml"] if args[0] == "generate" else ["--out", tmp_path / "t"] \
        if args[0] == "train" else []
    p = hil(*[str(layered_file) if a == "{L}" else a for a in args], *out)
    assert p.returncode == 2 and "Traceback" not in p.stderr and message in p.stderr, p.stderr
    assert not (tmp_path / "g.toml").exists() and not (tmp_path / "t").exists()


def test_a_vccs_between_two_sources_is_refused_naming_its_line(tmp_path):
    net = tmp_path / "v.toml"
    assert hil("generate", "random", "--nodes", 8, "--vccs-pairs", 1, "-o", net).returncode == 0
    lines = net.read_text().splitlines()
    at = lines.index("[[vccs]]")
    name = lines[at + 1].split('"')[1]
    lines[at + 2], lines[at + 3] = 'out_p = "n1"', 'out_n = "n0"'  # an input and the ground
    net.write_text("\n".join(lines) + "\n")
    p = hil("info", net)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert f"{net}:{at + 3}: vccs '{name}': out_p 'n1' and out_n 'n0' are both sources" in p.stderr


# -- item 20, the rest: each error names its cause ---------------------------------------------------

def test_a_feedback_resistor_beyond_the_weight_bound_is_named(tmp_path, layered_file):
    """R = 1e300 ohm on a layered circuit's feedback edge ("SVD did not converge" before): named with its line,
    its matrix and the bound; the generated circuit itself (R = 100 kohm) loads."""
    lines = layered_file.read_text().splitlines()
    at = lines.index('name = "Wf0"')
    g_line = next(i for i in range(at, at + 6) if lines[i].startswith("g = "))
    lines[g_line] = "g = 1e-300"
    bad = tmp_path / "rf.toml"
    bad.write_text("\n".join(lines) + "\n")
    assert hil("info", layered_file).returncode == 0
    p = hil("info", bad)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert f"{bad}:{g_line + 1}: edge 'Wf0' (feedback of matrix 'W', row 0): conductance 1e-300 S (R = 1e+300 ohm) " \
           "lets the row's weights reach R (g_max - g_min) = 9.9e+295 V/V; at most 1e+08 V/V" in p.stderr


def test_a_csv_of_huge_voltages_names_the_column_and_value(tmp_path):
    big = tmp_path / "big.csv"
    big.write_text("n1,n2,n6,n7\n0.5,0.25,0.1,0.2\n1e200,2e200,0.3,0.1\n")
    for cmd in (["info", "net16", "--data", big], ["train", "net16", "--data", big, "--out", tmp_path / "t"]):
        p = hil(*cmd)
        assert p.returncode == 2 and "Traceback" not in p.stderr
        assert f"{big}:3: column 1 'n1': 1e200 V is beyond +-1e+06 V" in p.stderr, p.stderr


def test_a_full_disk_while_taking_the_run_lock_leaves_no_lock_behind(tmp_path):
    """A resume on a full disk (every write past 10 bytes fails, the lock's first): named, and no run.lock, empty
    or not, is left to block the next resume, which runs."""
    import resource
    import signal

    def full_disk():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (10, 10))

    out = tmp_path / "run"
    assert hil("train", "net16", "--teacher", 1, "--steps", 2, "--out", out).returncode == 0
    before = snapshot(out)
    p = subprocess.run(HIL + ["train", "--resume", str(out), "--steps", "4"], capture_output=True, text=True,
                       timeout=120, preexec_fn=full_disk, cwd=tmp_path)
    assert p.returncode == 2 and "Traceback" not in p.stderr and "File too large" in p.stderr, p.stderr
    assert str(out / "run.lock") in p.stderr
    assert snapshot(out) == before and not list(out.glob("*run.lock*"))
    q = hil("train", "--resume", out, "--steps", 4)
    assert q.returncode == 0, q.stderr
