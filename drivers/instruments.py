"""Instrument drivers, PyMeasure style: each SCPI command declared once, values checked before sending.

- :class:`SMU`: PyMeasure's Keithley 2400, with the source levels declared at 12
  significant digits (PyMeasure's ``%g`` keeps 6) and the user's safety limits
  enforced before a value reaches the socket;
- :class:`Scanner`: PyMeasure's Keithley 2700, with the scan of a 7700 card;
- :class:`ResistorBoard`: the programmable-resistor board (``resistor-board.md``).

Every driver raises :class:`LimitError` (naming the instrument, the value and the
limit) before it sends a value outside the instrument's range or the user's limits.

Each driver has the two halves of the bench's lifecycle: ``make_safe()`` (outputs
off, levels at zero, error queue read and cleared, as the instrument allows)
and ``configure()`` (the settings a run needs, every one within the limits).
"""

from __future__ import annotations

import time

import numpy as np
from pymeasure.instruments import Instrument, SCPIMixin
from pymeasure.instruments.keithley import Keithley2400, Keithley2450, Keithley2700
from pymeasure.instruments.validators import strict_range


class LimitError(ValueError):
    """A value refused before it was sent: outside the instrument's range or the configured limits."""


class ReplyError(ValueError):
    """An instrument's reply that is not what the command returns (garbage, a wrong count)."""


MAX_QUEUED = 32  # a SCPI error queue holds 10 (2400: 10, 2700: 10); more means a broken reply


def drain_errors(inst) -> list:
    """Read ``inst``'s error queue until ``0,"No error"``: the (code, message) entries that were queued."""
    out = []
    for _ in range(MAX_QUEUED):
        reply = inst.ask("SYST:ERR?").strip()
        code, _, msg = reply.partition(",")
        try:
            code = int(float(code))
        except ValueError:
            raise ReplyError(f"{inst.name}: {reply[:60]!r} is not an error-queue entry (code,\"message\")") from None
        if code == 0:
            return out
        out.append((code, msg.strip().strip('"')))
    raise ReplyError(f"{inst.name}: the error queue did not empty after {MAX_QUEUED} reads")


def floats(name: str, reply: str, count: int | None = None) -> np.ndarray:
    """A comma-separated reply as finite floats; ReplyError quoting the reply otherwise."""
    try:
        vals = np.array([float(v) for v in reply.strip().split(",")], float)
    except ValueError:
        raise ReplyError(f"{name}: reply {reply.strip()[:60]!r} is not a list of numbers") from None
    if not np.all(np.isfinite(vals)) or (count is not None and len(vals) != count):
        raise ReplyError(f"{name}: reply {reply.strip()[:60]!r}: expected {count or 'finite'} values, got {len(vals)}")
    return vals


COMPLIANCE_BIT = 1 << 3  # the 2400's status word (a reading's fifth element): the source is at its compliance


def sweep_rows(name: str, reply: str, points: int) -> np.ndarray:
    """An SMU's sweep reply as one row of data elements per point, (points, elements): volts, amps, ohms,
    time, status (FORM:ELEM's order); ReplyError when the values do not divide into the points."""
    vals = floats(name, reply)
    if len(vals) % points:
        raise ReplyError(f"{name}: {len(vals)} values for {points} points")
    return vals.reshape(points, -1)


def in_compliance(rows: np.ndarray) -> np.ndarray:
    """Which rows of :func:`sweep_rows` (points,) the SMU read at its compliance (status bit 3)."""
    if rows.shape[1] < 5:
        return np.zeros(len(rows), bool)
    return (rows[:, 4].astype(np.int64) & COMPLIANCE_BIT) != 0


def _check(name: str, what: str, value: float, lo: float, hi: float, unit: str) -> float:
    value = float(value)
    if not (lo <= value <= hi):
        raise LimitError(f"{name}: {what} {value!r} {unit} is outside the allowed [{lo!r}, {hi!r}] {unit}; not sent")
    return value


