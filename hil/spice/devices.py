"""Programmable-resistor devices: what sits on each edge of the simulated circuit.

A learning rule updates conductances g (siemens). A device maps the conductance
it is asked for onto what the hardware holds (its *parameter*), and reports the
conductance it believes it realised, so the training loop stays the same:

================  ==========  =====================================================
device            parameter   map
================  ==========  =====================================================
resistor          g, S        identity (an ideal resistor of 1/g ohms)
digipot           tap code    nearest of N + 1 taps, R = R_W + code R_AB / N
mosfet            V_gate, V   NMOS channel in triode; g(V_gate) calibrated by an
                              ngspice DC sweep at small V_ds and cached
mosfet-mid        V_c, V      the same channel, gate driven at V_c + (V_d + V_s)/2
                              (two VCVS of gain 1/2 in series with V_c): reciprocal
mosfet-bsim       V_gate, V   as mosfet, the channel a BSIM4 model (PTM 65 nm card,
                              netlists/nmos_bsim4_ptm65.lib), W/L = 20, gate 0..4 V
mosfet-mid-bsim   V_c, V      as mosfet-mid with the BSIM4 channel
================  ==========  =====================================================

The ground-referenced ``mosfet`` is non-reciprocal (docs/math.md, section 7.1): its current depends
on V_d and V_s separately, so A is non-symmetric wherever a channel carries current.
``mosfet-mid`` makes the square-law channel linear, I = k (V_c - V_T)(V_d - V_s): on a
bench the gate drive is a follower network (two buffered 2:1 dividers from drain and
source summed with V_c by a non-inverting summing amplifier). The BSIM4 channel keeps
what the square law leaves out (body effect, mobility degradation with the gate field,
series resistance, drain-induced barrier lowering), so the midpoint gate leaves it a
small asymmetry.

Each device adds its elements to a PySpice circuit (:meth:`Device.add_edge`) and
says which ``alter`` realises a new parameter (:meth:`Device.alters`). The hidden
truth of non-ideal parts (tolerance, threshold mismatch) lives here too: the
believed map uses the nominal part, the simulated element the actual one.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from hil.circuit import Circuit
from hil.data import folder
from hil.spice.nonideal import NonIdeal
from hil.substrate import SubstrateError

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover
    import tomli as tomllib


class DeviceRangeError(SubstrateError):
    """A parameter outside what the device can hold (a gate voltage past its limits, a tap out of range)."""


class Device:
    name = "device"
    unit = ""
    #: ngspice's ``sens`` analysis handles this device (BSIM4 makes libngspice fail unrecoverably in it)
    sens = True

    def __init__(self, circuit: Circuit, nonideal: NonIdeal):
        self.circuit, self.nonideal = circuit, nonideal
        self.truth = nonideal.draws(circuit.m)

    # the believed map between conductance and parameter -----------------------
    def param_from_g(self, g: np.ndarray) -> np.ndarray:
        """The parameter that realises conductance g (S) as closely as the device can."""
        raise NotImplementedError

    def g_from_param(self, p: np.ndarray) -> np.ndarray:
        """The conductance (S) the device nominally has at parameter p."""
        raise NotImplementedError

    def check(self, p: np.ndarray) -> None:
        """DeviceRangeError naming the edge when a parameter is outside the device's range."""
        lo, hi = self.param_range
        bad = np.flatnonzero(~np.isfinite(p) | (p < lo) | (p > hi))
        if bad.size:
            e = bad[0]
            raise DeviceRangeError(f"edge '{self.circuit.edge_names[e]}': {self.name} parameter {float(p[e])!r} {self.unit} "
                                   f"is outside the device's range [{lo}, {hi}] {self.unit}")

    param_range = (0.0, np.inf)

    # the simulated element ------------------------------------------------------
    def preamble(self, sc) -> None:
        """Elements and models the whole circuit needs once."""

    def add_edge(self, sc, e: int, na, nb, p: float) -> None:
        raise NotImplementedError

    def alters(self, e: int, p: float) -> list:
        """[(element, parameter, value)] that set edge e to parameter p."""
        raise NotImplementedError

    def element_values(self, p: np.ndarray) -> np.ndarray:
        """(m, k): the values :meth:`alters` writes for every edge at parameters p, in its order."""
        return np.array([[v for _, _, v in self.alters(e, float(p[e]))] for e in range(self.circuit.m)])

    def sens_vector(self, e: int) -> str:
        """ngspice's sensitivity vector for edge e's parameter element."""
        raise NotImplementedError

    def dparam_dg(self, p: np.ndarray) -> np.ndarray:
        """d(element value in sens)/d(nominal g), per edge, for the chain rule."""
        raise NotImplementedError


