"""An emulated Keithley 2700 with a 7700 20-channel multiplexer card in slot 1: DC volts on channels 101..120.

Facts from the Model 2700 Multimeter/Switch System User's Manual: FORMat:ELEMents
READing, UNITs, TSTamp, RNUMber, CHANnel, LIMits (sent in that order; ASCII
reading ``+1.23456789E-03VDC``, overflow +9.9E37), the scan list (ROUTe:SCAN,
ROUTe:SCAN:LSELect INTernal), closed channels (section 2: system channel
operation, ROUTe:CLOSe, which also closes the backplane relay 125 that connects
the meter; multiple channel operation, ROUTe:MULTiple, with channels 121..125:
the two amps channels 121, 122, the 2/4-pole relay 123 and the backplane
isolation relays 124 (sense) and 125 (input)), channel lists on MEASure?,
CONFigure and SENSe:FUNCtion, and the measurement event register (section 11:
ROF bit 0, RAV 5, BAV 7, BHF 8, BFL 9, BOF 10).

A measurement reads the closed channel, or with a scan list selected, scans:
SAMPle:COUNt readings per trigger cycle through the list (a count larger than
the list wraps around it), TRIGger:COUNt such cycles. With TRIGger:SOURce
EXTernal each cycle waits for a trigger on the trigger link, and reads the
circuit at the point of the triggering SMU's sweep. The instrument's clock is
virtual: it advances by the integration time and delays of each reading.
"""

from __future__ import annotations

import numpy as np

from hil.emulator.commands import Setting, fmt_real, install, reset
from hil.emulator.bench import SCANNER_CHANNELS, Instrument
from hil.emulator.scpi import ILLEGAL_VALUE, SETTINGS_CONFLICT, SCPIError, channel_list, split_params

V_RANGES = (0.1, 1.0, 10.0, 100.0, 1000.0)
OVERFLOW = 9.9e37
ELEMENTS = ("READ", "UNIT", "TST", "RNUM", "CHAN", "LIM")   # *RST: all
CARD_CHANNELS = range(101, 126)        # 101..120 measurement, 121..122 amps, 123..125 relays
AMPS, POLE4, SENSE_ISO, INPUT_ISO = (121, 122), 123, 124, 125
# measurement event register (section 11)
ROF, RAV, BAV, BHF, BFL, BOF = 1, 1 << 5, 1 << 7, 1 << 8, 1 << 9, 1 << 10
BUFFER_MAX = 55000

S = Setting
SETTINGS = [
    S("[SENSe]:VOLTage[:DC]:NPLCycles", "nplc", "real", 1.0, 0.01, 60.0),
    S("[SENSe]:VOLTage[:DC]:RANGe[:UPPer]", "rang", "real", 1000.0, 0.0, 1010.0, ranges=V_RANGES),
    S("[SENSe]:VOLTage[:DC]:RANGe:AUTO", "rang_auto", "bool", True),
    S("[SENSe]:VOLTage[:DC]:DIGits", "digits", "int", 7, 4, 7),
    S("[SENSe]:VOLTage[:DC]:AVERage[:STATe]", "aver", "bool", False),
    S("[SENSe]:VOLTage[:DC]:AVERage:COUNt", "aver_coun", "int", 10, 1, 100),
    S("[SENSe]:VOLTage[:DC]:AVERage:TCONtrol", "aver_tcon", "enum", "MOV", choices=("MOVing", "REPeat")),
    S("SAMPle:COUNt", "samp_coun", "int", 1, 1, BUFFER_MAX),
    S("TRIGger:COUNt", "trig_coun", "int", 1, 1, 9999, settable=False),   # also INFinite: below
    S("TRIGger:SOURce", "trig_sour", "enum", "IMM", choices=("IMMediate", "TIMer", "MANual", "BUS", "EXTernal")),
    S("TRIGger:TIMer", "trig_tim", "real", 0.1, 0.001, 999999.999),
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
    S("SYSTem:AZERo[:STATe]", "azer", "bool", True),
    S("TRACe:POINts", "trac_poin", "int", BUFFER_MAX, 2, BUFFER_MAX),
    S("TRACe:FEED", "trac_feed", "enum", "SENS", choices=("SENSe", "CALCulate", "NONE")),
    S("TRACe:FEED:CONTrol", "trac_cont", "enum", "NEV", choices=("NEVer", "NEXT", "ALWays")),
    S("TRACe:TSTamp:FORMat", "trac_tst", "enum", "ABS", choices=("ABSolute", "DELTa")),
    # CALC1: mX+b, percent, reciprocal on each reading (section 5)
    S("CALCulate[1]:FORMat", "calc1_form", "enum", "NONE", choices=("NONE", "MXB", "PERCent", "RECiprocal")),
    S("CALCulate[1]:STATe", "calc1_stat", "bool", False),
    S("CALCulate[1]:KMATh:MMFactor", "calc1_m", "real", 1.0, -1e11, 1e11),
    S("CALCulate[1]:KMATh:MBFactor", "calc1_b", "real", 0.0, -1e11, 1e11),
    S("CALCulate[1]:KMATh:PERCent", "calc1_pct", "real", 1.0, -1e11, 1e11),
    # CALC2: a statistic of the buffer (section 6)
    S("CALCulate2:FORMat", "calc2_form", "enum", "NONE",
      choices=("NONE", "MEAN", "SDEViation", "MAXimum", "MINimum", "PKPK")),
    S("CALCulate2:STATe", "calc2_stat", "bool", False),
]
BY_KEY = {s.key: s for s in SETTINGS}


