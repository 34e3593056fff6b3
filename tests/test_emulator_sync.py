"""The message exchange's synchronisation and the emulator's input faults, each with its issue's repro.

-410 Query INTERRUPTED (IEEE 488.2 6.3.2.3) where the emulator can see an unread reply (a
serial port; over a socket, a message that arrived before the reply existed); *WAI holding
later commands until a bus-armed sweep is triggered; a control character named as one (-101);
a serial instrument left with an unread reply by an earlier client; SMUs in compliance during
the bench's wiring check. Physics against an independent ideal solve of the emulated circuit.
"""

import select
import warnings

import numpy as np
import pytest

from hil.circuit import load_circuit
from hil.ideal import IdealSubstrate
from hil.substrate import Experiment
from test_emulator import Raw, bench, delivered, readings  # noqa: F401  (bench: the fixture)
from test_emulator_items import _open_outputs, free_state

warnings.filterwarnings("ignore", category=FutureWarning)

IDN_2400 = "KEITHLEY INSTRUMENTS INC.,MODEL 2400"


def _silent(sock, seconds=0.3) -> bool:
    return select.select([sock], [], [], seconds)[0] == []


# -- -410 Query INTERRUPTED ----------------------------------------------------------------

def test_a_message_sent_before_the_reply_was_read_interrupts_it_over_a_socket(bench):
    """Both messages in one write: the second came before the *IDN? reply existed, so it was unread."""
    r = Raw(bench(), "smu_n1")
    r.s.sendall(b"*IDN?\n:SOUR:VOLT 0.25;:SOUR:VOLT?\n")
    assert r.f.readline().decode().strip() == "+2.500000E-01"   # its own reply, not the *IDN? one
    assert _silent(r.s)                                          # and the *IDN? reply never comes
    assert int(r.ask("*ESR?")) & 4                               # QYE: query error
    err = r.errors()
    assert err.startswith('-410,"Query INTERRUPTED; the reply to \'*IDN?\' was not read'), err
    # replies no longer shift: each question gets its own answer
    assert r.ask("*IDN?").startswith(IDN_2400) and r.ask(":SOUR:VOLT?") == "+2.500000E-01"
    assert r.errors() == '0,"No error"'


def test_an_unread_reply_on_a_serial_port_is_discarded_with_410():
    """The issue's repro on the serial path: *IDN? left unread, then another message. The emulator
    holds the port open, so it sees the reply still unread when it parses the next message."""
    import time

    import serial
    from hil.emulator.bench import build
    emu = build(IdealSubstrate(load_circuit("net16"))).serve_serial()
    port = serial.Serial(emu.ptys["smu_n1"].path, timeout=3)
    received = emu.instruments["smu_n1"].received
    try:
        port.write(b"*IDN?\n")
        t0 = time.monotonic()
        while not port.in_waiting and time.monotonic() - t0 < 3:   # the reply is there, unread
            select.select([], [], [], 0.02)
        assert port.in_waiting > 0
        port.write(b":SOUR:VOLT 0.25\n")
        while ":SOUR:VOLT 0.25" not in received and time.monotonic() - t0 < 3:   # parsed by the emulator
            select.select([], [], [], 0.02)
        assert port.in_waiting == 0            # the unread reply was discarded, not left to answer the next query
        port.write(b":SOUR:VOLT?;:SYST:ERR?\n")
        volts, err = port.readline().decode().strip().split(";", 1)
        assert volts == "+2.500000E-01" and err.startswith('-410,"Query INTERRUPTED; the reply of 64 bytes'), err
        port.write(b"*IDN?\n")
        assert port.readline().decode().startswith(IDN_2400)
    finally:
        port.close()
        emu.stop()


# -- *WAI ----------------------------------------------------------------------------------

def test_wai_holds_later_commands_until_the_bus_trigger(bench):
    emu = bench()
    c = emu.model.c
    _open_outputs(emu)
    a = Raw(emu, "smu_n1")
    Raw(emu, "smu_n2").do(":SENS:CURR:PROT 0.05;:SOUR:VOLT 0;:OUTP ON")
    a.do(":SENS:FUNC 'VOLT','CURR';:SENS:CURR:PROT 0.05;:SOUR:VOLT 0.3;:OUTP ON")
    assert a.ask("*WAI;:SOUR:VOLT?") == "+3.000000E-01"          # nothing pending: *WAI waits for nothing
    a.send(":ARM:SOUR BUS;:INIT;*WAI;:FETC?")
    assert _silent(a.s)                     # :FETC? waits behind *WAI (it would fail now: -230)
    a.send(":SOUR:VOLT?")                   # a later message waits too, in order
    assert _silent(a.s)
    a.send("*TRG")                          # the bus trigger completes the sweep
    v, i = readings(a.f.readline().decode())[0][:2]
    V = free_state(c, {"n1": 0.3})
    assert v == pytest.approx(0.3, abs=1e-6) and i == pytest.approx(delivered(c, c.g, V, c.node("n1")), rel=1e-5)
    assert a.f.readline().decode().strip() == "+3.000000E-01"
    assert a.errors() == '0,"No error"'


