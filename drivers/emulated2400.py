"""An emulated Keithley 2400 SourceMeter: its command tree as data, the trigger model, the buffer, the status bits.

Facts from the 2400 Series SourceMeter User's Manual (section 18 command
summaries and *RST defaults, section 9 data store, section 15 status model,
Table B-1 error messages). A reading is one set of data elements
(:FORM:ELEM VOLT,CURR,RES,TIME,STAT, always in that order); a quantity neither
sourced nor measured reads as NAN (+9.91E37), an overflow as +9.9E37.
Measured values are rounded to 6.5 digits of their range (range / 2,000,000)
and carry the configured noise averaged over NPLC line cycles.

Trigger model: :INIT (or :READ?) takes the instrument out of idle; it runs
ARM:COUN x TRIG:COUN source-measure points (instantly: virtual time advances by
the delays and the integration time of each point), stores them in the sample
buffer that :FETC? returns and, with :TRAC:FEED:CONT NEXT, in the trace buffer
until :TRAC:POIN readings fill it. :ARM:SOUR BUS waits for *TRG.
"""

from __future__ import annotations

import time

import numpy as np

from hil.drivers.commands import Setting, fmt_real, install, reset
from hil.drivers.emulator import Instrument
from hil.drivers.scpi import ILLEGAL_VALUE, OUTPUT_OFF, SETTINGS_CONFLICT, SCPIError, boolean, number, split_params

V_RANGES = (0.21, 2.1, 21.0, 210.0)                                # full scales: 105 % of 200 mV .. 200 V
I_RANGES = (1.05e-6, 1.05e-5, 1.05e-4, 1.05e-3, 1.05e-2, 1.05e-1, 1.05)
R_RANGES = (21.0, 210.0, 2.1e3, 2.1e4, 2.1e5, 2.1e6, 2.1e7, 2.1e8)
NAN, OVERFLOW = 9.91e37, 9.9e37
FUNCS = ("VOLT:DC", "CURR:DC", "RES")
ELEMENTS = ("VOLT", "CURR", "RES", "TIME", "STAT")
# measurement event register (manual Figure 15-6)
RAV, ROF, BAV, BFL, COMP = 1 << 6, 1 << 7, 1 << 8, 1 << 9, 1 << 14
BUFFER_MAX = 2500

