"""The resistor board's firmware (firmware/): the AVR image builds and fits, and the protocol
core speaks drivers/resistor-board.md over a real serial stack (a pseudo-terminal, pyserial,
pyvisa-py ASRL resources), exchange for exchange like the emulator's board and the driver."""

import math
import os
import re
import shutil
import subprocess
import threading
import time
import tomllib
import warnings
from pathlib import Path

import numpy as np
import pytest

from helpers import HIL, run_hil
from hil.circuit import load_circuit
from hil.ideal import IdealSubstrate
from hil.runs import Run
from hil.tasks import teacher_task
from hil.train import TrainConfig, start_run

warnings.filterwarnings("ignore", category=FutureWarning)

FIRMWARE = Path(__file__).resolve().parent.parent / "firmware"
TABLE = tomllib.loads((FIRMWARE / "conformance.toml").read_text())


def unavailable(what: str):
    """In CI a missing tool fails the test; elsewhere it skips, saying why."""
    if os.environ.get("CI"):
        pytest.fail(f"{what} is required in CI (.ci/setup installs it)")
    pytest.skip(f"{what} is not installed here")


def make(*args):
    return subprocess.run(["make", "-C", str(FIRMWARE), *map(str, args)], capture_output=True, text=True, timeout=300)


def digipot(circuit):
    from hil.spice.devices import Digipot
    from hil.spice.nonideal import NonIdeal
    return Digipot(circuit, NonIdeal())


@pytest.fixture(scope="module")
def host_firmware(tmp_path_factory):
    if not (shutil.which("make") and shutil.which("cc")):
        unavailable("make and a C compiler")
    build = tmp_path_factory.mktemp("firmware-host")
    r = make("host", f"BUILD={build}")
    assert r.returncode == 0, r.stdout + r.stderr
    return build / "board-host"


# -- the AVR image ------------------------------------------------------------------------


@pytest.mark.parametrize("edges", [16, 30])
def test_the_avr_image_builds_without_warnings_and_fits_the_atmega328p(tmp_path, edges):
    if not shutil.which("avr-gcc"):
        unavailable("avr-gcc (apt-get install gcc-avr avr-libc)")
    r = make("avr", f"BUILD={tmp_path}", f"EDGES={edges}")
    assert r.returncode == 0, r.stdout + r.stderr  # -Werror: any warning fails the build
    m = re.search(r"flash (\d+) of (\d+) bytes .*RAM (\d+) of (\d+) bytes", r.stdout)
    flash, flash_max, ram, ram_max = map(int, m.groups())
    assert (flash_max, ram_max) == (32 * 1024 - 512, 2 * 1024)  # less the Optiboot bootloader
    assert flash <= flash_max and ram + 256 <= ram_max
    text, data, bss = map(int, subprocess.run(["avr-size", str(tmp_path / "board.elf")], capture_output=True,
                                              text=True).stdout.splitlines()[1].split()[:3])
    assert (flash, ram) == (text + data, data + bss)  # the report is avr-size's numbers
    assert (tmp_path / "board.hex").read_text().startswith(":")


def test_a_warning_fails_the_avr_build(tmp_path):
    if not shutil.which("avr-gcc"):
        unavailable("avr-gcc (apt-get install gcc-avr avr-libc)")
    copy = tmp_path / "firmware"
    shutil.copytree(FIRMWARE, copy, ignore=shutil.ignore_patterns("build"))
    main = copy / "avr" / "main.c"
    main.write_text(main.read_text() + "\nstatic int unused_helper(void) { return 1; }\n")
    r = subprocess.run(["make", "-C", str(copy), "avr", f"BUILD={tmp_path / 'b'}"], capture_output=True, text=True)
    assert r.returncode != 0 and "unused_helper" in r.stderr and "-Werror" in r.stderr


def test_the_image_uses_the_tap_model_of_netlists():
    pins = (FIRMWARE / "avr" / "pins.h").read_text()
    spec = tomllib.loads((Path(__file__).resolve().parent.parent / "netlists" / "digipot.toml").read_text())

    def define(name):
        return float(re.search(rf"#define {name}\s+([\d.]+)", pins).group(1))

    assert (define("POT_TAPS"), define("POT_R_AB"), define("POT_R_W")) == (spec["taps"], spec["r_ab"], spec["r_wiper"])
    from hil.emulator.firmware import pin_map
    pm = pin_map(FIRMWARE / "avr" / "pins.h")
    assert len(pm) == 30 and len(set(pm)) == 30  # every edge its own (chip select, wiper)
    assert {pin for pin, _ in pm}.isdisjoint({0, 1, 11, 12, 13})  # UART and SPI pins stay free


