"""The bench: drivers over the real pyvisa stack (pyvisa-py, real loopback sockets) to the emulator."""

import json
import os
import socket
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

from helpers import HIL, bench_of
from hil.circuit import load_circuit
from hil.ideal import IdealSubstrate
from hil.runs import Run
from hil.tasks import teacher_task
from hil.train import TrainConfig, resume_run, start_run

warnings.filterwarnings("ignore", category=FutureWarning)

# the instruments read at 6.5 digits of their range (1 uV on the 2 V range): a run on the
# emulated bench follows the simulated one to that resolution, carried through the steps
READING_RTOL = 2e-4
READING_ATOL = 2e-6  # V, one reading


@pytest.mark.parametrize("rule", ["cl", "al", "gd", "ep-open"])
def test_training_on_the_emulated_bench_reproduces_the_ideal_run(tmp_path, emulated, rule):
    from hil.bench.substrate import BenchSubstrate
    c = load_circuit("net16")
    task = teacher_task(c, seed=1, examples=5)
    cfg = dict(rule=rule, steps=12, batch=3, seed=4)
    start_run(c, task, TrainConfig(**cfg), tmp_path / "ideal", progress=False)
    emu, path = emulated(IdealSubstrate(c))
    with BenchSubstrate(c, path) as bench:
        start_run(c, task, TrainConfig(**cfg, backend="bench"), tmp_path / "bench", progress=False, substrate=bench)
    a, b = Run(tmp_path / "ideal").read_log()["train_loss"], Run(tmp_path / "bench").read_log()["train_loss"]
    assert b[-1] < b[0]
    np.testing.assert_allclose(b, a, rtol=READING_RTOL)


def test_the_ngspice_backed_emulator_reproduces_the_ngspice_run(tmp_path, emulated, ngspice):
    from hil.bench.substrate import BenchSubstrate
    from hil.spice.substrate import NgSpiceSubstrate
    c = load_circuit("bridge")
    task = teacher_task(c, seed=2, examples=3)
    cfg = dict(rule="cl", steps=8)
    start_run(c, task, TrainConfig(**cfg, backend="ngspice"), tmp_path / "ng", progress=False)
    sim = NgSpiceSubstrate(c)
    try:
        emu, path = emulated(sim)
        with BenchSubstrate(c, path) as bench:
            start_run(c, task, TrainConfig(**cfg), tmp_path / "bench", progress=False, substrate=bench)
    finally:
        sim.close()
    np.testing.assert_allclose(Run(tmp_path / "bench").read_log()["train_loss"],
                               Run(tmp_path / "ng").read_log()["train_loss"], rtol=READING_RTOL)


def test_out_of_limit_writes_are_refused_before_the_socket(emulated):
    from hil.bench.substrate import BenchSubstrate
    from hil.drivers.instruments import LimitError
    c = load_circuit("net16")
    emu, path = emulated(IdealSubstrate(c))
    with BenchSubstrate(c, bench_of(path, board={**bench_of(path)["board"], "g_max": 5e-3})) as bench:
        g = c.g.copy()
        g[3] = 6e-3
        with pytest.raises(LimitError, match=r"edge 4 conductance 0.006 S is outside the allowed \[1e-05, 0.005\] S; not sent"):
            bench.write(g)
        smu = bench.smus[c.node("n1")]
        with pytest.raises(LimitError, match=r"source voltage 2.5 V is outside the allowed \[-2.0, 2.0\] V"):
            smu.source_volts(2.5)
        with pytest.raises(LimitError, match="source current 0.05 A is outside"):
            smu.source_amps(0.05)
    board = "\n".join(emu.instruments["board"].received)
    smu_lines = "\n".join(emu.instruments["smu_n1"].received)
    assert "0.006" not in board and "2.5" not in smu_lines and "0.05" not in smu_lines


