"""The emulated instruments against the Keithley 2400 and 2700 manuals, over real loopback sockets.

Clients: plain sockets (the message exchange byte for byte), pyvisa-py scripts written
from the manuals' chapters (trigger model, data store, status), and PyMeasure's own
Keithley2400 and Keithley2700 drivers. Physics: every reading is checked against
Kirchhoff's laws on the circuit the bench emulates.
"""

import socket
import threading
import warnings

import numpy as np
import pytest

from hil.circuit import load_circuit
from hil.ideal import IdealSubstrate
from hil.substrate import Free

warnings.filterwarnings("ignore", category=FutureWarning)


@pytest.fixture
def bench():
    """An emulated net16 bench (ideal substrate); yields a function making more with options."""
    from hil.emulator.bench import build
    made = []

    def make(name="net16", sub=None, **kw):
        c = load_circuit(name)
        emu = build(sub or IdealSubstrate(c), **kw).start()
        made.append(emu)
        return emu

    yield make
    for r in Raw.opened:
        r.close()
    Raw.opened.clear()
    for emu in made:
        emu.stop()


class Raw:
    """A plain socket client: one line out, one line back."""

    opened = []   # closed by the bench fixture

    def __init__(self, emu, name, timeout=3.0):
        self.s = socket.create_connection(("127.0.0.1", emu.servers[name][1]), timeout=timeout)
        self.f = self.s.makefile("rwb")
        Raw.opened.append(self)

    def send(self, text):
        self.f.write(text.encode("ascii") + b"\n")
        self.f.flush()

    def ask(self, text):
        self.send(text)
        return self.f.readline().decode().rstrip("\n")

    def do(self, text):
        """Send and wait until it is processed (*OPC? answers after the rest of the message)."""
        assert self.ask(text + ";*OPC?").endswith("1"), text

    def errors(self):
        return self.ask(":SYST:ERR:ALL?")

    def close(self):
        self.f.close()
        self.s.close()


def visa(emu, name, timeout=3000):
    import pyvisa
    rm = pyvisa.ResourceManager("@py")
    return rm.open_resource(emu.resource(name), read_termination="\n", write_termination="\n", timeout=timeout)


def kirchhoff_residual(c, g, V, port_currents):
    """Net current out of each node (A) minus what the instruments inject; 0 at every node but ground."""
    I_edge = g * c.drops(V)
    net = np.zeros(c.n)
    np.add.at(net, c.a, I_edge)
    np.add.at(net, c.b, -I_edge)
    for node, i in port_currents.items():
        net[node] -= i
    net[c.ground] = 0.0
    return net


def delivered(c, g, V, node):
    """The current (A) a source at ``node`` delivers into the network at node voltages V (KCL)."""
    I_edge = g * c.drops(V)
    return float(I_edge[c.a == node].sum() - I_edge[c.b == node].sum())


def readings(reply, width=5):
    return np.array([float(x) for x in reply.split(",")]).reshape(-1, width)


# -- 3. the message exchange ---------------------------------------------------------


def test_compound_queries_answer_on_one_line_and_the_next_query_gets_its_own_answer(bench):
    r = Raw(bench(), "smu_n1")
    idn, opc = r.ask("*IDN?;*OPC?").split(";")
    assert "MODEL 2400" in idn and opc == "1"
    assert r.ask(":SOUR:VOLT 0.5;VOLT?") == "+5.000000E-01"                  # relative path after ';'
    assert r.ask(":SOUR:VOLT?;:SOUR:FUNC?;*OPC?") == "+5.000000E-01;VOLT;1"
    assert r.ask("\t:SOUR:VOLT\t0.25 ;  :SOUR:VOLT?\t") == "+2.500000E-01"   # tabs and spaces
    assert r.ask(":sour:volt? max") == "+2.100000E+02"                       # MAX, not the level
    assert r.ask(":SOUR1:VOLT:LEV:IMM:AMPL?") == "+2.500000E-01"             # suffix 1, long path
    assert r.errors() == '0,"No error"'


def test_after_an_error_the_rest_of_the_message_is_discarded(bench):
    r = Raw(bench(), "smu_n1")
    r.send(":BOGUS;:SOUR:VOLT 0.3")
    assert r.ask(":SOUR:VOLT?") == "+0.000000E+00"
    r.send(":SOUR:VOLT 9e9;:SOUR:VOLT 0.3")
    assert r.ask(":SOUR:VOLT?") == "+0.000000E+00"
    assert r.errors() == '-113,"Undefined header; :BOGUS",-222,"Parameter data out of range; 9e+09 not in [-210 210]"'


def test_a_line_longer_than_the_input_buffer_is_rejected_whole(bench):
    from hil.emulator.bench import MAX_LINE
    emu = bench()
    r = Raw(emu, "smu_n1")
    r.send(":OUTP ON")
    r.send("X" * MAX_LINE + ";:OUTP OFF")
    assert r.ask(":OUTP?") == "1"
    assert r.errors().startswith('-363,"Input buffer overrun')
    # and the history a test keeps is bounded, whatever the clients send
    from hil.emulator.bench import HISTORY, HISTORY_CHARS
    for _ in range(100):
        r.send(":SOUR:VOLT 0.1;" + " " * 20000)
    for _ in range(HISTORY):
        r.send(":SOUR:VOLT 0.2")
    assert r.ask("*OPC?") == "1"
    inst = emu.instruments["smu_n1"]
    assert len(inst.received) <= HISTORY and max(map(len, inst.received)) <= HISTORY_CHARS


