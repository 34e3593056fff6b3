"""The ngspice substrate: the circuit simulated by libngspice, changed in place with ``alter``.

Two decks of the circuit are loaded once (:mod:`hil.spice.netlist`): ``open``
(outputs with current sources and switchable loads) and ``clamp`` (outputs held
by voltage sources). A conductance update becomes device parameters
(:mod:`hil.spice.devices`) altered in both decks; each solve alters the source
values that changed, runs ``op``, reads every node voltage from the plot and
destroys the plot. Nothing is re-parsed per step. Non-idealities
(:mod:`hil.spice.nonideal`) act where they would on a bench: in the parts, on
each write, and in the voltmeter.
"""

from __future__ import annotations

import contextlib
import itertools

import numpy as np

from hil.circuit import Circuit
from hil.spice import netlist
from hil.spice.devices import make_device
from hil.spice.nonideal import NonIdeal, load_nonideal
from hil.spice.session import session
from hil.substrate import Substrate, SubstrateError

_ids = itertools.count(1)


class NgSpiceSubstrate(Substrate):
    """A circuit in ngspice.

    device : 'resistor' (ideal resistors: the cross-check against the ideal
        substrate), 'digipot' or 'mosfet'.
    nonideal : a :class:`NonIdeal`, a path to its TOML file, or None (ideal parts).
    """

    supports_complex = False  # a complex nudge needs an AC analysis (not yet)

    def __init__(self, circuit: Circuit, g=None, device: str = "resistor", nonideal=None):
        self.circuit = circuit
        self.nonideal = nonideal if isinstance(nonideal, NonIdeal) else \
            (load_nonideal(nonideal) if nonideal else NonIdeal())
        self.s = session()
        self.device = make_device(device, circuit, self.nonideal)
        self._rng = np.random.default_rng([self.nonideal.seed, 2])
        self._noisy = True
        n = next(_ids)
        self.titles = {"open": f"hil{n}_open", "clamp": f"hil{n}_clamp"}
        g0 = circuit.check_g(circuit.g if g is None else g)
        p0 = self.device.param_from_g(np.clip(g0, circuit.g_min, circuit.g_max))
        self.device.check(p0)
        self._values = {}  # deck -> {(element, param): value} as last written
        for variant, title in self.titles.items():
            self.s.load(title, str(netlist.build(circuit, p0, variant, title, self.device)) + ".end\n")
            self._values[title] = {}
        self._p = p0.copy()
        c = circuit
        el = netlist.element
        self._vin = [el("v", "in", c.nodes[i]) for i in c.inputs]
        self._inj = [el("i", "inj", c.nodes[o]) for o in c.outputs]
        self._rld = [el("r", "ld", c.nodes[o]) for o in c.outputs]
        self._vld = [el("v", "ld", c.nodes[o]) for o in c.outputs]
        self._vcl = [el("v", "cl", c.nodes[o]) for o in c.outputs]
        self._read_idx = np.array([i for i in range(c.n) if i != c.ground])
        self._read_names = [netlist.node_name(c, i).encode("ascii") for i in self._read_idx]
        self.solves = 0
        self._closed = False

    def _set(self, title, elem, param, value):
        """alter one element parameter of deck ``title`` (current) if it changed."""
        key = (elem, param)
        value = float(value)
        if self._values[title].get(key) != value:
            cmd = f"alter {elem} {param} = {value!r}" if param else f"alter {elem} = {value!r}"
            self.s.command(cmd)
            self._values[title][key] = value

    # -- parameters --------------------------------------------------------------
    def write_params(self, p) -> np.ndarray:
        """Set every edge's device parameter (siemens, taps or gate volts); range-checked first."""
        p = np.asarray(p, float)
        self.device.check(p)
        changed = np.flatnonzero(p != self._p)
        for title in self.titles.values():
            self.s.use(title)
            for e in changed:
                for elem, param, value in self.device.alters(e, p[e]):
                    self._set(title, elem, param, value)
        self._p = p.copy()
        return p.copy()

    def read_params(self) -> np.ndarray:
        return self._p.copy()

    def write(self, g) -> np.ndarray:
        """Write conductances g (S): the device's nearest parameters, with write noise and drift."""
        g = self.circuit.check_g(g)
        ni, dev = self.nonideal, self.device
        target = dev.param_from_g(g)
        if ni.drift_tau and dev.name == "mosfet":
            # the held gate leaked since the last write; the update lands as an increment on it
            leaked = self._p * np.exp(-1.0 / ni.drift_tau)
            target = leaked + (target - self._p)
        if ni.write_noise:
            noise = ni.write_noise * self._rng.standard_normal(len(g))
            if dev.name == "resistor":
                target = target * (1 + noise)
            elif dev.name == "mosfet":
                target = target + noise
        lo, hi = dev.param_range
        target = np.clip(target, lo, hi)
        if dev.name == "digipot":
            target = np.round(target)
        self.write_params(target)
        return dev.g_from_param(self._p)

    def read(self) -> np.ndarray:
        return self.device.g_from_param(self._p)

    def actual_conductances(self) -> np.ndarray | None:
        """Each edge's true conductance (S) as simulated: part tolerance and wire resistance included.

        What an ammeter in series with the edge would see; None for devices that are not
        resistors (a MOSFET channel's conductance depends on its operating point).
        """
        if not hasattr(self.device, "_r"):
            return None
        r = np.array([self.device._r(e, p) for e, p in enumerate(self._p)])
        return 1.0 / (r + self.nonideal.wire_resistance)

    # -- experiments -------------------------------------------------------------
    @contextlib.contextmanager
    def noiseless(self):
        """Inside: readings without voltmeter noise or ADC (for the circuit's own reference gradient)."""
        was, self._noisy = self._noisy, False
        try:
            yield self
        finally:
            self._noisy = was

    def _set_sources(self, title, x, e, i):
        c = self.circuit
        vals = np.asarray(e.values)
        for k, el in enumerate(self._vin):
            self._set(title, el, "dc", x[k] if e.sources_on else 0.0)
        for k in range(len(c.outputs)):
            if e.mode == "clamp":
                self._set(title, self._vcl[k], "dc", vals[i, k])
            elif e.mode == "current":
                self._set(title, self._inj[k], "dc", vals[i, k])
                self._set(title, self._rld[k], "", netlist.R_OFF)
            elif e.mode == "load":
                beta = float(np.real(e.beta))
                if beta == 0:
                    raise SubstrateError("a closed-loop nudge needs beta != 0")
                self._set(title, self._inj[k], "dc", 0.0)
                self._set(title, self._rld[k], "", 1.0 / beta)
                self._set(title, self._vld[k], "dc", vals[i, k])
            else:
                raise SubstrateError(f"unknown experiment mode {e.mode!r}")

    def run(self, inputs, experiments) -> list:
        c = self.circuit
        X = np.atleast_2d(np.asarray(inputs, float))
        out = []
        for e in experiments:
            if np.iscomplexobj(e.values) or complex(e.beta).imag:
                raise SubstrateError("ngspice substrate: complex values need an AC analysis (not supported)")
            title = self.titles["clamp" if e.mode == "clamp" else "open"]
            self.s.use(title)
            V = np.zeros((len(X), c.n))
            for i in range(len(X)):
                self._set_sources(title, X[i], e, i)
                self.s.op(f"circuit '{c.name}' ({title}, device {self.device.name})")
                V[i, self._read_idx] = self.s.scalars(self._read_names)
                self.s.destroy_plots()
                self.solves += 1
            out.append(self.voltmeter(V) if self._noisy else V)
        return out

    def voltmeter(self, V) -> np.ndarray:
        """What the voltmeters report for node voltages V (volts, (batch, n)): noise and ADC, ground exact."""
        V = np.array(V, float)
        if self.nonideal.noise or self.nonideal.adc_bits:
            V[:, self._read_idx] = self.nonideal.measure(V[:, self._read_idx], self._rng)
        return V

    def sens_gradient(self, X, Y) -> np.ndarray:
        """dC/dg from ngspice's ``sens`` analysis (V^2/S): the circuit's own gradient, in one run per output.

        dC/dg_e = mean_i sum_o r_io dV_o/dp_e dp_e/dg_e, p_e the element value sens varies.
        """
        from hil.substrate import Experiment, Free
        c = self.circuit
        with self.noiseless():
            r = self.measure(X, Y, [Free()]).residual
        title = self.titles["open"]
        self.s.use(title)
        names = [self.device.sens_vector(e).encode("ascii") for e in range(c.m)]
        free = Experiment.free(len(X), len(c.outputs))
        dV = np.zeros((len(X), len(c.outputs), c.m))
        for i, x in enumerate(np.atleast_2d(X)):
            self._set_sources(title, x, free, i)
            for k, o in enumerate(c.outputs):
                self.s.command(f"sens v({netlist.node_name(c, o)})", what=f"sens of output '{c.nodes[o]}' on {c.name}")
                dV[i, k] = self.s.scalars(names)
                self.s.destroy_plots()
        dpdg = self.device.dparam_dg(self._p)
        return np.mean(np.einsum("io,ioe->ie", r, dV), axis=0) * dpdg

    def diagnostics(self) -> list:
        """ngspice's notes and warnings since the last call (for the run log)."""
        return self.s.take_messages()

    def close(self) -> None:
        if not self._closed:
            for title in self.titles.values():
                self.s.remove(title)
            self._closed = True