S = Setting
SETTINGS = [
    S("SOURce:FUNCtion[:MODE]", "sour_func", "enum", "VOLT", choices=("VOLTage", "CURRent")),
    S("SOURce:VOLTage[:LEVel][:IMMediate][:AMPLitude]", "sour_volt", "real", 0.0, -210.0, 210.0),
    S("SOURce:CURRent[:LEVel][:IMMediate][:AMPLitude]", "sour_curr", "real", 0.0, -1.05, 1.05),
    S("SOURce:VOLTage:MODE", "volt_mode", "enum", "FIX", choices=("FIXed", "LIST")),
    S("SOURce:CURRent:MODE", "curr_mode", "enum", "FIX", choices=("FIXed", "LIST")),
    S("SOURce:VOLTage:RANGe", "sour_volt_rang", "real", 21.0, -210.0, 210.0, ranges=V_RANGES),
    S("SOURce:VOLTage:RANGe:AUTO", "sour_volt_rang_auto", "bool", True),
    S("SOURce:CURRent:RANGe", "sour_curr_rang", "real", 1.05e-4, -1.05, 1.05, ranges=I_RANGES),
    S("SOURce:CURRent:RANGe:AUTO", "sour_curr_rang_auto", "bool", True),
    S("SOURce:DELay", "sour_del", "real", 0.0, 0.0, 9999.999),
    S("SOURce:DELay:AUTO", "sour_del_auto", "bool", True),
    S("SOURce:CLEar:AUTO", "sour_cle_auto", "bool", False),
    S("[SENSe]:CURRent[:DC]:PROTection[:LEVel]", "i_prot", "real", 1.05e-4, -1.05, 1.05),
    S("[SENSe]:VOLTage[:DC]:PROTection[:LEVel]", "v_prot", "real", 21.0, -210.0, 210.0),
    S("[SENSe]:CURRent[:DC]:RANGe[:UPPer]", "sens_curr_rang", "real", 1.05e-4, -1.05, 1.05, ranges=I_RANGES),
    S("[SENSe]:CURRent[:DC]:RANGe:AUTO", "sens_curr_rang_auto", "bool", True),
    S("[SENSe]:VOLTage[:DC]:RANGe[:UPPer]", "sens_volt_rang", "real", 21.0, -210.0, 210.0, ranges=V_RANGES),
    S("[SENSe]:VOLTage[:DC]:RANGe:AUTO", "sens_volt_rang_auto", "bool", True),
    S("[SENSe]:RESistance:RANGe[:UPPer]", "sens_res_rang", "real", 2.1e5, 0.0, 2.1e8, ranges=R_RANGES),
    S("[SENSe]:RESistance:RANGe:AUTO", "sens_res_rang_auto", "bool", True),
    S("[SENSe]:CURRent[:DC]:NPLCycles", "curr_nplc", "real", 1.0, 0.01, 10.0),
    S("[SENSe]:VOLTage[:DC]:NPLCycles", "volt_nplc", "real", 1.0, 0.01, 10.0),
    S("[SENSe]:RESistance:NPLCycles", "res_nplc", "real", 1.0, 0.01, 10.0),
    S("[SENSe]:RESistance:MODE", "res_mode", "enum", "MAN", choices=("MANual", "AUTO")),
    S("[SENSe]:RESistance:OCOMpensated", "res_ocom", "bool", False),
    S("[SENSe]:FUNCtion:CONCurrent", "func_conc", "bool", True),
    S("[SENSe]:AVERage[:STATe]", "aver", "bool", False),
    S("[SENSe]:AVERage:COUNt", "aver_coun", "int", 10, 1, 100),
    S("[SENSe]:AVERage:TCONtrol", "aver_tcon", "enum", "REP", choices=("REPeat", "MOVing")),
    S("SYSTem:AZERo[:STATe]", "azer", "bool", True, settable=False, queryable=False),  # ON|OFF|ONCE: below
    S("SYSTem:RSENse", "rsen", "bool", False),
    S("SYSTem:LFRequency", "lfr", "int", 60, 50, 60, reset=False),
    S("SYSTem:LFRequency:AUTO", "lfr_auto", "bool", False, reset=False),
    S("SYSTem:BEEPer:STATe", "beep", "bool", True),
    S("ROUTe:TERMinals", "term", "enum", "FRON", choices=("FRONt", "REAR")),
    S("OUTPut[:STATe]", "output", "bool", False),
    S("OUTPut:SMODe", "smod", "enum", "NORM", choices=("HIMPedance", "NORMal", "ZERO", "GUARd")),
    S("OUTPut:ENABle[:STATe]", "outp_enab", "bool", False),
    S("DISPlay:ENABle", "disp_enab", "bool", True),
    S("DISPlay:DIGits", "disp_dig", "int", 6, 4, 7),
    S("DISPlay[:WINDow]:TEXT:DATA", "disp_text", "string", "", max_len=20),
    S("DISPlay[:WINDow]:TEXT:STATe", "disp_text_stat", "bool", False),
    S("ARM:COUNt", "arm_coun", "int", 1, 1, 2500),
    S("ARM:SOURce", "arm_sour", "enum", "IMM",
      choices=("IMMediate", "TLINk", "TIMer", "MANual", "BUS", "NSTest", "PSTest", "BSTest")),
    S("ARM:TIMer", "arm_tim", "real", 0.1, 0.001, 99999.99),
    S("ARM:ILINe", "arm_ilin", "int", 1, 1, 4),
    S("ARM:OLINe", "arm_olin", "int", 2, 1, 4),
    S("ARM:OUTPut", "arm_outp", "enum", "NONE", choices=("TENTer", "TEXit", "NONE")),
    S("TRIGger:COUNt", "trig_coun", "int", 1, 1, 2500),
    S("TRIGger:DELay", "trig_del", "real", 0.0, 0.0, 999.9999),
    S("TRIGger:SOURce", "trig_sour", "enum", "IMM", choices=("IMMediate", "TLINk")),
    S("TRIGger:ILINe", "trig_ilin", "int", 1, 1, 4),
    S("TRIGger:OLINe", "trig_olin", "int", 2, 1, 4),
    S("TRIGger:OUTPut", "trig_outp", "enum", "NONE", choices=("SOURce", "DELay", "SENSe", "NONE")),
    # the 2400's TRACe settings are kept through *RST (Table 18-10 note)
    S("TRACe:POINts", "trac_poin", "int", 100, 1, BUFFER_MAX, reset=False),
    S("TRACe:FEED", "trac_feed", "enum", "SENS", choices=("SENSe", "CALCulate", "CALCulate2"), reset=False),
    S("TRACe:FEED:CONTrol", "trac_cont", "enum", "NEV", choices=("NEVer", "NEXT"), reset=False),
    S("TRACe:TSTamp:FORMat", "trac_tst", "enum", "ABS", choices=("ABSolute", "DELTa"), reset=False),
    S("CALCulate3:FORMat", "calc3_form", "enum", "MEAN", choices=("MEAN", "SDEViation", "MAXimum", "MINimum", "PKPK")),
    S("FORMat[:DATA]", "form_data", "enum", "ASC", choices=("ASCii",)),
    S("FORMat:SREGister", "form_sreg", "enum", "ASC", choices=("ASCii",)),
    S("FORMat:ELEMents[:SENSe]", "elements", "list", ELEMENTS,
      choices=("VOLTage", "CURRent", "RESistance", "TIME", "STATus")),
]
#: settings whose change moves the circuit's state (the rest act on readings only)
PHYSICAL = {"sour_func", "sour_volt", "sour_curr", "volt_mode", "curr_mode", "i_prot", "v_prot", "output",
            "smod", "trig_coun", "arm_coun", "sens_curr_rang", "sens_volt_rang"}


