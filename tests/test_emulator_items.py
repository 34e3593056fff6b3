"""Issue 26's departures of the emulated 2400 and 2700 from their manuals, each with its repro.

Every instrument has its own trigger model (a sweep on one SMU moves no other); staircase
sweeps; the 2700's channel lists, measurement event register and missing commands; range
compliance; short lists that wrap; the 7700's channels 121..125; *OPC? after a bus-armed
sweep; the virtual clock; the smaller *RST and parser facts. Physics against Kirchhoff's laws
on the circuit the bench emulates (an independent ideal solve).
"""

import warnings

import numpy as np
import pytest

from hil.ideal import IdealSubstrate
from hil.substrate import Free
from test_emulator import Raw, bench, delivered, readings  # noqa: F401  (bench: the fixture)

warnings.filterwarnings("ignore", category=FutureWarning)


def free_state(c, levels: dict):
    """Node voltages with the given input levels (V) and the outputs open: an independent ideal solve."""
    X = [[levels.get(c.nodes[i], 0.0) for i in c.inputs]]
    return IdealSubstrate(c).measure(X, [[0.0] * len(c.outputs)], [Free()])[Free()][0]


def _open_outputs(emu):
    for name in ("smu_n6", "smu_n7"):
        Raw(emu, name).do(":OUTP:SMOD HIMP")


def test_item1_a_sweep_on_one_smu_moves_no_other_instrument(bench):
    emu = bench()
    c = emu.model.c
    _open_outputs(emu)
    a, b, s = Raw(emu, "smu_n1"), Raw(emu, "smu_n2"), Raw(emu, "scanner")
    b.do(":SOUR:VOLT -0.2;:SENS:FUNC 'VOLT','CURR';:SENS:CURR:PROT 0.05;:OUTP ON")
    a.do(":SOUR:VOLT 0.05;:SENS:FUNC 'VOLT','CURR';:SENS:CURR:PROT 0.05;"
         ":SOUR:LIST:VOLT 0.1,0.2,0.3;:SOUR:VOLT:MODE LIST;:TRIG:COUN 3;:OUTP ON")
    # a reading elsewhere sees n1 at its bias level (0.05 V), not blocked by its 3-point list
    vb, ib = readings(b.ask(":READ?"))[0][:2]
    V = free_state(c, {"n1": 0.05, "n2": -0.2})
    assert vb == pytest.approx(-0.2, abs=1e-6) and ib == pytest.approx(delivered(c, c.g, V, c.node("n2")), rel=1e-5)
    s.do("FORM:ELEM READ,CHAN;SAMP:COUN 9;ROUT:SCAN (@101:103)")
    vals = s.ask("READ?").split(",")
    node = emu.instruments["scanner"].channels
    for value, ch in zip(vals[0::2], vals[1::2]):   # 9 readings, 3 scans, all at the bias state
        assert float(value) == pytest.approx(V[node[int(ch)]], abs=2e-6)
    # n1's own sweep: its three points, with n2 held where it is
    rows = readings(a.ask(":READ?"))
    assert rows.shape == (3, 5)
    for (v, i), level in zip(rows[:, :2], (0.1, 0.2, 0.3)):
        Vk = free_state(c, {"n1": level, "n2": -0.2})
        assert v == pytest.approx(level, abs=1e-6) and i == pytest.approx(delivered(c, c.g, Vk, c.node("n1")), rel=1e-5)
    assert a.errors() == b.errors() == s.errors() == '0,"No error"'