def test_malformed_commands_get_scpi_errors_not_crashes(emulated):
    c = load_circuit("net16")
    emu, _ = emulated(IdealSubstrate(c))
    host, port = "127.0.0.1", emu.servers["smu_n1"][1]
    with socket.create_connection((host, port), timeout=5) as s:
        f = s.makefile("rw", newline="\n")

        def ask(q):
            f.write(q + "\n")
            f.flush()
            return f.readline().strip()

        for bad, code in [("FOO:BAR 1", "-113"), (":SOUR:VOLT abc", "-104"), (":SOUR:VOLT 1e9", "-222"),
                          (":OUTP maybe", "-104"), ("\x00\xff;;", "-101"), (":SOUR:FUNC RES", "-224")]:
            f.write(bad + "\n")
            f.flush()
            assert ask("SYST:ERR?").startswith(code), bad
        assert ask("SYST:ERR?").startswith("0,")
        assert "MODEL 2400" in ask("*IDN?")
        assert ask(":SOUR:VOLT 0.25;:SOUR:VOLT?") == "+2.500000E-01"  # compound, short forms
        assert ask(":source:voltage:level:immediate:amplitude?") == "+2.500000E-01"  # long forms, any case
        # a source list shorter than the trigger count wraps (2400 manual, section 10)
        reply = ask(":SOUR:VOLT:MODE LIST;:SOUR:LIST:VOLT 0.1,0.2;:TRIG:COUN 3;:OUTP 1;:READ?")
        assert [float(x) for x in reply.split(",")[0::5]] == [0.1, 0.2, 0.1]
        f.write(":SOUR:LIST:VOLT " + ",".join(["0.1"] * 101) + ";SYST:ERR?\n")  # the error discards SYST:ERR?
        f.flush()
        assert ask("SYST:ERR?").startswith("-223,")


def test_closed_loop_nudges_and_complex_nudges_are_refused(emulated):
    from hil.bench.substrate import BenchError, BenchSubstrate
    from hil.substrate import Nudge
    c = load_circuit("bridge")
    emu, path = emulated(IdealSubstrate(c))
    with BenchSubstrate(c, path) as bench:
        with pytest.raises(BenchError, match="not the closed-loop nudge"):
            bench.measure([[0.5]], [[0.1, 0.2]], [Nudge(1e-4)])
        with pytest.raises(Exception, match="complex nudge"):
            bench.measure([[0.5]], [[0.1, 0.2]], [Nudge(1e-4j)])


def test_faults_end_in_a_retry_or_a_reconnect(emulated):
    from hil.bench.substrate import BenchSubstrate
    from hil.substrate import Free
    c = load_circuit("net16")
    emu, path = emulated(IdealSubstrate(c))
    X = np.random.default_rng(0).uniform(-1, 1, (2, 2))
    Y = np.zeros((2, 2))
    ref = IdealSubstrate(c).measure(X, Y, [Free()])[Free()]
    with BenchSubstrate(c, bench_of(path, timeout_ms=300)) as bench:
        smu = emu.instruments["smu_n6"]
        smu.faults.delay, smu.faults.delay_count = 0.8, 1     # one reply past the timeout
        np.testing.assert_allclose(bench.measure(X, Y, [Free()])[Free()], ref, rtol=0, atol=READING_ATOL)
        emu.instruments["scanner"].faults.drop = 1            # the connection drops once
        np.testing.assert_allclose(bench.measure(X, Y, [Free()])[Free()], ref, rtol=0, atol=READING_ATOL)
        emu.instruments["smu_n7"].faults.garbage = 1          # one garbage reply
        np.testing.assert_allclose(bench.measure(X, Y, [Free()])[Free()], ref, rtol=0, atol=READING_ATOL)


