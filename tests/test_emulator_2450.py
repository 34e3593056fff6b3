"""The emulated Keithley 2450 (SCPI command set) against its reference manual and PyMeasure's Keithley2450.

Physics against an independent Kirchhoff solve of the circuit; the bench backend on a bench
of 2450s reproduces the ideal run.
"""

import warnings

import numpy as np
import pytest

from hil.circuit import load_circuit
from hil.ideal import IdealSubstrate
from hil.substrate import Free
from test_emulator import Raw, bench, delivered  # noqa: F401  (bench: the fixture)

warnings.filterwarnings("ignore", category=FutureWarning)


def _open(emu, *names):
    for name in names:
        Raw(emu, name).do(":OUTP:VOLT:SMOD HIMP;:OUTP:CURR:SMOD HIMP")


def _k2450(emu, name):
    from pymeasure.instruments.keithley import Keithley2450
    return Keithley2450(emu.resource(name), visa_library="@py", read_termination="\n", write_termination="\n",
                        timeout=3000)


def free_state(c, levels):
    X = [[levels.get(c.nodes[i], 0.0) for i in c.inputs]]
    return IdealSubstrate(c).measure(X, [[0.0] * len(c.outputs)], [Free()])[Free()][0]


SETTINGS_2450 = [
    ("source_mode", "current"), ("compliance_voltage", 3.0), ("source_current", 1e-5), ("source_current_range", 1e-3),
    ("source_current_delay", 0.05), ("source_current_delay_auto", False), ("current_range", 1e-2),
    ("current_nplc", 2.0), ("voltage_range", 2.0), ("voltage_nplc", 0.5), ("source_mode", "voltage"),
    ("compliance_current", 2e-3), ("source_voltage", 0.7), ("source_voltage_range", 2.0),
    ("source_voltage_delay", 0.01), ("resistance_range", 2e4), ("resistance_nplc", 3.0), ("wires", 4),
    ("current_filter_type", "MOV"), ("current_filter_count", 20), ("voltage_filter_type", "MOV"),
    ("voltage_filter_count", 5), ("current_output_off_state", "HIMP"), ("voltage_output_off_state", "ZERO"),
]


def test_pymeasure_keithley2450_properties_keep_what_they_are_set_to(bench):
    k = _k2450(bench(smu_model="2450"), "smu_n1")
    k.reset()
    assert k.id.startswith("KEITHLEY INSTRUMENTS,MODEL 2450")
    assert (k.source_mode, k.compliance_current, k.compliance_voltage) == ("voltage", 1.05e-4, 21.0)
    assert (k.current_range, k.voltage_range, k.source_enabled) == (1e-4, 20.0, False)
    for name, value in SETTINGS_2450:
        setattr(k, name, value)
        got = getattr(k, name)
        assert got == (pytest.approx(value) if isinstance(value, float) else value), name
    k.use_rear_terminals()
    assert k.ask(":ROUT:TERM?") == "REAR"
    k.use_front_terminals()
    assert k.check_errors() == []


def test_pymeasure_keithley2450_sources_and_measures_the_circuit(bench):
    emu = bench(smu_model="2450")
    c = emu.model.c
    _open(emu, "smu_n2", "smu_n6", "smu_n7")
    Raw(emu, "smu_n2").do(":SOUR:VOLT 0;:SOUR:VOLT:ILIM 0.05;:OUTP:VOLT:SMOD NORM;:OUTP ON")
    k = _k2450(emu, "smu_n1")
    k.reset()
    k.apply_voltage(compliance_current=0.05)
    k.measure_current()
    k.source_voltage = 0.4
    k.enable_source()
    assert k.source_enabled is True
    i = k.current
    assert i == pytest.approx(delivered(c, c.g, free_state(c, {"n1": 0.4}), c.node("n1")), rel=1e-5)
    k.ramp_to_voltage(0.8, steps=4, pause=0)
    assert k.current == pytest.approx(delivered(c, c.g, free_state(c, {"n1": 0.8}), c.node("n1")), rel=1e-5)
    k.measure_voltage()
    assert k.voltage == pytest.approx(0.8, abs=1e-6)
    k.compliance_current = 1e-4                     # compliance as physics: the current held at the limit
    k.measure_current()
    assert k.current == pytest.approx(1e-4, rel=1e-5)
    assert k.ask(":SOUR:VOLT:ILIM:TRIP?") == "1"
    k.disable_source()
    assert k.check_errors() == []