# -- the conformance table -------------------------------------------------------------


def _env(device):
    tap = lambda c: float(device.g_from_param(float(c)))  # noqa: E731
    near = lambda g: float(device.g_from_param(device.param_from_g(g)))  # noqa: E731
    return {"tap": tap, "near": near, "mid": near(math.sqrt(tap(device.taps) * tap(0))), "sqrt": math.sqrt}


def _expect(expr_line, env):
    return [eval(x, {"__builtins__": {}}, env) for x in expr_line.split(",")]


def _open(resource):
    import pyvisa
    rm = pyvisa.ResourceManager("@py")
    return rm.open_resource(resource, baud_rate=115200, read_termination="\n", write_termination="\n", timeout=3000)


def run_table(resource, env, who):
    """Every exchange of the table on the board at ``resource``; returns each exchange's reply lines."""
    res = _open(resource)
    got = []
    try:
        for row in TABLE["exchange"]:
            where = f"{who}: {row['send']!r}"
            res.write(row["send"])
            lines = [res.read() for _ in range(len(row["reply"]) if "reply" in row else 1 if "match" in row else 0)]
            for line, expected in zip(lines, row.get("reply", [])):
                np.testing.assert_allclose([float(v) for v in line.split(",")], _expect(expected, env), rtol=1e-6,
                                           err_msg=where)
            if "match" in row:
                assert re.match(row["match"], lines[0]), f"{where} replied {lines[0]!r}"
            errors = []
            while len(errors) <= 12:
                code = int(res.query("SYST:ERR?").split(",")[0])
                if code == 0:
                    break
                errors.append(code)
            assert errors == row.get("errors", [row["error"]] if "error" in row else []), where
            got.append(lines)
    finally:
        res.close()
    return got


def check_driver(replies, env, who):
    """The driver against the table, fed the replies an implementation really gave."""
    from pymeasure.test import expected_protocol

    from hil.drivers.instruments import LimitError, ResistorBoard
    rows = TABLE["exchange"]
    first = {row["send"]: lines for row, lines in zip(rows, replies)}
    checked = 0
    for row, lines in zip(rows, replies):
        if "driver" not in row and "call" not in row:
            continue
        pairs = [(b"EDGE:RANG?", first["EDGE:RANG?"][0].encode())]
        if row.get("call") == "set_edge":
            pairs.append((b"EDGE:COUN?", first["EDGE:COUN?"][0].encode()))
        if not row.get("refuses"):
            pairs.append((row.get("sends", row["send"]).encode(), lines[0].encode() if lines else None))
        with expected_protocol(ResistorBoard, pairs, g_min=0.0, g_max=1.0) as board:
            if "driver" in row:
                value = getattr(board, row["driver"])
            elif row.get("refuses"):
                with pytest.raises(LimitError, match="is outside the allowed"):
                    getattr(board, row["call"])(*row["args"])
            else:
                value = getattr(board, row["call"])(*row["args"])
        if "value" in row:
            np.testing.assert_allclose(np.ravel(value).astype(float), [_expect(v, env)[0] for v in row["value"]],
                                       rtol=1e-6, err_msg=f"{who}: driver {row.get('driver') or row['call']}")
        checked += 1
    assert checked >= 12


def test_the_conformance_table_on_the_firmware_core_the_emulator_and_the_driver(host_firmware):
    from hil.emulator.bench import build
    from hil.emulator.firmware import FirmwareBoard
    c = load_circuit("divider")
    assert c.m == TABLE["edges"]
    dev = digipot(c)
    env = _env(dev)
    with FirmwareBoard.host(host_firmware, dev, c.m) as fw:
        firmware = run_table(fw.resource, env, "firmware core")
    emu = build(IdealSubstrate(c), board_device=dev).serve_serial()
    try:
        emulator = run_table(emu.resource("board", serial=True), env, "emulator")
    finally:
        emu.stop()
    check_driver(firmware, env, "firmware core")
    check_driver(emulator, env, "emulator")


