"""Bench safety against the emulator, its state log inspected: a known, safe, verified start; bounded retries.

Every state an emulated SMU applied is logged after each command it executes
(``Instrument.state_log``); an SMU state is safe when its output is off, or when
every level it can source (the fixed level, or the list in list mode) is within
the bench file's limit and the compliance of the other quantity is too.
"""

import socket
import time
from pathlib import Path
import warnings

import numpy as np
import pytest

from helpers import HIL, bench_of
from hil.circuit import load_circuit
from hil.ideal import IdealSubstrate
from hil.runs import Run
from hil.substrate import Free
from hil.tasks import teacher_task
from hil.train import TrainConfig, start_run

warnings.filterwarnings("ignore", category=FutureWarning)

V_LIM, I_LIM = 2.0, 0.02  # what `hil emulate`'s bench file sets for every SMU
READING_ATOL = 2e-6  # V: the emulated instruments read at 6.5 digits of their range (1 uV on 2 V)


def safe(st) -> bool:
    """An SMU state that cannot put more than the limits on the circuit."""
    if not st["output"]:
        return True
    func = st["func"]
    lim = V_LIM if func == "VOLT" else I_LIM
    levels = st["lists"][func] if st["mode"][func] == "LIST" else [st["volt"] if func == "VOLT" else st["curr"]]
    compliance_ok = st["i_prot"] <= I_LIM if func == "VOLT" else st["v_prot"] <= V_LIM
    return all(abs(v) <= lim for v in levels) and compliance_ok


def since(inst, t0):
    return [(t, line, st) for t, line, st in list(inst.state_log) if t >= t0]


def script(emu, name, lines):
    """What an earlier script left behind: raw SCPI lines to one instrument, as anyone could send."""
    with socket.create_connection(("127.0.0.1", emu.servers[name][1]), timeout=5) as s:
        f = s.makefile("rw", newline="\n")
        for line in lines:
            f.write(line + "\n")
        f.write("*OPC?\n")
        f.flush()
        assert f.readline().strip() == "1"


def test_a_run_starts_from_the_circuit_file_and_from_board_is_explicit(tmp_path, emulated):
    """Issue 12, item 1: a second run started where the first ended; now every run writes the file's g first."""
    from hil.bench.substrate import BenchSubstrate
    c = load_circuit("net16")
    task = teacher_task(c, seed=1, examples=4)
    emu, path = emulated(IdealSubstrate(c))
    cfg = dict(rule="cl", steps=6, backend="bench")
    with BenchSubstrate(c, path) as bench:
        first = start_run(c, task, TrainConfig(**cfg), tmp_path / "one", progress=False, substrate=bench)
    left = emu.model.g.copy()
    assert not np.allclose(left, c.g)  # the first run moved the board

    t0 = time.monotonic()
    with BenchSubstrate(c, path) as bench:
        second = start_run(c, task, TrainConfig(**cfg), tmp_path / "two", progress=False, substrate=bench)
    assert second["initial_loss"] == pytest.approx(first["initial_loss"], rel=1e-9)
    # as read back: the emulated board replies with 16 significant digits
    np.testing.assert_allclose(np.load(tmp_path / "two/checkpoints/step_000000.npz")["g"], c.g, rtol=1e-15)
    # the board held the file's conductances before the first reading of the run
    written = [t for t, _, st in since(emu.instruments["board"], t0) if np.array_equal(st["g"], c.g)]
    first_read = min(t for t, line, _ in since(emu.instruments["smu_n6"], t0) if "READ?" in line or ":INIT" in line)
    assert written and written[0] < first_read

    board_now = emu.model.g.copy()
    with BenchSubstrate(c, path, from_board=True) as bench:
        third = start_run(c, task, TrainConfig(**cfg), tmp_path / "three", progress=False, substrate=bench)
    np.testing.assert_allclose(np.load(tmp_path / "three/checkpoints/step_000000.npz")["g"], board_now, rtol=1e-15)
    np.testing.assert_allclose(load_circuit(tmp_path / "three/circuit.toml").g, board_now, rtol=1e-15)  # recorded as it was
    assert third["initial_loss"] == pytest.approx(second["final_loss"], rel=1e-9)