def toward_zero(value: float, digits: int = 17) -> str:
    """``value`` as SCPI text of at most ``digits`` significant digits, rounded toward zero.

    The number the instrument reads is never larger in magnitude than ``value``: a limit or
    a level checked against the configured limits stays within them once sent. At 17
    digits the text is the double itself (its shortest exact form, ``repr``).
    """
    from decimal import ROUND_DOWN, Context, Decimal
    v = float(value)
    text = repr(v) if digits >= 17 else f"{v:.{digits}g}"
    if abs(float(text)) <= abs(v):
        return text
    return str(Context(prec=digits, rounding=ROUND_DOWN).plus(Decimal(v)))


def _check_list(smu, kind: str, values) -> np.ndarray:
    """A source list ('voltage' V or 'current' A) as an array, every level checked against the SMU's
    limits and the count against its LIST_MAX before anything is sent; LimitError naming the SMU otherwise."""
    values = np.asarray(values, float)
    lim, unit = (smu.voltage_limit, "V") if kind == "voltage" else (smu.current_limit, "A")
    for v in values:
        _check(smu.name, f"source {kind}", v, -lim, lim, unit)
    if not 1 <= len(values) <= smu.LIST_MAX:
        raise LimitError(f"{smu.name}: {len(values)} list points (1 to {smu.LIST_MAX})")
    return values