class Resistor(Device):
    """An ideal resistor: the parameter is the conductance itself."""

    name, unit = "resistor", "S"
    param_range = (1e-12, 1e6)

    def param_from_g(self, g):
        return np.asarray(g, float).copy()

    def g_from_param(self, p):
        return np.asarray(p, float).copy()

    def _r(self, e, p):
        return float(1.0 / (p * self.truth["scale"][e]))

    def add_edge(self, sc, e, na, nb, p):
        sc.R(f"e_{self.circuit.edge_names[e]}", na, nb, repr(self._r(e, p)))

    def alters(self, e, p):
        return [(f"re_{self.circuit.edge_names[e]}".lower(), "", self._r(e, p))]

    def element_values(self, p):
        return (1.0 / (np.asarray(p, float) * self.truth["scale"]))[:, None]  # _r, every edge at once

    def sens_vector(self, e):
        return f"re_{self.circuit.edge_names[e]}".lower()

    def dparam_dg(self, p):
        return -1.0 / (p * p * self.truth["scale"])  # dR_true/dg


class Digipot(Resistor):
    """An N-tap digital potentiometer (wiper and one terminal): R = R_W + code R_AB / N."""

    name, unit = "digipot", "tap"

    def __init__(self, circuit, nonideal, spec_path: Path | None = None):
        super().__init__(circuit, nonideal)
        spec = tomllib.loads((spec_path or folder("netlists") / "digipot.toml").read_text())
        self.taps, self.r_ab, self.r_w = int(spec["taps"]), float(spec["r_ab"]), float(spec["r_wiper"])
        self.param_range = (0, self.taps)

    def g_from_param(self, p):
        return 1.0 / (self.r_w + np.asarray(p, float) * self.r_ab / self.taps)

    def param_from_g(self, g):
        """The tap whose nominal conductance is nearest g."""
        x = (1.0 / np.asarray(g, float) - self.r_w) * self.taps / self.r_ab
        lo = np.clip(np.floor(x), 0, self.taps)
        hi = np.clip(lo + 1, 0, self.taps)
        pick_hi = np.abs(self.g_from_param(hi) - g) < np.abs(self.g_from_param(lo) - g)
        return np.where(pick_hi, hi, lo)

    def _r(self, e, p):
        return float(self.r_w + p * self.r_ab * self.truth["scale"][e] / self.taps)

    def element_values(self, p):
        return (self.r_w + np.asarray(p, float) * self.r_ab * self.truth["scale"] / self.taps)[:, None]

    def check(self, p):
        super().check(p)
        frac = np.flatnonzero(np.asarray(p) != np.round(p))
        if frac.size:
            e = frac[0]
            raise DeviceRangeError(f"edge '{self.circuit.edge_names[e]}': tap {float(p[e])!r} is not a whole tap")

    def dparam_dg(self, p):
        # the code taken as continuous: R_true = R_W + code R_AB scale / N, g = 1 / (R_W + code R_AB / N)
        g = self.g_from_param(p)
        return -self.truth["scale"] / (g * g)