def test_from_board_refuses_a_board_outside_the_limits(emulated):
    from hil.bench.substrate import BenchError, BenchSubstrate
    c = load_circuit("bridge")
    emu, path = emulated(IdealSubstrate(c))
    cfg = bench_of(path)
    cfg["board"] = {**cfg["board"], "g_max": 2e-3}
    g = c.g.copy()
    g[2] = 5e-3
    emu.model.set_g(g)
    with pytest.raises(BenchError, match=r"--from-board: .*edge 3 conductance 0.005 S is outside the allowed"):
        BenchSubstrate(c, cfg, from_board=True)


def test_instruments_are_made_safe_on_connect_and_old_errors_cleared(emulated):
    """Items 2 and 3: an SMU left at 150 V with its output on, errors left in queues by an earlier script."""
    from hil.bench.substrate import BenchSubstrate
    c = load_circuit("net16")
    emu, path = emulated(IdealSubstrate(c))
    script(emu, "smu_n1", [":SOUR:FUNC VOLT;:SOUR:VOLT 150;:SENS:CURR:PROT 0.5;:OUTP ON",
                           ":SOUR:VOLT:MODE STAIR"])  # a -224 left in the queue (no such source mode)
    script(emu, "board", ["EDGE:COND 99,1e-3"])       # a -222
    assert not safe(emu.instruments["smu_n1"].applied())
    t0 = time.monotonic()
    X = np.random.default_rng(0).uniform(-1, 1, (3, 2))
    with BenchSubstrate(c, path) as bench:
        got = bench.measure(X, np.zeros((3, 2)), [Free()])[Free()]
        notes = "\n".join(line for _, line in bench.diagnostics())
    np.testing.assert_allclose(got, IdealSubstrate(c).measure(X, np.zeros((3, 2)), [Free()])[Free()], rtol=0, atol=READING_ATOL)
    log = since(emu.instruments["smu_n1"], t0)
    assert log[0][1] == ":OUTP OFF" and not log[0][2]["output"]  # hil's first word to it
    for name, inst in emu.instruments.items():
        if name.startswith("smu_"):
            bad = [(line, st) for _, line, st in since(inst, t0) if not safe(st)]
            assert not bad, f"{name} applied an unsafe state: {bad[0]}"
            assert not inst.state["output"]  # left off when the bench closed
    assert "SMU on node n1: error queued before connecting, cleared: -224" in notes
    assert "resistor board: error queued before connecting, cleared: -222" in notes


def test_a_restarted_instrument_is_made_safe_and_reconfigured(emulated):
    """Item 2 (after a reconnect) and item 4: instruments restart with defaults, output off; the run goes on."""
    from hil.bench.substrate import BenchSubstrate
    c = load_circuit("net16")
    emu, path = emulated(IdealSubstrate(c))
    X = np.random.default_rng(1).uniform(-1, 1, (4, 2))
    Y = np.zeros((4, 2))
    ref = IdealSubstrate(c).measure(X, Y, [Free()])[Free()]
    with BenchSubstrate(c, bench_of(path, timeout_ms=300, retries=3)) as bench:
        np.testing.assert_allclose(bench.measure(X, Y, [Free()])[Free()], ref, rtol=0, atol=READING_ATOL)
        t0 = time.monotonic()
        for name in ("smu_n1", "smu_n6", "board"):  # a restart: defaults, and the link is gone
            inst = emu.instruments[name]
            inst.reset()
            inst.faults.drop = 1
        assert not np.allclose(emu.model.g, c.g)  # the board's *RST moved every edge
        np.testing.assert_allclose(bench.measure(X, Y, [Free()])[Free()], ref, rtol=0, atol=READING_ATOL)
        np.testing.assert_allclose(emu.model.g, c.g, rtol=1e-15)  # restored after the reconnect
        for name in ("smu_n1", "smu_n6"):
            log = since(emu.instruments[name], t0)
            assert all(safe(st) for _, _, st in log)
            assert any(line == ":OUTP OFF" for _, line, _ in log)  # made safe again after the reconnect