def test_error_numbers_texts_and_the_standard_event_register(bench):
    r = Raw(bench(), "smu_n1")
    r.send(":READ?")                        # output off (manual Table B-1)
    r.send(":FOO")                          # command error
    assert r.ask("*ESR?") == str(16 + 32)   # EXE and CME
    assert r.ask("*ESR?") == "0"            # reading clears it
    assert r.errors() == '+803,"Not permitted with OUTPUT off",-113,"Undefined header; :FOO"'
    r.send("*ESE 32;*SRE 32")
    r.send(":FOO")
    assert int(r.ask("*STB?")) == 4 + 32 + 64   # EAV, ESB, and MSS for the enabled summary
    r.send("*CLS")
    assert r.ask("*STB?") == "0"
    r.send("*OPC")
    assert int(r.ask("*ESR?")) & 1 == 1


# -- 2. the command tree: every setting queryable, MIN/MAX/DEF, *RST defaults ---------------


def _settings():
    from hil.emulator.keithley2400 import SETTINGS
    return [s for s in SETTINGS if s.settable and s.queryable]


def test_every_2400_setting_has_its_query_its_default_and_its_limits(bench):
    r = Raw(bench(), "smu_n1")
    r.send("*RST")
    for s in _settings():
        path = s.path.replace("[", "").replace("]", "").split(":")
        short = ":".join("".join(ch for ch in node if not ch.islower()) for node in path if node)
        assert r.ask(short + "?") == s.format(s.default), short
        assert r.ask(short + "? DEF") == s.format(s.default), short
        if s.kind in ("real", "int"):
            assert float(r.ask(short + "? MAX")) == pytest.approx(s.hi), short
            assert float(r.ask(short + "? MIN")) == pytest.approx(s.lo), short
            r.send(f"{short} {s.hi * 2 + 1e3}")                       # out of range: refused
            assert r.errors().startswith("-222"), short
    assert r.ask(":SENS:CURR:PROT?") == "+1.050000E-04" and r.ask(":SENS:VOLT:PROT?") == "+2.100000E+01"
    r.send(":SENS:CURR:RANG 50e-3")          # a range is chosen by the reading it must hold
    assert r.ask(":SENS:CURR:RANG?;RANG:AUTO?") == "+1.050000E-01;0"
    r.send(":SOUR:VOLT:RANG 2;:SOUR:VOLT 5")      # a fixed 2 V range does not source 5 V
    assert r.ask(":SOUR:VOLT?;:SOUR:VOLT:RANG?;:SOUR:VOLT:RANG:AUTO?") == "+0.000000E+00;+2.100000E+00;0"
    assert r.errors().startswith("-222")
    r.send(":SOUR:FUNC CURRENT;:OUTP:SMOD himp;:SENS:FUNC:ALL")
    assert r.ask(":SOUR:FUNC?;:OUTP:SMOD?;:SENS:FUNC?") == 'CURR;HIMP;"VOLT:DC","CURR:DC","RES"'
    r.send("*RST")
    assert r.ask(":SOUR:FUNC?;:OUTP:SMOD?;:SENS:FUNC?") == 'VOLT;NORM;"CURR:DC"'
    assert r.errors() == '0,"No error"'


def _short(path):
    nodes = path.replace("[", "").replace("]", "").split(":")
    return ":".join("".join(ch for ch in node if not ch.islower()) for node in nodes if node)


@pytest.mark.parametrize("name", ["smu_n1", "scanner"])
def test_every_setting_set_to_a_new_value_reads_it_back_and_rst_restores_it(bench, name):
    """The fidelity table: for each declared setting, a value other than the default, set and queried."""
    from hil.emulator import keithley2400 as emulated2400, keithley2700 as emulated2700
    table = emulated2400.SETTINGS if name.startswith("smu") else emulated2700.SETTINGS
    r = Raw(bench(), name)
    coupled = getattr(emulated2400, "COUPLED", set()) if name.startswith("smu") else set()
    for s in table:
        if not (s.settable and s.queryable) or s.key in coupled:   # a staircase's coupled settings: test_staircase
            continue
        if s.kind == "bool":
            new = not s.default
        elif s.kind == "enum":
            others = ["".join(ch for ch in c if not ch.islower()).upper() for c in s.choices]
            others = [c for c in others if c != s.default]
            if not others:
                continue
            new = others[0]
        elif s.kind == "string":
            new = "hil"
        elif s.kind == "list":
            new = tuple(s.parse(s.choices[0]))
        elif s.ranges:
            new = s.ranges[1]
        elif s.kind == "int":
            new = int(s.hi) if s.hi != s.default else int(s.lo)
        else:
            new = s.hi if s.hi != s.default else s.lo
        text = {"bool": lambda v: "ON" if v else "OFF", "string": lambda v: f"'{v}'",
                "list": lambda v: ",".join(v)}.get(s.kind, str)(new)
        r.send(f"{_short(s.path)} {text}")
        assert r.ask(_short(s.path) + "?") == s.format(new), s.path
    assert r.errors() == '0,"No error"'
    r.send("*RST")
    for s in table:
        if s.settable and s.queryable and s.reset:
            assert r.ask(_short(s.path) + "?") == s.format(s.default), s.path