class SMU(Keithley2400):
    """A Keithley 2400 that never sources past ``voltage_limit`` (V) or ``current_limit`` (A).

    Levels go at 12 significant digits (PyMeasure's ``%g`` keeps 6), compliances at full
    precision, both rounded toward zero (:func:`toward_zero`), so nothing sent exceeds a limit.
    """

    source_voltage = Instrument.control(
        ":SOUR:VOLT?", ":SOUR:VOLT:LEV %s", "Source voltage level (V), 12 significant digits toward zero.",
        validator=strict_range, values=[-210, 210], set_process=lambda v: toward_zero(v, 12))
    source_current = Instrument.control(
        ":SOUR:CURR?", ":SOUR:CURR:LEV %s", "Source current level (A), 12 significant digits toward zero.",
        validator=strict_range, values=[-1.05, 1.05], set_process=lambda v: toward_zero(v, 12))
    compliance_current = Instrument.control(
        ":SENS:CURR:PROT?", ":SENS:CURR:PROT %s", "Compliance current (A), full precision toward zero.",
        validator=strict_range, values=[0, 1.05], set_process=toward_zero)
    compliance_voltage = Instrument.control(
        ":SENS:VOLT:PROT?", ":SENS:VOLT:PROT %s", "Compliance voltage (V), full precision toward zero.",
        validator=strict_range, values=[0, 210], set_process=toward_zero)

    def __init__(self, adapter, voltage_limit: float, current_limit: float, name="SMU", **kwargs):
        self.voltage_limit = _check(name, "voltage limit", voltage_limit, 0, 210, "V")
        self.current_limit = _check(name, "current limit", current_limit, 0, 1.05, "A")
        self._mode = None
        super().__init__(adapter, name=name, **kwargs)

    def reset_data_format(self):
        """Nothing at connect: the first command an SMU gets is :meth:`make_safe`'s; the format is set in configure."""

    def make_safe(self) -> list:
        """Output off, then the error queue read, then *RST (2400: output off, levels 0) and *CLS.

        Returns the errors that were queued before (what an earlier user left).
        """
        self.write(":OUTP OFF")
        errors = drain_errors(self)
        self.write("*RST;*CLS")
        self._mode = None
        return errors

    def configure(self) -> None:
        """Output on, sourcing 0 A (a free node), every setting within the limits before the output is on.

        Both compliances at the limits (so a later switch of source function is safe
        at once), both levels 0, fixed (not list) mode, one trigger.
        """
        Keithley2400.reset_data_format(self)
        # measure volts (and amps): after *RST a 2400 measures current only, and the volts
        # element of a current source would read NAN
        self.write(":SENS:FUNC:CONC ON;:SENS:FUNC 'VOLT:DC','CURR:DC'")
        self.write(":SOUR:VOLT:MODE FIX;:SOUR:CURR:MODE FIX;:TRIG:COUN 1")
        self.compliance_current = self.current_limit
        self.compliance_voltage = self.voltage_limit
        self.source_voltage = 0.0
        self.source_current = 0.0
        self._use("current")
        self.source_enabled = True

    def _use(self, kind: str) -> None:
        """Source ``kind`` ('voltage' or 'current'), the other quantity's compliance at its limit."""
        if self._mode != kind:
            self.source_mode = kind
            if kind == "voltage":
                self.compliance_current = self.current_limit
            else:
                self.compliance_voltage = self.voltage_limit
            self._mode = kind

    def source_volts(self, v: float) -> None:
        v = _check(self.name, "source voltage", v, -self.voltage_limit, self.voltage_limit, "V")
        self._use("voltage")
        self.source_voltage = v

    LIST_MAX = 100  # source-list points the 2400 holds

    def source_list(self, kind: str, values) -> None:
        """Source a list (one value per trigger, 'voltage' V or 'current' A): every value checked first."""
        values = _check_list(self, kind, values)
        self._use(kind)
        key = "VOLT" if kind == "voltage" else "CURR"
        self.write(f":SOUR:{key}:MODE LIST;:SOUR:LIST:{key} " + ",".join(toward_zero(v, 12) for v in values)
                   + f";:TRIG:COUN {len(values)}")

    # The sweep's reading split into request and reply, so that a bench asks every
    # instrument first and collects the replies after (the round trips overlap).
    def request_sweep(self) -> None:
        self.write(":TRIG:SOUR IMM;:TRIG:OUTP NONE;:READ?")

    LINK_LINE = 1  # the trigger-link line a bench's master SMU triggers the others on

    def arm_on_link(self) -> None:
        """Initiate a sweep that takes one point per trigger on the trigger link (as a follower);
        returns once the SMU has processed it (a query answers), so the master may fire."""
        reply = self.ask(f":TRIG:SOUR TLIN;:TRIG:ILIN {self.LINK_LINE};:TRIG:OUTP NONE;:INIT;:TRIG:SOUR?").strip()
        if reply != "TLIN":
            raise ReplyError(f"{self.name}: armed on the trigger link, but :TRIG:SOUR? answered {reply[:40]!r}")

    def request_master_sweep(self) -> None:
        """Run the sweep, triggering every follower on the link at each source point; its readings follow."""
        self.write(f":TRIG:SOUR IMM;:TRIG:OUTP SOUR;:TRIG:OLIN {self.LINK_LINE};:READ?")

    def request_fetch(self) -> None:
        self.write(":FETC?")

    def collect_sweep(self, points: int, reply: str | None = None) -> np.ndarray:
        """Volts at each sweep point (the first element of each reading, as FORMAT:ELEMENTS puts it)."""
        return sweep_rows(self.name, self.read() if reply is None else reply, points)[:, 0]

    def source_amps(self, i: float) -> None:
        i = _check(self.name, "source current", i, -self.current_limit, self.current_limit, "A")
        self._use("current")
        self.source_current = i