# -- bytes that are no SCPI ----------------------------------------------------------------

@pytest.mark.parametrize("data, byte", [(b"\x1f\n", "0x1f"), (b"\x1f*IDN?\n", "0x1f"), (b"*I\x00DN?\n", "0x00"),
                                        (b":SOUR:VOLT 0.1\x7f\n", "0x7f"), (b"*IDN?\xff\n", "not ASCII")])
def test_a_control_character_is_an_invalid_character_naming_the_byte(bench, data, byte):
    """The issue's repro: a lone 0x1f byte gave -300 AttributeError."""
    r = Raw(bench(), "smu_n1")
    r.s.sendall(data)
    assert _silent(r.s)                     # no reply: the message is refused
    err = r.errors()
    assert err.startswith('-101,"Invalid character; ') and byte in err and "-300" not in err, err
    assert r.ask(":SOUR:VOLT?") == "+0.000000E+00"   # nothing was executed, and the link works on


# -- a serial instrument an earlier client left with a reply -------------------------------

def test_a_reply_an_earlier_client_left_on_a_serial_port_never_answers_a_later_one(tmp_path):
    """The issue: on --serial, a reply left by an earlier client made later connects fail. The emulator
    holds the port, so an earlier client's pending *OPC? outlived it and answered the next client's
    sweep with its '1'; *RST and *CLS now drop it (IEEE 488.2), and the bench discards unread input
    on connect."""
    import serial
    from hil.bench.substrate import BenchSubstrate
    from hil.emulator.bench import build
    c = load_circuit("divider")
    emu = build(IdealSubstrate(c)).serve_serial()
    try:
        for name in emu.instruments:        # every instrument left with a reply: now, or one held for later
            with serial.Serial(emu.ptys[name].path, timeout=1) as port:
                port.write(b":OUTP ON;:ARM:SOUR BUS;:INIT;*OPC?\n" if name.startswith("smu") else b"*IDN?\n")
                port.flush()
        smu = f"smu_{c.nodes[c.inputs[0]]}"
        with serial.Serial(emu.ptys[smu].path, timeout=3) as port:   # a later client, made safe as the bench does
            port.write(b"*RST;*CLS\n")
            port.write(b":SENS:CURR:PROT 0.05;:SOUR:VOLT 0.4;:OUTP ON;:READ?\n")
            v = readings(port.readline().decode())[0][0]     # its reading, not the earlier client's '1'
            assert v == pytest.approx(0.4, abs=1e-6)
            port.write(b":OUTP OFF;*RST;:SYST:ERR?\n")
            assert port.readline() == b'0,"No error"\n'
        path = tmp_path / "bench.toml"
        path.write_text(emu.bench_toml(c.source, serial=True))
        for name in emu.instruments:        # replies left unread again, then the bench connects, twice
            with serial.Serial(emu.ptys[name].path, timeout=1) as port:
                port.write(b":SOUR:VOLT?\n" if name.startswith("smu") else b"*IDN?\n")
                port.flush()
        select.select([], [], [], 0.2)
        for _ in range(2):
            with BenchSubstrate(c, path) as sub:
                got = sub.run(np.array([[0.4]]), [Experiment.free(1, len(c.outputs))])[0]
                np.testing.assert_allclose(got[0], free_state(c, {c.nodes[c.inputs[0]]: 0.4}), atol=2e-6)
                assert sub.diagnostics() == []      # nothing stale was read as an error entry
    finally:
        emu.stop()


# -- SMUs in compliance during the wiring check ---------------------------------------------

def test_the_wiring_check_names_smus_in_compliance_rather_than_the_wiring(emulated):
    """The issue's repro: current_limit = 1e-7 A gave 'wiring check failed (swapped channels?)'."""
    from hil.bench.substrate import BenchError, BenchSubstrate
    c = load_circuit("net16")
    emu, path = emulated(IdealSubstrate(c))
    path.write_text(path.read_text().replace("current_limit = 0.02", "current_limit = 1e-7"))
    with pytest.raises(BenchError) as exc:
        BenchSubstrate(c, path)
    msg = str(exc.value)
    assert "swapped" not in msg and "SMUs in compliance" in msg, msg
    assert "SMU on node n1 at TCPIP::127.0.0.1::" in msg and "current limit current_limit = 1e-07 A" in msg, msg
    # the reading it names is the limit: 1e-7 A, within the 2400's 1 uA range resolution
    amps = float(msg.split("SMU on node n1")[1].split(" V, ")[1].split(" A")[0])
    assert abs(amps) == pytest.approx(1e-7, rel=1e-3)
    # the same bench at 0.02 A passes the check: the wiring is right
    path.write_text(path.read_text().replace("current_limit = 1e-7", "current_limit = 0.02"))
    with BenchSubstrate(c, path):
        pass