def test_item1_the_trigger_link_steps_followers_and_the_scanner_at_each_point(bench):
    emu = bench()
    c = emu.model.c
    _open_outputs(emu)
    a, b, s = Raw(emu, "smu_n1"), Raw(emu, "smu_n2"), Raw(emu, "scanner")
    for r, lst in ((a, "0.1,0.2,0.3"), (b, "-0.3,0,0.4")):
        r.do(f":SENS:CURR:PROT 0.05;:SOUR:LIST:VOLT {lst};:SOUR:VOLT:MODE LIST;:TRIG:COUN 3;:OUTP ON")
    assert b.ask(":TRIG:SOUR TLIN;:TRIG:ILIN 1;:INIT;:TRIG:SOUR?") == "TLIN"
    assert s.ask("FORM:ELEM READ;ROUT:SCAN (@101,102);SAMP:COUN 2;TRIG:COUN 3;TRIG:SOUR EXT;INIT;TRIG:SOUR?") == "EXT"
    a.ask(":TRIG:OUTP SOUR;:TRIG:OLIN 1;:READ?")
    node = emu.instruments["scanner"].channels
    got = np.array([float(x) for x in s.ask("FETC?").split(",")]).reshape(3, 2)
    ib = readings(b.ask(":FETC?"))[:, 1]
    for k, (l1, l2) in enumerate(((0.1, -0.3), (0.2, 0.0), (0.3, 0.4))):
        V = free_state(c, {"n1": l1, "n2": l2})
        np.testing.assert_allclose(got[k], [V[node[101]], V[node[102]]], atol=2e-6)
        assert ib[k] == pytest.approx(delivered(c, c.g, V, c.node("n2")), rel=1e-5, abs=1e-10)


def test_item2_a_staircase_sweep_steps_from_start_to_stop(bench):
    emu = bench()
    c = emu.model.c
    _open_outputs(emu)
    a = Raw(emu, "smu_n1")
    Raw(emu, "smu_n2").do(":SENS:CURR:PROT 0.05;:SOUR:VOLT 0;:OUTP ON")
    a.send(":SENS:FUNC 'VOLT','CURR';:SENS:CURR:PROT 0.05")
    rows = readings(a.ask(":SOUR:VOLT:STAR 0;STOP 1;STEP 0.1;:SOUR:VOLT:MODE SWE;:TRIG:COUN 11;:OUTP ON;:READ?"))
    np.testing.assert_allclose(rows[:, 0], np.linspace(0, 1, 11), atol=1e-6)
    for v, i in rows[:, :2]:
        assert i == pytest.approx(delivered(c, c.g, free_state(c, {"n1": v}), c.node("n1")), rel=1e-5, abs=1e-10)
    assert a.ask(":SOUR:SWE:POIN?;:SOUR:VOLT:CENT?;:SOUR:VOLT:SPAN?") == "11;+5.000000E-01;+1.000000E+00"
    a.send(":SOUR:VOLT:STAR 0.01;STOP 1;:SOUR:SWE:POIN 3;SPAC LOG;DIR DOWN")
    np.testing.assert_allclose(readings(a.ask(":TRIG:COUN 3;:READ?"))[:, 0], [1.0, 0.1, 0.01], rtol=1e-6)
    assert a.errors() == '0,"No error"'


def test_item3_the_2700_measures_the_channels_it_is_given(bench):
    emu = bench()
    s = Raw(emu, "scanner")
    V = emu.model.solution()[0][0]
    node = emu.instruments["scanner"].channels
    s.do("FORM:ELEM READ,CHAN;ROUT:CLOS (@101)")
    for q in ("MEAS:VOLT? (@103)", "CONF:VOLT:DC (@103);READ?", "MEAS:VOLT? (@102)"):
        value, ch = s.ask(q).split(",")
        want = int(q.split("@")[1][:3])
        assert int(ch) == want and float(value) == pytest.approx(V[node[want]], abs=2e-6), q
    s.do("FUNC 'VOLT:DC', (@101:103)")
    parts = s.ask("MEAS:VOLT? (@101:103)").split(",")
    assert parts[1::2] == ["101", "102", "103"]
    assert s.errors() == '0,"No error"'