class SMU2450(Keithley2450):
    """A Keithley 2450 (SCPI command set) that never sources past ``voltage_limit`` (V) or ``current_limit`` (A).

    Its sweeps are stepped point by point (:func:`linked_sweep`): the bench sets every SMU's
    level, then reads every instrument, at each point.
    """

    source_voltage = Instrument.control(
        ":SOUR:VOLT?", ":SOUR:VOLT:LEV %.12g", "Source voltage level (V), 12 significant digits.",
        validator=strict_range, values=[-210, 210])
    source_current = Instrument.control(
        ":SOUR:CURR?", ":SOUR:CURR:LEV %.12g", "Source current level (A), 12 significant digits.",
        validator=strict_range, values=[-1.05, 1.05])

    def __init__(self, adapter, voltage_limit: float, current_limit: float, name="SMU", **kwargs):
        self.voltage_limit = _check(name, "voltage limit", voltage_limit, 0, 210, "V")
        self.current_limit = _check(name, "current limit", current_limit, 0, 1.05, "A")
        self._mode, self._list = None, None
        super().__init__(adapter, name=name, **kwargs)

    def make_safe(self) -> list:
        """Output off, the error queue read, *RST (output off, levels 0) and *CLS; returns the old errors."""
        self.write(":OUTP OFF")
        errors = drain_errors(self)
        self.write("*RST;*CLS")
        self._mode, self._list = None, None
        return errors

    def configure(self) -> None:
        """Output on, sourcing 0 A (a free node), both limits at the configured ones."""
        self.write(':SOUR:FUNC VOLT;:SOUR:VOLT:ILIM %.12g;:SOUR:FUNC CURR;:SOUR:CURR:VLIM %.12g'
                   % (self.current_limit, self.voltage_limit))
        self.write(":SOUR:VOLT:LEV 0;:SOUR:CURR:LEV 0")
        self._use("current")
        self.write(":OUTP ON")

    def _use(self, kind: str) -> None:
        """Source ``kind``, measuring the other quantity (the 2450 measures one function at a time)."""
        if self._mode != kind:
            self.write(':SOUR:FUNC VOLT;:SENS:FUNC "CURR"' if kind == "voltage" else ':SOUR:FUNC CURR;:SENS:FUNC "VOLT"')
            self._mode = kind

    def source_volts(self, v: float) -> None:
        v = _check(self.name, "source voltage", v, -self.voltage_limit, self.voltage_limit, "V")
        self._use("voltage")
        self.source_voltage = v

    def source_amps(self, i: float) -> None:
        i = _check(self.name, "source current", i, -self.current_limit, self.current_limit, "A")
        self._use("current")
        self.source_current = i

    LIST_MAX = 100

    def source_list(self, kind: str, values) -> None:
        """The levels the next stepped sweep sources ('voltage' V or 'current' A), every one checked first."""
        values = _check_list(self, kind, values)
        self._use(kind)
        self._list = (kind, values)

    def source_point(self, k: int) -> None:
        """Source point k of the list (no reply)."""
        kind, values = self._list
        self.write((":SOUR:VOLT:LEV %.12g" if kind == "voltage" else ":SOUR:CURR:LEV %.12g") % values[k])

    def request_point(self) -> None:
        """One reading: the measured value, the source readback and whether the source is at its limit."""
        lim = ":SOUR:VOLT:ILIM:TRIP?" if self._mode == "voltage" else ":SOUR:CURR:VLIM:TRIP?"
        self.write(f':READ? "defbuffer1", READ, SOUR;{lim}')

    def collect_point(self) -> str:
        """The reading as a 2400 reading: volts, amps, ohms (NAN), time (0), status (8: in compliance)."""
        reading, source, tripped = self.read().strip().replace(";", ",").split(",")
        v, i = (source, reading) if self._mode == "voltage" else (reading, source)
        return f"{v},{i},9.91e37,0,{8 if tripped.strip() == '1' else 0}"

    collect_sweep = SMU.collect_sweep


def _stepped_sweep(smus, scanner, channels, points, talk):
    """A sweep point by point: every SMU's level set (each confirmed), then every instrument read."""
    out, volts = [[] for _ in smus], []
    for k in range(points):
        for smu in smus:
            with talk(smu, "source"):
                smu.source_point(k)
        for smu in smus:
            with talk(smu, "operation complete"):
                reply = smu.ask("*OPC?").strip()
                if reply != "1":
                    raise ReplyError(f"{smu.name}: *OPC? answered {reply[:40]!r}, not 1")
        for smu in smus:
            with talk(smu, "reading"):
                smu.request_point()
        if scanner is not None:
            with talk(scanner, "scan"):
                scanner.request_scan(channels, 1)
        for j, smu in enumerate(smus):
            with talk(smu, "reading"):
                out[j].append(smu.collect_point())
        if scanner is not None:
            with talk(scanner, "scan"):
                volts.append(scanner.collect_scan(channels, 1)[0])
    return [",".join(r) for r in out], (np.array(volts) if scanner is not None else None)