class SMU(Instrument):
    """A Keithley 2400 on one node of the emulated circuit."""

    idn = "KEITHLEY INSTRUMENTS INC.,MODEL 2400,0000000,C30 EMULATED (hil)"
    settings = SETTINGS

    def __init__(self, model, node: str):
        self.node_name = node
        self.node = model.c.node(node)
        self.t0 = time.monotonic()
        self.state = {}
        self.lists = {"VOLT": [], "CURR": []}
        self.trace = self.samples = np.zeros((0, 5))
        self.compliance = False
        self.rng = np.random.default_rng([model.c.node(node), 2400])
        super().__init__(model)
        model.smus[node] = self

    def applied(self) -> dict:
        """What the SMU puts on its node: output, source function, fixed levels and lists, compliances (V, A)."""
        st = self.state
        return {"output": st["output"], "func": st["sour_func"], "mode": {"VOLT": st["volt_mode"], "CURR": st["curr_mode"]},
                "volt": st["sour_volt"], "curr": st["sour_curr"], "lists": {k: list(v) for k, v in self.lists.items()},
                "i_prot": st["i_prot"], "v_prot": st["v_prot"], "trig_count": st["trig_coun"], "smod": st["smod"]}

    # -- declaration --------------------------------------------------------------------
    def reset(self):
        reset(self.settings, self.state)
        self.funcs = ["CURR:DC"]            # *RST: measure current only (concurrent on)
        self.lists = {"VOLT": [], "CURR": []}
        self.samples = np.zeros((0, 5))
        self.armed = False
        self.model.changed()

    def declare(self):
        s = self.scpi
        install(s, self.settings, self.state, self._on_set)
        s.add("[SENSe]:FUNCtion[:ON]", lambda a: self._funcs_on(a))
        s.add("[SENSe]:FUNCtion[:ON]?", lambda a: ",".join(f'"{f}"' for f in self.funcs))
        s.add("[SENSe]:FUNCtion:OFF", lambda a: self._funcs_off(a))
        s.add("[SENSe]:FUNCtion:OFF?", lambda a: ",".join(f'"{f}"' for f in FUNCS if f not in self.funcs))
        s.add("[SENSe]:FUNCtion[:ON]:ALL", lambda a: self._set_funcs(list(FUNCS)))
        s.add("[SENSe]:FUNCtion:OFF:ALL", lambda a: self._set_funcs([]))
        s.add("[SENSe]:FUNCtion:STATe?", lambda a: "1" if self._func(a) in self.funcs else "0")
        s.add("[SENSe]:CURRent[:DC]:PROTection:TRIPped?", lambda a: "1" if self._vsrc() and self._tripped() else "0")
        s.add("[SENSe]:VOLTage[:DC]:PROTection:TRIPped?", lambda a: "1" if not self._vsrc() and self._tripped() else "0")
        for kind, path, lim in (("VOLT", "SOURce:LIST:VOLTage", 210.0), ("CURR", "SOURce:LIST:CURRent", 1.05)):
            s.add(path, lambda a, k=kind, l=lim: self._set_list(k, a, l))
            s.add(path + "?", lambda a, k=kind: ",".join(fmt_real(v) for v in self.lists[k]))
            s.add(path + ":POINts?", lambda a, k=kind: str(len(self.lists[k])))
        s.add("INITiate[:IMMediate]", lambda a: self._initiate())
        s.add("ABORt", lambda a: setattr(self, "armed", False))
        s.add("*TRG", lambda a: self._trigger())
        s.add("TRIGger:CLEar", lambda a: None)
        s.add("FETCh?", lambda a: self._fetch())
        s.add("READ?", lambda a: self._read())
        s.add("[SENSe]:DATA[:LATest]?", lambda a: self._fetch(latest=True))
        for q, f in (("MEASure?", None), ("MEASure:VOLTage[:DC]?", "VOLT:DC"), ("MEASure:CURRent[:DC]?", "CURR:DC"),
                     ("MEASure:RESistance?", "RES")):
            s.add(q, lambda a, f=f: self._measure(f))
        for c, f in (("CONFigure:VOLTage[:DC]", "VOLT:DC"), ("CONFigure:CURRent[:DC]", "CURR:DC"),
                     ("CONFigure:RESistance", "RES")):
            s.add(c, lambda a, f=f: self._configure(f))
        s.add("CONFigure?", lambda a: ",".join(f'"{f}"' for f in self.funcs))
        s.add("TRACe:DATA?", lambda a: self._format(self.trace))
        s.add("TRACe:CLEar", lambda a: self._clear_trace())
        s.add("TRACe:POINts:ACTual?", lambda a: str(len(self.trace)))
        s.add("TRACe:FREE?", lambda a: f"{(BUFFER_MAX - len(self.trace)) * 40},{len(self.trace) * 40}")
        s.add("CALCulate3:DATA?", lambda a: self._statistic())
        s.add("SYSTem:TIME:RESet", lambda a: setattr(self, "t0", time.monotonic()))
        s.add("SYSTem:BEEPer[:IMMediate]", lambda a: [number(x, 0, 1e6) for x in split_params(a)] and None)
        s.add("SYSTem:PRESet", lambda a: self.reset())
        s.add("SYSTem:AZERo[:STATe]", lambda a: self.state.__setitem__("azer", self.state["azer"] if
                                                                    a.strip(" \t").upper() == "ONCE" else boolean(a)))
        s.add("SYSTem:AZERo[:STATe]?", lambda a: "1" if self.state["azer"] else "0")
        s.add("*OPT?", lambda a: "0")

    def _on_set(self, setting, value):
        st = self.state
        if setting.key in ("sens_curr_rang", "sens_volt_rang", "sens_res_rang", "sour_volt_rang", "sour_curr_rang"):
            st[setting.key + "_auto"] = False  # selecting a range turns auto range off
        if setting.key == "lfr" and value not in (50, 60):
            raise SCPIError(ILLEGAL_VALUE, f"line frequency {value} (50 or 60)")
        if setting.key == "trac_cont" and value == "NEXT" and len(self.trace) >= st["trac_poin"]:
            self.trace = np.zeros((0, 5))  # a new fill starts from an empty buffer
        if setting.key == "trac_poin" and len(self.trace) > value:
            self.trace = self.trace[:value]
        for level, rng in (("sour_volt", "sour_volt_rang"), ("sour_curr", "sour_curr_rang")):
            if setting.key == level and not st[rng + "_auto"] and abs(value) > st[rng] * (1 + 1e-12):
                raise SCPIError(-222, f"{value:g} beyond the fixed source range {st[rng]:g}")
        if setting.key in ("i_prot", "v_prot"):
            st[setting.key] = abs(value)
        if setting.key in PHYSICAL:
            self.model.changed()

    def _tripped(self) -> bool:
        """In compliance now: the source held at its limit (at the sweep's last point)."""
        if not self.state["output"]:
            return False
        comp = self.model.solution()[3]
        return bool(comp[-1, self.model.port_index(self.node)])

    # -- functions ----------------------------------------------------------------------
    @staticmethod
    def _func(text):
        t = text.strip(" \t").strip("'\"").strip().upper()
        t = t[:-3] if t.endswith(":DC") else t
        names = {"VOLT": "VOLT:DC", "VOLTAGE": "VOLT:DC", "CURR": "CURR:DC", "CURRENT": "CURR:DC",
                 "RES": "RES", "RESISTANCE": "RES"}
        if t not in names:
            raise SCPIError(ILLEGAL_VALUE, f"function {text.strip()[:20]}")
        return names[t]

    def _set_funcs(self, funcs):
        self.funcs = [f for f in FUNCS if f in funcs]

    def _funcs_on(self, a):
        new = [self._func(x) for x in split_params(a)]
        if not self.state["func_conc"]:
            if len(new) != 1:
                raise SCPIError(SETTINGS_CONFLICT, "one function at a time with :SENS:FUNC:CONC OFF")
            self._set_funcs(new)
        else:
            self._set_funcs(self.funcs + new)

    def _funcs_off(self, a):
        off = {self._func(x) for x in split_params(a)}
        self._set_funcs([f for f in self.funcs if f not in off])

    # -- source ------------------------------------------------------------------------
    def _vsrc(self) -> bool:
        return self.state["sour_func"] == "VOLT"

    def list_mode(self) -> bool:
        return self.state["volt_mode" if self._vsrc() else "curr_mode"] == "LIST"

    def sweep_count(self) -> int:
        return self.state["arm_coun"] * self.state["trig_coun"]

    def _set_list(self, kind, a, lim):
        vals = [number(x, -lim, lim) for x in split_params(a)]
        if not 1 <= len(vals) <= 100:  # the 2400 holds up to 100 list points
            raise SCPIError(-223, f"{len(vals)} list points (1 to 100)")
        self.lists[kind] = vals
        self.model.changed()

    def levels(self, n: int) -> np.ndarray:
        """The source level at each of n sweep points (the fixed level, or the list)."""
        st = self.state
        kind = "VOLT" if self._vsrc() else "CURR"
        if not self.list_mode():
            return np.full(n, st["sour_volt"] if self._vsrc() else st["sour_curr"])
        lst = self.lists[kind]
        if len(lst) != n:
            raise SCPIError(SETTINGS_CONFLICT, f"source list of {len(lst)} points for a trigger count of {n}")
        return np.asarray(lst, float)

    def port(self, n: int):
        """(held at a voltage?, level, limit) at each of n points: what this SMU does to its node."""
        st = self.state
        if st["output"] or self._auto_on:
            if self._vsrc():
                return True, self.levels(n), st["i_prot"]
            return False, self.levels(n), st["v_prot"]
        # the output-off states (manual, :OUTP:SMOD)
        mode = st["smod"]
        if mode == "HIMP":
            return False, 0.0, np.inf
        if mode == "NORM":
            return True, 0.0, 0.005 * st["sens_curr_rang"] / 1.05
        if mode == "ZERO":
            return True, 0.0, st["i_prot"]
        return False, 0.0, 0.005 * st["sens_volt_rang"] / 1.05   # GUARd

    _auto_on = False

    # -- the trigger model ----------------------------------------------------------------
    def _initiate(self):
        if self.armed:
            raise SCPIError(-213, "already waiting for a trigger")
        if self.state["arm_sour"] in ("BUS", "MAN"):
            self._check_output()
            self.armed = True
            return
        self._run()

    def _trigger(self):
        if not self.armed:
            raise SCPIError(-211, "not waiting for a trigger")
        self.armed = False
        self._run()

    def _check_output(self):
        if not self.state["output"] and not self.state["sour_cle_auto"]:
            raise SCPIError(OUTPUT_OFF)

    def _run(self):
        """ARM:COUN x TRIG:COUN source-measure points into the sample buffer (and the trace)."""
        self._check_output()
        if self.sweep_count() > BUFFER_MAX:  # the sample buffer holds ARM:COUN x TRIG:COUN readings
            raise SCPIError(SETTINGS_CONFLICT, f"arm count x trigger count = {self.sweep_count()} > {BUFFER_MAX}")
        auto = not self.state["output"]
        if auto:  # :SOUR:CLE:AUTO ON: the output is on for the measurement only
            self._auto_on = True
            self.model.changed()
        try:
            self.samples = self._acquire(self.sweep_count())
        finally:
            if auto:
                self._auto_on = False
                self.model.changed()
        st = self.state
        if st["trac_cont"] == "NEXT":
            room = st["trac_poin"] - len(self.trace)
            self.trace = np.vstack([self.trace, self.samples[:room]])
            if len(self.trace) >= 2:
                self.status.measurement.set(BAV)
            if len(self.trace) >= st["trac_poin"]:
                st["trac_cont"] = "NEV"
                self.status.measurement.set(BFL)

    def _read(self):
        if self.state["arm_sour"] in ("BUS", "MAN"):
            raise SCPIError(SETTINGS_CONFLICT, f":READ? with :ARM:SOUR {self.state['arm_sour']} would wait for a trigger")
        self._initiate()
        return self._fetch()

    def _fetch(self, latest=False):
        if not len(self.samples):
            raise SCPIError(-230, "no readings since the last reset")
        return self._format(self.samples[-1:] if latest else self.samples)

    def _measure(self, func):
        """:MEAS? = :CONF + :READ?: one reading, the output turned on (manual, MEASure command)."""
        self._configure(func)
        return self._read()

    def _configure(self, func):
        st = self.state
        if func is not None:
            self._set_funcs(self.funcs + [func])
        st["arm_coun"] = st["trig_coun"] = 1
        st["trig_del"] = 0.0
        st["arm_sour"] = st["trig_sour"] = "IMM"
        st["trac_cont"] = "NEV"
        self.armed = False
        if not st["output"]:
            st["output"] = True
        self.model.changed()

    # -- readings ------------------------------------------------------------------------
    def _acquire(self, n: int) -> np.ndarray:
        """n readings, (n, 5): the data elements VOLT, CURR, RES, TIME, STAT of each."""
        m, st = self.model, self.state
        V, Vp, Ip, comp = m.solution()
        k = m.port_index(self.node)
        N = len(V)
        if N != 1 and N != n:
            raise SCPIError(SETTINGS_CONFLICT, f"{n} readings asked during a {N}-point sweep")
        rows = np.arange(n) if N == n else np.zeros(n, int)
        v, i, cp = Vp[rows, k], Ip[rows, k], comp[rows, k]
        vsrc = self._vsrc()
        meas_v, meas_i, meas_r = ("VOLT:DC" in self.funcs), ("CURR:DC" in self.funcs), ("RES" in self.funcs)
        levels = self.levels(n) if not self.list_mode() or N == n else self.levels(N)[rows]
        out = np.full((n, 5), NAN)
        oflo = np.zeros(n, bool)
        if meas_v or (meas_r and not vsrc):
            out[:, 0], o = self._measured(v, "volt")
            oflo |= o
        elif vsrc:
            out[:, 0] = levels
        if meas_i or (meas_r and vsrc):
            out[:, 1], o = self._measured(i, "curr")
            oflo |= o
        elif not vsrc:
            out[:, 1] = levels
        if meas_r:
            vv, ii = out[:, 0], out[:, 1]
            with np.errstate(divide="ignore", invalid="ignore"):   # an overflowed V or I overflows R
                rr = np.where((ii == 0) | oflo, OVERFLOW, vv / np.where(ii == 0, 1.0, ii))
            if not st["sens_res_rang_auto"]:
                over = np.abs(rr) > st["sens_res_rang"]
                rr[over], oflo = OVERFLOW, oflo | over
            out[:, 2] = rr
        nf = max(1, len(self.funcs))
        dt = st["trig_del"] + (0.0 if st["sour_del_auto"] else st["sour_del"]) + \
            nf * max(st["volt_nplc"], st["curr_nplc"]) / st["lfr"]
        out[:, 3] = time.monotonic() - self.t0 + dt * np.arange(n)
        word = (2 if st["aver"] else 0) | (4 if st["term"] == "FRON" else 0) \
            | (1 << 10 if meas_r and st["res_mode"] == "AUTO" else 0) \
            | (1 << 11 if meas_v else 0) | (1 << 12 if meas_i else 0) | (1 << 13 if meas_r else 0) \
            | (1 << 14 if vsrc else 1 << 15)
        out[:, 4] = word + oflo * 1 + cp * 8
        self.status.measurement.pulse(RAV | (ROF if oflo.any() else 0))
        self.compliance = bool(cp[-1]) if n else False
        self.status.measurement.set(COMP, self.compliance)
        return out

    def _measured(self, value: np.ndarray, kind: str):
        """(readings, overflowed): values with the configured noise, at 6.5 digits of their range."""
        st = self.state
        ranges = np.array(V_RANGES if kind == "volt" else I_RANGES)
        noise = self.model.noise[0 if kind == "volt" else 1]
        value = np.array(value, float)
        if noise:
            n_avg = st["aver_coun"] if st["aver"] else 1
            value = value + self.rng.normal(0.0, noise / np.sqrt(st[f"{kind}_nplc"] * n_avg), value.shape)
        if st[f"sens_{kind}_rang_auto"]:
            rng = ranges[np.minimum(np.searchsorted(ranges, np.abs(value)), len(ranges) - 1)]
        else:
            rng = np.full(value.shape, st[f"sens_{kind}_rang"])
        over = np.abs(value) > rng * (1 + 1e-12)
        res = rng / 1.05 / 2e6
        return np.where(over, OVERFLOW, np.round(value / res) * res), over

    def _format(self, readings: np.ndarray) -> str:
        cols = [k for k, e in enumerate(ELEMENTS) if e in self.state["elements"]]
        return ",".join(map(fmt_real, readings[:, cols].ravel()))

    def _clear_trace(self):
        self.trace = np.zeros((0, 5))
        self.status.measurement.set(BAV | BFL, False)

    def _statistic(self) -> str:
        """CALC3:DATA?: the buffer statistic of V, I and R (manual section 9)."""
        if not len(self.trace):
            raise SCPIError(+801, "the buffer holds no readings")
        form = self.state["calc3_form"]
        out = []
        for col in range(3):   # V, I, R
            x = self.trace[:, col]
            if form == "MEAN":
                v = x.mean()
            elif form == "SDEV":
                v = (x - x[0]).std(ddof=1) if len(x) > 1 else 0.0   # about a reading: exact 0 for equal ones
            elif form == "MAX":
                v = x.max()
            elif form == "MIN":
                v = x.min()
            else:
                v = x.max() - x.min()
            out.append(fmt_real(v))
        return ",".join(out)