def test_retries_are_bounded_in_time_and_name_the_instrument(emulated):
    """Item 4: a million retries configured, the instrument gone for good: the run stops within retry_seconds."""
    from hil.bench.substrate import BenchError, BenchSubstrate
    c = load_circuit("net16")
    emu, path = emulated(IdealSubstrate(c))
    X = np.zeros((2, 2))
    with BenchSubstrate(c, bench_of(path, timeout_ms=300, retries=10 ** 6, retry_seconds=1.5)) as bench:
        srv, port = emu.servers.pop("smu_n6")
        srv.shutdown()
        srv.server_close()
        emu.instruments["smu_n6"].faults.drop = 10 ** 6  # the open connection dies too
        t0 = time.monotonic()
        with pytest.raises(BenchError, match=rf"SMU on node n6 at TCPIP::127.0.0.1::{port}::SOCKET: "
                                             r".* failed after \d+ tries \((1\.[5-9]|[2-9]\.\d) s\)"):
            bench.measure(X, X, [Free()])
        assert time.monotonic() - t0 < 15  # it ended: 1.5 s of retries plus one timeout per instrument


def test_garbage_on_the_read_back_is_retried_then_named(emulated):
    """Item 5: one garbage reply to the board's read-back is retried; garbage for good names the board."""
    from hil.bench.substrate import BenchError, BenchSubstrate
    c = load_circuit("net16")
    emu, path = emulated(IdealSubstrate(c))
    g = c.g * 1.5
    with BenchSubstrate(c, bench_of(path, timeout_ms=300)) as bench:
        emu.instruments["board"].faults.garbage = 1
        np.testing.assert_allclose(bench.write(g), g, rtol=1e-15)  # the reply's 16 digits
        emu.instruments["board"].faults.garbage = 10 ** 6
        # the first query of a write asks which values the board will hold (EDGE:NEAR?), then the read-back
        with pytest.raises(BenchError, match=r"resistor board at TCPIP::127.0.0.1::\d+::SOCKET: nearest values failed "
                                             r"after 3 tries .*ReplyError: resistor board: reply '\\x07#\?garbage\?#' "
                                             r"is not a list of numbers"):
            bench.write(c.g)


def test_nothing_listening_is_a_clear_error(tmp_path):
    from hil.bench.substrate import BenchError, BenchSubstrate
    with socket.socket() as s:  # a port that was free a moment ago
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = tmp_path / "b.toml"
    p.write_text(f'retries = 1\n[board]\nresource = "TCPIP::127.0.0.1::{port}::SOCKET"\n'
                 f'[[smu]]\nnode = "vin"\nresource = "TCPIP::127.0.0.1::{port + 1}::SOCKET"\n'
                 f'[[smu]]\nnode = "out"\nresource = "TCPIP::127.0.0.1::{port + 2}::SOCKET"\n')
    with pytest.raises(BenchError, match=rf"resistor board at TCPIP::127.0.0.1::{port}::SOCKET: cannot connect "
                                         r"\(2 tries"):
        BenchSubstrate(load_circuit("divider"), p)


BASE = ('[board]\nresource = "TCPIP::127.0.0.1::5025::SOCKET"\n'
        '[[smu]]\nnode = "vin"\nresource = "TCPIP::127.0.0.1::5026::SOCKET"\n')


