"""Run directories keep what a user recorded: one writer, no overwriting, validated resumes, Ctrl-C that stops.

The CLI runs as a user runs it: ``python -m hil.cli`` in a subprocess, from a folder
outside the checkout (so the installed package is the one tested).
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import HIL
from hil.circuits import random_network
from hil.runs import Run, RunError
from hil.tasks import teacher_task
from hil.train import TrainConfig, resume_run, start_run


def hil(*args, cwd=None, **kw):
    return subprocess.run(HIL + [str(a) for a in args], capture_output=True, text=True,
                          timeout=300, cwd=cwd or Path.home(), **kw)


def snapshot(folder: Path) -> dict:
    """Every file's bytes under ``folder`` (what must be left untouched)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def teacher():
    c = random_network(12, 3.5, seed=7)
    return c, teacher_task(c, seed=2, examples=10)


CFG = dict(rule="ep-sym", steps=60, batch=4, seed=3, checkpoint_every=10)


@pytest.fixture(scope="module")
def whole(teacher, tmp_path_factory):
    """The uninterrupted run every recovered run must reproduce."""
    c, task = teacher
    out = tmp_path_factory.mktemp("whole") / "run"
    start_run(c, task, TrainConfig(**CFG), out, progress=False)
    return Run(out)


def part(teacher, tmp_path, steps=30):
    c, task = teacher
    start_run(c, task, TrainConfig(**{**CFG, "steps": steps}), tmp_path / "part", progress=False)
    return Run(tmp_path / "part")


def same_as(run, whole):
    np.testing.assert_array_equal(run.read_log()["train_loss"], whole.read_log()["train_loss"])
    steps = run.read_log()["step"]  # every log_every steps (issue 14), in order, no row twice
    np.testing.assert_array_equal(steps, whole.read_log()["step"])
    assert steps[0] == 0 and steps[-1] == 60 and np.all(np.diff(steps) > 0)
    np.testing.assert_array_equal(run.load_checkpoint()["g"], whole.load_checkpoint()["g"])


# -- item 8: one writer per run directory ------------------------------------------------------