def test_item4_the_2700_sets_buffer_full_and_the_summary_bit(bench):
    from pymeasure.instruments.keithley import Keithley2700
    emu = bench()
    s = Raw(emu, "scanner")
    s.do("STAT:MEAS:ENAB 512;*SRE 1;TRAC:POIN 3;TRAC:FEED:CONT NEXT;ROUT:SCAN (@101:103);ROUT:SCAN:LSEL INT;"
         "SAMP:COUN 3;INIT")
    assert int(s.ask("*STB?")) & 65 == 65
    assert int(s.ask("STAT:MEAS?")) & (512 | 32 | 128) == 512 | 32 | 128   # BFL, RAV, BAV
    d = Keithley2700(emu.resource("scanner"), visa_library="@py", read_termination="\n", write_termination="\n",
                     timeout=3000)
    d.reset_buffer()
    d.write("FORM:ELEM READ;STAT:MEAS:ENAB 512;*SRE 1;TRAC:POIN 2;SAMP:COUN 2;INIT")
    d.wait_for_buffer(timeout=2, interval=0.01)
    assert len(d.buffer_data) == 2


def test_item5_2700_commands_qcodes_and_pymeasure_use(bench):
    emu = bench()
    s = Raw(emu, "scanner")
    V = emu.model.solution()[0][0]
    v101 = V[emu.instruments["scanner"].channels[101]]
    s.do("*RST;FORM:ELEM READ;ROUT:CLOS (@101)")
    assert s.ask("CONF?") == '"VOLT:DC"'
    s.do("VOLT:DC:DIG 5;VOLT:DC:AVER:TCON REP;TRIG:TIM 0.5;SYST:AZER OFF")
    assert s.ask("VOLT:DC:DIG?;VOLT:DC:AVER:TCON?;TRIG:TIM?;SYST:AZER?") == "5;REP;+5.000000E-01;0"
    s.do("INIT")
    assert float(s.ask("SENS:DATA:FRES?")) == pytest.approx(v101, abs=2e-6)
    assert float(s.ask("DATA?")) == pytest.approx(v101, abs=2e-6)
    s.send("SENS:DATA:FRES?")          # nothing fresh with INIT:CONT OFF
    assert s.errors().startswith("-230")
    s.do("CALC1:FORM MXB;KMAT:MMF 2;MBF 1;:CALC1:STAT ON")
    assert float(s.ask("READ?")) == pytest.approx(2 * v101 + 1, abs=5e-6)
    s.do("CALC1:STAT OFF;TRAC:CLE;TRAC:FEED:CONT NEXT;SAMP:COUN 4;INIT;CALC2:FORM MEAN")
    assert float(s.ask("CALC2:IMM?")) == pytest.approx(v101, abs=2e-6)
    assert s.errors() == '0,"No error"'


def test_item6_a_fixed_measurement_range_limits_the_source(bench):
    emu = bench()
    c = emu.model.c
    a = Raw(emu, "smu_n1")
    v, i, _, _, word = readings(a.ask("*RST;:SOUR:VOLT 5;:SENS:CURR:PROT 0.02;:SENS:CURR:RANG 1e-3;"
                                      ":SENS:FUNC:ON 'VOLT','CURR';:OUTP ON;:READ?"))[0]
    assert i == pytest.approx(1.05e-3, rel=1e-6) and 0 < v < 5 and int(word) & (1 << 16)
    V, Vp, Ip, comp = emu.model.solution()
    k = emu.model.port_index(c.node("n1"))
    assert Vp[0, k] == pytest.approx(v, abs=1e-6)          # the network sees the clamped voltage, not 5 V
    assert delivered(c, emu.model.g, V[0], c.node("n1")) == pytest.approx(1.05e-3, rel=1e-9)


def test_item7_a_short_list_wraps(bench):
    a = Raw(bench(), "smu_n1")
    rows = readings(a.ask(":SENS:CURR:PROT 0.05;:SOUR:LIST:VOLT 1,0,-1;:SOUR:VOLT:MODE LIST;:TRIG:COUN 7;:OUTP ON;:READ?"))
    np.testing.assert_allclose(rows[:, 0], [1, 0, -1, 1, 0, -1, 1])
    a.send(":SOUR:LIST:VOLT:APP 0.5,0.25")
    assert a.ask(":SOUR:LIST:VOLT:POIN?") == "5"