# -- 1. physics and interlocks ----------------------------------------------------------------


def _port_state(emu):
    V, Vp, Ip, comp = emu.model.solution()
    ports = emu.model.solver.ports
    return V, dict(zip(ports, Ip[0])), comp[0]


@pytest.mark.parametrize("other", ["off-himp", "off-normal", "current", "voltage"])
def test_any_mix_of_smu_modes_obeys_kirchhoff(bench, other):
    """n1 sources a voltage; n2 (the other input) is off, a current source or a voltage source."""
    emu = bench()
    c = emu.model.c
    a, b = Raw(emu, "smu_n1"), Raw(emu, "smu_n2")
    a.send(":SOUR:VOLT 0.8;:SENS:CURR:PROT 0.05;:SENS:FUNC 'VOLT','CURR';:OUTP ON")
    if other == "off-himp":
        b.do(":OUTP:SMOD HIMP")
    elif other == "current":
        b.do(":SOUR:FUNC CURR;:SOUR:CURR -2e-4;:SENS:VOLT:PROT 5;:OUTP ON")
    elif other == "voltage":
        b.do(":SOUR:VOLT -0.3;:SENS:CURR:PROT 0.05;:OUTP ON")
    va, ia = readings(a.ask(":READ?"))[0][:2]
    V, Ip, comp = _port_state(emu)
    assert va == pytest.approx(0.8, abs=1e-6)
    assert ia == pytest.approx(Ip[c.node("n1")], rel=1e-5)
    n2 = c.node("n2")
    expected_i2 = {"off-himp": 0.0, "current": -2e-4}.get(other)
    if expected_i2 is not None:
        assert Ip[n2] == pytest.approx(expected_i2, abs=1e-15)
    if other == "voltage":
        assert V[0, n2] == pytest.approx(-0.3, abs=1e-12)
    if other == "off-normal":   # NORMal output-off: 0 V, limited to 0.5 % of the 105 uA range
        limit = 0.005 * 1e-4
        assert V[0, n2] == pytest.approx(0.0, abs=1e-12) or abs(Ip[n2]) == pytest.approx(limit, rel=1e-9)
    # the outputs n6, n7 are off (NORMal) too; every node obeys KCL with the instruments' currents
    assert np.abs(kirchhoff_residual(c, emu.model.g, V[0], Ip)).max() < 1e-15


def test_compliance_holds_the_source_at_its_limit_and_sets_the_status_bits(bench):
    emu = bench()
    c = emu.model.c
    a = Raw(emu, "smu_n1")
    a.send("*RST;:SENS:FUNC 'VOLT','CURR';:SOUR:VOLT 1;:OUTP ON")     # *RST limit: 105 uA
    v, i, _, _, word = readings(a.ask(":READ?"))[0]
    assert i == pytest.approx(1.05e-4, rel=1e-6) and 0 < v < 1          # the voltage fell to the limit
    assert int(word) & 8                                                 # status word bit 3: compliance
    assert a.ask(":SENS:CURR:PROT:TRIP?") == "1"
    assert int(a.ask(":STAT:MEAS:COND?")) & (1 << 14)                  # measurement event: compliance
    V, Ip, comp = _port_state(emu)
    assert np.abs(kirchhoff_residual(c, emu.model.g, V[0], Ip)).max() < 1e-15
    a.send(":SENS:CURR:PROT 1e-6")
    v2, i2 = readings(a.ask(":READ?"))[0][:2]
    assert i2 == pytest.approx(1e-6, rel=1e-5) and v2 < v
    a.send(":SENS:CURR:PROT 0.1")                                        # released
    v3, i3, _, _, word3 = readings(a.ask(":READ?"))[0]
    assert v3 == pytest.approx(1.0, abs=1e-6) and not int(word3) & 8
    # a current source meets its voltage limit
    a.send(":SOUR:FUNC CURR;:SOUR:CURR 1e-2;:SENS:VOLT:PROT 0.2")
    v4, i4, _, _, word4 = readings(a.ask(":READ?"))[0]
    assert v4 == pytest.approx(0.2, abs=1e-6) and 0 < i4 < 1e-2 and int(word4) & 8
    assert a.ask(":SENS:VOLT:PROT:TRIP?") == "1"


def test_meas_turns_the_output_on_and_read_with_the_output_off_is_refused(bench):
    r = Raw(bench(), "smu_n1")
    r.send(":SOUR:VOLT 0.2;:SENS:CURR:PROT 0.05")
    r.send(":READ?")
    assert r.errors() == '+803,"Not permitted with OUTPUT off"'
    v, i = readings(r.ask(":MEAS:CURR?"))[0][:2]
    assert v == 0.2 and i > 0 and r.ask(":OUTP?") == "1"


