"""Recorded bench runs and their replay on a simulated twin.

The bench is the emulator over real loopback sockets (pyvisa-py). What is checked:
the record holds every line each instrument received, in order, with its reply;
the per-step conductances are what the board read back (the run's checkpoints);
the record's size bound holds; a replay of an exact bench on the ideal twin
agrees to the SCPI formatting precision and rebuilds the bench's own gradient
estimates bit for bit; on a bench with hidden part tolerances (`hil emulate
--nonideal` in its own process) the calibrated twin diverges far less than the
uncalibrated one, and the twin with the emulator's own non-idealities only by noise.
"""

import json
import subprocess
import time
import warnings

import numpy as np
import pytest
from helpers import HIL, run_hil

from hil.circuit import load_circuit
from hil.ideal import IdealSubstrate
from hil.runs import Run
from hil.tasks import teacher_task
from hil.train import TrainConfig, start_run

warnings.filterwarnings("ignore", category=FutureWarning)


def hil(*args, timeout=300):
    return run_hil(*args, timeout=timeout)


@pytest.fixture
def ideal_bench(tmp_path):
    from hil.emulator.bench import build
    c = load_circuit("net16")
    emu = build(IdealSubstrate(c)).start()
    path = tmp_path / "bench.toml"
    path.write_text(emu.bench_toml(c.source))
    yield c, emu, path
    emu.stop()


def test_a_bench_run_records_every_exchange_and_every_write(tmp_path, ideal_bench):
    from hil.bench.substrate import BenchSubstrate
    from hil.bench.record import read_exchanges, read_steps
    c, emu, bench = ideal_bench
    task = teacher_task(c, 1, 16)
    cfg = TrainConfig(rule="cl", steps=6, batch=8, checkpoint_every=1, backend="bench")
    with BenchSubstrate(c, bench) as sub:
        before = {n: len(inst.received) for n, inst in emu.instruments.items()}
        start_run(c, task, cfg, tmp_path / "run", progress=False, substrate=sub)
        got = {n: list(inst.received)[before[n]:] for n, inst in emu.instruments.items()}
    ex = read_exchanges(tmp_path / "run")
    for name in emu.instruments:
        sent = [e["cmd"] for e in ex if e.get("inst") == name]
        # from the record's start (K was measured before it) every line the instrument received is recorded
        assert sent == got[name][len(got[name]) - len(sent):] and len(sent) > 5, name
    assert sum(len(g) for g in got.values()) - len(ex) < 40  # only the start-up measurement of K is before it
    replies = [e for e in ex if e["reply"] is not None]
    assert any(e["cmd"] == "EDGE:ALL?" for e in replies)
    assert all(e["t_reply"] >= e["t"] for e in replies)

    events = read_steps(tmp_path / "run")
    writes = [e for e in events if e["kind"] == "write"]
    assert [e["step"] for e in events if e["kind"] == "mark"] == list(range(1, 7))
    run = Run(tmp_path / "run")
    for k, w in enumerate(writes, start=1):  # each step's read-back is the conductance the run went on with
        ck = np.load(run.path / "checkpoints" / f"step_{k:06d}.npz")["g"]
        np.testing.assert_array_equal(w["read_back"], ck)
        np.testing.assert_allclose(w["requested"], ck, rtol=1e-12)
    rec = json.loads((run.path / "bench" / "record.json").read_text())
    assert rec["exchanges"] == len(ex) and rec["exchanges_not_written"] == 0


def test_the_exchange_record_is_bounded(tmp_path, ideal_bench):
    from hil.bench.substrate import BenchSubstrate, load_bench
    from hil.bench.record import read_exchanges
    c, emu, bench = ideal_bench
    cfg = load_bench(bench)
    cfg["record_max_bytes"] = 4000
    task = teacher_task(c, 1, 16)
    with BenchSubstrate(c, cfg) as sub:
        start_run(c, task, TrainConfig(rule="cl", steps=20, backend="bench"), tmp_path / "run", substrate=sub,
                  progress=False)
    rec = json.loads((tmp_path / "run" / "bench" / "record.json").read_text())
    assert rec["exchanges_not_written"] > 0
    # the bound, overshot by at most the step in flight when it was reached (a few kB here)
    assert rec["bytes"]["exchanges.001.jsonl.gz"] < 4000 + 12000
    ex = read_exchanges(tmp_path / "run")
    assert ex[-1]["bound_reached"] == 4000
    assert len(ex) - 1 == rec["exchanges"]