@pytest.mark.parametrize("top, tail, message", [
    ("", 'voltage_limt = 2.0\n', r"\[\[smu\]\] #1: unknown key 'voltage_limt' \(did you mean 'voltage_limit'\?"),
    ("retrys = 3\n", "", r"\(top level\): unknown key 'retrys' \(did you mean 'retries'\?"),
    ("voltage_limt = 5\n", "", r"\(top level\): unknown key 'voltage_limt' \(did you mean 'voltage_limit' in \[\[smu\]\]\?"),
    ("settle = -1\n", "", r"\(top level\) settle = -1 must be a number >= 0"),
    ("retries = -1\n", "", r"\(top level\) retries = -1 must be a whole number >= 0"),
    ("retries = 1.5\n", "", r"\(top level\) retries = 1.5 must be a whole number"),
    ("timeout_ms = 0\n", "", r"\(top level\) timeout_ms = 0 must be a whole number >= 1"),
    ("sweep_points = 101\n", "", r"\(top level\) sweep_points = 101 must be a whole number >= 1 and <= 100"),
    ("retry_seconds = nan\n", "", r"\(top level\) retry_seconds = nan must be a number > 0"),
    ("", 'current_limit = 5.0\n', r"\[\[smu\]\] #1 current_limit = 5.0 must be a number > 0 and <= 1.05"),
    ("", '[scanner]\nresource = "TCPIP::127.0.0.1::5027::SOCKET"\nchanels = {}\n',
     r"\[scanner\]: unknown key 'chanels' \(did you mean 'channels'\?"),
    ("", '[scanner]\nresource = "TCPIP::127.0.0.1::5027::SOCKET"\n[scanner.channels]\nn3 = 99\n',
     r"\[scanner.channels\] n3 = 99: a 7700 channel is a whole number 101 to 120"),
    ("", '[scanner]\nresource = "TCPIP::127.0.0.1::5027::SOCKET"\n[scanner.channels]\nn3 = 101\nn4 = 101\n',
     r"\[scanner.channels\]: channel 101 is given to n3 and n4"),
    ("", '[[smu]]\nnode = "out"\nresource = "TCPIP::127.0.0.1::5026::SOCKET"\n',
     r"resource TCPIP::127.0.0.1::5026::SOCKET is given to two instruments"),
])
def test_bench_file_keys_and_values_are_checked(tmp_path, top, tail, message):
    """Item 6: a typo is an error naming the key and the closest known one; meaningless values are refused."""
    from hil.bench.substrate import BenchError, load_bench
    p = tmp_path / "b.toml"
    p.write_text(top + BASE + tail)
    with pytest.raises(BenchError, match=rf"^{tmp_path}/b.toml: " + message):
        load_bench(p)