def test_the_ngspice_substrate_solves_the_same_mix(bench, ngspice):
    from hil.spice.substrate import NgSpiceSubstrate
    c = load_circuit("net16")
    sim = NgSpiceSubstrate(c)
    try:
        res = []
        for sub in (IdealSubstrate(c), sim):
            emu = bench(sub=sub)
            a, b, o = Raw(emu, "smu_n1"), Raw(emu, "smu_n2"), Raw(emu, "smu_n6")
            a.do(":SOUR:VOLT 0.9;:SENS:CURR:PROT 8e-4;:OUTP ON")       # in compliance
            b.do(":SOUR:FUNC CURR;:SOUR:CURR 1e-4;:OUTP ON")
            o.do(":OUTP:SMOD HIMP")
            res.append(emu.model.solution()[0][0])
            assert emu.model.solution()[3][0][0]                          # n1 in compliance
            emu.stop()
        np.testing.assert_allclose(res[1], res[0], atol=1e-9)
    finally:
        sim.close()


def test_a_nonlinear_device_network_meets_every_instrument_setting(bench, ngspice):
    """MOSFET edges (ngspice): Newton on the ports until each SMU holds its level or its limit."""
    from hil.spice.substrate import NgSpiceSubstrate
    c = load_circuit("bridge")
    sim = NgSpiceSubstrate(c, device="mosfet")
    try:
        emu = bench(sub=sim)
        a, l, r = Raw(emu, "smu_top"), Raw(emu, "smu_left"), Raw(emu, "smu_right")
        a.do(":SOUR:VOLT 0.8;:SENS:CURR:PROT 0.05;:SENS:FUNC 'VOLT','CURR';:OUTP ON")
        l.do(":SOUR:VOLT 0.2;:SENS:CURR:PROT 1e-4;:SENS:FUNC 'VOLT','CURR';:OUTP ON")
        r.do(":SOUR:FUNC CURR;:SOUR:CURR 1e-4;:SENS:FUNC 'VOLT','CURR';:OUTP ON")
        va = readings(a.ask(":READ?"))[0]
        vl = readings(l.ask(":READ?"))[0]
        vr = readings(r.ask(":READ?"))[0]
        assert va[0] == pytest.approx(0.8, abs=1e-6)
        assert vl[1] == pytest.approx(-1e-4, rel=1e-5) and vl[0] > 0.2 and int(vl[4]) & 8   # sinking at its limit
        assert vr[1] == pytest.approx(1e-4, rel=1e-5) and not int(vr[4]) & 8
        assert a.errors() == l.errors() == r.errors() == '0,"No error"'
        emu.stop()
    finally:
        sim.close()


# -- 2. trigger model, data store, status: scripts from the manual's chapters ----------------


def test_trigger_model_chapter(bench):
    k = visa(bench(), "smu_n1")
    k.write("*RST;:SENS:FUNC 'VOLT','CURR';:SENS:CURR:PROT 0.05;:SOUR:VOLT 0.4;:OUTP ON")
    k.write(":TRIG:COUN 5")
    assert len(readings(k.query(":READ?"))) == 5
    k.write(":ARM:COUN 2;:TRIG:COUN 3")
    rd = readings(k.query(":READ?"))
    assert len(rd) == 6 and np.all(np.diff(rd[:, 3]) > 0)          # timestamps advance
    k.write(":ARM:COUN 100;:TRIG:COUN 100;:INIT")                    # 10,000 > the 2,500-reading buffer
    assert k.query(":SYST:ERR?").startswith("-221")
    k.write(":ARM:COUN 1;:TRIG:COUN 1;:ARM:SOUR BUS;:INIT")         # waits for a bus trigger
    k.write("*TRG")
    assert readings(k.query(":FETC?"))[0][0] == pytest.approx(0.4, abs=1e-6)
    k.write("*TRG")                                                   # nothing is waiting
    assert k.query(":SYST:ERR?").startswith("-211")
    k.write(":ARM:SOUR IMM;:SENS:CURR:NPLC 10;:SENS:VOLT:NPLC 10;:TRIG:COUN 2")
    t = readings(k.query(":READ?"))[:, 3]
    assert t[1] - t[0] == pytest.approx(2 * 10 / 60, abs=1e-4)       # two functions of 10 PLC each at 60 Hz


def test_data_store_chapter_with_noise_averaged_by_nplc(bench):
    """Table 9-2 of the manual: 10 readings into the buffer, their mean and standard deviation."""
    emu = bench(noise=(1e-3, 0.0), seed=3)
    k = visa(emu, "smu_n6")
    k.write("*RST;:SOUR:FUNC CURR;:SOUR:CURR 1e-4;:SENS:FUNC 'VOLT';:SENS:VOLT:PROT 10")
    stats = {}
    for nplc in (1, 10):
        k.write(f":SENS:VOLT:NPLC {nplc}")
        k.write(":TRAC:CLE;:TRAC:FEED SENS;:TRAC:POIN 400;:TRAC:FEED:CONT NEXT;:TRIG:COUN 400;:OUTP ON;:INIT")
        data = readings(k.query(":TRAC:DATA?"))
        assert data.shape == (400, 5)
        mean = float(k.query(":CALC3:FORM MEAN;:CALC3:DATA?").split(",")[0])
        sdev = float(k.query(":CALC3:FORM SDEV;:CALC3:DATA?").split(",")[0])
        assert mean == pytest.approx(data[:, 0].mean(), rel=1e-6)
        assert sdev == pytest.approx(data[:, 0].std(ddof=1), rel=1e-6)
        stats[nplc] = (mean, sdev)
    V, Ip, comp = _port_state(emu)
    v6 = V[0, emu.model.c.node("n6")]
    for nplc, (mean, sdev) in stats.items():
        assert mean == pytest.approx(v6, abs=4 * 1e-3 / np.sqrt(nplc * 400))
        assert sdev == pytest.approx(1e-3 / np.sqrt(nplc), rel=0.15)