def linked_sweep(smus: list, scanner=None, channels=(), points: int = 1, talk=None):
    """Every SMU's source list stepped together: the first SMU sweeps and triggers the rest over the
    trigger link at each source point; the scanner reads ``channels`` at each point.

    Returns (the SMUs' raw reading replies, in order; the scanner's volts (points, channels) or None).
    ``talk(instrument, what)``: a context manager naming the instrument in any error (the bench's).
    """
    import contextlib
    talk = talk or (lambda inst, what: contextlib.nullcontext())
    if any(isinstance(s, SMU2450) for s in smus):   # no trigger link to a 2450 here: stepped
        return _stepped_sweep(smus, scanner, channels, points, talk)
    followers, master = smus[1:], smus[0]
    for smu in followers:          # armed first, each confirmed, so the master's triggers find them waiting
        with talk(smu, "arm on the trigger link"):
            smu.arm_on_link()
    if scanner is not None:
        with talk(scanner, "scan"):
            scanner.arm_scan_on_link(channels, points)
    with talk(master, "sweep"):
        master.request_master_sweep()
        replies = [master.read()]   # the sweep is done: every follower has its readings
    for smu in followers:
        with talk(smu, "reading"):
            smu.request_fetch()
    if scanner is not None:
        with talk(scanner, "scan"):
            scanner.request_fetch()
    for smu in followers:
        with talk(smu, "reading"):
            replies.append(smu.read())
    volts = None
    if scanner is not None:
        with talk(scanner, "scan"):
            volts = scanner.collect_scan(channels, points)
    return replies, volts


class Scanner(Keithley2700):
    """A Keithley 2700 reading DC volts on a 7700 card by a scan list, on the range that covers ``voltage_limit``."""

    def __init__(self, adapter, voltage_limit: float = 10.0, name="scanner", **kwargs):
        self.voltage_limit = _check(name, "voltage range", voltage_limit, 0, 1010, "V")
        super().__init__(adapter, name=name, **kwargs)

    def make_safe(self) -> list:
        """Every channel open, the error queue read, *RST and *CLS; returns the errors that were queued."""
        self.write("ROUT:OPEN:ALL")
        errors = drain_errors(self)
        self.write("*RST;*CLS")
        return errors

    def configure(self) -> None:
        """Readings only (no units, time stamps), DC volts on the range covering the voltage limit."""
        self.write("FORM:ELEM READ;:SENS:FUNC 'VOLT:DC';:SENS:VOLT:DC:RANG %g" % self.voltage_limit)

    scan_list = Instrument.control(
        "ROUT:SCAN?", "ROUT:SCAN (@%s)", "The channels (101..120) a READ? returns, in order.",
        set_process=lambda chans: ",".join(str(int(c)) for c in chans),
        get_process_list=lambda v: v)

    def read_scan(self, channels, points: int = 1) -> np.ndarray:
        """Volts on each channel at each sweep point, (points, channels)."""
        self.request_scan(channels, points)
        return self.collect_scan(channels, points)

    def arm_scan_on_link(self, channels, points: int) -> None:
        """Initiate ``points`` scans of ``channels``, each waiting for a trigger on the trigger link."""
        for ch in channels:
            _check(self.name, "channel", ch, 101, 120, "")
        self.scan_list = list(channels)
        reply = self.ask("SAMP:COUN %d;:TRIG:COUN %d;:TRIG:SOUR EXT;:INIT;:TRIG:SOUR?" % (len(channels), points)).strip()
        if reply != "EXT":
            raise ReplyError(f"{self.name}: armed on the trigger link, but TRIG:SOUR? answered {reply[:40]!r}")

    def request_fetch(self) -> None:
        self.write("FETC?")

    def request_scan(self, channels, points: int = 1) -> None:
        for ch in channels:
            _check(self.name, "channel", ch, 101, 120, "")
        self.scan_list = list(channels)
        self.write("TRIG:SOUR IMM;:TRIG:COUN 1;:SAMP:COUN %d" % (len(channels) * points))
        self.write("READ?")

    def collect_scan(self, channels, points: int = 1) -> np.ndarray:
        vals = floats(self.name, self.read())
        if len(vals) != len(channels) * points:
            raise ReplyError(f"{self.name}: {len(vals)} readings for {len(channels)} channels x {points} points")
        return vals.reshape(points, len(channels))


