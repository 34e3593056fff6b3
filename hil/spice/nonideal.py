"""Non-idealities of real parts, read from a TOML file (``--nonideal FILE``), all seeded.

=================  =====  ==================================================================
key                unit   meaning
=================  =====  ==================================================================
seed               -      seed of every random draw below (default 0)
tolerance          1      relative sigma of each part's scale (resistance, digipot R_AB, MOSFET W)
vth_sigma          V      sigma of each MOSFET's threshold voltage (mismatch)
wire_resistance    ohm    a series resistance in every edge
source_resistance  ohm    output resistance of every input source
noise              V      voltmeter noise, rms, on every reading
adc_bits           bits   ADC resolution over [-adc_range, adc_range] (0: none)
adc_range          V      full scale of the ADC (default 2.5)
write_noise        1 | V  sigma of each write: relative conductance (resistor), gate volts (mosfet)
drift_tau          steps  gate capacitors leak: each update the held gate voltage decays by
                          exp(-1/drift_tau) before the increment lands (mosfet; 0: none)
=================  =====  ==================================================================

The hidden truth (each part's actual scale and threshold) is drawn once per
substrate; a learning rule sees only the measurements it causes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover
    import tomli as tomllib


class NonIdealError(ValueError):
    """A non-ideality file that cannot be used; names file, line and key."""


@dataclass(frozen=True)
class NonIdeal:
    seed: int = 0
    tolerance: float = 0.0
    vth_sigma: float = 0.0
    wire_resistance: float = 0.0
    source_resistance: float = 0.0
    noise: float = 0.0
    adc_bits: int = 0
    adc_range: float = 2.5
    write_noise: float = 0.0
    drift_tau: float = 0.0
    source: str = "<none>"

    @property
    def ideal(self) -> bool:
        return all(getattr(self, f.name) == 0 for f in fields(self) if f.name not in ("seed", "adc_range", "source"))

    def draws(self, m: int) -> dict:
        """The hidden per-edge truth: part scale factors and threshold offsets (V)."""
        rng = np.random.default_rng([self.seed, 1])
        scale = np.exp(self.tolerance * rng.standard_normal(m))  # log-normal: always positive
        dvth = self.vth_sigma * rng.standard_normal(m)
        return {"scale": scale, "dvth": dvth}

    def measure(self, V: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """What a voltmeter reports for true voltages V (volts): noise, then ADC quantization."""
        out = V + self.noise * rng.standard_normal(V.shape) if self.noise else V
        if self.adc_bits:
            lsb = 2 * self.adc_range / 2 ** self.adc_bits
            out = np.clip(np.round(out / lsb) * lsb, -self.adc_range, self.adc_range)
        return out


def load_nonideal(path) -> NonIdeal:
    """Read and validate a non-ideality TOML file."""
    path = Path(path)
    if not path.exists():
        raise NonIdealError(f"{path}: no such non-ideality file")
    return nonideal_from_text(path.read_text(), str(path))


def nonideal_from_text(text: str, path: str = "<text>") -> NonIdeal:
    """Parse and validate a non-ideality file's text; errors name ``path`` (e.g. a file on another machine)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise NonIdealError(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:  # arrays or tables nested thousands deep
        raise NonIdealError(f"{path}: not valid TOML: nested too deeply to read") from None
    known = {f.name: f.type for f in fields(NonIdeal) if f.name != "source"}

    def line(key):
        for i, ln in enumerate(text.splitlines()):
            if re.match(rf"^\s*{re.escape(key)}\s*=", ln):
                return i + 1
        return 1

    values = {}
    for k, v in data.items():
        if k not in known:
            raise NonIdealError(f"{path}:{line(k)}: unknown key '{k}' (known: {', '.join(known)})")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise NonIdealError(f"{path}:{line(k)}: {k} = {v!r} must be a non-negative finite number")
        if k in ("seed", "adc_bits") and int(v) != v:
            raise NonIdealError(f"{path}:{line(k)}: {k} = {v!r} must be a whole number")
        if k == "adc_bits" and v > 32:
            raise NonIdealError(f"{path}:{line(k)}: adc_bits = {v} is beyond any real ADC (at most 32)")
        if k in LIMITS and not LIMITS[k][0] <= v <= LIMITS[k][1] and not (v == 0 and k != "adc_range"):
            lo, hi, why = LIMITS[k]
            raise NonIdealError(f"{path}:{line(k)}: {k} = {v!r} is outside [{lo:g}, {hi:g}]: {why}")
        values[k] = int(v) if k in ("seed", "adc_bits") else float(v)
    if values.get("adc_bits") and values.get("adc_range", 2.5) <= 0:
        raise NonIdealError(f"{path}:{line('adc_range')}: adc_range must be positive")
    return NonIdeal(**values, source=str(path))


#: key -> (lowest, highest, why): values past these make training meaningless (0 always means "none")
LIMITS = {
    "tolerance": (0, 0.5, "a spread past 50 % gives parts of no predictable value"),
    "vth_sigma": (0, 1.0, "a threshold spread past 1 V exceeds the gate drive"),
    "wire_resistance": (0, 1e6, "a wire of more than 1 Mohm is an open circuit, not a wire"),
    "source_resistance": (0, 1e6, "a source of more than 1 Mohm output resistance drives nothing"),
    "noise": (0, 1.0, "noise past 1 V rms drowns every reading (inputs are about 1 V)"),
    "adc_range": (1e-3, 1e3, "an ADC range below 1 mV clips every reading; past 1 kV no bench measures"),
    "write_noise": (0, 1.0, "a write error past 100 % (or 1 V of gate) is no write"),
    "drift_tau": (1, 1e12, "a gate that leaks away within one update holds nothing (0: no drift)"),
}