def test_status_chapter_buffer_full_is_what_wait_for_buffer_polls(bench):
    k = visa(bench(), "smu_n1")
    k.write("*RST;:SOUR:VOLT 0.1;:SENS:CURR:PROT 0.05;:OUTP ON")
    k.write(":STAT:PRES;*CLS;*SRE 1;:STAT:MEAS:ENAB 512")
    k.write(":TRAC:CLE;:TRAC:POIN 4;:TRIG:COUN 2;:TRAC:FEED SENS;:TRAC:FEED:CONT NEXT")
    k.write(":INIT")
    assert int(k.query("*STB?")) & 65 == 0                           # 2 of 4: not full
    assert int(k.query(":STAT:MEAS:COND?")) & (1 << 8)                # but buffer available
    k.write(":INIT")
    assert int(k.query("*STB?")) & 65 == 65                           # MSB and MSS
    assert k.query(":TRAC:FEED:CONT?") == "NEV" and k.query(":TRAC:POIN:ACT?") == "4"
    assert int(k.query(":STAT:MEAS?")) & ((1 << 9) | (1 << 6)) == (1 << 9) | (1 << 6)   # BFL, RAV
    assert int(k.query("*STB?")) & 65 == 0                           # the event register was read


def test_ranges_set_resolution_and_overrange(bench):
    k = visa(bench(), "smu_n6")
    k.write("*RST;:SOUR:FUNC CURR;:SOUR:CURR 2e-4;:SENS:FUNC 'VOLT';:SENS:VOLT:PROT 20;:OUTP ON")
    v_auto = readings(k.query(":READ?"))[0][0]
    k.write(":SENS:VOLT:RANG 20")                                      # 21 V range: 10 uV steps
    v20 = readings(k.query(":READ?"))[0][0]
    assert abs(v20 / 1e-5 - round(v20 / 1e-5)) < 1e-6 and v20 == pytest.approx(v_auto, abs=1e-5)
    k.write(":SENS:VOLT:RANG 0.1")        # 210 mV range: range compliance holds the node at 0.21 V
    v, i, _, _, word = readings(k.query(":READ?"))[0]
    assert v == pytest.approx(0.21, abs=1e-7) and 0 < i < 2e-4 and int(word) & 8 and int(word) & (1 << 16)
    k.write(":SOUR:FUNC VOLT;:SOUR:VOLT 0.5;:SENS:VOLT:RANG 0.1;:SENS:CURR:PROT 0.05")   # measured V past the range
    v, _, _, _, word = readings(k.query(":READ?"))[0]
    assert v == 9.9e37 and int(word) & 1
    assert int(k.query(":STAT:MEAS?")) & (1 << 7)                     # reading overflow event


def test_resistance_is_v_over_i(bench):
    k = visa(bench(), "smu_n1")
    k.write("*RST;:SOUR:VOLT 0.5;:SENS:CURR:PROT 0.05;:SENS:RES:MODE MAN;:SENS:FUNC:ALL;:OUTP ON")
    v, i, r, _, _ = readings(k.query(":READ?"))[0]
    assert r == pytest.approx(v / i, rel=1e-6) and 10 < r < 1e6


# -- PyMeasure's drivers -----------------------------------------------------------------


def _k2400(emu, name):
    from pymeasure.instruments.keithley import Keithley2400
    return Keithley2400(emu.resource(name), visa_library="@py", read_termination="\n", write_termination="\n",
                        timeout=3000)