def test_item8_7700_channels_121_to_125_and_the_backplane_relay(bench):
    emu = bench()
    s = Raw(emu, "scanner")
    chans = emu.instruments["scanner"].channels
    ch, spare = min(chans), max(chans) + 1
    assert spare not in chans
    s.do("FORM:ELEM READ;ROUT:OPEN:ALL")
    s.do(f"ROUT:MULT:CLOS (@{ch},{spare},123)")   # the manual's example; 124, 125 open: isolated from the meter
    assert s.ask(f"ROUT:MULT:CLOS?") == f"(@{ch},{spare},123)"
    assert float(s.ask("READ?")) == 0.0
    s.do("ROUT:MULT:CLOS (@125)")                  # the backplane relay connects the meter
    V = emu.model.solution()[0][0]
    assert float(s.ask("READ?")) == pytest.approx(V[chans[ch]], abs=2e-6)
    s.do("ROUT:CLOS (@%d)" % ch)                   # system channel operation closes 125 itself
    assert s.ask("ROUT:MULT:CLOS?") == f"(@{ch},125)"
    assert s.errors() == '0,"No error"'


def test_item9_opc_query_answers_after_the_bus_trigger(bench):
    emu = bench()
    import select
    a = Raw(emu, "smu_n1")
    a.do(":SENS:CURR:PROT 0.05;:SOUR:VOLT 0.2;:OUTP ON")
    a.send(":ARM:SOUR BUS;:INIT;*OPC?")
    assert select.select([a.s], [], [], 0.3)[0] == []   # no reply while the sweep waits for its trigger
    a.send("*TRG")
    assert a.f.readline().decode().strip() == "1"
    assert readings(a.ask(":FETC?"))[0][0] == pytest.approx(0.2)


def test_item10_a_virtual_clock_and_buffer_time_stamps(bench):
    a = Raw(bench(), "smu_n1")
    a.do("*RST;:SENS:CURR:PROT 0.05;:SOUR:DEL 0.25;:SENS:CURR:NPLC 6;:OUTP ON;:SYST:TIME:RES")
    t = readings(a.ask(":TRIG:COUN 3;:READ?"))[:, 3]
    np.testing.assert_allclose(t, [0, 0.35, 0.7], atol=1e-9)          # 0.25 s delay + 6/60 s per point
    a.do(":TRAC:CLE;:TRAC:POIN 3;:TRAC:FEED:CONT NEXT;:INIT")
    np.testing.assert_allclose(readings(a.ask(":TRAC:DATA?"))[:, 3], [0, 0.35, 0.7], atol=1e-9)  # from the first
    np.testing.assert_allclose(readings(a.ask(":TRAC:TST:FORM DELT;:TRAC:DATA?"))[:, 3], [0, 0.35, 0.35], atol=1e-9)


def test_item11_smaller_facts(bench):
    emu = bench()
    a, s = Raw(emu, "smu_n1"), Raw(emu, "scanner")
    assert a.ask("*RST;:SENS:RES:MODE?") == "AUTO"
    s.do("SYST:PRES")
    assert s.ask("INIT:CONT?") == "1"
    for bad, code in (("*RST 1", "-108"), (":SOUR:VOLT 1,2", "-108"), (":SOUR:VOLT 1 2", "-102"),
                      (":SOUR:VOLT 1e", "-102"), (":SOUR:VOLT abc", "-104")):
        a.send(bad)
        assert a.errors().startswith(code), bad
    a.do(":SOUR:VOLT 0.3;*SAV 2;:SOUR:VOLT 0.1;*RCL 2")
    assert a.ask(":SOUR:VOLT?") == "+3.000000E-01"
    a.do(":SOUR:VOLT:PROT 50")
    assert a.ask(":SOUR:VOLT:PROT?") == "+6.000000E+01"              # the next level up
    a.do(":SOUR:VOLT:PROT NONE;:ARM:COUN INF")
    assert a.ask(":SOUR:VOLT:PROT?;:ARM:COUN?") == "+2.100000E+02;INF"
    a.send(":ARM:COUN 100;:TRIG:COUN 26")                             # 2600 > the 2500 cap
    assert a.errors().startswith("-221")