def test_replay_of_an_exact_bench_on_the_ideal_twin(tmp_path, ideal_bench):
    c, emu, bench = ideal_bench
    task = teacher_task(c, 1, 16)
    for rule in ("cl", "gd"):
        # log_every=2: steps 2 and 4 end with a logging pass, 1 and 3 do not (the replay parts both kinds)
        cfg = TrainConfig(rule=rule, steps=5, batch=8, log_every=2, backend="bench",
                          backend_options={"bench": str(bench)})
        start_run(c, task, cfg, tmp_path / rule, progress=False)
        p = hil("replay", tmp_path / rule, "--json")
        assert p.returncode == 0, p.stderr
        r = json.loads(p.stdout.strip().splitlines()[-1])
        # the instruments read at 6.5 digits of their range (1 uV on the 2 V range): all that differs
        assert max(r["worst"]) < 1e-6 and r["parted"] == []
        cos = [x for x in r["cosine"] if np.isfinite(x)]
        assert len(cos) == 5 and min(cos) > 1 - 1e-6
        # the playback rebuilt the bench's own estimates: their norms are the run log's at its logged steps
        g = np.genfromtxt(tmp_path / f"{rule}-replay-ideal" / "gradients.csv", delimiter=",", names=True)
        log = Run(tmp_path / rule).read_log()
        assert list(log["step"]) == [0, 2, 4, 5]
        at = np.searchsorted(g["step"], log["step"][1:])
        np.testing.assert_array_equal(g["step"][at], log["step"][1:])
        np.testing.assert_allclose(g["norm_bench"][at], log["grad_norm"][1:], rtol=1e-12)
        assert (tmp_path / f"{rule}-replay-ideal" / "replay.png").stat().st_size > 5000
    # a resumed run is recorded as a second session, and replays on
    from hil.train import resume_run
    resume_run(tmp_path / "gd", steps=8, progress=False)
    p = hil("replay", tmp_path / "gd", "--force", "--json")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r["steps"] == list(range(9)) and max(r["worst"]) < 1e-6
    assert sum(np.isfinite(r["cosine"])) == 8 and np.nanmin(r["cosine"]) > 1 - 1e-6
    again = hil("replay", tmp_path / "cl")
    assert again.returncode == 2 and "already exists" in again.stderr
    bad = hil("replay", tmp_path / "nothing")
    assert bad.returncode == 2 and "not a run directory" in bad.stderr


def test_the_calibrated_twin_diverges_less_than_the_uncalibrated_one(tmp_path, ngspice):
    nonideal = tmp_path / "tolerance.toml"
    nonideal.write_text("seed = 3\ntolerance = 0.05\nnoise = 1e-4\n")
    bench = tmp_path / "bench.toml"
    emu = subprocess.Popen(HIL + ["emulate", "net16", "--backend", "ngspice", "--nonideal",
                            str(nonideal), "--bench-file", str(bench), "--json"], stdout=subprocess.PIPE, text=True,
                           cwd=tmp_path)
    try:
        line, deadline = "", time.time() + 60
        while not line.startswith("{") and time.time() < deadline:
            line = emu.stdout.readline()
        run = tmp_path / "run"
        p = hil("train", "net16", "--teacher", "1", "--rule", "cl", "--steps", "8", "--batch", "8", "--backend", "bench",
                "--bench", bench, "--out", run, "--json")
        assert p.returncode == 0, p.stderr
        p = hil("calibrate", "--bench", bench, "-o", tmp_path / "calibrated.toml")
        assert p.returncode == 0, p.stderr
    finally:
        emu.terminate()
        emu.wait(timeout=30)
    res = {}
    for name, extra in {"plain": [], "calibrated": ["--circuit", tmp_path / "calibrated.toml"],
                        "exact": ["--backend", "ngspice", "--nonideal", nonideal]}.items():
        p = hil("replay", run, "--out", tmp_path / name, "--json", *extra)
        assert p.returncode == 0, p.stderr
        res[name] = json.loads(p.stdout.strip().splitlines()[-1])
    plain, cal, exact = (res[k]["median_divergence"] for k in ("plain", "calibrated", "exact"))
    # voltmeter noise 0.1 mV: the largest of a step's ~100 readings per node is a few sigma
    assert exact < 1e-3 and cal < 1e-3
    assert plain > 10 * cal, (plain, cal)
    assert res["plain"]["parted"] and not res["calibrated"]["parted"]
    cos = {k: np.nanmedian(np.array(res[k]["cosine"], float)) for k in res}
    assert cos["calibrated"] > cos["plain"]