def test_2450_sweeps_into_a_named_buffer_and_the_buffer_statistics(bench):
    emu = bench(smu_model="2450")
    c = emu.model.c
    _open(emu, "smu_n6", "smu_n7")
    Raw(emu, "smu_n2").do(":SOUR:VOLT 0;:SOUR:VOLT:ILIM 0.05;:OUTP ON")
    a = Raw(emu, "smu_n1")
    a.do(':SOUR:VOLT:ILIM 0.05;:SENS:FUNC "CURR";:TRAC:MAKE "iv", 100')
    a.do(':SOUR:SWE:VOLT:LIN -0.5, 0.5, 5, 0, 1, BEST, ON, OFF, "iv";:INIT;*WAI')
    assert a.ask(':TRAC:ACT? "iv"') == "5"
    data = np.array([float(x) for x in a.ask(':TRAC:DATA? 1, 5, "iv", SOUR, READ').split(",")]).reshape(5, 2)
    np.testing.assert_allclose(data[:, 0], np.linspace(-0.5, 0.5, 5), atol=1e-6)
    for v, i in data:
        assert i == pytest.approx(delivered(c, c.g, free_state(c, {"n1": v}), c.node("n1")), rel=1e-5, abs=1e-11)
    assert float(a.ask(':TRAC:STAT:AVER? "iv"')) == pytest.approx(data[:, 1].mean(), rel=1e-9)
    a.do(':SOUR:LIST:VOLT 0.1, 0.3;:SOUR:SWE:VOLT:LIST 1, 0, 2')    # the list twice
    a.do(":INIT")
    src = [float(x) for x in a.ask(':TRAC:DATA? 1, 4, "defbuffer1", SOUR').split(",")]
    np.testing.assert_allclose(src, [0.1, 0.3, 0.1, 0.3], atol=1e-6)
    a.do(':TRIG:LOAD "SimpleLoop", 3, 0, "iv";:INIT')
    assert a.ask(':TRAC:ACT? "iv"') == "3"          # the model's first block cleared the buffer
    a.send(':TRAC:DATA? 1, 2, "nosuch"')
    assert a.errors().startswith("-224")


def test_2450_trigger_blocks_wait_for_pymeasures_bus_trigger(bench):
    """A model of :TRIG:BLOC blocks (reference manual, section 6): a reading per *TRG, which PyMeasure's
    Keithley2450.trigger() sends; *OPC? answers, and *WAI releases, once the model ends."""
    import select
    emu = bench(smu_model="2450")
    c = emu.model.c
    _open(emu, "smu_n6", "smu_n7")
    Raw(emu, "smu_n2").do(":SOUR:VOLT 0;:SOUR:VOLT:ILIM 0.05;:OUTP ON")
    a = Raw(emu, "smu_n1")
    a.do(':SOUR:VOLT:ILIM 0.05;:SENS:FUNC "CURR";:TRIG:LOAD "Empty";:TRIG:BLOC:BUFF:CLE 1;'
         ':TRIG:BLOC:SOUR:STAT 2, ON;:TRIG:BLOC:WAIT 3, COMM')
    a.send(':TRIG:BLOC:CONF:NEXT 4, "nosuch"')
    assert a.errors().startswith('-224,"Illegal parameter value; no source configuration list named NOSUCH')
    a.do(':TRIG:BLOC:MDIG 4, "defbuffer1";:TRIG:BLOC:BRAN:COUN 5, 3, 3;:TRIG:BLOC:SOUR:STAT 6, OFF')
    assert a.ask(":TRIG:BLOC:LIST?") == ('"1) BUFFER_CLEAR DEFBUFFER1","2) SOURCE_OUTPUT ON","3) WAIT COMM AND",'
                                         '"4) MEASURE DEFBUFFER1 1","5) BRANCH_COUNTER 3 3","6) SOURCE_OUTPUT OFF"')
    k = _k2450(emu, "smu_n1")
    k.source_voltage = 0.4
    a.send(":INIT;*OPC?")
    assert a.ask(":TRIG:STAT?") == "WAITING;WAITING;3"
    for n in range(3):
        assert select.select([a.s], [], [], 0.2)[0] == []       # *OPC? waits for the model's end
        assert a.ask(':TRAC:ACT? "defbuffer1"') == str(n)
        k.trigger()                                            # PyMeasure: *TRG, the COMMand event
    assert a.f.readline().decode().strip() == "1"
    assert a.ask(":TRIG:STAT?") == "IDLE;IDLE;6" and a.ask(":OUTP?") == "0"   # block 6 turned the output off
    data = np.array([float(x) for x in a.ask(':TRAC:DATA? 1, 3, "defbuffer1", SOUR, READ').split(",")]).reshape(3, 2)
    i = delivered(c, c.g, free_state(c, {"n1": 0.4}), c.node("n1"))
    np.testing.assert_allclose(data, [[0.4, i]] * 3, rtol=1e-5)
    a.send("*TRG")                                             # nothing waits now
    assert a.errors().startswith("-211")
    # the manual's counter example: 5 readings, a 1 s delay, three times: 15, grouped by the delay
    a.do(':SENS:CURR:NPLC 1;:TRIG:LOAD "Empty";:TRIG:BLOC:BUFF:CLE 1;:TRIG:BLOC:MDIG 2;:TRIG:BLOC:BRAN:COUN 3, 5, 2;'
         ':TRIG:BLOC:DEL:CONS 4, 1;:TRIG:BLOC:BRAN:COUN 5, 3, 2;:OUTP ON;:INIT;*WAI')
    rel = np.array([float(x) for x in a.ask(':TRAC:DATA? 1, 15, "defbuffer1", REL').split(",")])
    step = np.diff(rel)
    within = np.delete(step, [4, 9])
    assert len(rel) == 15 and within[0] > 0
    np.testing.assert_allclose(within, within[0], atol=1e-6)          # one integration time between readings
    np.testing.assert_allclose(step[[4, 9]], within[0] + 1, atol=1e-6)  # and the 1 s delay block between groups
    for bad, code in (('TRIG:BLOC:WAIT 6, TIM1', "-224"), ('TRIG:BLOC:NOP 9', "-222"), ('TRIG:BLOC:BRAN:COUN 6', "-109"),
                      ('TRIG:LOAD "GradeBinning", 1', "-224")):
        a.send(bad)
        assert a.errors().startswith(code), bad
    assert a.errors() == '0,"No error"'


