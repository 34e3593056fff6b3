"""An emulated Keithley 2700 with a 7700 20-channel multiplexer card in slot 1: DC volts on channels 101..120.

Facts from the Model 2700 Multimeter/Switch System User's Manual: FORMat:ELEMents
READing, UNITs, TSTamp, RNUMber, CHANnel, LIMits (sent in that order; ASCII
reading ``+1.23456789E-03VDC``, overflow +9.9E37), the scan list (ROUTe:SCAN,
ROUTe:SCAN:LSELect INTernal) and closed channels (ROUTe:CLOSe, ROUTe:MULTiple).

A measurement reads the closed channel, or with a scan list selected, scans:
SAMPle:COUNt readings cycle through the list (a count larger than the list
wraps around it). Each scan is one point of the SMUs' sweep, as by a trigger
link; a sweep of one point is read as often as asked.
"""

from __future__ import annotations

import time

import numpy as np

from hil.drivers.commands import Setting, install, reset
from hil.drivers.emulator import SCANNER_CHANNELS, Instrument
from hil.drivers.scpi import ILLEGAL_VALUE, SETTINGS_CONFLICT, SCPIError, channel_list

V_RANGES = (0.1, 1.0, 10.0, 100.0, 1000.0)
OVERFLOW = 9.9e37
ELEMENTS = ("READ", "UNIT", "TST", "RNUM", "CHAN", "LIM")   # *RST: all

S = Setting
SETTINGS = [
    S("[SENSe]:VOLTage[:DC]:NPLCycles", "nplc", "real", 1.0, 0.01, 60.0),
    S("[SENSe]:VOLTage[:DC]:RANGe[:UPPer]", "rang", "real", 1000.0, 0.0, 1010.0, ranges=V_RANGES),
    S("[SENSe]:VOLTage[:DC]:RANGe:AUTO", "rang_auto", "bool", True),
    S("[SENSe]:VOLTage[:DC]:AVERage[:STATe]", "aver", "bool", False),
    S("[SENSe]:VOLTage[:DC]:AVERage:COUNt", "aver_coun", "int", 10, 1, 100),
    S("SAMPle:COUNt", "samp_coun", "int", 1, 1, 55000),
    S("TRIGger:COUNt", "trig_coun", "int", 1, 1, 55000),
    S("TRIGger:SOURce", "trig_sour", "enum", "IMM", choices=("IMMediate", "TIMer", "MANual", "BUS", "EXTernal")),
    S("TRIGger:DELay", "trig_del", "real", 0.0, 0.0, 999999.999),
    S("TRIGger:DELay:AUTO", "trig_del_auto", "bool", True),
    S("INITiate:CONTinuous", "init_cont", "bool", False),
    S("ROUTe:SCAN:LSELect", "lsel", "enum", "NONE", choices=("INTernal", "NONE")),
    S("ROUTe:SCAN:TSOurce", "scan_tso", "enum", "IMM", choices=("IMMediate", "HOLD", "TIMer", "MANual", "BUS",
                                                                  "EXTernal")),
    S("FORMat:ELEMents", "elements", "list", ELEMENTS,
      choices=("READing", "UNITs", "TSTamp", "RNUMber", "CHANnel", "LIMits")),
    S("FORMat[:DATA]", "form_data", "enum", "ASC", choices=("ASCii",)),
    S("DISPlay:ENABle", "disp_enab", "bool", True),
    S("DISPlay:TEXT:DATA", "disp_text", "string", "", max_len=12),
    S("DISPlay:TEXT:STATe", "disp_text_stat", "bool", False),
    S("SYSTem:BEEPer[:STATe]", "beep", "bool", True),
    S("TRACe:POINts", "trac_poin", "int", 55000, 2, 55000),
    S("TRACe:FEED", "trac_feed", "enum", "SENS", choices=("SENSe", "CALCulate", "NONE")),
    S("TRACe:FEED:CONTrol", "trac_cont", "enum", "NEV", choices=("NEVer", "NEXT", "ALWays")),
]


