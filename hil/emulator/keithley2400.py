"""An emulated Keithley 2400 SourceMeter: its command tree as data, the trigger model, the buffer, the status bits.

Facts from the 2400 Series SourceMeter User's Manual (section 18 command
summaries and *RST defaults, section 9 data store, section 15 status model,
Table B-1 error messages). A reading is one set of data elements
(:FORM:ELEM VOLT,CURR,RES,TIME,STAT, always in that order); a quantity neither
sourced nor measured reads as NAN (+9.91E37), an overflow as +9.9E37.
Measured values are rounded to 6.5 digits of their range (range / 2,000,000)
and carry the configured noise averaged over NPLC line cycles.

Trigger model (section 11): :INIT (or :READ?) takes the instrument out of idle;
it runs ARM:COUN x TRIG:COUN source-measure points (instantly: the instrument's
virtual clock advances by the delays and the integration time of each point),
stores them in the sample buffer that :FETC? returns and, with :TRAC:FEED:CONT
NEXT, in the trace buffer until :TRAC:POIN readings fill it. :ARM:SOUR BUS waits
for *TRG; :TRIG:SOUR TLIN takes one point per trigger another instrument sends on
trigger-link line :TRIG:ILIN (an instrument with :TRIG:OUTP SOUR|DEL|SENS sends one
per point on :TRIG:OLIN). Each SMU has its own trigger model: its sweep moves no
other instrument, and outside a sweep it sources its bias level (the fixed
:SOUR:VOLT or :SOUR:CURR).

Sweeps (section 10): FIXed, LIST (a list shorter than the trigger count wraps)
and SWEep (linear or logarithmic staircase: START/STOP/STEP, CENTer/SPAN, POINts).
Compliance is the lesser of the protection level and, on a fixed measurement
range, that range's full scale (105 %: "range compliance", section 6).
"""

from __future__ import annotations

import numpy as np

from hil.emulator.commands import Setting, fmt_real, install, reset
from hil.emulator.bench import Instrument
from hil.emulator.scpi import ILLEGAL_VALUE, OUTPUT_OFF, SETTINGS_CONFLICT, SCPIError, boolean, number, split_params

V_RANGES = (0.21, 2.1, 21.0, 210.0)                                # full scales: 105 % of 200 mV .. 200 V
I_RANGES = (1.05e-6, 1.05e-5, 1.05e-4, 1.05e-3, 1.05e-2, 1.05e-1, 1.05)
R_RANGES = (21.0, 210.0, 2.1e3, 2.1e4, 2.1e5, 2.1e6, 2.1e7, 2.1e8)
NAN, OVERFLOW = 9.91e37, 9.9e37
FUNCS = ("VOLT:DC", "CURR:DC", "RES")
ELEMENTS = ("VOLT", "CURR", "RES", "TIME", "STAT")
# measurement event register (manual Figure 15-6)
RAV, ROF, BAV, BFL, COMP = 1 << 6, 1 << 7, 1 << 8, 1 << 9, 1 << 14
BUFFER_MAX = 2500
VPROT_LEVELS = (20.0, 40.0, 60.0, 80.0, 100.0, 120.0, 160.0, 210.0)   # :SOUR:VOLT:PROT; 210 = NONE
SETUPS = 5                                                         # *SAV / *RCL 0..4