def test_the_conformance_table_on_the_avr_image_in_simavr(tmp_path):
    from hil.emulator.firmware import FirmwareBoard
    if not shutil.which("avr-gcc"):
        unavailable("avr-gcc (apt-get install gcc-avr avr-libc)")
    if not Path("/usr/include/simavr/parts/uart_pty.h").exists():
        unavailable("simavr's library and parts (apt-get install libsimavr-dev libsimavrparts1)")
    r = make("avr", "sim", f"BUILD={tmp_path}", f"EDGES={TABLE['edges']}")
    assert r.returncode == 0, r.stdout + r.stderr
    c = load_circuit("divider")
    dev = digipot(c)
    env = _env(dev)
    with FirmwareBoard.simavr(tmp_path / "board-sim", tmp_path / "board.elf", FIRMWARE / "avr" / "pins.h",
                              dev, c.m) as fw:
        # the power-on writes went out on the SPI bus: both pots at the middle tap, 3
        assert fw.codes.tolist() == [dev.param_from_g(env["mid"])] * 2
        image = run_table(fw.resource, env, "AVR image")
        np.testing.assert_allclose(fw.conductances(), [env["mid"]] * 2)  # *RST at the end of the table
    check_driver(image, env, "AVR image")


# -- training through the firmware -------------------------------------------------------


TRAIN = dict(rule="cl", steps=10, seed=4)


@pytest.fixture(scope="module")
def emulated_digipot_run(tmp_path_factory):
    """Losses of a run on the all-emulated bench whose board holds the digipot's taps, from its *RST state."""
    from hil.bench.substrate import BenchSubstrate
    from hil.emulator.bench import build
    c = load_circuit("net16")
    out = tmp_path_factory.mktemp("emulated")
    emu = build(IdealSubstrate(c), board_device=digipot(c)).start()
    emu.instruments["board"].reset()  # the firmware starts there too (power-on)
    try:
        (out / "emu.toml").write_text(emu.bench_toml(c.source))
        with BenchSubstrate(c, out / "emu.toml", from_board=True) as bench:  # from power-on
            start_run(c, teacher_task(c, seed=1, examples=5), TrainConfig(**TRAIN, backend="bench"), out / "run",
                      progress=False, substrate=bench)
    finally:
        emu.stop()
    return Run(out / "run").read_log()["train_loss"]


@pytest.mark.parametrize("kind", ["host", "sim"])
def test_training_with_the_firmware_board_over_a_pty_matches_the_emulated_bench(tmp_path, kind, host_firmware,
                                                                                emulated_digipot_run):
    """The firmware as the board (pyvisa-py ASRL over its pty: the host-built core, or the AVR image
    on simavr); the emulator's SMUs and scanner measure the circuit with what its pots hold."""
    from hil.bench.substrate import BenchSubstrate
    from hil.emulator.bench import build
    from hil.emulator.firmware import FirmwareBoard
    c = load_circuit("net16")
    dev = digipot(c)
    if kind == "host":
        fw = FirmwareBoard.host(host_firmware, dev, c.m)
    else:
        if not shutil.which("avr-gcc"):
            unavailable("avr-gcc (apt-get install gcc-avr avr-libc)")
        if not Path("/usr/include/simavr/parts/uart_pty.h").exists():
            unavailable("simavr's library and parts (apt-get install libsimavr-dev libsimavrparts1)")
        r = make("avr", "sim", f"BUILD={tmp_path / 'build'}", f"EDGES={c.m}")
        assert r.returncode == 0, r.stdout + r.stderr
        fw = FirmwareBoard.simavr(tmp_path / "build" / "board-sim", tmp_path / "build" / "board.elf",
                                  FIRMWARE / "avr" / "pins.h", dev, c.m)
    with fw:
        emu = build(IdealSubstrate(c), board=False).start()
        emu.external["board"] = fw.resource
        fw.attach(emu.model)
        try:
            (tmp_path / "fw.toml").write_text(emu.bench_toml(c.source))
            with BenchSubstrate(c, tmp_path / "fw.toml", from_board=True) as bench:
                assert bench.board.id.startswith("hil,ResistorBoard-")
                start_run(c, teacher_task(c, seed=1, examples=5), TrainConfig(**TRAIN, backend="bench"),
                          tmp_path / "fw", progress=False, substrate=bench)
                g = bench.read()
                np.testing.assert_allclose(g, fw.conductances(), rtol=1e-6)  # read back = what the pots hold
        finally:
            emu.stop()
    a, b = emulated_digipot_run, Run(tmp_path / "fw").read_log()["train_loss"]
    assert b[-1] < 0.01 * b[0]
    np.testing.assert_allclose(b, a, rtol=1e-5)
    # every conductance the run ended with is a tap: g = 1 / (R_W + code R_AB / N), code whole
    codes = (1 / g - dev.r_w) * dev.taps / dev.r_ab
    np.testing.assert_allclose(codes, np.round(codes), atol=1e-3)


