"""An emulated Keithley 2450 SourceMeter in its SCPI command set, on one node of the emulated circuit.

Facts from the Model 2450 Interactive SourceMeter Reference Manual (2450-901-01),
section 6 (SCPI command reference) and section 7 (buffers, trigger model):

- one measure function at a time (``:SENS:FUNC "VOLT"|"CURR"|"RES"``); a voltage source's
  current limit is ``:SOUR:VOLT:ILIM`` (*RST 105 uA), a current source's voltage limit
  ``:SOUR:CURR:VLIM`` (*RST 21 V); ranges answer their nominal value (20 V, 1 mA);
- readings go into reading buffers: ``defbuffer1`` and ``defbuffer2`` (100,000 each) and
  any made by ``:TRAC:MAKE "name", size``; ``:READ? "buf", READ, SOUR, REL``, ``:TRAC:DATA?
  start, end, "buf", elements``, ``:TRAC:STAT:AVER?`` ...;
- ``:COUNt`` (``:SENS:COUN``) readings per ``:READ?``/``:MEAS?``;
- the trigger model: blocks (``:TRIG:BLOC:BUFF:CLE``, ``MDIG``, ``DEL:CONS``, ``SOUR:STAT``,
  ``WAIT`` for ``*TRG``, ``NOT``, the branches, ``CONF:REC``/``NEXT``/``PREV``), run by ``:INIT``
  from block 1 and written by ``:TRIG:LOAD "SimpleLoop", count[, delay[, "buf"]]`` and the sweeps
  ``:SOUR:SWE:VOLT:LIN start, stop, points[, delay[, count[, range[, failAbort[, dual[, "buf"]]]]]]``,
  ``:LIN:STEP``, ``:LOG`` and ``:LIST`` (over ``:SOUR:LIST:VOLT``); a model at a wait block is a
  pending operation (``*OPC?``, ``*WAI``); the source returns to its level after a sweep;
- the interlock: not asserted, the 200 V range is unavailable and the output is limited to
  21 V (event 5074); ``:OUTP:INT:TRIP?`` answers 1 when it is asserted.

The physics is the 2400's (:class:`hil.emulator.keithley2400.SMU`): every SMU mode on the
circuit solve, compliance (and range compliance) as physics. Sweeps are instant on a virtual clock.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hil.emulator.commands import Setting, fmt_real, install, reset
from hil.emulator.keithley2400 import NAN, OVERFLOW, SETTINGS as SETTINGS_2400, SMU
from hil.emulator.scpi import (DATA_OUT_OF_RANGE, ILLEGAL_VALUE, MISSING_PARAMETER, SETTINGS_CONFLICT, SCPIError,
                              boolean, number, split_params)

INTERLOCK_LIMIT = 21.0                                      # V without the interlock (20 V range, 105 %)
V_NOMINAL = (0.02, 0.2, 2.0, 20.0, 200.0)
I_NOMINAL = (1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
R_NOMINAL = (20.0, 200.0, 2e3, 2e4, 2e5, 2e6, 2e7, 2e8)
PROT = {"PROT2": 2, "PROT5": 5, "PROT10": 10, "PROT20": 20, "PROT40": 40, "PROT60": 60, "PROT80": 80,
        "PROT100": 100, "PROT120": 120, "PROT140": 140, "PROT160": 160, "PROT180": 180, "NONE": 210}
DEFAULT_BUFFERS = ("DEFBUFFER1", "DEFBUFFER2")
BUFFER_SIZE = 100000
MAX_BLOCKS = 255                                            # trigger model blocks
WAIT_WORDS = ("AND", "OR", "ENT", "ENTER", "NEV", "NEVER")   # a wait block's logic and clear words
MAX_STEPS = 3_000_000                                       # blocks one run of the model executes at most here
#: :TRIG:BLOC:<command> -> the block it defines
BLOCK_COMMANDS = {"BUFFer:CLEar": "BUFFER_CLEAR", "MDIGitize": "MEASURE", "MEASure": "MEASURE",
                  "DELay:CONStant": "DELAY_CONSTANT", "SOURce:STATe": "SOURCE_OUTPUT", "WAIT": "WAIT",
                  "NOTify": "NOTIFY", "BRANch:ALWays": "BRANCH_ALWAYS", "BRANch:COUNter": "BRANCH_COUNTER",
                  "BRANch:ONCE": "BRANCH_ONCE", "BRANch:ONCE:EXCLuded": "BRANCH_ONCE_EXCLUDED",
                  "BRANch:EVENt": "BRANCH_EVENT", "CONFig:RECall": "CONFIG_RECALL", "CONFig:NEXT": "CONFIG_NEXT",
                  "CONFig:PREVious": "CONFIG_PREVIOUS", "NOP": "NOP"}
#: each block's parameters after its number: (how many are required, what they are)
BLOCK_ARGS = {"BUFFER_CLEAR": (0, "a buffer"), "MEASURE": (0, "a buffer and a count"), "DELAY_CONSTANT": (1, "a delay"),
              "SOURCE_OUTPUT": (1, "ON or OFF"), "WAIT": (1, "events"), "NOTIFY": (1, "a notify number"),
              "BRANCH_ALWAYS": (1, "a block"), "BRANCH_COUNTER": (2, "a count and a block"),
              "BRANCH_ONCE": (1, "a block"), "BRANCH_ONCE_EXCLUDED": (1, "a block"),
              "BRANCH_EVENT": (2, "an event and a block"), "CONFIG_RECALL": (1, "a configuration list"),
              "CONFIG_NEXT": (1, "a configuration list"), "CONFIG_PREVIOUS": (1, "a configuration list"),
              "NOP": (0, "nothing")}
UNITS = {"VOLT:DC": "V", "CURR:DC": "A", "RES": "Ohm"}


@dataclass(frozen=True)
class Range(Setting):
    """A range: set by the largest value it must hold, stored as its full scale (105 %), answered nominal."""

    def parse(self, arg):
        v = number(arg.strip(" \t"), self.lo, self.hi, self.default / 1.05)
        for r in self.ranges:
            if abs(v) <= r * (1 + 1e-12):
                return r * 1.05
        return self.ranges[-1] * 1.05

    def format(self, v):
        return fmt_real(float(f"{v / 1.05:.6e}"))

    def query(self, value, arg):
        a = arg.strip(" \t").upper()
        if a in ("MIN", "MINIMUM"):
            return fmt_real(self.ranges[0])
        if a in ("MAX", "MAXIMUM"):
            return fmt_real(self.ranges[-1])
        return Setting.query(self, value, arg)


S = Setting
SETTINGS = [
    S("SOURce:FUNCtion[:MODE]", "sour_func", "enum", "VOLT", choices=("VOLTage", "CURRent")),
    S("SOURce:VOLTage[:LEVel][:IMMediate][:AMPLitude]", "sour_volt", "real", 0.0, -210.0, 210.0),
    S("SOURce:CURRent[:LEVel][:IMMediate][:AMPLitude]", "sour_curr", "real", 0.0, -1.05, 1.05),
    S("SOURce:VOLTage:ILIMit[:LEVel]", "i_prot", "real", 1.05e-4, 1e-9, 1.05),
    S("SOURce:CURRent:VLIMit[:LEVel]", "v_prot", "real", 21.0, 0.02, 210.0),
    Range("SOURce:VOLTage:RANGe", "sour_volt_rang", "real", 21.0, -210.0, 210.0, ranges=V_NOMINAL),
    S("SOURce:VOLTage:RANGe:AUTO", "sour_volt_rang_auto", "bool", True),
    Range("SOURce:CURRent:RANGe", "sour_curr_rang", "real", 1.05e-4, -1.05, 1.05, ranges=I_NOMINAL),
    S("SOURce:CURRent:RANGe:AUTO", "sour_curr_rang_auto", "bool", True),
    S("SOURce:VOLTage:DELay", "sour_del", "real", 0.0, 0.0, 10000.0),
    S("SOURce:VOLTage:DELay:AUTO", "sour_del_auto", "bool", True),
    S("SOURce:CURRent:DELay", "sour_del", "real", 0.0, 0.0, 10000.0),
    S("SOURce:CURRent:DELay:AUTO", "sour_del_auto", "bool", True),
    S("SOURce:VOLTage:READ:BACK", "readback", "bool", True),
    S("SOURce:CURRent:READ:BACK", "readback", "bool", True),
    Range("[SENSe]:CURRent[:DC]:RANGe[:UPPer]", "sens_curr_rang", "real", 1.05e-4, -1.05, 1.05, ranges=I_NOMINAL),
    S("[SENSe]:CURRent[:DC]:RANGe:AUTO", "sens_curr_rang_auto", "bool", True),
    Range("[SENSe]:VOLTage[:DC]:RANGe[:UPPer]", "sens_volt_rang", "real", 21.0, -210.0, 210.0, ranges=V_NOMINAL),
    S("[SENSe]:VOLTage[:DC]:RANGe:AUTO", "sens_volt_rang_auto", "bool", True),
    Range("[SENSe]:RESistance:RANGe[:UPPer]", "sens_res_rang", "real", 2.1e5, 0.0, 2.1e8, ranges=R_NOMINAL),
    S("[SENSe]:RESistance:RANGe:AUTO", "sens_res_rang_auto", "bool", True),
    S("[SENSe]:CURRent[:DC]:NPLCycles", "curr_nplc", "real", 1.0, 0.01, 10.0),
    S("[SENSe]:VOLTage[:DC]:NPLCycles", "volt_nplc", "real", 1.0, 0.01, 10.0),
    S("[SENSe]:RESistance:NPLCycles", "res_nplc", "real", 1.0, 0.01, 10.0),
    S("[SENSe]:CURRent[:DC]:AVERage[:STATe]", "aver", "bool", False),
    S("[SENSe]:CURRent[:DC]:AVERage:COUNt", "aver_coun", "int", 10, 1, 100),
    S("[SENSe]:CURRent[:DC]:AVERage:TCONtrol", "aver_tcon", "enum", "REP", choices=("REPeat", "MOVing")),
    S("[SENSe]:VOLTage[:DC]:AVERage[:STATe]", "aver", "bool", False),
    S("[SENSe]:VOLTage[:DC]:AVERage:COUNt", "aver_coun", "int", 10, 1, 100),
    S("[SENSe]:VOLTage[:DC]:AVERage:TCONtrol", "aver_tcon", "enum", "REP", choices=("REPeat", "MOVing")),
    S("[SENSe]:CURRent[:DC]:RSENse", "rsen", "bool", False),
    S("[SENSe]:VOLTage[:DC]:RSENse", "rsen", "bool", False),
    S("[SENSe]:RESistance:RSENse", "rsen", "bool", False),
    S("[SENSe]:RESistance:OCOMpensated", "res_ocom", "bool", False),
    S("[SENSe]:COUNt", "sens_coun", "int", 1, 1, 300000),
    S("OUTPut[:STATe]", "output", "bool", False),
    S("OUTPut:VOLTage:SMODe", "smod_volt", "enum", "NORM", choices=("NORMal", "HIMPedance", "ZERO", "GUARd")),
    S("OUTPut:CURRent:SMODe", "smod_curr", "enum", "NORM", choices=("NORMal", "HIMPedance", "ZERO", "GUARd")),
    S("ROUTe:TERMinals", "term", "enum", "FRON", choices=("FRONt", "REAR")),
    S("SYSTem:LFRequency", "lfr", "int", 60, 50, 60, settable=False, reset=False),
    S("SYSTem:BEEPer:STATe", "beep", "bool", True),
    S("FORMat[:DATA]", "form_data", "enum", "ASC", choices=("ASCii",)),   # REAL and SREAL: not emulated
    S("DISPlay:LIGHt:STATe", "disp", "enum", "ON100", choices=("ON100", "ON75", "ON50", "ON25", "OFF", "BLACkout")),
]
BY_PATH = {s.path: s for s in SETTINGS}


class SMU2450(SMU):
    """A Keithley 2450 (SCPI command set) on one node of the emulated circuit."""

    idn = "KEITHLEY INSTRUMENTS,MODEL 2450,00000000,1.7.0 EMULATED (hil)"
    settings = SETTINGS
    error_texts = {5074: "Output voltage limited by interlock"}
    interlock = False   # the rear-panel interlock asserted (hil emulate --interlock)

    def reset(self):
        reset(SETTINGS_2400, self.state, everything=True)   # the physics' keys, at the 2400's defaults
        reset(self.settings, self.state)
        self.state["smod"] = "NORM"
        self.state["res_mode"] = "MAN"
        self.funcs = ["CURR:DC"]                           # *RST: measure current
        self.lists = {"VOLT": [], "CURR": []}
        self.samples = np.zeros((0, 5))
        self.armed, self.link, self.running = None, None, False
        self.buffers = {name: self._new_buffer(BUFFER_SIZE) for name in DEFAULT_BUFFERS}
        self.blocks = {}                # the trigger model: block number -> (kind, parameters...)
        self.sweep_lists = {}           # a sweep's source levels by its configuration list's name
        self.counters, self.once = {}, set()   # counter branches' counts; branch-once blocks passed
        self.pc = 0                     # the block the trigger model is at (waits at, when armed)
        self.events = set()             # trigger events seen since the model started (COMMand: *TRG)
        self.user_delays = {}
        self.model.changed()

    @staticmethod
    def _new_buffer(size):
        return {"size": int(size), "rows": np.zeros((0, 4)), "fill": "CONT"}   # reading, source, time, status

    def declare(self):
        s = self.scpi
        install(s, self.settings, self.state, self._on_set)
        s.add("*LANG?", lambda a: "SCPI")
        s.add("*LANG", self._set_language)
        s.add("[SENSe]:AZERo:ONCE", lambda a: None)
        for func in ("CURRent[:DC]", "VOLTage[:DC]", "RESistance"):
            s.add(f"[SENSe]:{func}:AZERo[:STATe]", lambda a: self.state.__setitem__("azer", boolean(a)))
            s.add(f"[SENSe]:{func}:AZERo[:STATe]?", lambda a: "1" if self.state["azer"] else "0")
        # user delays 1..5 of the trigger model's delay blocks (s)
        for where in ("[SENSe]:CURRent[:DC]", "[SENSe]:VOLTage[:DC]", "[SENSe]:RESistance", "SOURce:VOLTage",
                      "SOURce:CURRent"):
            for n in range(1, 6):
                key = (where, n)
                s.add(f"{where}:DELay:USER{n}", lambda a, k=key: self.user_delays.__setitem__(k, number(a, 0, 10000)))
                s.add(f"{where}:DELay:USER{n}?", lambda a, k=key: fmt_real(self.user_delays.get(k, 0.0)))
        s.add("*TRG", lambda a: self._bus_trigger())
        s.add("[SENSe]:FUNCtion[:ON]", self._set_func)
        s.add("[SENSe]:FUNCtion[:ON]?", lambda a: f'"{self.funcs[0]}"')
        s.add("SOURce:VOLTage:PROTection[:LEVel]", self._set_prot)
        s.add("SOURce:VOLTage:PROTection[:LEVel]?", lambda a: self._prot_name())
        s.add("SOURce:VOLTage:PROTection:TRIPped?", lambda a: "0")
        s.add("SOURce:VOLTage:ILIMit[:LEVel]:TRIPped?", lambda a: "1" if self._vsrc() and self._tripped() else "0")
        s.add("SOURce:CURRent:VLIMit[:LEVel]:TRIPped?", lambda a: "1" if not self._vsrc() and self._tripped() else "0")
        s.add("OUTPut:INTerlock:TRIPped?", lambda a: "1" if self.interlock else "0")
        for kind in ("VOLT", "CURR"):
            long_ = "VOLTage" if kind == "VOLT" else "CURRent"
            lim = 210.0 if kind == "VOLT" else 1.05
            s.add(f"SOURce:LIST:{long_}", lambda a, k=kind, l=lim: self._set_list(k, a, l))
            s.add(f"SOURce:LIST:{long_}:APPend", lambda a, k=kind, l=lim: self._set_list(k, a, l, append=True))
            s.add(f"SOURce:LIST:{long_}?", lambda a, k=kind: ",".join(fmt_real(v) for v in self.lists[k]))
            s.add(f"SOURce:LIST:{long_}:POINts?", lambda a, k=kind: str(len(self.lists[k])))
            s.add(f"SOURce:SWEep:{long_}:LINear", lambda a, k=kind: self._sweep(k, a, "LIN"))
            s.add(f"SOURce:SWEep:{long_}:LINear:STEP", lambda a, k=kind: self._sweep(k, a, "STEP"))
            s.add(f"SOURce:SWEep:{long_}:LOG", lambda a, k=kind: self._sweep(k, a, "LOG"))
            s.add(f"SOURce:SWEep:{long_}:LIST", lambda a, k=kind: self._sweep(k, a, "LIST"))
        s.add("TRIGger:LOAD", self._load)
        s.add("TRIGger:LOAD:EMPTy", lambda a: self._load('"Empty"' + (", " + a if a.strip() else "")))
        s.add("TRIGger:LOAD:LOOP:SIMPle", lambda a: self._load('"SimpleLoop", ' + a))
        s.add("TRIGger:STATe?", lambda a: f"WAITING;WAITING;{self.pc}" if self.armed else f"IDLE;IDLE;{self.pc}")
        for path, kind in BLOCK_COMMANDS.items():
            s.add(f"TRIGger:BLOCk:{path}", lambda a, k=kind: self._set_block(k, a))
        s.add("TRIGger:BLOCk:LIST?", lambda a: self._block_list())
        s.add("TRIGger:BLOCk:BRANch:COUNter:COUNt?", lambda a: str(self.counters.get(self._block_number(a), 0)))
        s.add("TRIGger:BLOCk:BRANch:COUNter:RESet", lambda a: self.counters.__setitem__(self._block_number(a), 0))
        s.add("INITiate[:IMMediate]", lambda a: self._initiate())
        s.add("ABORt", lambda a: self._abort())
        for q, f in (("MEASure?", None), ("MEASure:VOLTage[:DC]?", "VOLT:DC"), ("MEASure:CURRent[:DC]?", "CURR:DC"),
                     ("MEASure:RESistance?", "RES")):
            s.add(q, lambda a, f=f: self._measure_2450(f, a))
        s.add("READ?", lambda a: self._measure_2450(None, a))
        s.add("FETCh?", lambda a: self._fetch_2450(a))
        s.add("TRACe:MAKE", self._make)
        s.add("TRACe:DELete", self._delete)
        s.add("TRACe:CLEar", lambda a: self._buffer(a, default="DEFBUFFER1").__setitem__("rows", np.zeros((0, 4))))
        s.add("TRACe:POINts", self._set_points)
        s.add("TRACe:POINts?", lambda a: str(self._buffer(a)["size"]))
        s.add("TRACe:ACTual?", lambda a: str(len(self._buffer(a)["rows"])))
        s.add("TRACe:ACTual:STARt?", lambda a: "1" if len(self._buffer(a)["rows"]) else "0")
        s.add("TRACe:ACTual:END?", lambda a: str(len(self._buffer(a)["rows"])))
        s.add("TRACe:FILL:MODE", self._set_fill)
        s.add("TRACe:FILL:MODE?", lambda a: self._buffer(a)["fill"])
        s.add("TRACe:TRIGger", lambda a: self._take(1, self._name(a)) and None)
        s.add("TRACe:DATA?", self._trace_data)
        for name, fn in (("AVERage", np.mean), ("MAXimum", np.max), ("MINimum", np.min),
                         ("PK2Pk", lambda x: np.max(x) - np.min(x)),
                         ("STDDev", lambda x: np.std(x, ddof=1) if len(x) > 1 else 0.0)):
            s.add(f"TRACe:STATistics:{name}?", lambda a, fn=fn: self._statistic_2450(a, fn))
        s.add("TRACe:STATistics:CLEar", lambda a: None)
        s.add("SYSTem:BEEPer[:IMMediate]", lambda a: [number(x, 0, 1e6) for x in split_params(a)] and None)
        s.add("SYSTem:TIME?", lambda a: fmt_real(self.clock))
        s.add("*OPT?", lambda a: "0")

    # -- settings ------------------------------------------------------------------------
    def _set_language(self, a):
        if a.strip(" \t").upper() != "SCPI":
            raise SCPIError(ILLEGAL_VALUE, f"*LANG {a.strip()[:12]}: the emulated 2450 speaks SCPI only")

    def _on_set(self, setting, value):
        st = self.state
        if setting.key in ("smod_volt", "smod_curr", "sour_func"):
            st["smod"] = st["smod_volt" if st["sour_func"] == "VOLT" else "smod_curr"]
        if setting.key in ("output", "sour_volt") and st["output"] and self._vsrc() and \
                not self.interlock and abs(st["sour_volt"]) > INTERLOCK_LIMIT:
            self.status.push_error(5074, f"{st['sour_volt']:g} V asked; the interlock is not asserted")
        super()._on_set(setting, value)
        self.model.changed()

    def _set_func(self, a):
        parts = split_params(a)
        if len(parts) != 1:
            raise SCPIError(-108, "one measure function at a time")
        self.funcs = [self._func(parts[0])]

    def _set_prot(self, a):
        t = a.strip(" \t").upper()
        if t not in PROT:
            raise SCPIError(ILLEGAL_VALUE, f"{a.strip()[:20]} (PROT2 .. PROT180 or NONE)")
        self.state["vprot"] = float(PROT[t])
        self.model.changed()

    def _prot_name(self):
        return next(k for k, v in PROT.items() if v == self.state["vprot"])

    def port(self, levels=None):
        held, level, limit = super().port(levels)
        if held and (self.state["output"] or self._auto_on) and not self.interlock:
            level = np.clip(level, -INTERLOCK_LIMIT, INTERLOCK_LIMIT)   # no interlock: 20 V range at most
        return held, level, limit

    # -- buffers -------------------------------------------------------------------------------
    @staticmethod
    def _unquote(text):
        t = text.strip(" \t")
        if len(t) < 2 or t[0] not in "'\"" or t[-1] != t[0]:
            raise SCPIError(-104, f"expected a quoted buffer name, got {t[:24]!r}")
        return t[1:-1].upper()

    def _name(self, a, default="DEFBUFFER1"):
        parts = [p for p in split_params(a) if p]
        return self._unquote(parts[0]) if parts else default

    def _buffer(self, a, default="DEFBUFFER1"):
        """The buffer a parameter list names first (``default`` when it names none)."""
        return self._buf(self._name(a, default))

    def _buf(self, name):
        if name not in self.buffers:
            raise SCPIError(-224, f"no reading buffer named {name}")
        return self.buffers[name]

    def _make(self, a):
        parts = split_params(a)
        if len(parts) < 2:
            raise SCPIError(MISSING_PARAMETER, "a buffer name and a size")
        name, size = self._unquote(parts[0]), int(number(parts[1], 10, 5_500_000))
        if name in self.buffers:
            raise SCPIError(SETTINGS_CONFLICT, f"buffer {name} exists")
        self.buffers[name] = self._new_buffer(size)

    def _delete(self, a):
        name = self._name(a, "")
        if name in DEFAULT_BUFFERS:
            raise SCPIError(SETTINGS_CONFLICT, f"{name} cannot be deleted")
        self._buf(name)
        del self.buffers[name]

    def _set_points(self, a):
        parts = split_params(a)
        buf = self._buffer(",".join(parts[1:]))
        buf["size"] = int(number(parts[0], 1 if parts[1:] else 10, 5_500_000))
        buf["rows"] = buf["rows"][-buf["size"]:]

    def _set_fill(self, a):
        parts = split_params(a)
        mode = parts[0].strip().upper()[:4]
        if mode not in ("CONT", "ONCE"):
            raise SCPIError(ILLEGAL_VALUE, f"fill mode {parts[0][:20]}")
        self._buffer(",".join(parts[1:]))["fill"] = mode

    def _store_2450(self, rows, name):
        buf = self._buf(name)
        all_rows = np.vstack([buf["rows"], rows])
        buf["rows"] = all_rows[:buf["size"]] if buf["fill"] == "ONCE" else all_rows[-buf["size"]:]

    # -- measuring ---------------------------------------------------------------------------
    def _take(self, n, name, levels=None):
        """n readings of the measure function into buffer ``name`` (at the sweep ``levels`` if given)."""
        if levels is None:
            sol = self.model.solution()
            raw = self._acquire(sol, self.levels(n) if self.source_mode() != "FIX" else np.full(n, self.bias()),
                                np.zeros(n, int))
        else:
            sol = self.model.solution({self: self.port(levels)})
            raw = self._acquire(sol, levels, np.arange(len(levels)) if len(sol[0]) > 1 else np.zeros(len(levels), int))
        f = self.funcs[0]
        reading = raw[:, {"VOLT:DC": 0, "CURR:DC": 1, "RES": 2}[f]]
        if f == "RES":
            reading = raw[:, 2]
        source = raw[:, 0] if self._vsrc() else raw[:, 1]
        rows = np.column_stack([reading, source, raw[:, 3], raw[:, 4]])
        self._store_2450(rows, name)
        self.samples = raw
        return rows

    def _acquire(self, sol, levels, rows):
        # the 2450 measures what the physics gives; its source readback is the measured source value
        saved = self.funcs
        self.funcs = ["VOLT:DC", "CURR:DC"] + (["RES"] if "RES" in saved else [])
        try:
            return super()._acquire(sol, levels, rows)
        finally:
            self.funcs = saved

    def _elements(self, rows, elements, name):
        """The reply for buffer rows: the elements asked (default READing), in the order asked."""
        els = [e.strip(" \t").upper() for e in elements] or ["READ"]
        unit = UNITS[self.funcs[0]]
        sunit = "V" if self._vsrc() else "A"
        out = []
        for reading, source, t, stat in rows:
            for e in els:
                if e in ("READ", "READING"):
                    out.append(fmt_real(reading))
                elif e in ("SOUR", "SOURCE"):
                    out.append(fmt_real(source))
                elif e in ("REL", "RELATIVE"):
                    out.append(fmt_real(t - rows[0, 2]))
                elif e in ("SEC", "SECONDS"):
                    out.append(str(int(t)))
                elif e in ("FRAC", "FRACTIONAL"):
                    out.append(fmt_real(t - int(t)))
                elif e in ("STAT", "STATUS", "SOURSTATUS", "SOURSTAT"):
                    out.append(str(int(stat)))
                elif e in ("UNIT",):
                    out.append(unit)
                elif e in ("SOURUNIT",):
                    out.append(sunit)
                elif e in ("TST", "TSTAMP", "DATE", "TIME"):
                    out.append(f"{t:.9f}")
                elif e in ("FORM", "FORMATTED"):
                    out.append(f"{reading:+.5E} {unit}")
                else:
                    raise SCPIError(ILLEGAL_VALUE, f"buffer element {e[:20]}")
        return ",".join(out)

    def _measure_2450(self, func, a):
        """:READ? / :MEAS? ["buffer"[, elements]]: :COUNt readings into the buffer; the last one's elements."""
        if func is not None:
            self.funcs = [func]
        parts = [p for p in split_params(a) if p]
        name = self._unquote(parts[0]) if parts else "DEFBUFFER1"
        self._buf(name)
        if self.armed:
            raise SCPIError(-213, "a trigger model is running")
        rows = self._take(self.state["sens_coun"], name)
        return self._elements(rows[-1:], parts[1:], name)

    def _fetch_2450(self, a):
        parts = [p for p in split_params(a) if p]
        name = self._unquote(parts[0]) if parts else "DEFBUFFER1"
        rows = self._buf(name)["rows"]
        if not len(rows):
            raise SCPIError(-230, f"{name} holds no readings")
        return self._elements(rows[-1:], parts[1:], name)

    def _trace_data(self, a):
        parts = split_params(a)
        if len(parts) < 2:
            raise SCPIError(MISSING_PARAMETER, "start and end indexes")
        name = self._unquote(parts[2]) if len(parts) > 2 else "DEFBUFFER1"
        rows = self._buf(name)["rows"]
        start, end = int(number(parts[0], 1, max(1, len(rows)))), int(number(parts[1], 1, max(1, len(rows))))
        if not len(rows) or end < start:
            raise SCPIError(DATA_OUT_OF_RANGE, f"indexes {start}..{end} of {len(rows)} readings in {name}")
        return self._elements(rows[start - 1:end], parts[3:], name)

    def _statistic_2450(self, a, fn):
        rows = self._buffer(a)["rows"]
        if not len(rows):
            return fmt_real(NAN)
        return fmt_real(fn(rows[:, 0]))

    # -- trigger models and sweeps -----------------------------------------------------------------
    def _load(self, a):
        """:TRIG:LOAD "Empty" | "SimpleLoop", count[, delay[, "buffer"]]: a predefined trigger model's blocks."""
        parts = split_params(a)
        kind = self._unquote(parts[0]) if parts else ""
        if kind == "EMPTY":
            self.blocks = {}
            return
        if kind != "SIMPLELOOP":
            raise SCPIError(ILLEGAL_VALUE, f"trigger model {kind[:20]}: SimpleLoop and Empty are emulated "
                            "(and models built of :TRIG:BLOC blocks)")
        count = int(number(parts[1], 1, 300000)) if len(parts) > 1 else 1
        delay = number(parts[2], 0, 10000) if len(parts) > 2 else 0.0
        buf = self._unquote(parts[3]) if len(parts) > 3 else "DEFBUFFER1"
        self._buf(buf)
        self.blocks = {1: ("BUFFER_CLEAR", buf), 2: ("DELAY_CONSTANT", delay), 3: ("MEASURE", buf, "AUTO"),
                       4: ("BRANCH_COUNTER", count, 2)}

    def _sweep(self, kind, a, how):
        """:SOUR:SWE:<func>:LIN|LIN:STEP|LOG|LIST: a source configuration list and its trigger model."""
        p = split_params(a)
        lim = 210.0 if kind == "VOLT" else 1.05
        if how == "LIST":
            start = int(number(p[0], 1, max(1, len(self.lists[kind]))))
            pts = np.asarray(self.lists[kind][start - 1:], float)
            rest = p[1:]
            if not len(pts):
                raise SCPIError(SETTINGS_CONFLICT, f"the source list of {kind} is empty")
        else:
            if len(p) < 3:
                raise SCPIError(MISSING_PARAMETER, "start, stop and points (or step)")
            a0, a1 = number(p[0], -lim, lim), number(p[1], -lim, lim)
            if how == "STEP":
                step = number(p[2], 1e-12, 2 * lim)
                n = int(np.floor(abs(a1 - a0) / step + 1e-9)) + 1
                pts = a0 + np.sign(a1 - a0) * step * np.arange(n)
            else:
                n = int(number(p[2], 2, 1_000_000))
                if how == "LOG":
                    if a0 * a1 <= 0:
                        raise SCPIError(SETTINGS_CONFLICT, "a log sweep cannot start at or cross zero")
                    pts = a0 * (a1 / a0) ** (np.arange(n) / (n - 1))
                else:
                    pts = np.linspace(a0, a1, n)
            rest = p[3:]
        delay = number(rest[0], -1, 10000) if len(rest) > 0 else -1.0
        count = int(number(rest[1], 0, 268435455)) if len(rest) > 1 else 1
        dual = len(rest) > 4 and rest[4].strip().upper() in ("ON", "1")
        buf = self._unquote(rest[5]) if len(rest) > 5 else "DEFBUFFER1"
        if how == "LIST" and len(rest) > 3:
            buf = self._unquote(rest[3])
        self._buf(buf)
        if count == 0:
            raise SCPIError(SETTINGS_CONFLICT, "an infinite sweep count never completes here")
        if dual:
            pts = np.r_[pts, pts[::-1]]
        self.state["sour_func"] = kind
        self.state["smod"] = self.state["smod_volt" if kind == "VOLT" else "smod_curr"]
        name = f"{kind}SWEEPLIST"
        self.sweep_lists[name] = np.asarray(pts, float)
        self.blocks = {1: ("BUFFER_CLEAR", buf), 2: ("CONFIG_RECALL", name, 1), 3: ("SOURCE_OUTPUT", True),
                       4: ("DELAY_CONSTANT", max(delay, 0.0)), 5: ("MEASURE", buf, 1), 6: ("CONFIG_NEXT", name),
                       7: ("BRANCH_COUNTER", len(pts), 4), 8: ("BRANCH_COUNTER", count, 2)}

    # -- trigger model blocks (reference manual, :TRIGger:BLOCk) ------------------------------------------
    @staticmethod
    def _block_number(a) -> int:
        return int(number(split_params(a)[0], 1, MAX_BLOCKS))

    def _set_block(self, kind, a):
        """:TRIG:BLOC:<kind> <block>, ...: one block of the trigger model, its parameters checked now."""
        if self.armed:
            raise SCPIError(SETTINGS_CONFLICT, "the trigger model is running")
        p = split_params(a)
        if len(p) < 1 + BLOCK_ARGS[kind][0]:
            raise SCPIError(MISSING_PARAMETER, f"{kind}: block number and {BLOCK_ARGS[kind][1]}")
        b = self._block_number(a)
        if b > max(self.blocks, default=0) + 1:
            raise SCPIError(DATA_OUT_OF_RANGE, f"block {b}: the model has blocks 1..{max(self.blocks, default=0)}; "
                            "a new one follows the last")
        target = lambda x: int(number(x, 1, MAX_BLOCKS))
        if kind == "BUFFER_CLEAR":
            block = (kind, self._checked_buffer(p[1] if len(p) > 1 else '"defbuffer1"'))
        elif kind == "MEASURE":
            count = p[2].strip().upper() if len(p) > 2 else "1"
            block = (kind, self._checked_buffer(p[1] if len(p) > 1 else '"defbuffer1"'),
                     "AUTO" if count == "AUTO" else int(number(count, 1, 300000)))
        elif kind == "DELAY_CONSTANT":
            block = (kind, number(p[1], 0, 10000))
        elif kind == "SOURCE_OUTPUT":
            block = (kind, boolean(p[1]))
        elif kind == "WAIT":   # <event>[, <clear>][, AND|OR, <event>...]
            words = [e.strip(" \t").upper() for e in p[1:]]
            block = (kind, [self._event(e) for e in p[1:] if e.strip(" \t").upper() not in WAIT_WORDS],
                     "OR" if "OR" in words else "AND")
        elif kind == "NOTIFY":
            block = (kind, int(number(p[1], 1, 8)))
        elif kind == "BRANCH_COUNTER":
            block = (kind, int(number(p[1], 1, 268435455)), target(p[2]))
        elif kind == "BRANCH_EVENT":
            block = (kind, self._event(p[1]), target(p[2]))
        elif kind in ("CONFIG_NEXT", "CONFIG_PREVIOUS"):
            block = (kind, self._config_list(p[1]))
        elif kind == "CONFIG_RECALL":
            block = (kind, self._config_list(p[1]), int(number(p[2], 1, 300000)) if len(p) > 2 else 1)
        elif kind == "NOP":
            block = (kind,)
        else:   # BRANCH_ALWAYS, BRANCH_ONCE, BRANCH_ONCE_EXCLUDED
            block = (kind, target(p[1]))
        self.blocks[b] = block
        self.counters.pop(b, None)

    def _checked_buffer(self, text):
        name = self._unquote(text)
        self._buf(name)
        return name

    def _config_list(self, text):
        name = self._unquote(text)
        if name not in self.sweep_lists:
            raise SCPIError(ILLEGAL_VALUE, f"no source configuration list named {name} (a :SOUR:SWE makes one)")
        return name

    @staticmethod
    def _event(text):
        e = text.strip(" \t").upper()
        e = {"COMMAND": "COMM", "NOTIFY": "NOT1"}.get(e, e)
        if e.startswith("NOTIFY"):
            e = "NOT" + e[6:]
        if e not in ("COMM", "NONE") + tuple(f"NOT{n}" for n in range(1, 9)):
            raise SCPIError(ILLEGAL_VALUE, f"trigger event {text.strip()[:20]}: COMMand (*TRG), NOTify1..8 and NONE "
                            "are emulated")
        return e

    def _block_list(self) -> str:
        """:TRIG:BLOC:LIST?: every block, '<n>) <KIND> <parameters>', comma-separated."""
        out = []
        text = lambda x: ("ON" if x else "OFF") if isinstance(x, bool) else " ".join(x) if isinstance(x, list) else \
            f"{x:g}" if isinstance(x, float) else str(x)
        for b in sorted(self.blocks):
            kind, *p = self.blocks[b]
            out.append(f"{b}) {kind}" + "".join(f" {text(x)}" for x in p))
        return ",".join(f'"{x}"' for x in out) or '"EMPTY"'

    def _initiate(self):
        if self.armed:
            raise SCPIError(-213, "a trigger model is running")
        if not self.blocks:
            raise SCPIError(SETTINGS_CONFLICT, "no trigger model loaded (:TRIG:LOAD, :TRIG:BLOC or :SOUR:SWE)")
        self.counters, self.once, self.events = {}, set(), set()
        self._run_blocks(1, {"level": None})

    def _run_blocks(self, pc, ctx):
        """Run the trigger model from block ``pc`` to its end, or to a wait block whose event has not come
        (then armed: pending, resumed by *TRG). Readings are planned block by block, then taken in groups
        of one buffer, output state and delay (one solve per group; a sweep's levels in one)."""
        plan, delay, steps = [], 0.0, 0
        last = max(self.blocks)
        while pc <= last:
            steps += 1
            if steps > MAX_STEPS:
                self._take_plan(plan)
                self.armed, self.pc = None, pc
                raise SCPIError(SETTINGS_CONFLICT, f"the trigger model ran {MAX_STEPS} blocks without ending (a loop "
                                "with no way out runs until :ABORt on the instrument; not emulated)")
            kind, *p = self.blocks[pc]
            nxt = pc + 1
            if kind == "BUFFER_CLEAR":
                self._take_plan(plan)
                self._buf(p[0])["rows"] = np.zeros((0, 4))
            elif kind == "DELAY_CONSTANT":
                delay += p[0]
            elif kind == "MEASURE":
                n = self.state["sens_coun"] if p[1] == "AUTO" else p[1]
                plan.append((p[0], ctx["level"], bool(self.state["output"]), delay, n))
                delay = 0.0
            elif kind == "SOURCE_OUTPUT":
                self._take_plan(plan)
                self.state["output"] = p[0]
                self.model.changed()
            elif kind == "CONFIG_RECALL":
                ctx["list"], ctx["index"] = p[0], p[1] - 1
                ctx["level"] = self._config_level(ctx)
            elif kind in ("CONFIG_NEXT", "CONFIG_PREVIOUS"):
                size = len(self.sweep_lists[p[0]])
                ctx["list"], ctx["index"] = p[0], (ctx.get("index", -1) + (1 if kind == "CONFIG_NEXT" else -1)) % size
                ctx["level"] = self._config_level(ctx)
            elif kind == "NOTIFY":
                self.events.add(f"NOT{p[0]}")
            elif kind == "WAIT":
                seen = [e == "NONE" or e in self.events for e in p[0]]
                if not (any(seen) if p[1] == "OR" else all(seen)):
                    self._take_plan(plan)
                    self.armed, self.pc, self._ctx = "BUS", pc, ctx
                    return
                self.events -= set(p[0])   # a wait block forgets the events it acted on
            elif kind == "BRANCH_ALWAYS":
                nxt = p[0]
            elif kind == "BRANCH_COUNTER":
                self.counters[pc] = self.counters.get(pc, 0) + 1
                if self.counters[pc] < p[0]:
                    nxt = p[1]
                else:
                    self.counters[pc] = 0
            elif kind == "BRANCH_ONCE" or kind == "BRANCH_ONCE_EXCLUDED":
                first = pc not in self.once
                self.once.add(pc)
                if first == (kind == "BRANCH_ONCE"):
                    nxt = p[0]
            elif kind == "BRANCH_EVENT":
                if p[0] in self.events:
                    self.events.discard(p[0])
                    nxt = p[1]
            pc = nxt
        self._take_plan(plan)
        self.armed, self.pc = None, last
        self.completed()

    def _config_level(self, ctx):
        levels = self.sweep_lists[ctx["list"]]
        if not 0 <= ctx["index"] < len(levels):
            raise SCPIError(DATA_OUT_OF_RANGE, f"index {ctx['index'] + 1} of {ctx['list']} ({len(levels)} points)")
        return float(levels[ctx["index"]])

    def _take_plan(self, plan):
        """Take the planned readings [(buffer, level or None, output on, delay before, count)], grouped."""
        k = 0
        while k < len(plan):
            buf, _, on, dly, _ = plan[k]
            j = k
            while j < len(plan) and plan[j][0] == buf and plan[j][2] == on and plan[j][3] == dly:
                j += 1
            group = plan[k:j]
            # each reading follows its delay: the clock moves by it first (the 2400's clock adds it after)
            self.clock += dly
            self.state["trig_del"] = dly
            if bool(self.state["output"]) != on:
                self.state["output"] = on
                self.model.changed()
            if all(g[1] is None for g in group):
                self._take(sum(g[4] for g in group), buf)
            else:
                self._take(sum(g[4] for g in group), buf,
                           levels=np.concatenate([np.full(g[4], self.bias() if g[1] is None else g[1]) for g in group]))
            self.clock -= dly
            k = j
        plan.clear()

    def _bus_trigger(self):
        """*TRG: the COMMand event; a model waiting for it goes on."""
        if not self.armed:
            raise SCPIError(-211, "no trigger model waits for a bus trigger")
        self.events.add("COMM")
        self._run_blocks(self.pc, self._ctx)

    def _abort(self):
        self.armed = None
        self.completed()

    def pending(self) -> bool:
        return self.armed is not None

    def listening(self, line: int) -> bool:
        return False