def test_2450_interlock_limits_the_output_to_21_volts(bench):
    emu = bench(smu_model="2450")
    c = emu.model.c
    a = Raw(emu, "smu_n1")
    assert a.ask(":OUTP:INT:TRIP?") == "0"
    a.do(":SOUR:VOLT:ILIM 1;:SOUR:VOLT 30;:OUTP ON")
    V = emu.model.solution()[0][0]
    assert V[c.node("n1")] == pytest.approx(21.0)
    assert a.errors().startswith("+5074")


def test_training_on_an_emulated_bench_of_2450s_reproduces_the_ideal_run(tmp_path, bench):
    from hil.bench.substrate import BenchSubstrate
    from hil.runs import Run
    from hil.tasks import teacher_task
    from hil.train import TrainConfig, start_run
    c = load_circuit("bridge")
    task = teacher_task(c, seed=2, examples=3)
    cfg = dict(rule="cl", steps=4, seed=1)
    start_run(c, task, TrainConfig(**cfg), tmp_path / "ideal", progress=False)
    emu = bench("bridge", smu_model="2450")
    path = tmp_path / "bench.toml"
    path.write_text(emu.bench_toml(c.source))
    assert 'model = "2450"' in path.read_text()
    with BenchSubstrate(c, path) as b:
        start_run(c, task, TrainConfig(**cfg, backend="bench"), tmp_path / "bench", progress=False, substrate=b)
    np.testing.assert_allclose(Run(tmp_path / "bench").read_log()["train_loss"],
                               Run(tmp_path / "ideal").read_log()["train_loss"], rtol=2e-4)


def test_a_bench_file_names_each_smus_model_and_refuses_an_unknown_one(tmp_path, bench):
    from hil.bench.substrate import BenchError, load_bench
    emu = bench("bridge", smu_model={"top": "2450", "left": "2400", "right": "2400"})
    text = emu.bench_toml(load_circuit("bridge").source)
    assert text.count('model = "2450"') == 1 and "MODEL 2450" in Raw(emu, "smu_top").ask("*IDN?")
    path = tmp_path / "b.toml"
    path.write_text(text.replace('model = "2450"', 'model = "2410"'))
    with pytest.raises(BenchError, match=r'b.toml: \[\[smu\]\] #1 model = .2410. must be "2400" or "2450"'):
        load_bench(path)