# -- the reset wait of a serial board ----------------------------------------------------


def test_the_reset_wait_defaults_to_two_seconds_on_serial_boards_and_drops_the_boot_chatter(tmp_path):
    from hil.bench.substrate import BenchError, BenchSubstrate, load_bench
    from hil.emulator.bench import build
    c = load_circuit("divider")
    emu = build(IdealSubstrate(c)).serve_serial()
    try:
        text = emu.bench_toml(c.source, serial=True)
        assert text.count("ASRL/dev/") == len(emu.instruments) and text.count("reset_wait = 0.0") == 1
        path = tmp_path / "bench.toml"
        path.write_text(text.replace("reset_wait = 0.0", "reset_wait = 0.6", 1))
        pty = emu.ptys["board"]
        # a bootloader's chatter 0.2 s after the port opens, while the board "resets"
        chatter = threading.Timer(0.2, lambda: os.write(pty.master, b"\x00\xfeboot\n"))
        chatter.start()
        t0 = time.monotonic()
        with BenchSubstrate(c, path) as bench:
            waited = time.monotonic() - t0
            assert bench.board.reset_wait == 0.6 and waited >= 0.6
            assert bench.board.edge_count == 2
        chatter.join()
        # no reset_wait in the file: 2 s for a serial board
        cfg = load_bench(path)
        cfg["board"].pop("reset_wait")
        t0 = time.monotonic()
        with BenchSubstrate(c, cfg) as bench:
            assert bench.board.reset_wait == 2.0 and time.monotonic() - t0 >= 2.0
        path.write_text(text.replace("reset_wait = 0.0", "reset_wait = -1", 1))
        with pytest.raises(BenchError, match=r"bench.toml: \[board\] reset_wait = -1 must be a number in \[0.0, 60.0\]"):
            load_bench(path)
    finally:
        emu.stop()


# -- hil emulate --serial ----------------------------------------------------------------------