class Mosfet(Device):
    """An NMOS channel (drain a, source b, bulk at V_BULK) whose gate voltage is held by a source."""

    name, unit = "mosfet", "V"
    W, L = 6e-6, 1e-6            # W/L = 6: KP W/L (V_g - VTO) spans 1e-5 .. 1.1e-2 S over 0 .. 10 V
    V_BULK = -3.0                # below every node voltage: the body diodes stay off
    VDS_CAL = 1e-3               # calibration drain-source voltage, V
    param_range = (0.0, 10.0)

    #: gate driven at V_c + (V_d + V_s)/2 (True) or held at V_gate against ground (False)
    midpoint = False
    #: the file of netlists/ holding the channel's model card (named hil_nmos)
    model_file = "nmos_level1.lib"

    def __init__(self, circuit, nonideal):
        super().__init__(circuit, nonideal)
        self.model_card = _model_card(folder("netlists") / self.model_file)
        self.vg, self.g = calibrate_mosfet(self.model_card, self.W, self.L, self.VDS_CAL, self.param_range[1], self.V_BULK,
                                           midpoint=self.midpoint)
        on = self.g > 0
        self._vg_on, self._g_on = self.vg[on], self.g[on]  # strictly increasing above threshold

    def g_from_param(self, p):
        return np.interp(np.asarray(p, float), self.vg, self.g)

    def param_from_g(self, g):
        return np.interp(np.asarray(g, float), self._g_on, self._vg_on)

    def preamble(self, sc):
        sc.raw_spice += self.model_card + "\n"
        sc.V("bulk", "hb_bulk", sc.gnd, repr(self.V_BULK))

    def _gate(self, e, p):
        return float(p - self.truth["dvth"][e])  # a threshold offset is a gate offset (level 1, gamma = 0)

    def add_edge(self, sc, e, na, nb, p):
        name = self.circuit.edge_names[e]
        sc.M(f"e_{name}", na, f"hg_{name}".lower(), nb, "hb_bulk", model="hil_nmos",
             w=repr(float(self.W * self.truth["scale"][e])), l=repr(float(self.L)))
        sc.V(f"ge_{name}", f"hg_{name}".lower(), sc.gnd, repr(self._gate(e, p)))

    def alters(self, e, p):
        return [(f"vge_{self.circuit.edge_names[e]}".lower(), "dc", self._gate(e, p))]

    def element_values(self, p):
        return (np.asarray(p, float) - self.truth["dvth"])[:, None]

    def sens_vector(self, e):
        return f"vge_{self.circuit.edge_names[e]}".lower()

    def regions(self, V, p):
        """Each channel's region at operating points: (B, m) of 0 triode, 1 saturation, 2 cut off.

        ``V`` (B, n): node voltages of B operating points (V); ``p``: the gate parameters (V).
        The square law's boundaries with the source the lower terminal s and the drain the
        higher d: overdrive V_ov = V_g - V_s - V_T (V_T: the card's vto, plus the part's
        threshold offset); triode V_d - V_s < V_ov, saturation 0 < V_ov <= V_d - V_s, cut off
        V_ov <= 0. None for a channel that is not a square law (BSIM4).
        """
        import re
        m = re.search(r"\bvto\s*=\s*([-+0-9.eE]+)", self.model_card, re.I)
        if m is None:
            return None
        c, V = self.circuit, np.atleast_2d(np.asarray(V, float))
        va, vb = V[:, c.a], V[:, c.b]
        lo, hi = np.minimum(va, vb), np.maximum(va, vb)
        gate = np.asarray(p, float)[None, :] + ((va + vb) / 2 if self.midpoint else 0.0)
        ov = gate - self.truth["dvth"][None, :] - float(m.group(1)) - lo
        return np.where(ov <= 0, 2, np.where(hi - lo < ov, 0, 1))

    def dparam_dg(self, p):
        """dV_gate/dg of the calibration segment that holds p (the same segment param_from_g interpolates on)."""
        k = np.clip(np.searchsorted(self._vg_on, np.asarray(p, float)) - 1, 0, len(self._vg_on) - 2)
        return (self._vg_on[k + 1] - self._vg_on[k]) / (self._g_on[k + 1] - self._g_on[k])


class MosfetMidpoint(Mosfet):
    """The NMOS channel with its gate at V_c + (V_d + V_s)/2 (docs/math.md, section 7.1): I = k (V_c - V_T)(V_d - V_s), reciprocal.

    The parameter is V_c (volts), held by ``Vge_<edge>`` in series with two VCVS of gain 1/2
    controlled by the drain and the source against ground.
    """

    name = "mosfet-mid"
    midpoint = True

    def add_edge(self, sc, e, na, nb, p):
        name = self.circuit.edge_names[e]
        hg, h1, h2 = (f"{x}_{name}".lower() for x in ("hg", "hm", "hc"))
        sc.M(f"e_{name}", na, hg, nb, "hb_bulk", model="hil_nmos",
             w=repr(float(self.W * self.truth["scale"][e])), l=repr(float(self.L)))
        sc.VCVS(f"d_{name}", hg, h1, na, sc.gnd, "0.5")
        sc.VCVS(f"s_{name}", h1, h2, nb, sc.gnd, "0.5")
        sc.V(f"ge_{name}", h2, sc.gnd, repr(self._gate(e, p)))


