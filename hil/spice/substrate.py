"""The ngspice substrate: the circuit simulated by libngspice, a round of experiments on a batch at a time.

Each round of experiments on a batch is one simulator run (:mod:`hil.spice.sweep`):
a deck of the network at the current device parameters (:mod:`hil.spice.devices`)
with the batch as tables, one ``dc`` sweep over examples and experiments, every
node voltage read at full precision, plot and deck removed.

The per-example path (``batched=False``, and the fallback where a sweep does not
converge) keeps two decks loaded (:mod:`hil.spice.netlist`): ``open`` (outputs
with current sources and switchable loads) and ``clamp`` (outputs held by voltage
sources). Parameters reach them by ``alter`` (when they are next used); each
solve alters the source values that changed, runs ``op``, reads every node
voltage and destroys the plot. A fallback is noted in the substrate's messages
(``diagnostics``: the run's ``substrate.log``). Non-idealities
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
from hil.spice.session import NgSpiceError, session
from hil.spice.sweep import SweepDeck
from hil.substrate import Substrate, SubstrateError

_ids = itertools.count(1)


class NgSpiceSubstrate(Substrate):
    """A circuit in ngspice.

    device : 'resistor' (ideal resistors: the cross-check against the ideal
        substrate), 'digipot' or 'mosfet'.
    nonideal : a :class:`NonIdeal`, a path to its TOML file, or None (ideal parts).
    batched : each round as one DC sweep (default) or one ``op`` per example and experiment.
    """

    supports_complex = False  # a complex nudge needs an AC analysis (not yet)

    def __init__(self, circuit: Circuit, g=None, device: str = "resistor", nonideal=None, batched: bool = True):
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
        self._in_decks = p0.copy()  # the parameters the loaded decks hold
        self.batched = bool(batched)
        self._sweep = SweepDeck(circuit, self.device, p0)
        self._sweep_n = 0
        self.fallbacks = 0
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
        self._p = p.copy()
        if not self.batched:
            self._sync_decks()
        return p.copy()

    def _sync_decks(self) -> None:
        """alter the loaded decks to the current parameters (only the edges that changed)."""
        changed = np.flatnonzero(self._p != self._in_decks)
        if not len(changed):
            return
        for title in self.titles.values():
            self.s.use(title)
            for e in changed:
                for elem, param, value in self.device.alters(e, self._p[e]):
                    self._set(title, elem, param, value)
        self._in_decks = self._p.copy()

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
        """Node voltages (batch, n) of each experiment: one sweep per deck kind (open, clamp), or per example."""
        X = np.atleast_2d(np.asarray(inputs, float))
        if not np.isfinite(X).all():
            raise SubstrateError(f"circuit '{self.circuit.name}': input voltages must be finite numbers "
                                 f"(example {int(np.flatnonzero(~np.isfinite(X).all(axis=1))[0])})")
        for e in experiments:
            if np.iscomplexobj(e.values) or complex(e.beta).imag:
                raise SubstrateError("ngspice substrate: complex values need an AC analysis (not supported)")
            if e.mode not in ("current", "load", "clamp"):
                raise SubstrateError(f"unknown experiment mode {e.mode!r}")
            if e.mode == "load" and float(np.real(e.beta)) == 0:
                raise SubstrateError("a closed-loop nudge needs beta != 0")
            if not (np.isfinite(np.asarray(e.values, float)).all() and np.isfinite(float(np.real(e.beta)))):
                raise SubstrateError(f"circuit '{self.circuit.name}': {e.mode} values must be finite numbers")
        out = [None] * len(experiments)
        for clamp in (False, True):
            group = [k for k, e in enumerate(experiments) if (e.mode == "clamp") == clamp]
            if not group:
                continue
            exps = [experiments[k] for k in group]
            V = self._run_sweep(X, exps, clamp) if self.batched else None
            if V is None:
                V = self._run_per_example(X, exps)
            for k, v in zip(group, V):
                out[k] = v
        # in experiment order, as the readings would come
        return [self.voltmeter(V) for V in out] if self._noisy else out

    def _run_sweep(self, X, experiments, clamp) -> list | None:
        """The experiments as one DC sweep; None (and a note in the messages) when it fails to converge."""
        c = self.circuit
        B, E = len(X), len(experiments)
        self._sweep_n += 1
        title = f"{self.titles['open'][:-5]}_sw{self._sweep_n}"
        deck, cmd = self._sweep.deck(title, self._p, X, experiments, clamp)
        what = (f"dc sweep of {E} experiment(s) x {B} example(s) on circuit '{c.name}' "
                f"({'clamp' if clamp else 'open'}, device {self.device.name})")
        try:
            V = self.s.sweep(title, deck, cmd, self._read_names, B * E, what)
        except NgSpiceError as exc:
            self.fallbacks += 1
            self.s.messages.append(("fallback", f"{exc}; solving these {B * E} points one example at a time"))
            self.s.counts["fallback"] += 1
            return None
        self.solves += B * E
        out = []
        for j in range(E):
            Vj = np.zeros((B, c.n))
            Vj[:, self._read_idx] = V[:, j * B:(j + 1) * B].T
            out.append(Vj)
        return out

    def _run_per_example(self, X, experiments) -> list:
        """One ``op`` per example and experiment on the loaded decks."""
        c = self.circuit
        self._sync_decks()
        out = []
        for e in experiments:
            title = self.titles["clamp" if e.mode == "clamp" else "open"]
            self.s.use(title)
            V = np.zeros((len(X), c.n))
            for i in range(len(X)):
                self._set_sources(title, X[i], e, i)
                self.s.op(f"circuit '{c.name}' ({title}, device {self.device.name})")
                V[i, self._read_idx] = self.s.scalars(self._read_names)
                self.s.destroy_plots()
                self.solves += 1
            out.append(V)
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
        self._sync_decks()
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