PROPERTIES_2400 = [
    ("source_mode", "voltage"), ("source_delay", 0.0), ("source_delay_auto_enabled", True),
    ("auto_zero_enabled", True), ("output_off_state", "normal"), ("auto_output_off_enabled", False),
    ("filter_enabled", False), ("filter_count", 10), ("current_range", 1.05e-4),
    ("current_range_auto_enabled", True), ("current_nplc", 1.0), ("compliance_current", 1.05e-4),
    ("source_current", 0.0), ("source_current_range", 1.05e-4), ("source_current_range_auto_enabled", True),
    ("voltage_range", 21.0), ("voltage_range_auto_enabled", True), ("voltage_nplc", 1.0),
    ("compliance_voltage", 21.0), ("source_voltage", 0.0), ("source_voltage_range", 21.0),
    ("source_voltage_range_auto_enabled", True), ("resistance_mode_auto_enabled", True),
    ("resistance_range", 2.1e5), ("resistance_range_auto_enabled", True), ("resistance_nplc", 1.0),
    ("trigger_count", 1), ("arm_count", 1), ("trigger_delay", 0.0), ("arm_timer", 0.1),
    ("trigger_source", "immediate"), ("arm_source", "immediate"), ("trigger_output_event", "none"),
    ("arm_output_event", "none"), ("trigger_input_line", 1), ("arm_input_line", 1), ("trigger_output_line", 2),
    ("arm_output_line", 2), ("display_enabled", True), ("wires", 2), ("source_enabled", False),
]
SETTINGS_2400 = [
    ("source_mode", "current"), ("source_delay", 0.05), ("source_delay_auto_enabled", False),
    ("auto_zero_enabled", False), ("output_off_state", "disconnected"), ("auto_output_off_enabled", True),
    ("filter_enabled", True), ("filter_count", 20), ("filter_type", "MOV"), ("current_range", 1.05e-2),
    ("current_nplc", 2.0), ("compliance_current", 2e-3), ("source_current", 1e-5), ("source_current_range", 1.05e-3),
    ("voltage_range", 2.1), ("voltage_nplc", 0.5), ("compliance_voltage", 3.0), ("source_voltage", 0.7),
    ("source_voltage_range", 2.1), ("resistance_mode_auto_enabled", False), ("resistance_range", 2.1e4),
    ("resistance_nplc", 3.0), ("trigger_delay", 0.01), ("arm_timer", 0.5), ("trigger_source", "trigger_link"),
    ("arm_source", "bus"), ("trigger_output_event", "sense"), ("arm_output_event", "trigger_enter"),
    ("trigger_input_line", 3), ("arm_input_line", 2), ("trigger_output_line", 4), ("arm_output_line", 3),
    ("display_enabled", False), ("wires", 4), ("line_frequency", 50), ("buffer_points", 64),
]


def test_pymeasure_keithley2400_every_property_reads_the_rst_default_and_keeps_what_it_is_set_to(bench):
    k = _k2400(bench(), "smu_n1")
    k.reset()
    k.reset_data_format()
    for name, value in PROPERTIES_2400:
        got = getattr(k, name)
        assert got == (pytest.approx(value) if isinstance(value, float) else value), name
    for name, value in SETTINGS_2400:
        setattr(k, name, value)
        got = getattr(k, name)
        assert got == (pytest.approx(value) if isinstance(value, float) else value), name
    assert k.check_errors() == []


@pytest.mark.parametrize("other", ["off", "current", "compliance"])
def test_pymeasure_keithley2400_measures_the_circuit(bench, other):
    emu = bench()
    c = emu.model.c
    k, k2 = _k2400(emu, "smu_n1"), _k2400(emu, "smu_n2")
    k.reset()
    k2.reset()
    k.reset_data_format()
    k.apply_voltage(compliance_current=0.02)
    k.source_voltage = 0.6
    k.enable_source()
    if other == "current":
        k2.apply_current(compliance_voltage=5)
        k2.source_current = 3e-4
        k2.enable_source()
    elif other == "compliance":
        k2.apply_voltage(compliance_current=1e-5)
        k2.source_voltage = -1.0
        k2.enable_source()
    assert k2.complete == "1"   # k2's settings processed before k reads (another connection)
    v, i, r = k.voltage, k.current, k.resistance
    V, Ip, comp = _port_state(emu)
    assert v == pytest.approx(0.6, abs=1e-6) and i == pytest.approx(Ip[c.node("n1")], rel=1e-5)
    assert r == pytest.approx(v / i, rel=1e-5)
    assert np.abs(kirchhoff_residual(c, emu.model.g, V[0], Ip)).max() < 1e-15
    if other == "compliance":
        assert abs(Ip[c.node("n2")]) == pytest.approx(1e-5) and comp[1]
        assert k2.ask(":SENS:CURR:PROT:TRIP?").strip() == "1"
    all_ = k.measure_all()
    assert all_["voltage"] == pytest.approx(0.6, abs=1e-6) and all_["resistance"] == pytest.approx(r, rel=1e-5)
    # the buffer methods
    k.config_buffer(points=10)
    k.start_buffer()
    k.wait_for_buffer(timeout=5, interval=0.01)
    data = k.buffer_data.reshape(10, 5)
    assert k.means[0] == pytest.approx(0.6, abs=1e-6) and k.means[1] == pytest.approx(i, rel=1e-5)
    assert k.standard_devs[0] == 0 and k.mean_current == pytest.approx(data[:, 1].mean(), rel=1e-6)
    assert k.max_voltage == k.min_voltage == pytest.approx(0.6, abs=1e-6)
    k.reset_buffer()
    k.disable_buffer()
    k.stop_buffer()
    k.trigger_count = 3
    k.set_trigger_counts(2, 3)
    assert (k.arm_count, k.trigger_count) == (2, 3)
    k.trigger()   # nothing waits for a bus trigger: -211
    assert [e[0] for e in k.check_errors()] == [-211]
    k.disable_source()
    assert k.source_enabled is False
    k.shutdown()
    assert k.check_errors() == []