def test_a_dead_instrument_stops_cleanly_and_the_run_resumes_without_loss(tmp_path, emulated):
    from hil.bench.substrate import BenchError, BenchSubstrate
    c = load_circuit("net16")
    task = teacher_task(c, seed=1, examples=4)
    cfg = dict(rule="cl", steps=10, checkpoint_every=5)
    start_run(c, task, TrainConfig(**cfg), tmp_path / "ideal", progress=False)
    emu, path = emulated(IdealSubstrate(c))
    bench = BenchSubstrate(c, bench_of(path, timeout_ms=300, retries=1))


    calls = {"n": 0}
    orig = bench.run

    def run(X, exps):
        calls["n"] += 1
        if calls["n"] == 14:  # mid-run, the scanner starts answering garbage for good
            emu.instruments["scanner"].faults.garbage = 10 ** 6
        return orig(X, exps)

    bench.run = run
    with pytest.raises(BenchError, match="scan failed after 2 tries"):
        start_run(c, task, TrainConfig(**cfg, backend="bench"), tmp_path / "bench", progress=False, substrate=bench)
    bench.close()
    stopped = Run(tmp_path / "bench").load_checkpoint()["step"]
    assert 0 < stopped < 10
    emu.instruments["scanner"].faults.garbage = 0
    with BenchSubstrate(c, path) as fresh:
        resume_run(tmp_path / "bench", progress=False, substrate=fresh)
    np.testing.assert_allclose(Run(tmp_path / "bench").read_log()["train_loss"],
                               Run(tmp_path / "ideal").read_log()["train_loss"], rtol=READING_RTOL)


def test_bench_file_errors(tmp_path):
    from hil.bench.substrate import BenchError, BenchSubstrate, load_bench
    p = tmp_path / "b.toml"
    p.write_text('[board]\nresource = "TCPIP::127.0.0.1::5025::SOCKET; *RST"\n[[smu]]\nnode = "n1"\n'
                 'resource = "TCPIP::127.0.0.1::5026::SOCKET"\n')
    with pytest.raises(BenchError, match="is not a VISA resource string"):
        load_bench(p)
    p.write_text('[board]\nresource = "TCPIP::127.0.0.1::5025::SOCKET"\n[[smu]]\nnode = "n1"\n'
                 'resource = "TCPIP::127.0.0.1::5026::SOCKET"\n')
    with pytest.raises(BenchError, match="no \\[\\[smu\\]\\] for input node 'n2'"):
        BenchSubstrate(load_circuit("net16"), p)


def test_hil_emulate_and_train_in_two_processes(tmp_path):
    bench_file = tmp_path / "bench.toml"
    emu = subprocess.Popen(HIL + ["emulate", "net16", "--bench-file", str(bench_file), "--json"],
                           stdout=subprocess.PIPE, text=True)
    try:
        line = ""
        deadline = time.time() + 60
        while not line.startswith("{") and time.time() < deadline:
            line = emu.stdout.readline()
        info = json.loads(line)
        assert all(r.startswith("TCPIP::127.0.0.1::") for r in info["resources"].values())
        p = subprocess.run(HIL + ["train", "net16", "--teacher", "1", "--rule", "cl", "--steps", "5",
                            "--backend", "bench", "--bench", str(bench_file), "--out", str(tmp_path / "run"), "--json"],
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr
        r = json.loads(p.stdout.strip().splitlines()[-1])
        assert r["steps"] == 5 and r["final_loss"] < r["initial_loss"]
    finally:
        emu.terminate()
        emu.wait(timeout=30)


def test_an_instrument_error_stops_the_run_cleanly_and_it_resumes(tmp_path, emulated):
    from hil.bench.substrate import BenchError, BenchSubstrate
    c = load_circuit("net16")
    task = teacher_task(c, seed=1, examples=4)
    cfg = dict(rule="al", steps=8, checkpoint_every=4)
    start_run(c, task, TrainConfig(**cfg), tmp_path / "ideal", progress=False)
    emu, path = emulated(IdealSubstrate(c))
    bench = BenchSubstrate(c, path)
    orig = bench.run
    calls = {"n": 0}

    def run(X, exps):
        calls["n"] += 1
        if calls["n"] == 12:
            emu.instruments["smu_n7"].push_error(-315, "Configuration memory lost")
        return orig(X, exps)

    bench.run = run
    with pytest.raises(BenchError, match=r"SMU on node n7 .* reports: -315 .*Configuration memory lost"):
        start_run(c, task, TrainConfig(**cfg, backend="bench"), tmp_path / "bench", progress=False, substrate=bench)
    bench.close()
    with BenchSubstrate(c, path) as fresh:
        resume_run(tmp_path / "bench", progress=False, substrate=fresh)
    np.testing.assert_allclose(Run(tmp_path / "bench").read_log()["train_loss"],
                               Run(tmp_path / "ideal").read_log()["train_loss"], rtol=READING_RTOL)