S = Setting
SETTINGS = [
    S("SOURce:FUNCtion[:MODE]", "sour_func", "enum", "VOLT", choices=("VOLTage", "CURRent")),
    S("SOURce:VOLTage[:LEVel][:IMMediate][:AMPLitude]", "sour_volt", "real", 0.0, -210.0, 210.0),
    S("SOURce:CURRent[:LEVel][:IMMediate][:AMPLitude]", "sour_curr", "real", 0.0, -1.05, 1.05),
    S("SOURce:VOLTage:MODE", "volt_mode", "enum", "FIX", choices=("FIXed", "LIST", "SWEep")),
    S("SOURce:CURRent:MODE", "curr_mode", "enum", "FIX", choices=("FIXed", "LIST", "SWEep")),
    S("SOURce:VOLTage:STARt", "volt_star", "real", 0.0, -210.0, 210.0),
    S("SOURce:VOLTage:STOP", "volt_stop", "real", 0.0, -210.0, 210.0),
    S("SOURce:VOLTage:STEP", "volt_step", "real", 0.0, -420.0, 420.0),
    S("SOURce:VOLTage:CENTer", "volt_cent", "real", 0.0, -210.0, 210.0),
    S("SOURce:VOLTage:SPAN", "volt_span", "real", 0.0, -420.0, 420.0),
    S("SOURce:CURRent:STARt", "curr_star", "real", 0.0, -1.05, 1.05),
    S("SOURce:CURRent:STOP", "curr_stop", "real", 0.0, -1.05, 1.05),
    S("SOURce:CURRent:STEP", "curr_step", "real", 0.0, -2.1, 2.1),
    S("SOURce:CURRent:CENTer", "curr_cent", "real", 0.0, -1.05, 1.05),
    S("SOURce:CURRent:SPAN", "curr_span", "real", 0.0, -2.1, 2.1),
    S("SOURce:SWEep:POINts", "swe_poin", "int", 2500, 2, 2500),
    S("SOURce:SWEep:SPACing", "swe_spac", "enum", "LIN", choices=("LINear", "LOGarithmic")),
    S("SOURce:SWEep:DIRection", "swe_dir", "enum", "UP", choices=("UP", "DOWN")),
    S("SOURce:SWEep:RANGing", "swe_rang", "enum", "BEST", choices=("BEST", "AUTO", "FIXed")),
    S("SOURce:SWEep:CABort", "swe_cab", "enum", "NEV", choices=("NEVer", "EARLy", "LATE")),
    S("SOURce:VOLTage:PROTection[:LEVel]", "vprot", "real", 210.0, 0.0, 210.0, ranges=VPROT_LEVELS,
      minimum=20.0, maximum=210.0, settable=False),   # also NONE: below
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
    S("[SENSe]:RESistance:MODE", "res_mode", "enum", "AUTO", choices=("MANual", "AUTO")),
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
    S("ARM:COUNt", "arm_coun", "int", 1, 1, 2500, settable=False, queryable=False),   # also INFinite: below
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
PHYSICAL = {"sour_func", "sour_volt", "sour_curr", "i_prot", "v_prot", "output", "smod", "vprot",
            "sens_curr_rang", "sens_volt_rang", "sens_curr_rang_auto", "sens_volt_rang_auto"}
SWEEP_KEYS = ("star", "stop", "step", "cent", "span")
SETTINGS_BY_KEY = {s.key: s for s in SETTINGS}
#: settings that change one another (a staircase's START/STOP/STEP/CENTer/SPAN/POINts)
COUPLED = {f"{kind}_{k}" for kind in ("volt", "curr") for k in SWEEP_KEYS} | {"swe_poin"}


class SMU(Instrument):
    """A Keithley 2400 on one node of the emulated circuit."""

    idn = "KEITHLEY INSTRUMENTS INC.,MODEL 2400,0000000,C30 EMULATED (hil)"
    settings = SETTINGS

    def __init__(self, model, node: str):
        self.node_name = node
        self.node = model.c.node(node)
        self.state = {}
        self.lists = {"VOLT": [], "CURR": []}
        self.trace = self.samples = np.zeros((0, 5))
        self.compliance = False
        self.setups = [None] * SETUPS
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
        self.state["arm_coun"] = 1
        self.funcs = ["CURR:DC"]            # *RST: measure current only (concurrent on)
        self.lists = {"VOLT": [], "CURR": []}
        self.samples = np.zeros((0, 5))
        self.armed = None                   # None (idle), "BUS" (waits for *TRG), "TLIN" (for the trigger link)
        self.link = None                    # (points to take, readings taken) while stepped by the trigger link
        self.running = False                # :ARM:COUN INF initiated: readings until :ABORt
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
            s.add(path + ":APPend", lambda a, k=kind, l=lim: self._set_list(k, a, l, append=True))
            s.add(path + "?", lambda a, k=kind: ",".join(fmt_real(v) for v in self.lists[k]))
            s.add(path + ":POINts?", lambda a, k=kind: str(len(self.lists[k])))
        s.add("SOURce:VOLTage:PROTection[:LEVel]", self._set_vprot)
        s.add("ARM:COUNt", self._set_arm_count)
        s.add("ARM:COUNt?", lambda a: "INF" if self.state["arm_coun"] == 0 else
              SETTINGS_BY_KEY["arm_coun"].query(self.state["arm_coun"], a))
        s.add("INITiate[:IMMediate]", lambda a: self._initiate())
        s.add("ABORt", lambda a: self._abort())
        s.add("*TRG", lambda a: self._trigger())
        s.add("*SAV", lambda a: self._save(int(number(a, 0, SETUPS - 1))))
        s.add("*RCL", lambda a: self._recall(int(number(a, 0, SETUPS - 1))))
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
        s.add("TRACe:DATA?", lambda a: self._format(self._trace_times()))
        s.add("TRACe:CLEar", lambda a: self._clear_trace())
        s.add("TRACe:POINts:ACTual?", lambda a: str(len(self.trace)))
        s.add("TRACe:FREE?", lambda a: f"{(BUFFER_MAX - len(self.trace)) * 40},{len(self.trace) * 40}")
        s.add("CALCulate3:DATA?", lambda a: self._statistic())
        s.add("SYSTem:TIME?", lambda a: fmt_real(self.clock))
        s.add("SYSTem:TIME:RESet", lambda a: setattr(self, "clock", 0.0))
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
        if setting.key == "sour_del":
            st["sour_del_auto"] = False        # and a source delay the auto delay
        if setting.key == "lfr" and value not in (50, 60):
            raise SCPIError(ILLEGAL_VALUE, f"line frequency {value} (50 or 60)")
        if setting.key == "trac_cont" and value == "NEXT" and len(self.trace) >= st["trac_poin"]:
            self.trace = np.zeros((0, 5))  # a new fill starts from an empty buffer
        if setting.key == "trac_poin" and len(self.trace) > value:
            self.trace = self.trace[:value]
        if setting.key == "trig_coun" and st["arm_coun"] and value * st["arm_coun"] > BUFFER_MAX:
            raise SCPIError(SETTINGS_CONFLICT, f"arm count x trigger count = {value * st['arm_coun']} > {BUFFER_MAX}")
        for level, rng in (("sour_volt", "sour_volt_rang"), ("sour_curr", "sour_curr_rang")):
            if setting.key == level and not st[rng + "_auto"] and abs(value) > st[rng] * (1 + 1e-12):
                raise SCPIError(-222, f"{value:g} beyond the fixed source range {st[rng]:g}")
        if setting.key in ("i_prot", "v_prot"):
            st[setting.key] = abs(value)
        kind, _, what = setting.key.partition("_")
        if kind in ("volt", "curr") and what in SWEEP_KEYS + ("poin",):
            self._couple_sweep(kind, what)
        if setting.key == "swe_poin":
            for kind in ("volt", "curr"):
                self._couple_sweep(kind, "poin")
        if setting.key in PHYSICAL:
            self.model.changed()

    def _couple_sweep(self, kind, changed):
        """START/STOP, CENTer/SPAN, STEP and POINts of a staircase are coupled (manual, :SOUR:...:STEP)."""
        st = self.state
        g = {k: st[f"{kind}_{k}"] for k in SWEEP_KEYS}
        if changed in ("star", "stop"):
            g["cent"], g["span"] = (g["star"] + g["stop"]) / 2, g["stop"] - g["star"]
        elif changed in ("cent", "span"):
            g["star"], g["stop"] = g["cent"] - g["span"] / 2, g["cent"] + g["span"] / 2
        if changed == "step" and g["step"]:
            pts = int(round(abs(g["span"] / g["step"]))) + 1
            if not 2 <= pts <= 2500:
                raise SCPIError(SETTINGS_CONFLICT, f"step {g['step']:g} makes {pts} sweep points (2 to 2500)")
            st["swe_poin"] = pts
        else:
            g["step"] = g["span"] / (st["swe_poin"] - 1)
        for k in SWEEP_KEYS:
            st[f"{kind}_{k}"] = g[k]

    def _set_vprot(self, a):
        """:SOUR:VOLT:PROT: 20, 40 .. 160 V or NONE; a value selects the next level up."""
        st = self.state
        st["vprot"] = 210.0 if a.strip(" \t").upper() == "NONE" else SETTINGS_BY_KEY["vprot"].parse(a)
        self.model.changed()

    def _set_arm_count(self, a):
        st = self.state
        if a.strip(" \t").upper() in ("INF", "INFINITE"):
            st["arm_coun"] = 0
            return
        n = SETTINGS_BY_KEY["arm_coun"].parse(a)
        if n * st["trig_coun"] > BUFFER_MAX:
            raise SCPIError(SETTINGS_CONFLICT, f"arm count x trigger count = {n * st['trig_coun']} > {BUFFER_MAX}")
        st["arm_coun"] = n

    def _save(self, k):
        self.setups[k] = (dict(self.state), list(self.funcs), {key: list(v) for key, v in self.lists.items()})

    def _recall(self, k):
        if self.setups[k] is None:
            self.reset()  # a setup never saved holds the *RST defaults
            return
        state, funcs, lists = self.setups[k]
        self.state.update(state)
        self.funcs, self.lists = list(funcs), {key: list(v) for key, v in lists.items()}
        self.model.changed()

    def _tripped(self) -> bool:
        """In compliance now: the source held at its limit (at the bias level)."""
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

    def source_mode(self) -> str:
        return self.state["volt_mode" if self._vsrc() else "curr_mode"]

    def list_mode(self) -> bool:
        return self.source_mode() == "LIST"

    def sweep_count(self) -> int:
        return max(1, self.state["arm_coun"]) * self.state["trig_coun"]

    def _set_list(self, kind, a, lim, append=False):
        vals = [number(x, -lim, lim) for x in split_params(a)]
        if append:
            vals = self.lists[kind] + vals
        if not 1 <= len(vals) <= 100:  # the 2400 holds up to 100 list points
            raise SCPIError(-223, f"{len(vals)} list points (1 to 100)")
        self.lists[kind] = vals

    def bias(self) -> float:
        """The level sourced outside a sweep: the fixed :SOUR:VOLT or :SOUR:CURR (V or A)."""
        st = self.state
        return st["sour_volt"] if self._vsrc() else st["sour_curr"]

    def staircase(self) -> np.ndarray:
        """The :SOUR:...:MODE SWE points: linear or logarithmic from START to STOP in :SOUR:SWE:POIN steps."""
        st = self.state
        kind = "volt" if self._vsrc() else "curr"
        a, b, n = st[f"{kind}_star"], st[f"{kind}_stop"], st["swe_poin"]
        if st["swe_spac"] == "LOG":
            if a * b <= 0:
                raise SCPIError(SETTINGS_CONFLICT, f"a log sweep from {a:g} to {b:g} crosses or starts at zero")
            pts = a * (b / a) ** (np.arange(n) / (n - 1))
        else:
            pts = a + (b - a) * np.arange(n) / (n - 1)
        return pts[::-1] if st["swe_dir"] == "DOWN" else pts

    def levels(self, n: int, start: int = 0) -> np.ndarray:
        """The source level at points start .. start+n-1 of the sweep (the fixed level, the list or the
        staircase, repeated when the trigger count is longer: a short list wraps)."""
        mode = self.source_mode()
        if mode == "FIX":
            return np.full(n, self.bias())
        pts = np.asarray(self.lists["VOLT" if self._vsrc() else "CURR"], float) if mode == "LIST" else self.staircase()
        if not len(pts):
            raise SCPIError(+801, "list mode with an empty source list")
        return pts[(start + np.arange(n)) % len(pts)]

    def limit(self) -> float:
        """The compliance (A for a voltage source, V for a current source): the protection level, or on a
        fixed measurement range its full scale if lower (range compliance), or the voltage protection."""
        st = self.state
        if self._vsrc():
            return st["i_prot"] if st["sens_curr_rang_auto"] else min(st["i_prot"], st["sens_curr_rang"])
        lim = st["v_prot"] if st["sens_volt_rang_auto"] else min(st["v_prot"], st["sens_volt_rang"])
        return min(lim, st["vprot"])

    def port(self, levels=None):
        """(held at a voltage?, level, limit): what this SMU does to its node now, or at the sweep
        ``levels`` (an array: then each of the three an array of its length)."""
        st = self.state
        if st["output"] or self._auto_on:
            lv = self.bias() if levels is None else np.asarray(levels, float)
            if self._vsrc():   # the overvoltage protection clamps the voltage source
                return True, np.clip(lv, -st["vprot"], st["vprot"]), self.limit()
            return False, lv, self.limit()
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
    def pending(self) -> bool:
        return self.armed is not None or self.running

    def listening(self, line: int) -> bool:
        return self.armed == "TLIN" and self.state["trig_ilin"] == line

    def _initiate(self):
        if self.pending():
            raise SCPIError(-213, "already waiting for a trigger")
        self._check_output()
        if self.state["arm_coun"] == 0:   # ARM:COUN INF: the instrument runs until :ABORt
            self.running = True
            return
        if self.state["arm_sour"] in ("BUS", "MAN"):
            self.armed = "BUS"
            return
        self._start()

    def _start(self):
        """Past the arm layer: run the points now, or wait for the trigger link to step them."""
        if self.state["trig_sour"] == "TLIN":
            self.armed, self.link = "TLIN", (self.sweep_count(), [])
            return
        self.armed = None
        self._run()
        self.completed()

    def _trigger(self):
        if self.armed != "BUS":
            raise SCPIError(-211, "not waiting for a bus trigger")
        self._start()

    def _abort(self):
        self.armed, self.link, self.running = None, None, False
        self.completed()

    def _check_output(self):
        if not self.state["output"] and not self.state["sour_cle_auto"]:
            raise SCPIError(OUTPUT_OFF)

    def _run(self):
        """ARM:COUN x TRIG:COUN source-measure points into the sample buffer (and the trace); with
        :TRIG:OUTP set, each point triggers the instruments listening on :TRIG:OLIN."""
        self._check_output()
        n = self.sweep_count()
        auto = not self.state["output"]
        if auto:  # :SOUR:CLE:AUTO ON: the output is on for the measurement only
            self._auto_on = True
            self.model.changed()
        try:
            levels = self.levels(n)
            followers = [] if self.state["trig_outp"] == "NONE" else \
                [f for f in self.model.link_listeners(self.state["trig_olin"]) if f is not self]
            sweeping = {} if self.source_mode() == "FIX" else {self: self.port(levels)}
            for f in followers:
                sweeping.update(f.link_port(n))
            sol = self.model.solution(sweeping)
            self.samples = self._acquire(sol, levels, np.arange(n) if len(sol[0]) == n else np.zeros(n, int))
            self._store(self.samples)
            for f in followers:
                f.link_take(sol, n)
        finally:
            if auto:
                self._auto_on = False
                self.model.changed()

    # the trigger link: a follower takes its points at another instrument's sweep points
    def link_port(self, n: int) -> dict:
        """{self: port at the next n points of the master's sweep}: its own next points, then its bias."""
        left, got = self.link
        m = min(n, left)
        levels = np.r_[self.levels(m, start=sum(map(len, got))), np.full(n - m, self.bias())]
        if self.source_mode() == "FIX" and not self._auto_on:
            return {}
        return {self: self.port(levels)}

    def link_take(self, sol, n: int) -> None:
        """Readings at the master's first n points (as many as this instrument still takes)."""
        left, got = self.link
        m = min(n, left)
        rows = np.arange(m) if len(sol[0]) > 1 else np.zeros(m, int)
        got.append(self._acquire(sol, self.levels(m, start=sum(map(len, got))), rows))
        self.link = (left - m, got)
        if left - m == 0:
            self.samples = np.vstack(got)
            self._store(self.samples)
            self.armed, self.link = None, None
            self.completed()

    def _store(self, readings):
        st = self.state
        if st["trac_cont"] == "NEXT":
            room = st["trac_poin"] - len(self.trace)
            self.trace = np.vstack([self.trace, readings[:room]])
            if len(self.trace) >= 2:
                self.status.measurement.set(BAV)
            if len(self.trace) >= st["trac_poin"]:
                st["trac_cont"] = "NEV"
                self.status.measurement.set(BFL)

    def _read(self):
        if self.state["arm_sour"] in ("BUS", "MAN") or self.state["trig_sour"] == "TLIN":
            raise SCPIError(SETTINGS_CONFLICT, ":READ? would wait for a trigger (:ARM:SOUR BUS or :TRIG:SOUR TLIN)")
        if self.state["arm_coun"] == 0:
            raise SCPIError(SETTINGS_CONFLICT, ":READ? with an infinite arm count never completes")
        self._initiate()
        return self._fetch()

    def _fetch(self, latest=False):
        if self.running:   # ARM:COUN INF: the reading being taken now
            sol = self.model.solution()
            self.samples = self._acquire(sol, self.levels(1), np.zeros(1, int))
            return self._format(self.samples)
        if self.armed is not None:
            raise SCPIError(-230, "the sweep waits for its trigger: no readings yet")
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
        self.armed, self.link, self.running = None, None, False
        if not st["output"]:
            st["output"] = True
        self.model.changed()

    # -- readings ------------------------------------------------------------------------
    def point_time(self) -> float:
        """Seconds one source-measure point takes: trigger delay, source delay, integration of each function."""
        st = self.state
        return st["trig_del"] + (0.0 if st["sour_del_auto"] else st["sour_del"]) + \
            max(1, len(self.funcs)) * max(st["volt_nplc"], st["curr_nplc"]) / st["lfr"]

    def _acquire(self, sol, levels: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Readings at ``rows`` of a solution, (n, 5): the data elements VOLT, CURR, RES, TIME, STAT of each;
        ``levels`` the programmed source levels (the source readback of an unmeasured quantity)."""
        st = self.state
        V, Vp, Ip, comp = sol
        k = self.model.port_index(self.node)
        n = len(rows)
        v, i, cp = Vp[rows, k], Ip[rows, k], comp[rows, k]
        vsrc = self._vsrc()
        meas_v, meas_i, meas_r = ("VOLT:DC" in self.funcs), ("CURR:DC" in self.funcs), ("RES" in self.funcs)
        out = np.full((n, 5), NAN)
        oflo = np.zeros(n, bool)
        if meas_v or (meas_r and not vsrc):
            out[:, 0], o = self._measured(v, "volt")
            oflo |= o
        elif vsrc:
            out[:, 0] = np.clip(levels, -st["vprot"], st["vprot"])
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
        dt = self.point_time()
        out[:, 3] = self.clock + dt * np.arange(n)
        self.clock += dt * n
        # range compliance: the limit is a fixed range's full scale, below the protection level
        prot = st["i_prot"] if vsrc else st["v_prot"]
        rcomp = cp & (self.limit() < prot)
        word = (2 if st["aver"] else 0) | (4 if st["term"] == "FRON" else 0) \
            | (1 << 10 if meas_r and st["res_mode"] == "AUTO" else 0) \
            | (1 << 11 if meas_v else 0) | (1 << 12 if meas_i else 0) | (1 << 13 if meas_r else 0) \
            | (1 << 14 if vsrc else 1 << 15)
        out[:, 4] = word + oflo * 1 + cp * 8 + rcomp * (1 << 16)
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
        over = np.abs(value) > rng * (1 + 1e-9)
        res = rng / 1.05 / 2e6
        return np.where(over, OVERFLOW, np.round(value / res) * res), over

    def _format(self, readings: np.ndarray) -> str:
        cols = [k for k, e in enumerate(ELEMENTS) if e in self.state["elements"]]
        return ",".join(map(fmt_real, readings[:, cols].ravel()))

    def _trace_times(self) -> np.ndarray:
        """The buffer with its time stamps as :TRAC:TST:FORM says: from the first reading (ABSolute)
        or from the reading before (DELTa), in seconds."""
        t = self.trace.copy()
        if len(t):
            t0 = t[:, 3].copy()
            t[:, 3] = t0 - t0[0] if self.state["trac_tst"] == "ABS" else np.r_[0.0, np.diff(t0)]
        return t

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