def test_pymeasure_keithley2400_every_other_method_runs_without_an_instrument_error(bench):
    emu = bench()
    k = _k2400(emu, "smu_n1")
    k.reset()
    k.reset_data_format()
    k.apply_current(current_range=1e-3, compliance_voltage=2)
    assert k.source_mode == "current" and k.compliance_voltage == 2 and k.source_current_range == 1.05e-3
    k.auto_range_source()
    assert k.source_current_range_auto_enabled is True
    k.enable_source()
    k.ramp_to_current(2e-4, steps=3, pause=0)
    assert k.source_current == pytest.approx(2e-4)
    k.apply_voltage(voltage_range=2, compliance_current=0.02)
    k.ramp_to_voltage(0.3, steps=3, pause=0)
    assert k.source_voltage == pytest.approx(0.3) and k.voltage == pytest.approx(0.3, abs=1e-6)
    k.auto_zero_once()
    k.beep(2000, 0.01)
    k.triad(1000, 0.001)
    for call in (k.clear_trigger, k.disable_output_trigger, k.disable_output_triggers, k.sample_continuously,
                 k.trigger_immediately, k.trigger_on_bus, k.reset_trigger):
        call()
    k.trigger_on_external(2)
    assert k.arm_source == "trigger_link" and k.arm_input_line == 2
    k.output_trigger_on_external(3, after="SENS")
    assert k.trigger_output_line == 3 and k.trigger_output_event == "sense"
    k.set_timed_arm(0.5)
    assert k.arm_source == "timer" and k.arm_timer == 0.5
    k.trigger_immediately()
    k.use_rear_terminals()
    assert k.front_terminals_enabled is False
    k.use_front_terminals()
    assert k.front_terminals_enabled is True
    k.measure_voltage(nplc=2)
    k.measure_current(nplc=2, auto_range=False)
    k.measure_resistance(nplc=2)
    assert k.voltage_nplc == 2 and k.current_nplc == 2 and k.resistance_nplc == 2
    # measure_current(auto_range=False) fixed the 105 uA range; ~300 uA would flow: range compliance
    # (manual section 6) holds the current at the range's full scale and the voltage falls
    v, i, r, _, word = k.values(":READ?")[:5]
    assert i == pytest.approx(1.05e-4, rel=1e-6) and 0 < v < 0.3 and r == pytest.approx(v / i, rel=1e-5)
    assert int(word) & 8 and int(word) & (1 << 16)
    k.current_range_auto_enabled = True
    assert (k.auto_output_off, k.auto_zero, k.source_delay_auto, k.line_frequency_auto) == (False, True, True, False)
    assert k.filter_state in ("ON", "OFF", 0, 1, False, True)
    k.config_buffer(points=3)
    k.start_buffer()
    k.wait_for_buffer(timeout=5, interval=0.01)
    assert k.is_buffer_full()
    assert k.minimums[0] <= k.means[0] <= k.maximums[0] and k.std_voltage == 0
    assert k.min_current <= k.mean_current <= k.max_current and k.std_resistance == 0
    assert k.mean_resistance == pytest.approx(k.mean_voltage / k.mean_current, rel=1e-5)
    assert k.complete == "1" and int(k.status) & 65 == 65   # the buffer-full summary still set
    assert k.next_error[0] == 0
    assert k.check_errors() == []


def test_pymeasure_keithley2700_as_far_as_it_goes_with_a_7700(bench):
    from pymeasure.instruments.keithley import Keithley2700
    emu = bench()
    c = emu.model.c
    for name in ("smu_n1", "smu_n2"):
        Raw(emu, name).do(":SOUR:VOLT 0.5;:SENS:CURR:PROT 0.05;:OUTP ON")
    d = Keithley2700(emu.resource("scanner"), visa_library="@py", read_termination="\n", write_termination="\n",
                     timeout=3000)
    d.reset()
    assert d.options == ["7700", "NONE"]
    d.text_enabled = True
    d.display_text = "hil emulate"
    assert d.text_enabled is True and d.display_text == "hil emulate"
    d.write("ROUT:MULT:CLOS (@101,125)")       # a channel and the backplane relay to the meter
    assert d.closed_channels == [101, 125]
    d.open_all_channels()
    assert d.closed_channels == []
    V = emu.model.solution()[0][0]
    node = emu.instruments["scanner"].channels
    # the closed channel, read in the same message
    assert float(d.ask("ROUT:CLOS (@102);READ?").split(",")[0][:-3]) == pytest.approx(V[node[102]], abs=1e-6)
    d.write("FORM:ELEM READ,CHAN,UNIT")
    parts = d.ask("ROUT:SCAN (@101:103);SAMP:COUN 5;READ?").split(",")
    assert parts[1::2] == ["101", "102", "103", "101", "102"]                 # the count wraps the list
    for value, ch in zip(parts[0::2], parts[1::2]):
        assert value.endswith("VDC") and float(value[:-3]) == pytest.approx(V[node[int(ch)]], abs=1e-6)
    assert d.check_errors() == []