def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    out = tmp_path / "run"
    assert hil("train", "net16", "--teacher", 1, "--steps", 20, "--out", out).returncode == 0
    first = subprocess.Popen(HIL + ["train", "--resume", str(out), "--steps", str(10 ** 7)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=Path.home())
    try:
        deadline = time.time() + 60
        while not (out / "run.lock").exists() and time.time() < deadline:
            time.sleep(0.05)
        second = hil("train", "--resume", out, "--steps", 10 ** 7)
        assert second.returncode == 2 and "Traceback" not in second.stderr
        assert f"in use by process {first.pid} on {os.uname().nodename}" in second.stderr
        again = hil("train", "net16", "--teacher", 1, "--steps", 5, "--out", out)  # nor a new run into it
        assert again.returncode == 2 and f"in use by process {first.pid}" in again.stderr
    finally:
        first.send_signal(signal.SIGINT)
        first.wait(timeout=60)
    steps = Run(out).read_log()["step"]
    np.testing.assert_array_equal(steps, np.arange(len(steps)))  # one writer: no duplicated or reordered rows
    assert not (out / "run.lock").exists()


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path, teacher, whole):
    run = part(teacher, tmp_path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    (run.path / "run.lock").write_text(json.dumps({"pid": pid, "host": os.uname().nodename, "since": "x"}))
    resume_run(run.path, steps=60, progress=False)
    same_as(run, whole)
    assert f"took over the lock of process {pid}" in (run.path / "history.log").read_text()


# -- item 9: --out never overwrites ------------------------------------------------------------

def test_out_refuses_a_folder_of_user_files_and_force_keeps_them(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "log.csv").write_text("my measurements\n")
    (out / "config.json").write_text('{"mine": true}\n')
    before = snapshot(out)
    p = hil("train", "net16", "--teacher", 1, "--steps", 5, "--out", out)
    assert p.returncode == 2 and "not empty (config.json, log.csv) and not a new run" in p.stderr
    assert snapshot(out) == before
    p = hil("train", "net16", "--teacher", 1, "--steps", 5, "--out", out, "--force")
    assert p.returncode == 0, p.stderr
    aside = [d for d in out.iterdir() if d.name.startswith("replaced-")]
    assert len(aside) == 1 and snapshot(aside[0]) == before  # moved, not deleted
    assert Run(out).load_checkpoint()["step"] == 5


def test_out_refuses_an_old_run_without_its_checkpoint(tmp_path):
    out = tmp_path / "old"
    assert hil("train", "net16", "--teacher", 1, "--steps", 20, "--out", out).returncode == 0
    (out / "checkpoint.json").unlink()
    before = snapshot(out)
    p = hil("train", "net16", "--teacher", 2, "--steps", 5, "--out", out)
    assert p.returncode == 2 and "not empty" in p.stderr and snapshot(out) == before


@pytest.mark.parametrize("command", [["netlist"], ["perturb"]])
def test_an_input_is_never_overwritten(tmp_path, command):
    x = tmp_path / "x.toml"
    x.write_text((Path(__file__).parent.parent / "circuits" / "divider.toml").read_text())
    before = x.read_bytes()
    p = hil(*command, x, "-o", x)
    assert p.returncode == 2 and f"-o {x}: is an input of this command; refusing to overwrite it" in p.stderr
    assert x.read_bytes() == before


# -- item 10: corrupt or partial run files ----------------------------------------------------

@pytest.mark.parametrize("damage", ["truncated", "garbage", "negative step", "g above g_max", "empty"])
def test_a_damaged_checkpoint_falls_back_to_the_newest_good_npz(tmp_path, teacher, whole, damage, capsys):
    run = part(teacher, tmp_path)
    p = run.path / "checkpoint.json"
    text = p.read_text()
    ck = json.loads(text)
    bad = {"truncated": text[: len(text) // 2], "garbage": "\x00\x07garbage", "empty": "",
           "negative step": json.dumps({**ck, "step": -5}),
           "g above g_max": json.dumps({**ck, "g": [1.0] + ck["g"][1:]})}[damage]
    p.write_text(bad)
    res = resume_run(run.path, steps=60, progress=False)
    same_as(run, whole)  # nothing lost: the log was not wiped, the run is the uninterrupted one
    assert "resumed from checkpoints/step_000030.npz (step 30)" in capsys.readouterr().err
    assert any("resumed from checkpoints/step_000030.npz" in n for n in res["recovered"])
    kept = list((run.path / "recovered").glob("*-checkpoint.json"))
    assert len(kept) == 1 and kept[0].read_text() == bad  # the damaged file is kept, not deleted


def test_an_older_npz_is_used_when_the_newest_is_damaged_too(tmp_path, teacher, whole):
    run = part(teacher, tmp_path)
    (run.path / "checkpoint.json").write_text("{")
    (run.path / "checkpoints" / "step_000030.npz").write_bytes(b"PK\x03\x04 cut")
    res = resume_run(run.path, steps=60, progress=False)
    assert "resumed from checkpoints/step_000020.npz (step 20)" in res["recovered"][0]
    same_as(run, whole)


def test_no_usable_checkpoint_names_every_file(tmp_path, teacher):
    run = part(teacher, tmp_path, steps=10)
    (run.path / "checkpoint.json").write_text("{")
    for f in (run.path / "checkpoints").iterdir():
        f.write_bytes(b"")
    before = snapshot(run.path)
    with pytest.raises(RunError, match=r"no usable checkpoint: checkpoint.json: .*JSONDecodeError.*; "
                                       r"checkpoints/step_000010.npz: unreadable"):
        resume_run(run.path, steps=20, progress=False)
    assert snapshot(run.path) == before


@pytest.mark.parametrize("name", ["config.json", "task.json", "circuit.toml"])
def test_a_missing_run_file_is_named_and_nothing_changes(tmp_path, teacher, name):
    run = part(teacher, tmp_path, steps=10)
    (run.path / name).unlink()
    before = snapshot(run.path)
    p = hil("train", "--resume", run.path, "--steps", 20)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert f"{run.path / name}: missing; the run cannot be resumed without it" in p.stderr
    assert snapshot(run.path) == before


def test_a_log_cut_mid_row_loses_only_that_row(tmp_path, teacher, whole):
    run = part(teacher, tmp_path)
    line = len(run.read_log()["step"]) + 2  # the header, then the rows
    with open(run.path / "log.csv", "a") as fh:
        fh.write("31,0.0012")  # a kill in the middle of writing a row
    res = resume_run(run.path, steps=60, progress=False)
    same_as(run, whole)
    assert any(f"dropped 1 unreadable row(s) (line {line}: 2 fields)" in n for n in res["recovered"])


def test_a_missing_log_is_restarted_and_said(tmp_path, teacher, whole):
    run = part(teacher, tmp_path)
    (run.path / "log.csv").unlink()
    res = resume_run(run.path, steps=60, progress=False)
    assert any("log.csv was missing: a new one starts at step 30" in n for n in res["recovered"])
    w, new = whole.read_log(), run.read_log()  # the rows logged after step 30, as the whole run logged them
    np.testing.assert_array_equal(new["step"], w["step"][w["step"] > 30])
    np.testing.assert_array_equal(new["train_loss"], w["train_loss"][w["step"] > 30])


# -- item 11: resume with different options -----------------------------------------------------

def test_resume_refuses_changes_it_cannot_make_and_records_the_ones_it_makes(tmp_path):
    out = tmp_path / "run"
    assert hil("train", "net16", "--teacher", 1, "--steps", 100, "--out", out).returncode == 0
    before = snapshot(out)
    for args, message in [(["--steps", 50], "--steps 50: the run already has 100 steps"),
                          (["--rule", "cl"], "--rule: a resume continues the run with its recorded options"),
                          (["--lr", "1e-3"], "--lr: a resume continues the run"),
                          (["--out", tmp_path / "elsewhere"], "--out: a resume continues the run"),
                          (["--teacher", "2"], "--teacher: a resume continues the run")]:
        p = hil("train", "--resume", out, *args)
        assert p.returncode == 2 and message in p.stderr and "Traceback" not in p.stderr, (args, p.stderr)
        assert snapshot(out) == before
    p = hil("train", "--resume", out, "--steps", 150, "--json")
    assert p.returncode == 0 and json.loads(p.stdout.splitlines()[-1])["steps"] == 150
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["steps"] == 150 and cfg["changes"] == [{"option": "steps", "from": 100, "to": 150, "at_step": 100}]
    assert "--steps changed from 100 to 150 at step 100" in (out / "history.log").read_text()
    np.testing.assert_array_equal(Run(out).read_log()["step"], np.arange(151))


# -- item 12: Ctrl-C stops an ngspice run, with a checkpoint, every time ---------------------------

def test_ctrl_c_stops_an_ngspice_run_every_time(tmp_path, ngspice):
    out = tmp_path / "run"
    for k in range(4):
        args = (["train", "--resume", out] if k else
                ["train", "net16", "--teacher", 1, "--rule", "ep-sym", "--backend", "ngspice", "--out", out,
                 "--checkpoint-every", 10])
        p = subprocess.Popen(HIL + [*map(str, args), "--steps", str(10 ** 6)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=Path.home())
        seen = 0 if k == 0 else Run(out).load_checkpoint()["step"]
        deadline = time.time() + 120
        while time.time() < deadline:  # until this process has written a checkpoint: it is stepping
            time.sleep(0.05)
            try:
                if Run(out).load_checkpoint()["step"] > seen:
                    break
            except (OSError, ValueError, RunError):
                pass
        time.sleep(0.07 * k)  # a different moment of a step each time
        p.send_signal(signal.SIGINT)
        try:
            _, err = p.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            pytest.fail(f"SIGINT #{k + 1} did not stop the run")
        assert p.returncode == 130, err
        assert "interrupted; the last checkpoint was written" in err and "Traceback" not in err
        run = Run(out)
        step = run.load_checkpoint()["step"]
        log = run.read_log()["step"]
        assert step > seen and log[-1] == step  # every completed step kept, log and checkpoint agree
        np.testing.assert_array_equal(log, np.arange(step + 1))


# -- layered runs (issue 15) share the run directory's rules -------------------------------------

def test_a_layered_run_has_one_writer_a_fresh_out_and_a_validated_resume(tmp_path):
    """The same run-directory promises for a layered circuit: --out refused when it holds user files,
    a damaged checkpoint.json replaced by the newest good .npz (the resume then equals the whole run),
    an option change refused and the log left as it was, a lock held by a live process refused."""
    lt = tmp_path / "l.toml"
    assert hil("generate", "layered", "--sizes", "4,2,3", "-o", lt).returncode == 0
    p = hil("generate", "layered", "--sizes", "4,2,3", "-o", lt, "--seed", 1)  # its own file: replaced
    assert p.returncode == 0, p.stderr
    train = ["train", lt, "--task", "factorize", "--rank", 2, "--rule", "fa", "--checkpoint-every", 10]
    whole, out, mine = tmp_path / "whole", tmp_path / "run", tmp_path / "mine"
    assert hil(*train, "--steps", 40, "--out", whole).returncode == 0
    mine.mkdir()
    (mine / "notes.txt").write_text("mine\n")
    p = hil(*train, "--steps", 20, "--out", mine)
    assert p.returncode == 2 and "not empty (notes.txt) and not a new run" in p.stderr
    assert [f.name for f in mine.iterdir()] == ["notes.txt"]
    assert hil(*train, "--steps", 20, "--out", out).returncode == 0
    before = snapshot(out)
    for args, message in [(["--rule", "gd"], "--rule: a resume continues the run with its recorded options"),
                          (["--steps", 10], "--steps 10: the run already has 20 steps")]:
        p = hil("train", "--resume", out, *args)
        assert p.returncode == 2 and message in p.stderr and "Traceback" not in p.stderr, p.stderr
        assert snapshot(out) == before
    (out / "run.lock").write_text(json.dumps({"pid": os.getpid(), "host": os.uname().nodename, "since": "now"}))
    p = hil("train", "--resume", out, "--steps", 40)
    assert p.returncode == 2 and f"in use by process {os.getpid()}" in p.stderr
    (out / "run.lock").unlink()
    (out / "checkpoint.json").write_text('{"step": 20, "g": [')  # cut mid-write
    p = hil("train", "--resume", out, "--steps", 40)
    assert p.returncode == 0, p.stderr
    assert "resumed from checkpoints/step_000020.npz (step 20)" in p.stderr
    # the layered circuit's op-amps are solved by Newton from the last state: a resume starts elsewhere, to rounding
    np.testing.assert_allclose(Run(out).load_checkpoint()["g"], Run(whole).load_checkpoint()["g"], rtol=1e-12)
    np.testing.assert_allclose(Run(out).read_log()["train_loss"], Run(whole).read_log()["train_loss"], rtol=1e-9)
    assert any((out / "recovered").iterdir()) and not (out / "run.lock").exists()


def test_a_full_disk_is_named_and_the_run_resumes_from_what_was_written(tmp_path):
    """--out on a full disk: a file-size limit makes every write past 4 kB fail as a full disk does
    (an OSError with no file name); the message names the run, and the run resumes to the whole run."""
    import resource

    def small_disk():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails (EFBIG) instead of killing hil
        resource.setrlimit(resource.RLIMIT_FSIZE, (4_000, 4_000))  # log.csv reaches it first

    out = tmp_path / "run"
    p = subprocess.run(HIL + ["train", "net16", "--teacher", "1", "--steps", "200", "--out", str(out)],
                       capture_output=True, text=True, timeout=300, preexec_fn=small_disk, cwd=tmp_path)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert f"hil train: error: " in p.stderr and str(out) in p.stderr and "File too large" in p.stderr
    assert not list(out.rglob(".*.tmp")) and not (out / "run.lock").exists()
    run = Run(out)
    assert run.load_checkpoint()["step"] < 200
    p = hil("train", "--resume", out, "--steps", 200)
    assert p.returncode == 0, p.stderr
    np.testing.assert_array_equal(run.read_log()["step"], np.arange(201))
    ref = tmp_path / "ref"
    assert hil("train", "net16", "--teacher", 1, "--steps", 200, "--out", ref).returncode == 0
    np.testing.assert_array_equal(run.load_checkpoint()["g"], Run(ref).load_checkpoint()["g"])
