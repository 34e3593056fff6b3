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
    from hil.drivers.bench import BenchSubstrate
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
    from hil.drivers.bench import BenchSubstrate
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
    from hil.drivers.bench import BenchSubstrate, bench_locks, load_bench
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