def test_2700_scan_chapter_init_fetch_and_the_buffer(bench):
    emu = bench()
    for name in ("smu_n1", "smu_n2"):
        Raw(emu, name).do(":SOUR:VOLT -0.7;:SENS:CURR:PROT 0.05;:OUTP ON")
    d = visa(emu, "scanner")
    d.write("*RST;:SENS:FUNC 'VOLT:DC';:SENS:VOLT:NPLC 5;:FORM:ELEM READ,CHAN")
    d.write(":TRAC:CLE;:TRAC:FEED SENS;:TRAC:FEED:CONT NEXT")
    d.write(":ROUT:SCAN (@101:103);:ROUT:SCAN:LSEL INT;:SAMP:COUN 3;:INIT")
    V = emu.model.solution()[0][0]
    ch = emu.instruments["scanner"].channels
    fetched = d.query(":FETC?").split(",")
    assert fetched[1::2] == ["101", "102", "103"]
    np.testing.assert_allclose([float(x) for x in fetched[0::2]], [V[ch[c]] for c in (101, 102, 103)], atol=1e-6)
    d.write(":INIT")
    assert d.query(":TRAC:POIN:ACT?") == "6" and len(d.query(":TRAC:DATA?").split(",")) == 12
    assert d.query(":SENS:VOLT:NPLC?;:SENS:FUNC?") == '+5.000000E+00;"VOLT:DC"'
    d.write(":ROUT:SCAN:LSEL NONE;:ROUT:OPEN:ALL;:SAMP:COUN 2")       # no channel closed: the open input
    assert d.query(":READ?") == "+0.00000000E+00,000,+0.00000000E+00,000"
    assert d.query(":SYST:ERR?") == '0,"No error"'


# -- 4. concurrency ------------------------------------------------------------------------


def test_a_reading_reflects_every_setting_made_before_it_by_any_client(bench):
    emu = bench()
    c = emu.model.c
    sub = IdealSubstrate(c)
    levels_b = (-0.4, 0.35)
    bad = []

    def client(name, levels, check):
        r = Raw(emu, name)
        for k in range(300):
            v = levels[k % len(levels)]
            got_v, got_i = readings(r.ask(f":SOUR:VOLT {v};:READ?"))[0][:2]
            if check and got_v != v:
                bad.append((v, got_v))
            if check:   # the current fits the other client's level at that moment, one of its two
                ok = False
                for vb in levels_b:
                    Vf = sub.measure([[v, vb]], [[0, 0]], [Free()])[Free()][0]
                    i = delivered(c, emu.model.g, Vf, c.node("n1"))
                    ok |= abs(i - got_i) <= 1e-5 * abs(i) + 1e-9
                if not ok:
                    bad.append(("current", v, got_i))
        r.close()

    for name in ("smu_n6", "smu_n7"):   # outputs open (HIMP) so the inputs alone set the circuit
        Raw(emu, name).do(":OUTP:SMOD HIMP")
    for name, v in (("smu_n1", 0.1), ("smu_n2", levels_b[0])):
        Raw(emu, name).do(f":SOUR:VOLT {v};:SENS:FUNC 'VOLT','CURR';:SENS:CURR:PROT 0.05;:OUTP ON")
    ta = threading.Thread(target=client, args=("smu_n1", (0.1, 0.2, 0.3), True))
    tb = threading.Thread(target=client, args=("smu_n2", levels_b, False))
    ta.start(), tb.start()
    ta.join(60), tb.join(60)
    assert bad == []


# -- the lab script of docs/bench.md -------------------------------------------------------------


def test_the_readme_lab_script_runs_unchanged_and_gives_the_circuits_numbers(bench):
    emu = bench("bridge")
    for name in ("smu_left", "smu_right"):   # the outputs' SMUs off with their relays open: free outputs
        Raw(emu, name).do(":OUTP:SMOD HIMP")
    import pyvisa
    rm = pyvisa.ResourceManager("@py")
    # --- from docs/bench.md, "A lab script for a real 2400, run against the emulator" ---
    smu = rm.open_resource(emu.resource("smu_top"), read_termination="\n", write_termination="\n")
    smu.write("*RST")
    smu.write(":SOUR:FUNC VOLT;:SOUR:VOLT 1.0;:SENS:FUNC 'CURR';:SENS:CURR:PROT 10e-3")
    smu.write(":TRAC:CLE;:TRAC:FEED SENS;:TRAC:POIN 10;:TRAC:FEED:CONT NEXT;:TRIG:COUN 10")
    smu.write(":STAT:PRES;*CLS;:STAT:MEAS:ENAB 512;*SRE 1")     # buffer full -> MSB -> SRQ bit
    smu.write(":OUTP ON;:INIT")
    while not int(smu.query("*STB?")) & 1:                       # poll status until the buffer is full
        pass
    data = smu.query(":TRAC:DATA?")
    mean = smu.query(":CALC3:FORM MEAN;:CALC3:DATA?")
    sdev = smu.query(":CALC3:FORM SDEV;:CALC3:DATA?")
    smu.write(":OUTP OFF")
    # ---
    c = emu.model.c
    V = IdealSubstrate(c).measure([[1.0]], [[0, 0]], [Free()])[Free()][0]
    i_top = delivered(c, c.g, V, c.node("top"))
    rows = readings(data)
    assert rows.shape == (10, 5)
    assert float(mean.split(",")[1]) == pytest.approx(i_top, rel=5e-6)   # 6.5 digits of the 10 mA range
    assert float(sdev.split(",")[1]) == 0.0
    assert smu.query(":SYST:ERR?") == '0,"No error"'


def test_hil_emulate_refuses_a_meaningless_noise(tmp_path):
    import subprocess
    import sys
    p = subprocess.run([sys.executable, "-m", "hil.cli", "emulate", "bridge", "--noise", "-1e-3",
                        "--bench-file", str(tmp_path / "b.toml")], capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and "--noise VOLTS" in p.stderr and "Traceback" not in p.stderr