class ResistorBoard(SCPIMixin, Instrument):
    """The programmable-resistor board: one conductance (S) per edge, set one at a time or all at once."""

    edge_count = Instrument.measurement("EDGE:COUN?", "Number of programmable edges.", cast=int)
    edge_range = Instrument.measurement("EDGE:RANG?", "The board's conductance range (S): [g_min, g_max].")
    conductances = Instrument.measurement("EDGE:ALL?", "Every edge's conductance (S), as the reply parses.")

    @property
    def edges(self) -> int:
        """Number of edges, asked once (ReplyError when the reply is not a number)."""
        if self._edges is None:
            self._edges = int(floats(self.name, self.ask("EDGE:COUN?"), 1)[0])
        return self._edges

    def __init__(self, adapter, g_min: float, g_max: float, name="resistor board", reset_wait: float = 0.0, **kwargs):
        super().__init__(adapter, name, **kwargs)
        self.reset_wait = float(reset_wait)
        self.after_open()
        self._edges = None
        lo, hi = floats(name, self.ask("EDGE:RANG?"), 2)
        self.g_min, self.g_max = max(float(g_min), lo), min(float(g_max), hi)
        if not self.g_min < self.g_max:
            raise LimitError(f"{name}: the limits [{g_min}, {g_max}] S do not overlap the board's range [{lo}, {hi}] S")

    def after_open(self) -> None:
        """A serial board resets when its port opens (Arduino's DTR): wait ``reset_wait`` s, drop what it sent."""
        if self.reset_wait > 0:
            time.sleep(self.reset_wait)
            self.adapter.flush_read_buffer()

    def make_safe(self) -> list:
        """The error queue read, then *CLS; returns the errors that were queued.

        No *RST: it would move every edge (the board sources nothing; its state is the conductances).
        """
        errors = drain_errors(self)
        self.write("*CLS")
        return errors

    def configure(self) -> None:
        """Nothing to set: the conductances are written (and verified) by the bench."""

    def read_conductances(self) -> np.ndarray:
        """Every edge's conductance (S), (m,); ReplyError when the reply is not m finite numbers."""
        return floats(self.name, self.ask("EDGE:ALL?"), self.edges)

    def checked(self, g) -> np.ndarray:
        """g (S) as floats, each inside [g_min, g_max]; LimitError naming the first edge outside."""
        return np.array([_check(self.name, f"edge {k + 1} conductance", v, self.g_min, self.g_max, "S")
                         for k, v in enumerate(g)])

    def set_all(self, g) -> None:
        self.write("EDGE:ALL " + ",".join(f"{v:.17g}" for v in self.checked(g)))

    def nearest(self, g) -> np.ndarray:
        """The conductances (S) the board would hold after ``set_all(g)`` (a digipot's nearest taps); changes nothing."""
        return floats(self.name, self.ask("EDGE:NEAR? " + ",".join(f"{v:.17g}" for v in self.checked(g))))

    def set_edge(self, k: int, g: float) -> None:
        _check(self.name, "edge index", k, 1, self.edges, "")
        g = _check(self.name, f"edge {k} conductance", g, self.g_min, self.g_max, "S")
        self.write(f"EDGE:COND {int(k)},{g:.17g}")


#: the SMU driver for each model a bench file names
SMU_MODELS = {"2400": SMU, "2450": SMU2450}
