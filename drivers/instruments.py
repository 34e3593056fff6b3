"""Instrument drivers, PyMeasure style: each SCPI command declared once, values checked before sending.

- :class:`SMU`: PyMeasure's Keithley 2400, with the source levels declared at 12
  significant digits (PyMeasure's ``%g`` keeps 6) and the user's safety limits
  enforced before a value reaches the socket;
- :class:`Scanner`: PyMeasure's Keithley 2700, with the scan of a 7700 card;
- :class:`ResistorBoard`: the programmable-resistor board (``resistor-board.md``).

Every driver raises :class:`LimitError` (naming the instrument, the value and the
limit) before it sends a value outside the instrument's range or the user's limits.
"""

from __future__ import annotations

import numpy as np
from pymeasure.instruments import Instrument, SCPIMixin
from pymeasure.instruments.keithley import Keithley2400, Keithley2700
from pymeasure.instruments.validators import strict_range


class LimitError(ValueError):
    """A value refused before it was sent: outside the instrument's range or the configured limits."""


def _check(name: str, what: str, value: float, lo: float, hi: float, unit: str) -> float:
    value = float(value)
    if not (lo <= value <= hi):
        raise LimitError(f"{name}: {what} {value!r} {unit} is outside the allowed [{lo!r}, {hi!r}] {unit}; not sent")
    return value


class SMU(Keithley2400):
    """A Keithley 2400 that never sources past ``voltage_limit`` (V) or ``current_limit`` (A)."""

    source_voltage = Instrument.control(
        ":SOUR:VOLT?", ":SOUR:VOLT:LEV %.12g", "Source voltage level (V), 12 significant digits.",
        validator=strict_range, values=[-210, 210])
    source_current = Instrument.control(
        ":SOUR:CURR?", ":SOUR:CURR:LEV %.12g", "Source current level (A), 12 significant digits.",
        validator=strict_range, values=[-1.05, 1.05])

    def __init__(self, adapter, voltage_limit: float, current_limit: float, name="SMU", **kwargs):
        self.voltage_limit = _check(name, "voltage limit", voltage_limit, 0, 210, "V")
        self.current_limit = _check(name, "current limit", current_limit, 0, 1.05, "A")
        self._mode = None
        super().__init__(adapter, name=name, **kwargs)

    def configure(self) -> None:
        """Output on, sourcing 0 A with the voltage compliance at the limit (a free node)."""
        self.source_mode = "current"
        self.compliance_voltage = self.voltage_limit
        self.source_current = 0.0
        self._mode = "current"
        self.source_enabled = True

    def source_volts(self, v: float) -> None:
        v = _check(self.name, "source voltage", v, -self.voltage_limit, self.voltage_limit, "V")
        if self._mode != "voltage":
            self.source_mode = "voltage"
            self.compliance_current = self.current_limit
            self._mode = "voltage"
        self.source_voltage = v

    # The reading split into request and reply, so that a bench can ask every instrument
    # first and collect the replies after (the same query as Keithley2400.voltage).
    def request_voltage(self) -> None:
        self.write(":MEASURE:VOLTAGE?")

    def collect_voltage(self) -> float:
        return float(self.read().split(",")[0])

    def source_amps(self, i: float) -> None:
        i = _check(self.name, "source current", i, -self.current_limit, self.current_limit, "A")
        if self._mode != "current":
            self.source_mode = "current"
            self.compliance_voltage = self.voltage_limit
            self._mode = "current"
        self.source_current = i


class Scanner(Keithley2700):
    """A Keithley 2700 reading DC volts on a 7700 card by a scan list."""

    scan_list = Instrument.control(
        "ROUT:SCAN?", "ROUT:SCAN (@%s)", "The channels (101..120) a READ? returns, in order.",
        set_process=lambda chans: ",".join(str(int(c)) for c in chans),
        get_process_list=lambda v: v)

    def read_scan(self, channels) -> np.ndarray:
        """Volts on each channel, one scan."""
        self.request_scan(channels)
        return self.collect_scan(channels)

    def request_scan(self, channels) -> None:
        for ch in channels:
            _check(self.name, "channel", ch, 101, 120, "")
        self.scan_list = list(channels)
        self.write("SAMP:COUN %d" % len(channels))
        self.write("READ?")

    def collect_scan(self, channels) -> np.ndarray:
        vals = [float(v) for v in self.read().split(",")]
        if len(vals) != len(channels):
            raise ValueError(f"{self.name}: {len(vals)} readings for {len(channels)} channels")
        return np.asarray(vals, float)


class ResistorBoard(SCPIMixin, Instrument):
    """The programmable-resistor board: one conductance (S) per edge, set one at a time or all at once."""

    edge_count = Instrument.measurement("EDGE:COUN?", "Number of programmable edges.", cast=int)
    edge_range = Instrument.measurement("EDGE:RANG?", "The board's conductance range (S): [g_min, g_max].")
    conductances = Instrument.measurement("EDGE:ALL?", "Every edge's conductance (S).")

    def __init__(self, adapter, g_min: float, g_max: float, name="resistor board", **kwargs):
        super().__init__(adapter, name, **kwargs)
        lo, hi = self.edge_range
        self.g_min, self.g_max = max(float(g_min), lo), min(float(g_max), hi)
        if not self.g_min < self.g_max:
            raise LimitError(f"{name}: the limits [{g_min}, {g_max}] S do not overlap the board's range [{lo}, {hi}] S")

    def set_all(self, g) -> None:
        g = [_check(self.name, f"edge {k + 1} conductance", v, self.g_min, self.g_max, "S") for k, v in enumerate(g)]
        self.write("EDGE:ALL " + ",".join(f"{v:.17g}" for v in g))

    def set_edge(self, k: int, g: float) -> None:
        _check(self.name, "edge index", k, 1, self.edge_count, "")
        g = _check(self.name, f"edge {k} conductance", g, self.g_min, self.g_max, "S")
        self.write(f"EDGE:COND {int(k)},{g:.17g}")