def test_hil_emulate_serial_serves_every_instrument_on_a_pty_and_a_run_trains_through_them(tmp_path):
    import json
    bench_file = tmp_path / "bench.toml"
    emu = subprocess.Popen(HIL + ["emulate", "bridge", "--serial", "--bench-file", str(bench_file), "--json"],
                           stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        line = ""
        deadline = time.time() + 60
        while not line.startswith("{") and time.time() < deadline:
            line = emu.stdout.readline()
        info = json.loads(line)
        assert set(info["serial"]) == set(info["resources"])
        assert all(re.fullmatch(r"ASRL/dev/pts/\d+::INSTR", r) for r in info["serial"].values())
        assert all(r.startswith("TCPIP::127.0.0.1::") for r in info["resources"].values())
        text = bench_file.read_text()
        assert all(r in text for r in info["serial"].values()) and "TCPIP" not in text
        p = run_hil("train", "bridge", "--teacher", "1", "--rule", "cl", "--steps", "5", "--backend", "bench",
                    "--bench", bench_file, "--out", tmp_path / "run", "--json", cwd=tmp_path)
        assert p.returncode == 0, p.stderr
        r = json.loads(p.stdout.strip().splitlines()[-1])
        c = load_circuit("bridge")
        start_run(c, teacher_task(c, seed=1), TrainConfig(rule="cl", steps=5), tmp_path / "ideal", progress=False)
        assert r["steps"] == 5 and r["final_loss"] < r["initial_loss"]
        # the same run on the ideal substrate, in this process (to the instruments' 6.5 digits, carried through 5 steps)
        np.testing.assert_allclose(Run(tmp_path / "ideal").read_log()["train_loss"][-1], r["final_loss"], rtol=2e-4)
    finally:
        emu.terminate()
        emu.wait(timeout=30)


# -- the firmware's own limits and the serial link's faults ----------------------------------


def test_the_host_firmware_refuses_bad_options_and_overlong_lines(host_firmware):
    for args, message in [(["--edges", "0"], "--edges 0: expected a number in [1, 30]"),
                          (["--edges", "2.5"], "--edges takes a whole number"),
                          (["--r-ab", "-5"], "--r-ab -5: expected a number"),
                          (["--taps"], "--taps needs a value"),
                          (["--baud", "9600"], "unknown option '--baud'")]:
        r = subprocess.run([host_firmware, *args], input="", capture_output=True, text=True, timeout=10)
        assert r.returncode == 2 and message in r.stderr, (args, r.stderr)
    # a line longer than the buffer (40 + 24 m characters, m = 2 here: 88) is dropped whole: -363
    r = subprocess.run([host_firmware, "--edges", "2"], capture_output=True, text=True, timeout=10,
                       input="EDGE:ALL " + ",".join(["0.001"] * 20) + "\nSYST:ERR?\nEDGE:ALL?\nSYST:ERR?\n")
    lines = r.stdout.splitlines()
    assert lines[0] == '-363,"Input buffer overrun"' and lines[2] == '0,"No error"'
    mid = _env(digipot(load_circuit("divider")))["mid"]
    np.testing.assert_allclose([float(v) for v in lines[1].split(",")], [mid, mid], rtol=1e-6)  # unchanged


def test_a_garbled_or_lost_reply_on_the_serial_line_is_retried_after_a_reconnect(tmp_path):
    from hil.bench.substrate import BenchSubstrate
    from hil.emulator.bench import build
    c = load_circuit("divider")
    emu = build(IdealSubstrate(c)).serve_serial()
    try:
        path = tmp_path / "bench.toml"
        text = emu.bench_toml(c.source, serial=True).replace("reset_wait = 0.0", "reset_wait = 0.05")
        path.write_text("timeout_ms = 300\n" + text)  # a lost reply costs one timeout
        board = emu.instruments["board"]
        with BenchSubstrate(c, path) as bench:
            opened = []
            orig = bench.board.after_open
            bench.board.after_open = lambda: (opened.append(1), orig())
            board.faults.garbage, board.faults.drop = 1, 1
            g = np.array([2e-3, 5e-4])
            np.testing.assert_allclose(bench.write(g), g, rtol=1e-12)
            np.testing.assert_allclose(emu.model.g, g, rtol=1e-12)
            assert board.faults.garbage == board.faults.drop == 0 and len(opened) == 2  # two reconnects, each waited
    finally:
        emu.stop()


def test_hil_emulate_with_the_firmware_as_its_board(tmp_path, host_firmware):
    import json
    from hil.bench.substrate import BenchSubstrate
    from hil.emulator.bench import build
    r = run_hil("emulate", "bridge", "--firmware", tmp_path / "nowhere", cwd=tmp_path)
    assert r.returncode == 2 and "--firmware" in r.stderr and "make -C firmware host" in r.stderr
    bench_file = tmp_path / "bench.toml"
    emu = subprocess.Popen(HIL + ["emulate", "bridge", "--firmware", str(host_firmware), "--bench-file",
                                  str(bench_file), "--json"], stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        line = ""
        deadline = time.time() + 60
        while not line.startswith("{") and time.time() < deadline:
            line = emu.stdout.readline()
        board = json.loads(line)["resources"]["board"]
        assert re.fullmatch(r"ASRL/dev/pts/\d+::INSTR", board) and board in bench_file.read_text()
        p = run_hil("train", "bridge", "--teacher", "1", "--rule", "cl", "--steps", "5", "--backend", "bench",
                    "--bench", bench_file, "--from-board", "--out", tmp_path / "run", cwd=tmp_path)
        assert p.returncode == 0, p.stderr
    finally:
        emu.terminate()
        emu.wait(timeout=30)
    # the same run with the emulator's board holding the same taps, from the same power-on state
    c = load_circuit("bridge")
    emu = build(IdealSubstrate(c), board_device=digipot(c)).start()
    emu.instruments["board"].reset()
    try:
        (tmp_path / "emu.toml").write_text(emu.bench_toml(c.source))
        with BenchSubstrate(c, tmp_path / "emu.toml", from_board=True) as bench:
            start_run(c, teacher_task(c, seed=1), TrainConfig(rule="cl", steps=5, backend="bench"), tmp_path / "emu",
                      progress=False, substrate=bench)
    finally:
        emu.stop()
    a, b = Run(tmp_path / "emu").read_log()["train_loss"], Run(tmp_path / "run").read_log()["train_loss"]
    assert b[-1] < b[0]
    np.testing.assert_allclose(b, a, rtol=1e-5)