def _emulate(*args, cwd=None):
    import json
    import subprocess
    p = subprocess.Popen(HIL + ["emulate", *map(str, args), "--json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd or Path.home())
    line, deadline = "", time.time() + 60
    while not line.startswith("{") and time.time() < deadline and p.poll() is None:
        line = p.stdout.readline()
    return p, (json.loads(line) if line.startswith("{") else None)


def test_hil_emulate_injects_faults_from_the_command_line(tmp_path):
    """Item 7: the fault injection of docs/bench.md, on the command line; hil's bench rides through each fault."""
    from hil.bench.substrate import BenchSubstrate
    bench_file = tmp_path / "bench.toml"
    emu, info = _emulate("net16", "--bench-file", bench_file, "--fault", "smu_n6:garbage=2",
                         "--fault", "board:error=-315", "--fault", "scanner:delay=0.6x1", "--fault", "smu_n7:drop=1")
    try:
        assert info["faults"] == ["smu_n6:garbage=2", "board:error=-315", "scanner:delay=0.6x1", "smu_n7:drop=1"]
        c = load_circuit("net16")
        X = np.random.default_rng(3).uniform(-1, 1, (3, 2))
        with BenchSubstrate(c, bench_of(bench_file, timeout_ms=300)) as bench:
            got = bench.measure(X, np.zeros((3, 2)), [Free()])[Free()]
            notes = "\n".join(line for _, line in bench.diagnostics())
        np.testing.assert_allclose(got, IdealSubstrate(c).measure(X, np.zeros((3, 2)), [Free()])[Free()], rtol=0, atol=READING_ATOL)
        assert "resistor board: error queued before connecting, cleared: -315" in notes
    finally:
        emu.terminate()
        emu.wait(timeout=30)


@pytest.mark.parametrize("args, message", [
    (["--fault", "smu_x:garbage=1"], "--fault 'smu_x:garbage=1': no instrument 'smu_x' (instruments: board, smu_n1"),
    (["--fault", "board:garbage=-2"], "--fault 'board:garbage=-2': garbage takes a count >= 1"),
    (["--fault", "board:delay=nanx2"], "delay takes seconds in (0, 3600]"),
    (["--fault", "board=1"], "expected INSTRUMENT:KIND=VALUE"),
    (["--port", "70000"], "--port 70000: the 6 instruments need ports 70000..70005, within 1024..65535"),
])
def test_hil_emulate_refuses_bad_options(tmp_path, args, message):
    emu, info = _emulate("net16", "--bench-file", tmp_path / "b.toml", *args)
    err = emu.stderr.read()
    assert emu.wait(timeout=60) == 2 and info is None
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "b.toml").exists()


def test_hil_emulate_port_in_use_and_files_it_must_not_touch(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        emu, info = _emulate("divider", "--bench-file", tmp_path / "b.toml", "--port", port)
        err = emu.stderr.read()
        assert emu.wait(timeout=60) == 2 and f"--port {port}: cannot listen: Address already in use" in err
    mine = tmp_path / "notes.toml"
    mine.write_text("my notes\n")
    emu, info = _emulate("divider", "--bench-file", mine)
    err = emu.stderr.read()
    assert emu.wait(timeout=60) == 2 and "exists and was not written by hil; refusing to overwrite it" in err
    assert mine.read_text() == "my notes\n"
    circuit = tmp_path / "d.toml"
    circuit.write_text(load_circuit("divider").to_toml())
    emu, info = _emulate(circuit, "--bench-file", circuit)
    assert emu.wait(timeout=60) == 2 and "is an input of this command" in emu.stderr.read()
    assert load_circuit(circuit).name == "divider"


def test_swapped_scanner_channels_or_smus_are_caught_at_the_start(tmp_path, emulated):
    """A read-back of every node against the circuit at the board's conductances catches a wiring swap."""
    from hil.bench.substrate import BenchError, BenchSubstrate
    c = load_circuit("net16")
    emu, path = emulated(IdealSubstrate(c))
    cfg = bench_of(path)
    chans = dict(cfg["scanner"]["channels"])
    a, b = list(chans)[:2]
    chans[a], chans[b] = chans[b], chans[a]
    with pytest.raises(BenchError, match=rf"wiring check failed .*node {a} \(scanner channel {chans[a]}\) reads .* "
                                         rf"node {b} \(scanner channel {chans[b]}\)"):
        BenchSubstrate(c, {**cfg, "scanner": {**cfg["scanner"], "channels": chans}})
    smus = [dict(s) for s in cfg["smu"]]
    smus[0]["resource"], smus[1]["resource"] = smus[1]["resource"], smus[0]["resource"]  # the two inputs
    # each input SMU reads back what it sources; the nodes beyond see the inputs exchanged. The check's
    # two patterns (1 V scale: half the 2 V limit): inputs (1/3, 2/3) and (2/3, -1/3)
    from hil.exact import free_state
    X = np.array([[1 / 3, 2 / 3], [2 / 3, -1 / 3]])
    n3 = c.node("n3")
    fmt = lambda v: ", ".join(f"{x:.4g}" for x in v)
    got, want = free_state(c, X[:, ::-1])[:, n3], free_state(c, X)[:, n3]
    with pytest.raises(BenchError, match=r"wiring check failed \(swapped channels or SMU resources\?\): node n3 "
                                         rf"\(scanner channel 101\) reads {fmt(got)} V where the circuit at the "
                                         rf"board's conductances gives {fmt(want)} V"):
        BenchSubstrate(c, {**cfg, "smu": smus})
    assert not any(inst.state["output"] for name, inst in emu.instruments.items() if name.startswith("smu_"))  # left safe


def test_a_bench_run_resumes_on_a_restarted_bench_named_by_bench(tmp_path, emulated):
    """Item 11: --bench may change on resume (a restarted emulator has new ports); the change is recorded."""
    import json
    from hil.bench.substrate import BenchError
    from hil.train import resume_run
    c = load_circuit("net16")
    task = teacher_task(c, seed=1, examples=4)
    cfg = dict(rule="cl", steps=8, checkpoint_every=2)
    start_run(c, task, TrainConfig(**cfg), tmp_path / "ideal", progress=False)
    emu, path = emulated(IdealSubstrate(c))
    start_run(c, task, TrainConfig(**{**cfg, "steps": 4}, backend="bench", backend_options={"bench": str(path)}),
              tmp_path / "bench", progress=False)
    emu.stop()
    with pytest.raises(BenchError, match="cannot connect"):
        resume_run(tmp_path / "bench", steps=8, progress=False)
    emu2, path2 = emulated(IdealSubstrate(c))
    resume_run(tmp_path / "bench", steps=8, progress=False, changes={"bench": str(path2)})
    np.testing.assert_allclose(Run(tmp_path / "bench").read_log()["train_loss"],
                               Run(tmp_path / "ideal").read_log()["train_loss"], rtol=2e-4)
    changes = json.loads((tmp_path / "bench" / "config.json").read_text())["changes"]
    assert {"option": "bench", "from": str(path), "to": str(path2), "at_step": 4} in changes