class _Bsim:
    """The BSIM4 channel (netlists/nmos_bsim4_ptm65.lib): W/L = 20 so that g spans ~1e-8 .. 7e-3 S over
    a gate of 0 .. 4 V, where g(V_gate) still rises (mobility degradation bends it over above ~4.3 V)."""

    model_file = "nmos_bsim4_ptm65.lib"
    W, L = 20e-6, 1e-6
    param_range = (0.0, 4.0)
    def regions(self, V, p):
        return None  # BSIM4 has no square-law boundary to count against

    # ngspice 39's sens on a BSIM4 deck fails in DEVsetup and leaves libngspice unusable:
    # the reference gradient is taken by central differences instead
    sens = False


class MosfetBsim(_Bsim, Mosfet):
    """:class:`Mosfet` with a BSIM4 channel: gate against ground, non-reciprocal."""

    name = "mosfet-bsim"


class MosfetMidpointBsim(_Bsim, MosfetMidpoint):
    """:class:`MosfetMidpoint` with a BSIM4 channel: reciprocal up to what the square law leaves out."""

    name = "mosfet-mid-bsim"


def _model_card(path: Path) -> str:
    """The one ``.model`` statement of ``path``, with its ``+`` continuation lines (comments dropped)."""
    lines = [ln for ln in path.read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("*")]
    starts = [k for k, ln in enumerate(lines) if ln.lower().startswith(".model")]
    if len(starts) != 1:
        raise SubstrateError(f"{path}: expected exactly one .model statement")
    k = starts[0]
    card = [lines[k]]
    for ln in lines[k + 1:]:
        if not ln.startswith("+"):
            break
        card.append(ln)
    return "\n".join(card)


def cache_dir() -> Path:
    base = os.environ.get("HIL_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache")), "hil")
    p = Path(base)
    p.mkdir(parents=True, exist_ok=True)
    return p


def calibrate_mosfet(model_card: str, w: float, l: float, vds: float, vg_max: float, v_bulk: float,
                     step: float = 0.002, midpoint: bool = False) -> tuple:
    """(V_gate grid, g) with g = I_d / V_ds of one channel at small V_ds, by an ngspice DC sweep; cached.

    ``midpoint``: the gate at V_gate + V_ds / 2 (the source is grounded), as the mosfet-mid device
    drives it. The cache file is keyed by everything that determines the curve.
    """
    args = (model_card, w, l, vds, vg_max, v_bulk, step) + (("midpoint",) if midpoint else ())
    key = hashlib.sha256(repr(args).encode()).hexdigest()[:16]
    path = cache_dir() / f"mosfet-{key}.npz"
    if path.exists():
        d = np.load(path)
        return d["vg"], d["g"]
    from hil.spice.session import session
    s = session()
    title = f"hilcal{key[:8]}"
    gate = "Vg g 0 dc 0\n" if not midpoint else "Vg gc 0 dc 0\nEm g gc d 0 0.5\n"
    deck = (f".title {title}\n{model_card}\nVd d 0 dc {vds!r}\nM1 d g 0 hb hil_nmos w={w!r} l={l!r}\n"
            f"{gate}Vb hb 0 dc {v_bulk!r}\n.end\n")
    s.load(title, deck)
    try:
        s.command(f"dc vg 0 {vg_max!r} {step!r}", what=f"dc sweep calibrating the mosfet device ({title})")
        vg = s.vector("v-sweep")
        g = -s.vector("vd#branch") / vds
    finally:
        s.destroy_plots()
        s.remove(title)
    g = np.maximum(g, 0.0)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, vg=vg, g=g)
    os.replace(tmp, path)
    return vg, g


DEVICES = {"resistor": Resistor, "digipot": Digipot, "mosfet": Mosfet, "mosfet-mid": MosfetMidpoint,
           "mosfet-bsim": MosfetBsim, "mosfet-mid-bsim": MosfetMidpointBsim}


def make_device(name: str, circuit: Circuit, nonideal: NonIdeal) -> Device:
    if name not in DEVICES:
        raise SubstrateError(f"unknown device '{name}' (known: {', '.join(DEVICES)})")
    return DEVICES[name](circuit, nonideal)