class Scanner(Instrument):
    """Keithley 2700 + 7700: DC volts on the channels wired to the circuit's inner nodes."""

    idn = "KEITHLEY INSTRUMENTS INC.,MODEL 2700,0000000,B06 EMULATED (hil)"
    settings = SETTINGS

    def __init__(self, model, channels: dict):
        self.channels = {int(ch): model.c.node(n) for ch, n in channels.items()}
        self.state = {}
        self.t0 = time.monotonic()
        self.rnum = 0
        self.rng = np.random.default_rng(2700)
        super().__init__(model)

    def reset(self):
        reset(self.settings, self.state)
        self.scan, self.closed = [], set()
        self.samples = self.trace = np.zeros((0, 4))
        self.func = "VOLT:DC"

    def declare(self):
        s = self.scpi
        install(s, self.settings, self.state)
        s.add("*OPT?", lambda a: "7700,NONE")
        s.add("[SENSe]:FUNCtion", self._set_func)
        s.add("[SENSe]:FUNCtion?", lambda a: f'"{self.func}"')
        s.add("ROUTe:SCAN[:INTernal]", self._set_scan)
        s.add("ROUTe:SCAN[:INTernal]?", lambda a: self._clist(self.scan))
        s.add("ROUTe:CLOSe", self._close)
        s.add("ROUTe:CLOSe?", lambda a: self._clist(sorted(self.closed)))
        s.add("ROUTe:OPEN", lambda a: self.closed.difference_update(self._channels(a)))
        s.add("ROUTe:OPEN:ALL", lambda a: self.closed.clear())
        s.add("ROUTe:MULTiple:CLOSe", lambda a: self.closed.update(self._channels(a)))
        s.add("ROUTe:MULTiple:CLOSe?", lambda a: self._clist(sorted(self.closed)))
        s.add("ROUTe:MULTiple:OPEN", lambda a: self.closed.difference_update(self._channels(a)))
        s.add("ROUTe:MULTiple:STATe?", lambda a: ",".join("1" if ch in self.closed else "0"
                                                             for ch in self._channels(a)))
        s.add("INITiate[:IMMediate]", lambda a: self._initiate())
        s.add("ABORt", lambda a: None)
        s.add("*TRG", lambda a: None)
        s.add("FETCh?", lambda a: self._fetch())
        s.add("READ?", lambda a: (self._initiate(), self._fetch())[1])
        s.add("MEASure[:VOLTage][:DC]?", lambda a: self._measure(a))
        s.add("CONFigure[:VOLTage][:DC]", lambda a: self._configure())
        s.add("TRACe:DATA?", lambda a: self._format(self.trace))
        s.add("TRACe:CLEar", lambda a: setattr(self, "trace", np.zeros((0, 4))))
        s.add("TRACe:POINts:ACTual?", lambda a: str(len(self.trace)))
        s.add("SYSTem:PRESet", lambda a: self.reset())
        s.add("SYSTem:BEEPer[:IMMediate]", lambda a: None)

    # -- routing ------------------------------------------------------------------------
    @staticmethod
    def _clist(chans) -> str:
        return "(@" + ",".join(map(str, chans)) + ")"

    @staticmethod
    def _channels(a) -> list:
        chans = channel_list(a)
        bad = [ch for ch in chans if ch not in SCANNER_CHANNELS]
        if bad:
            raise SCPIError(-222, f"channel {bad[0]} is not on the 7700 card in slot 1")
        return chans

    def _set_scan(self, a):
        self.scan = self._channels(a)
        self.state["lsel"] = "INT"   # defining the internal list selects it (as hil's driver expects)

    def _close(self, a):
        chans = self._channels(a)
        if len(chans) != 1:
            raise SCPIError(-222, "ROUT:CLOS takes one channel (ROUT:MULT:CLOS for several)")
        self.closed = set(chans)     # closing a channel opens the others
        self.state["lsel"] = "NONE"  # and a closed channel stops the scan

    def _set_func(self, a):
        t = a.strip(" \t").strip("'\"").upper()
        if t not in ("VOLT", "VOLT:DC", "VOLTAGE", "VOLTAGE:DC"):
            raise SCPIError(ILLEGAL_VALUE, f"{a.strip()[:20]}: the emulated 7700 reads DC volts only")
        self.func = "VOLT:DC"

    # -- measuring ----------------------------------------------------------------------
    def _sequence(self):
        """The channels the next measurement reads, in order."""
        st = self.state
        count = st["samp_coun"] * st["trig_coun"]
        if count > 55000:  # the reading buffer
            raise SCPIError(SETTINGS_CONFLICT, f"sample count x trigger count = {count} > 55000")
        if st["lsel"] == "INT" and self.scan:
            return [self.scan[k % len(self.scan)] for k in range(count)], len(self.scan)
        if len(self.closed) > 1:
            raise SCPIError(SETTINGS_CONFLICT, f"{len(self.closed)} channels closed join their nodes at the input")
        ch = next(iter(self.closed)) if self.closed else 0   # 0: no channel closed (front inputs, open)
        return [ch] * count, 1

    def _initiate(self):
        """One measurement: (count, 4) readings READ, TST, RNUM, CHAN into sample memory (and the trace)."""
        with self.model.lock:
            seq, per = self._sequence()
            V = self.model.solution()[0]
            scans = (len(seq) + per - 1) // per
            if len(V) > 1 and scans != len(V):
                raise SCPIError(SETTINGS_CONFLICT, f"{scans} scans asked during a {len(V)}-point sweep")
            seq = np.asarray(seq)
            k = np.arange(len(seq))
            rows = k // per if len(V) > 1 else np.zeros(len(seq), int)
            wired = np.isin(seq, list(self.channels))
            nodes = np.array([self.channels.get(int(ch), 0) for ch in seq])
            v = np.where(wired, V[rows, nodes], 0.0)   # an unwired channel: an open input, 0 V
            dt = self.state["nplc"] / 60.0 + self.state["trig_del"]
            out = np.column_stack([self._measured(v), time.monotonic() - self.t0 + k * dt, self.rnum + k, seq])
            self.rnum += len(seq)
            self.samples = out
            if self.state["trac_cont"] in ("NEXT", "ALW"):
                self.trace = np.vstack([self.trace, out])[-self.state["trac_poin"]:]

    def _fetch(self):
        if not len(self.samples):
            raise SCPIError(-230, "no readings since the last reset")
        return self._format(self.samples)

    def _configure(self):
        st = self.state
        st["samp_coun"] = st["trig_coun"] = 1
        self.func = "VOLT:DC"

    def _measure(self, a):
        self._configure()
        return (self._initiate(), self._fetch())[1]

    def _measured(self, v: np.ndarray) -> np.ndarray:
        """Readings (V) with the configured noise, at 6.5 digits of the range; +9.9E37 over range."""
        st = self.state
        v = np.array(v, float)
        if self.model.noise[0]:
            n_avg = st["aver_coun"] if st["aver"] else 1
            v = v + self.rng.normal(0.0, self.model.noise[0] / np.sqrt(st["nplc"] * n_avg), v.shape)
        ranges = np.array(V_RANGES)
        if st["rang_auto"]:
            rng = ranges[np.minimum(np.searchsorted(1.2 * ranges, np.abs(v)), len(ranges) - 1)]
        else:
            rng = np.full(v.shape, st["rang"])
        res = np.where(rng < 1000, rng / 1e6, rng / 1e5)   # 6.5 digits (1000 V: 5.5)
        return np.where(np.abs(v) > 1.2 * rng, OVERFLOW, np.round(v / res) * res)

    def _format(self, readings: np.ndarray) -> str:
        els = self.state["elements"]
        units = "UNIT" in els
        out = []
        for read, tst, rnum, chan in readings:
            parts = []
            if "READ" in els:
                parts.append(f"{read:+.8E}" + ("VDC" if units and read < OVERFLOW else ""))
            if "TST" in els:
                parts.append(f"{tst:+.3f}" + ("SECS" if units else ""))
            if "RNUM" in els:
                parts.append(f"{int(rnum):+d}" + ("RDNG" if units else ""))
            if "CHAN" in els:
                parts.append(f"{int(chan):03d}")
            if "LIM" in els:
                parts.append("0000" + ("LIMITS" if units else ""))
            out.append(",".join(parts))
        return ",".join(out)