class Scanner(Instrument):
    """Keithley 2700 + 7700: DC volts on the channels wired to the circuit's inner nodes."""

    idn = "KEITHLEY INSTRUMENTS INC.,MODEL 2700,0000000,B06 EMULATED (hil)"
    settings = SETTINGS

    def __init__(self, model, channels: dict):
        self.channels = {int(ch): model.c.node(n) for ch, n in channels.items()}
        self.state = {}
        self.rnum = 0
        self.rng = np.random.default_rng(2700)
        super().__init__(model)

    def reset(self, continuous: bool = False):
        reset(self.settings, self.state)
        self.state["init_cont"] = continuous
        self.scan, self.closed = [], set()
        self.samples = self.trace = np.zeros((0, 4))
        self.fresh = False                  # the latest reading not yet returned by :DATA:FRESh?
        self.calc2 = None
        self.link = None                    # (trigger cycles left, readings) while waiting for the trigger link
        self.func = "VOLT:DC"

    def declare(self):
        s = self.scpi
        install(s, self.settings, self.state, self._on_set)
        s.add("*OPT?", lambda a: "7700,NONE")
        s.add("[SENSe]:FUNCtion", self._set_func)
        s.add("[SENSe]:FUNCtion?", lambda a: f'"{self.func}"')
        s.add("TRIGger:COUNt", self._set_trig_count)
        s.add("ROUTe:SCAN[:INTernal]", self._set_scan)
        s.add("ROUTe:SCAN[:INTernal]?", lambda a: self._clist(self.scan))
        s.add("ROUTe:CLOSe", self._close)
        s.add("ROUTe:CLOSe?", lambda a: self._clist(sorted(self.closed & set(SCANNER_CHANNELS))))
        s.add("ROUTe:OPEN", lambda a: self.closed.difference_update(self._channels(a)))
        s.add("ROUTe:OPEN:ALL", lambda a: self.closed.clear())
        s.add("ROUTe:MULTiple:CLOSe", self._multiple_close)
        s.add("ROUTe:MULTiple:CLOSe?", lambda a: self._clist(sorted(self.closed)))
        s.add("ROUTe:MULTiple:OPEN", lambda a: self.closed.difference_update(self._channels(a)))
        s.add("ROUTe:MULTiple:STATe?", lambda a: ",".join("1" if ch in self.closed else "0"
                                                             for ch in self._channels(a)))
        s.add("INITiate[:IMMediate]", lambda a: self._initiate())
        s.add("ABORt", lambda a: self._abort())
        s.add("*TRG", lambda a: self._bus_trigger())
        s.add("FETCh?", lambda a: self._fetch())
        s.add("READ?", lambda a: self._read())
        s.add("[SENSe]:DATA[:LATest]?", lambda a: self._latest(fresh=False))
        s.add("[SENSe]:DATA:FRESh?", lambda a: self._latest(fresh=True))
        s.add("MEASure[:VOLTage][:DC]?", lambda a: self._measure(a))
        s.add("CONFigure[:VOLTage][:DC]", lambda a: self._configure(a))
        s.add("CONFigure?", lambda a: f'"{self.func}"')
        s.add("CALCulate[1]:DATA?", lambda a: self._calc1_latest())
        s.add("CALCulate2:IMMediate", lambda a: self._calc2())
        s.add("CALCulate2:IMMediate?", lambda a: (self._calc2(), self._calc2_data())[1])
        s.add("CALCulate2:DATA?", lambda a: self._calc2_data())
        s.add("TRACe:DATA?", lambda a: self._format(self._trace_times()))
        s.add("TRACe:CLEar", lambda a: self._clear_trace())
        s.add("TRACe:POINts:ACTual?", lambda a: str(len(self.trace)))
        s.add("SYSTem:PRESet", lambda a: self.reset(continuous=True))   # :SYST:PRES: continuous initiation on
        s.add("SYSTem:BEEPer[:IMMediate]", lambda a: None)
        s.add("SYSTem:TIME:RESet", lambda a: setattr(self, "clock", 0.0))

    def _on_set(self, setting, value):
        if setting.key == "trac_cont" and value == "NEXT" and len(self.trace) >= self.state["trac_poin"]:
            self._clear_trace()   # a new fill starts from an empty buffer
        if setting.key == "trac_poin" and len(self.trace) > value:
            self.trace = self.trace[:value]

    def _set_trig_count(self, a):
        if a.strip(" \t").upper() in ("INF", "INFINITE"):
            raise SCPIError(SETTINGS_CONFLICT, "an infinite trigger count never completes a scan here")
        self.state["trig_coun"] = BY_KEY["trig_coun"].parse(a)

    # -- routing ------------------------------------------------------------------------
    @staticmethod
    def _clist(chans) -> str:
        return "(@" + ",".join(map(str, chans)) + ")"

    @staticmethod
    def _channels(a, card=CARD_CHANNELS) -> list:
        chans = channel_list(a)
        bad = [ch for ch in chans if ch not in card]
        if bad:
            raise SCPIError(-222, f"channel {bad[0]} is not on the 7700 card in slot 1 ({card[0]}..{card[-1]})")
        return chans

    def _set_scan(self, a):
        self.scan = self._channels(a, SCANNER_CHANNELS)
        self.state["lsel"] = "INT"   # defining the internal list selects it (as hil's driver expects)

    def _close(self, a):
        """System channel operation: one measurement channel, connected to the meter (125 closes)."""
        chans = self._channels(a, SCANNER_CHANNELS)
        if len(chans) != 1:
            raise SCPIError(-222, "ROUT:CLOS takes one channel (ROUT:MULT:CLOS for several)")
        self.closed = {chans[0], INPUT_ISO}   # closing a channel opens the others
        self.state["lsel"] = "NONE"           # and a closed channel stops the scan

    def _multiple_close(self, a):
        """Multiple channel operation: the channels close, the others stay as they are. Two wired
        measurement channels closed together would join their nodes: refused (the emulator does
        not short circuit nodes through the card)."""
        chans = self._channels(a)
        wired = sorted({ch for ch in set(chans) | self.closed if ch in self.channels})
        if len(wired) > 1:
            c = self.model.c
            raise SCPIError(SETTINGS_CONFLICT, f"channels {wired[0]} and {wired[1]} closed together would join nodes "
                                               f"{c.nodes[self.channels[wired[0]]]} and {c.nodes[self.channels[wired[1]]]}")
        self.closed.update(chans)

    def _set_func(self, a):
        parts = split_params(a)
        if len(parts) > 2:
            raise SCPIError(-108, "a function and a channel list")
        t = parts[0].strip("'\"").upper()
        if t not in ("VOLT", "VOLT:DC", "VOLTAGE", "VOLTAGE:DC"):
            raise SCPIError(ILLEGAL_VALUE, f"{parts[0][:20]}: the emulated 7700 reads DC volts only")
        if len(parts) == 2:
            self._channels(parts[1], SCANNER_CHANNELS)   # the function of those channels: DC volts
        self.func = "VOLT:DC"

    # -- measuring ----------------------------------------------------------------------
    def _sequence(self):
        """The channels one trigger cycle reads, in order (SAMP:COUN of them)."""
        st = self.state
        count = st["samp_coun"]
        if count * st["trig_coun"] > BUFFER_MAX:  # the reading buffer
            raise SCPIError(SETTINGS_CONFLICT, f"sample count x trigger count = {count * st['trig_coun']} > {BUFFER_MAX}")
        if st["lsel"] == "INT" and self.scan:
            return [self.scan[k % len(self.scan)] for k in range(count)]
        meas = sorted(self.closed & set(SCANNER_CHANNELS))
        # the meter reads the closed channel through the input backplane relay 125 (open input otherwise)
        ch = meas[0] if meas and INPUT_ISO in self.closed else 0
        return [ch] * count

    def pending(self) -> bool:
        return self.link is not None

    def listening(self, line: int) -> bool:
        return self.link is not None and self.state["trig_sour"] == "EXT"

    def _initiate(self):
        if self.link is not None:
            raise SCPIError(-213, "already waiting for triggers")
        self._sequence()
        if self.state["trig_sour"] in ("EXT", "BUS", "MAN"):
            self.link = (self.state["trig_coun"], [])
            return
        self._take(self.model.solution(), np.zeros(self.state["trig_coun"], int))

    def _bus_trigger(self):
        if self.link is None or self.state["trig_sour"] not in ("BUS", "MAN"):
            raise SCPIError(-211, "not waiting for a bus trigger")
        self.link_take(self.model.solution(), 1)

    def _abort(self):
        self.link = None
        self.completed()

    def link_port(self, n: int) -> dict:
        return {}   # a meter sources nothing

    def link_take(self, sol, n: int) -> None:
        """One trigger cycle at each of the first n points of the triggering sweep (as many as are left)."""
        left, got = self.link
        m = min(n, left)
        rows = np.arange(m) if len(sol[0]) > 1 else np.zeros(m, int)
        got.append(self._readings(sol, rows))
        self.link = (left - m, got)
        if left == m:
            self.link = None
            self._keep(np.vstack(got))
            self.completed()

    def _take(self, sol, rows):
        self._keep(self._readings(sol, rows))

    def _readings(self, sol, rows) -> np.ndarray:
        """(cycles x SAMP:COUN, 4) readings READ, TST, RNUM, CHAN: one trigger cycle at each solution row."""
        seq = np.asarray(self._sequence())
        V = sol[0]
        rows = np.repeat(rows, len(seq))
        seq = np.tile(seq, len(rows) // len(seq))
        wired = np.isin(seq, list(self.channels))
        nodes = np.array([self.channels.get(int(ch), 0) for ch in seq])
        v = np.where(wired, V[rows, nodes], 0.0)   # an unwired channel: an open input, 0 V
        st = self.state
        dt = st["nplc"] / 60.0 + st["trig_del"]
        k = np.arange(len(seq))
        out = np.column_stack([self._measured(v), self.clock + k * dt, self.rnum + k, seq])
        self.clock += len(seq) * dt
        self.rnum += len(seq)
        return out

    def _keep(self, out):
        """Readings into sample memory and, as :TRAC:FEED:CONT says, the buffer; the event bits they set."""
        st, meas = self.state, self.status.measurement
        self.samples, self.fresh = out, True
        meas.pulse(RAV | (ROF if (out[:, 0] >= OVERFLOW).any() else 0))
        if st["trac_cont"] in ("NEXT", "ALW") and st["trac_feed"] != "NONE":
            buf = np.vstack([self.trace, out])
            if len(buf) > st["trac_poin"]:
                if st["trac_cont"] == "ALW":
                    meas.pulse(BOF)
                    buf = buf[-st["trac_poin"]:]
                else:
                    buf = buf[:st["trac_poin"]]
            self.trace = buf
            self._buffer_bits()
            if st["trac_cont"] == "NEXT" and len(self.trace) >= st["trac_poin"]:
                st["trac_cont"] = "NEV"

    def _buffer_bits(self):
        n, full, meas = len(self.trace), self.state["trac_poin"], self.status.measurement
        meas.set(BAV, n >= 2)
        meas.set(BHF, n >= full / 2)
        meas.set(BFL, n >= full)

    def _clear_trace(self):
        self.trace = np.zeros((0, 4))
        self._buffer_bits()

    def _read(self):
        if self.state["trig_sour"] in ("EXT", "BUS", "MAN"):
            raise SCPIError(SETTINGS_CONFLICT, f"READ? with TRIG:SOUR {self.state['trig_sour']} would wait for a trigger")
        self._initiate()
        return self._fetch()

    def _fetch(self):
        if self.link is not None:
            raise SCPIError(-230, "the scan waits for its triggers: no readings yet")
        if not len(self.samples):
            raise SCPIError(-230, "no readings since the last reset")
        self.fresh = False
        return self._format(self.samples)

    def _latest(self, fresh: bool):
        """:DATA? the latest reading; :DATA:FRESh? one not returned before (a new one while
        measuring continuously; -230 when none can come)."""
        if fresh and not self.fresh:
            if not self.state["init_cont"]:
                raise SCPIError(-230, "no fresh reading (INIT:CONT OFF and no INIT since the last one)")
            self._take(self.model.solution(), np.zeros(1, int))
        if not len(self.samples):
            if not self.state["init_cont"]:
                raise SCPIError(-230, "no readings since the last reset")
            self._take(self.model.solution(), np.zeros(1, int))
        self.fresh = False
        return self._format(self.samples[-1:])

    def _with_channels(self, a):
        """A MEASure?/CONFigure parameter list: [range[, resolution],] [(@channel list)]."""
        parts = [p for p in split_params(a) if p]
        chans = None
        if parts and parts[-1].startswith("("):
            chans = self._channels(parts.pop(), SCANNER_CHANNELS)
        if len(parts) > 2:
            raise SCPIError(-108, "range, resolution and a channel list at most")
        if parts:
            if parts[0].upper() in ("AUTO", "DEF", "DEFAULT"):
                self.state["rang_auto"] = True
            else:
                self.state["rang"] = BY_KEY["rang"].parse(parts[0])
                self.state["rang_auto"] = False
        return chans

    def _configure(self, a=""):
        st = self.state
        chans = self._with_channels(a)
        st["samp_coun"] = st["trig_coun"] = 1
        st["trig_sour"] = "IMM"
        st["init_cont"] = False
        self.link = None
        self.func = "VOLT:DC"
        if chans is not None:
            if len(chans) == 1:
                self.closed = {chans[0], INPUT_ISO}
                st["lsel"] = "NONE"
            else:   # several channels: a scan of them, one reading each
                self.scan, st["lsel"], st["samp_coun"] = chans, "INT", len(chans)

    def _measure(self, a):
        self._configure(a)
        return self._read()

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
        out = np.where(np.abs(v) > 1.2 * rng, OVERFLOW, np.round(v / res) * res)
        return np.where(out >= OVERFLOW, out, self._calc1(out))

    def _calc1(self, x):
        """CALC1 on each reading when enabled: mX+b, percent of a reference, reciprocal."""
        st = self.state
        if not st["calc1_stat"] or st["calc1_form"] == "NONE":
            return x
        if st["calc1_form"] == "MXB":
            return st["calc1_m"] * x + st["calc1_b"]
        if st["calc1_form"] == "PERC":
            return x / st["calc1_pct"] * 100.0
        with np.errstate(divide="ignore"):
            return np.where(x == 0, OVERFLOW, 1.0 / np.where(x == 0, 1.0, x))

    def _calc1_latest(self):
        if not len(self.samples):
            raise SCPIError(-230, "no readings since the last reset")
        return fmt_real(self.samples[-1, 0])

    def _calc2(self):
        """CALC2:IMM: the statistic CALC2:FORM of the buffer's readings."""
        form = self.state["calc2_form"]
        x = self.trace[:, 0]
        if not len(x):
            raise SCPIError(-230, "the buffer holds no readings")
        stat = {"NONE": lambda: x[-1], "MEAN": x.mean, "MAX": x.max, "MIN": x.min, "PKPK": lambda: x.max() - x.min(),
                "SDEV": lambda: x.std(ddof=1) if len(x) > 1 else 0.0}[form]
        self.calc2 = float(stat())

    def _calc2_data(self):
        if self.calc2 is None:
            self._calc2()
        return fmt_real(self.calc2)

    def _trace_times(self) -> np.ndarray:
        """The buffer with time stamps from its first reading (ABSolute) or from the reading before (DELTa)."""
        t = self.trace.copy()
        if len(t):
            t0 = t[:, 1].copy()
            t[:, 1] = t0 - t0[0] if self.state["trac_tst"] == "ABS" else np.r_[0.0, np.diff(t0)]
        return t

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
