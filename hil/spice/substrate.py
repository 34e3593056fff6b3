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
(``diagnostics``: the run's ``substrate.log``). Circuits with VCCS and the adjoint
network take the per-example path. On the mosfet devices every state with no injected
current is checked for a far equilibrium after its round (:meth:`NgSpiceSubstrate._far_points`,
and ep-sym's -beta against its +beta: :meth:`NgSpiceSubstrate._asymmetric_points`)
and such a point is re-solved from its example's free state (:meth:`NgSpiceSubstrate._guard`). Small-signal quantities (K and the adjoint response on a
nonlinear device, dV/dbeta at 0, complex nudges, the Jacobian) come from AC analyses about
the free operating point on the open deck (:meth:`NgSpiceSubstrate._ac_runs`). Non-idealities
(:mod:`hil.spice.nonideal`) act where they would on a bench: in the parts, on
each write, and in the voltmeter.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
import itertools

import numpy as np

from hil.circuit import Circuit
from hil.spice import netlist
from hil.spice.devices import Mosfet, make_device
from hil.spice.nonideal import NonIdeal, load_nonideal
from hil.spice.session import NgSpiceError, session
from hil.spice.sweep import SweepDeck
from hil.substrate import Experiment, Substrate, SubstrateError

_ids = itertools.count(1)
#: the AC analyses' one frequency (Hz): the decks hold no reactance but the loads' capacitors
#: (a BSIM channel's femtofarads admit ~1e-14 S there, far below any edge's conductance)
AC_FREQUENCY = 1.0


class NgSpiceSubstrate(Substrate):
    """A circuit in ngspice.

    device : 'resistor' (ideal resistors: the cross-check against the ideal
        substrate), 'digipot', 'mosfet' (gate against ground) or 'mosfet-mid' (gate at V_c + (V_d + V_s)/2).

    nonideal : a :class:`NonIdeal`, a path to its TOML file, or None (ideal parts).
    batched : each round as one DC sweep (default) or one ``op`` per example and experiment.
    """

    #: complex nudges are realised as complex admittances in an AC analysis (the linearised circuit)
    supports_complex = True

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
        if not circuit.reciprocal:  # the adjoint network: A_FF^T, every VCCS turned round
            self.titles["adjoint"] = f"hil{n}_adjoint"
        g0, gm0 = circuit.split(circuit.check_g(circuit.theta if g is None else g))
        p0 = self.device.param_from_g(np.clip(g0, circuit.g_min, circuit.g_max))
        self.device.check(p0)
        self._values = {}  # deck -> {(element, param): value} as last written
        for variant, title in self.titles.items():
            deck = netlist.build(circuit, p0, "open" if variant == "adjoint" else variant, title, self.device,
                                 gm=gm0, adjoint=variant == "adjoint", ac_loads=variant == "open")
            self.s.load(title, str(deck) + ".end\n")
            self._values[title] = {}
        self._p = p0.copy()
        self._gm = gm0.copy()
        self._in_decks = p0.copy()  # the parameters the loaded decks hold
        # the channels' gate voltages (every channel of the circuit, V) and the sources that hold them
        chans = [grp for grp in circuit.elements if grp.param == "vg"]
        self._vg_src = [grp.gate_source(j) for grp in chans for j in range(len(grp))]
        self._vg = self._channel_gates(circuit.check_g(circuit.theta if g is None else g))
        self._vg_in_decks = self._channel_gates(circuit.theta)
        self.batched = bool(batched)
        self._sweep = SweepDeck(circuit, self.device, p0)
        self._sweep_n = 0
        self.fallbacks = 0
        c = circuit
        el = netlist.element
        self._gv = [el("g", "v", nm) for nm in c.vccs_names]
        self._vin = [el("v", "in", c.nodes[i]) for i in c.inputs]
        self._bias_src = [el("v", "bi", c.nodes[i]) for i in c.biases]
        self._inj = [el("i", "inj", c.nodes[o]) for o in c.outputs]
        self._rld = [el("r", "ld", c.nodes[o]) for o in c.outputs]
        self._vld = [el("v", "ld", c.nodes[o]) for o in c.outputs]
        self._vcl = [el("v", "cl", c.nodes[o]) for o in c.outputs]
        self._cld = [el("c", "ld", c.nodes[o]) for o in c.outputs]
        # the AC current source at each free node (an output's Iinj, another node's Ipr), in c.free's order
        self._ifree = [el("i", "inj", c.nodes[i]) if i in c.outputs else el("i", "pr", c.nodes[i]) for i in c.free]
        self._read_str = [netlist.node_name(c, i) for i in range(c.n) if i != c.ground]
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

    def _channel_gates(self, theta) -> np.ndarray:
        """Every channel's gate voltage vg (V) at parameters theta, in the circuit's element order."""
        groups = self.circuit.element_groups(theta)
        return np.concatenate([grp.values["vg"] for grp in groups if grp.param == "vg"] or [np.zeros(0)])

    def _sync_decks(self) -> None:
        """alter the loaded decks to the current parameters (only the edges and gates that changed)."""
        changed = np.flatnonzero(self._p != self._in_decks)
        gates = np.flatnonzero(self._vg != self._vg_in_decks)
        if not len(changed) and not len(gates):
            return
        for title in self.titles.values():
            self.s.use(title)
            for e in changed:
                for elem, param, value in self.device.alters(e, self._p[e]):
                    self._set(title, elem, param, value)
            for j in gates:
                self._set(title, self._vg_src[j], "dc", self._vg[j])
        self._in_decks = self._p.copy()
        self._vg_in_decks = self._vg.copy()

    def read_params(self) -> np.ndarray:
        return self._p.copy()

    @property
    def small_signal(self) -> bool:
        """The mosfet devices and circuits with other element kinds (diodes, channels, VCVS): K and the adjoint
        are measured as small signals about the free operating point (see Substrate)."""
        from hil.spice.devices import Mosfet
        return isinstance(self.device, Mosfet) or bool(self.circuit.elements)

    def levels(self) -> np.ndarray | None:
        """A digipot's tap conductances as the device believes them (nominal parts), (m, taps + 1) S ascending;
        None for the continuous devices."""
        taps = getattr(self.device, "taps", None)
        if taps is None:
            return None
        return np.tile(np.sort(self.device.g_from_param(np.arange(taps + 1))), (self.circuit.m, 1))

    def channel_regions(self, X) -> dict | None:
        """How many channels sit in each region at the free operating points of the examples X (B, |inputs|):
        {"triode", "saturation", "cutoff": counts over B x m channel-examples, "channels": B x m,
        "examples_out": examples with a channel out of triode}; None for devices without a square-law channel."""
        from hil.substrate import Free
        regions = getattr(self.device, "regions", None)
        X = np.atleast_2d(np.asarray(X, float))
        V = self.measure(X, np.zeros((len(X), len(self.circuit.outputs))), [Free()])[Free()] if regions else None
        r = regions(V, self._p) if regions else None
        if r is None:
            return None
        return {"triode": int(np.sum(r == 0)), "saturation": int(np.sum(r == 1)), "cutoff": int(np.sum(r == 2)),
                "channels": int(r.size), "examples_out": int(np.sum(np.any(r != 0, axis=1)))}

    def write_gm(self, gm) -> None:
        """Set every VCCS's transconductance (k,) siemens in each deck (``alter ... gain``)."""
        gm = np.asarray(gm, float)
        for title in self.titles.values():
            self.s.use(title)
            for j in np.flatnonzero(gm != self._gm):
                self._set(title, self._gv[j], "gain", gm[j])
        self._gm = gm.copy()

    def write(self, g) -> np.ndarray:
        """Write theta (S): conductances as the device's nearest parameters, with write noise and
        drift; transconductances exactly. Returns the theta realised."""
        theta = self.circuit.check_g(g)
        g, gm = self.circuit.split(theta)
        if self.circuit.k:
            self.write_gm(gm)
        if len(self._vg_src):
            self._vg = self._channel_gates(theta)
            if not self.batched:
                self._sync_decks()
        ni, dev = self.nonideal, self.device
        target = dev.param_from_g(g)
        gate = dev.name.startswith("mosfet")
        if ni.drift_tau and gate:
            # the held gate leaked since the last write; the update lands as an increment on it
            leaked = self._p * np.exp(-1.0 / ni.drift_tau)
            target = leaked + (target - self._p)
        if ni.write_noise:
            noise = ni.write_noise * self._rng.standard_normal(len(g))
            if dev.name == "resistor":
                target = target * (1 + noise)
            elif gate:
                target = target + noise
        lo, hi = dev.param_range
        target = np.clip(target, lo, hi)
        if dev.name == "digipot":
            target = np.round(target)
        self.write_params(target)
        return self.read()

    def read(self) -> np.ndarray:
        g = self.device.g_from_param(self._p)
        if len(self.circuit.trainable_vccs):
            g = np.concatenate([g, self._gm[self.circuit.trainable_vccs]])
        if self.circuit.trainable_elements:  # the trained channels' gates, in theta's order
            pos, parts = 0, []
            for grp in self.circuit.elements:
                if grp.param == "vg":
                    parts.append(self._vg[pos:pos + len(grp)][grp.trainable])
                    pos += len(grp)
            g = np.concatenate([g] + parts)
        return g

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
        for el, v in zip(self._bias_src, c.bias_v):
            self._set(title, el, "dc", v if e.sources_on else 0.0)
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
            if e.linearised or complex(e.beta).imag:
                if e.mode != "load" or not e.sources_on or e.transpose:
                    raise SubstrateError("ngspice substrate: a linearised (AC) experiment is a closed-loop nudge "
                                         "with the sources on")
                if not np.isfinite(np.asarray(e.values, float)).all():
                    raise SubstrateError(f"circuit '{self.circuit.name}': load values must be finite numbers")
                continue
            if np.iscomplexobj(e.values):
                raise SubstrateError("ngspice substrate: complex injected currents or clamps are not realisable")
            if e.mode not in ("current", "load", "clamp"):
                raise SubstrateError(f"unknown experiment mode {e.mode!r}")
            if e.mode == "load" and float(np.real(e.beta)) == 0:
                raise SubstrateError("a closed-loop nudge needs beta != 0")
            if not (np.isfinite(np.asarray(e.values, float)).all() and np.isfinite(float(np.real(e.beta)))):
                raise SubstrateError(f"circuit '{self.circuit.name}': {e.mode} values must be finite numbers")
            if self._adjoint(e) and (e.sources_on or e.mode != "current"):
                raise SubstrateError("the adjoint network is realised with every source at 0 V and injected currents only")
        out = [None] * len(experiments)
        linear = [k for k, e in enumerate(experiments) if e.linearised or complex(e.beta).imag]
        if linear:  # AC analyses about one operating point per example (voltmeter noise on both parts there)
            for k, V in zip(linear, self._linearised_nudges(X, [experiments[k] for k in linear])):
                out[k] = V
        # the sweep deck holds edges only: VCCS circuits and the adjoint network go one example at a time.
        # Transistor networks sweep too; _guard re-solves any point that landed on a far equilibrium
        sweepable = self.batched and not self.circuit.k
        for kind in ("open", "clamp", "adjoint"):
            group = [k for k, e in enumerate(experiments) if k not in linear and self._deck_kind(e) == kind]
            if not group:
                continue
            exps = [experiments[k] for k in group]
            V = self._run_sweep(X, exps, kind == "clamp") if sweepable and kind != "adjoint" else None
            if V is None:
                V = self._run_per_example(X, exps)
            if kind != "adjoint":
                V = self._guard(X, exps, V, kind == "clamp")
            for k, v in zip(group, V):
                out[k] = v
        # in experiment order, as the readings would come (the AC states have theirs)
        return [V if k in linear or not self._noisy else self.voltmeter(V) for k, V in enumerate(out)]

    def _adjoint(self, e) -> bool:
        """Whether experiment e runs on the adjoint network (transposed, and the circuit non-reciprocal)."""
        return bool(e.transpose) and not self.circuit.reciprocal

    def _deck_kind(self, e) -> str:
        return "adjoint" if self._adjoint(e) else "clamp" if e.mode == "clamp" else "open"

    def _run_sweep(self, X, experiments, clamp) -> list | None:
        """The experiments as one DC sweep; None (and a note in the messages) when it fails to converge."""
        c = self.circuit
        B, E = len(X), len(experiments)
        self._sweep_n += 1
        title = f"{self.titles['open'][:-5]}_sw{self._sweep_n}"
        deck, cmd = self._sweep.deck(title, self._p, X, experiments, clamp, self._vg)
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
            title = self.titles[self._deck_kind(e)]
            self.s.use(title)
            V = np.zeros((len(X), c.n))
            for i in range(len(X)):
                self._set_sources(title, X[i], e, i)
                try:
                    self.s.op(f"circuit '{c.name}' ({title}, device {self.device.name})")
                except NgSpiceError as exc:
                    if e.mode == "load" and float(np.real(e.beta)) < 0:
                        # a negative load is active: a transistor network may have no state near the free one
                        raise NgSpiceError(f"{exc}. Example {i}: the nudged state at beta = {float(np.real(e.beta)):.3g} S "
                                           "(a negative load, as ep-sym's -beta) has no operating point: try a smaller "
                                           "--nudge, or a rule whose nudges are positive (ep, ep-holo:N)") from None
                    raise
                V[i, self._read_idx] = self.s.scalars(self._read_names)
                self.s.destroy_plots()
                self.solves += 1
            out.append(V)
        return out

    # -- far equilibria ------------------------------------------------------------
    def _span(self, X, e) -> tuple:
        """(lo, hi): per example (B,), the range of voltages (V) the sources of experiment e impose.

        The inputs x_i (0 V with the sources off), ground (0 V), and the outputs' load
        targets y or clamp voltages. None for an experiment with non-zero injected currents
        (no source range bounds those).
        """
        vals = np.asarray(e.values, float)
        if e.mode == "current" and vals.any():
            return None
        parts = [np.zeros((len(X), 1)), X if e.sources_on else np.zeros_like(X)]
        if e.mode in ("load", "clamp"):
            parts.append(vals)
        S = np.hstack(parts)
        return S.min(axis=1), S.max(axis=1)

    def _far_points(self, X, e, V) -> list:
        """[(example, node index, volts)] for each example whose state V (B, n) lies off the sources' span.

        A MOSFET channel's gate draws no DC current and its body diodes stay off above V_BULK,
        so the channel network is passive: current flows from higher to lower potential, and
        a free or clamped state (or one nudged by a positive load, itself passive) lies in
        [lo, hi] of :meth:`_span` (the maximum principle). A negative load -beta moves the
        neighbouring state from the free one by O(|beta| / g) (y - V_O), far less than the span
        w = hi - lo for any useful nudge, while the far equilibrium sits near I_sat / |beta|
        (1.3e6 V on net16 at beta = -1e-9 S). A point is far when a node leaves
        [lo - w - 1 mV, hi + w + 1 mV].
        """
        span = self._span(X, e)
        if span is None:
            return []
        lo, hi = span
        w = hi - lo + 1e-3
        out_lo = V - (lo - w)[:, None]
        out_hi = V - (hi + w)[:, None]
        bad = np.flatnonzero(((out_lo < 0) | (out_hi > 0)).any(axis=1))
        res = []
        for i in bad:
            k = int(np.argmax(np.maximum(-out_lo[i], out_hi[i])))
            res.append((int(i), k, float(V[i, k])))
        return res

    def _guard(self, X, exps, V, clamp) -> list:
        """V with every point on a far equilibrium (:meth:`_far_points`) re-solved from its example's free state.

        Transistor devices only (a linear network has one equilibrium). Each re-solve is one
        example's sweep deck with ``.nodeset`` at the free state of that example (the round's
        free state where it passed, else solved alone); a re-solve that is still far raises a
        SubstrateError naming the circuit, example, node and voltage. Noted in the messages.
        """
        if not isinstance(self.device, Mosfet):
            return V
        bad = [(j, i, k, v) for j, e in enumerate(exps) for i, k, v in self._far_points(X, e, V[j])]
        jfree = next((j for j, e in enumerate(exps) if not clamp and self._is_free(e)), None)
        if jfree is not None:
            bad += self._asymmetric_points(exps, V, jfree, {(j, i) for j, i, _, _ in bad})
        if not bad:
            return V
        V = [v.copy() for v in V]
        c = self.circuit
        badset = {(j, i) for j, i, _, _ in bad}
        free = {}
        for j, i, k, v in bad:
            if i not in free:
                if jfree is not None and (jfree, i) not in badset:
                    free[i] = V[jfree][i]
                else:
                    e0 = Experiment.free(len(X), len(c.outputs))
                    free[i] = self._solve_one(X, e0, i, None, False)
                    self._check_one(X, e0, i, free[i], "free")
            if jfree is not None and j == jfree:
                V[j][i] = free[i]
                continue
            V[j][i] = self._solve_one(X, exps[j], i, free[i], clamp)
            self._check_one(X, exps[j], i, V[j][i], self._what(exps[j]))
        where = ", ".join(f"example {i} {self._what(exps[j])} node {c.nodes[k]} at {v:.4g} V" for j, i, k, v in bad[:4])
        self.fallbacks += 1
        self.s.messages.append(("fallback", f"circuit '{c.name}' (device {self.device.name}): {len(bad)} point(s) "
                                f"on a far equilibrium ({where}{', ...' if len(bad) > 4 else ''}); re-solved one "
                                "example at a time from the example's free state"))
        self.s.counts["fallback"] += 1
        return V

    @staticmethod
    def _asymmetric_points(exps, V, jfree, skip) -> list:
        """[(experiment, example, node, volts)] of -beta nudges that leave the free state V_F far more than +beta does.

        To first order in beta the two nudges of ep-sym move the state oppositely by the
        same amount, V(+-beta) - V_F = +-beta S (y - V_O) + O(beta^2); the ratio of their sizes is
        ~(1 + |beta| kappa) / (1 - |beta| kappa), below 3 inside half the radius. A -beta state more
        than 4 times (+ 1 uV) as far from V_F as the +beta state with the same targets is not the
        neighbour of the free state.
        """
        out = []
        F = V[jfree]
        for jm, em in enumerate(exps):
            if em.mode != "load" or float(np.real(em.beta)) >= 0:
                continue
            for jp, ep in enumerate(exps):
                if ep.mode == "load" and float(np.real(ep.beta)) == -float(np.real(em.beta)) \
                        and ep.sources_on == em.sources_on and np.array_equal(ep.values, em.values):
                    dm = np.abs(V[jm] - F).max(axis=1)
                    dp = np.abs(V[jp] - F).max(axis=1)
                    for i in np.flatnonzero(dm > 4 * dp + 1e-6):
                        if (jm, int(i)) not in skip:
                            k = int(np.argmax(np.abs(V[jm][i] - F[i])))
                            out.append((jm, int(i), k, float(V[jm][i, k])))
                    break
        return out

    @staticmethod
    def _what(e) -> str:
        return f"load (beta = {float(np.real(e.beta)):.3g} S)" if e.mode == "load" else e.mode

    @staticmethod
    def _is_free(e) -> bool:
        return e.mode == "current" and e.sources_on and not e.transpose and not np.asarray(e.values).any()

    def _check_one(self, X, e, i, v, what) -> None:
        far = self._far_points(X[i:i + 1], replace(e, values=np.asarray(e.values)[i:i + 1]), v[None, :])
        if far:
            _, k, volts = far[0]
            raise SubstrateError(f"circuit '{self.circuit.name}' (device {self.device.name}): example {i}, {what} "
                                 f"state: node {self.circuit.nodes[k]} at {volts:.6g} V, far outside the sources' "
                                 "range even when solved from the free state (a second equilibrium; a smaller "
                                 "|beta| or smaller signals avoid it)")

    def _solve_one(self, X, e, i, v0, clamp) -> np.ndarray:
        """Node voltages (n,) of experiment e on example i alone, from ``.nodeset`` at v0 (n,) V if given."""
        c = self.circuit
        self._sweep_n += 1
        title = f"{self.titles['open'][:-5]}_sw{self._sweep_n}"
        ei = replace(e, values=np.asarray(e.values)[i:i + 1])
        deck, cmd = self._sweep.deck(title, self._p, X[i:i + 1], [ei], clamp, self._vg)
        if v0 is not None:
            sets = " ".join(f"v({nm})={float(v0[j])!r}" for nm, j in zip(self._read_str, self._read_idx)
                            if not (clamp and j in c.outputs))
            deck = deck[:-len(".end\n")] + f".nodeset {sets}\n.end\n"
        what = f"dc point of example {i} on circuit '{c.name}' ({'clamp' if clamp else 'open'}, device {self.device.name})"
        try:
            V = self.s.sweep(title, deck, cmd, self._read_names, 1, what)
        except NgSpiceError as exc:
            raise SubstrateError(f"circuit '{c.name}': example {i} did not converge from its free state: {exc}") from exc
        self.solves += 1
        out = np.zeros(c.n)
        out[self._read_idx] = V[:, 0]
        return out

    # -- small signals: AC analyses about the free operating point ----------------
    def _ac_setting(self, inj=None, beta: complex = 0.0, source=None, probe=None) -> dict:
        """The AC values of every output's elements, {(element, param): value}: ``inj`` (|O|,) amperes
        from each Iinj; the load Rld || Cld at admittance ``beta`` (S, complex; conductance Re beta,
        susceptance Im beta, either may be negative, 0 = open) to Vld at ``source`` (|O|,) volts;
        ``probe`` (|F|,) amperes into every free node (added to ``inj`` at the outputs)."""
        c = self.circuit
        n_out = len(c.outputs)
        inj = np.zeros(n_out) if inj is None else np.asarray(inj, float)
        source = np.zeros(n_out) if source is None else np.asarray(source, float)
        cur = np.zeros(len(c.free)) if probe is None else np.array(probe, float)
        cur[c.out_in_free] += inj
        beta = complex(beta)
        r_ac = 1.0 / beta.real if beta.real else netlist.R_OFF
        cap = beta.imag / (2 * np.pi * AC_FREQUENCY)
        out = {(el, "ac"): cur[f] for f, el in enumerate(self._ifree)}
        for k in range(n_out):
            out[(self._rld[k], "ac")] = r_ac
            out[(self._cld[k], "")] = cap
            out[(self._vld[k], "ac")] = source[k]
        return out

    def _ac_runs(self, X, settings) -> tuple:
        """For each example x_i: its free operating point V0_i (``op``), then per setting one AC analysis
        about it at AC_FREQUENCY with the AC values ``setting(i, V0_i)`` (:meth:`_ac_setting`).

        Returns (V0 (batch, n) volts, [complex (batch, n) node phasors per setting]); noiseless, ground 0.
        """
        from hil.substrate import Experiment
        c = self.circuit
        title = self.titles["open"]
        self._sync_decks()
        self.s.use(title)
        free = Experiment.free(len(X), len(c.outputs))
        V0 = np.zeros((len(X), c.n))
        R = [np.zeros((len(X), c.n), complex) for _ in settings]
        what = f"circuit '{c.name}' ({title}, device {self.device.name})"
        for i in range(len(X)):
            self._set_sources(title, X[i], free, i)
            self.s.op(what)
            V0[i, self._read_idx] = self.s.scalars(self._read_names)
            self.s.destroy_plots()
            for k, setting in enumerate(settings):
                for (elem, param), v in setting(i, V0[i]).items():
                    self._set(title, elem, param, v)
                self.s.command(f"ac lin 1 {AC_FREQUENCY!r} {AC_FREQUENCY!r}", what=f"ac (small signal) of {what}")
                R[k][i, self._read_idx] = [self.s.vector(nm)[0] for nm in self._read_str]
                self.s.destroy_plots()
            self.solves += 1 + len(settings)
        for elem_param, v in self._ac_setting().items():  # AC elements back to off
            self._set(title, *elem_param, v)
        return V0, R

    def _linearised_nudges(self, X, experiments) -> list:
        """The nudged states of the linearised circuit, (batch, n) volts each, for closed-loop load
        experiments at complex beta (S) with targets y: V0 + dV, dV the AC response with the load
        beta to a source at y - V0_O on every output, i.e. (A + beta P P^T) dV = beta P^T (y - V_O)
        (docs/math.md, section 7.2). All about the same operating point V0 per example, so that an estimator
        combining them sees one linear circuit. Voltmeter noise on both parts."""
        out = list(self.circuit.outputs)
        settings = [lambda i, v0, e=e: self._ac_setting(beta=complex(e.beta),
                                                        source=np.asarray(e.values, float)[i] - v0[out])
                    for e in experiments]
        V0, dVs = self._ac_runs(X, settings)
        res = []
        for dV in dVs:
            V = V0 + dV
            res.append(self.voltmeter(V.real) + 1j * self.voltmeter(V.imag) if self._noisy else V)
        return res

    def nudge_derivative(self, inputs, targets) -> np.ndarray:
        """dV/dbeta at beta = 0 (batch, n), V/S: one AC analysis per example about its free operating point,
        the AC current P^T (y - V_O) injected into the outputs (docs/math.md, section 7.2); exact for nonlinear devices too.
        Noiseless (a quantity of the circuit, as the ``sens`` reference)."""
        X = np.atleast_2d(np.asarray(inputs, float))
        Y = np.atleast_2d(np.asarray(targets, float))
        out = list(self.circuit.outputs)
        _, (dV,) = self._ac_runs(X, [lambda i, v0: self._ac_setting(inj=Y[i] - v0[out])])
        return dV.real

    def small_signal_response(self, inputs, currents) -> np.ndarray:
        """A^-1 P^T c about each example's free operating point (batch, n) volts: one AC analysis each."""
        X = np.atleast_2d(np.asarray(inputs, float))
        cur = np.atleast_2d(np.asarray(currents, float))
        _, (dV,) = self._ac_runs(X, [lambda i, v0: self._ac_setting(inj=cur[i])])
        return dV.real

    def small_signal_jacobian(self, inputs) -> np.ndarray:
        """A_FF about each example's free operating point, (batch, |F|, |F|) siemens (docs/math.md, section 7.1).

        |F| AC analyses per example, 1 A AC into each free node in turn: their responses at the
        free nodes are the columns of A_FF^-1, inverted. Exact small-signal A for any device.
        """
        c = self.circuit
        X = np.atleast_2d(np.asarray(inputs, float))
        nf = len(c.free)
        _, R = self._ac_runs(X, [lambda i, v0, f=f: self._ac_setting(probe=np.eye(nf)[f]) for f in range(nf)])
        Z = np.stack([R[f][:, c.free].real for f in range(nf)], axis=2)  # (batch, |F|, |F|): A^-1
        return np.linalg.inv(Z)

    def output_green(self, inputs=None) -> np.ndarray:
        """K (|O| x |O|, ohms). Linear devices: as :meth:`Substrate.output_green`. Nonlinear ones: the
        small-signal K about each example's free operating point (``inputs``, default 0 V, at most 32),
        column k the AC response of the outputs to 1 A AC into output k; the one of largest spectral radius."""
        if not self.small_signal:
            return super().output_green()
        c = self.circuit
        X = np.zeros((1, len(c.inputs))) if inputs is None else np.atleast_2d(np.asarray(inputs, float))[:32]
        out, n_out = list(c.outputs), len(c.outputs)
        _, R = self._ac_runs(X, [lambda i, v0, k=k: self._ac_setting(inj=np.eye(n_out)[k]) for k in range(n_out)])
        Ks = np.stack([R[k][:, out].real for k in range(n_out)], axis=2)
        radius = [np.abs(np.linalg.eigvals(K)).max() for K in Ks]
        return Ks[int(np.argmax(radius))]

    def _level1(self):
        """The level-1 channels the mosfet devices put on the edges (true parts: threshold offsets, W
        scales), or None for other devices (BSIM: no closed form here)."""
        from hil.data import folder
        from hil.elements import channels_on_edges, level1_parameters
        from hil.spice.devices import _model_card
        dev = self.device
        if not isinstance(dev, Mosfet) or dev.model_file != "nmos_level1.lib":
            return None
        card = level1_parameters(_model_card(folder("netlists") / dev.model_file))
        return channels_on_edges(self.circuit, self._p - dev.truth["dvth"], dev.midpoint, card["kp"], card["vto"],
                                 card["lambda"], dev.W * dev.truth["scale"], dev.L)

    def param_signal(self, V, W):
        """W^T dF/dtheta at states V (batch, n_params): the device's physics. Resistors: the circuit's; a
        level-1 channel: di/dvg (V) (W_a - W_b) dV_gate/dg; None for BSIM channels (no closed form)."""
        if not isinstance(self.device, Mosfet):
            return self.circuit.signal_products(V, W)
        ch = self._level1()
        if ch is None:
            return None
        edges = np.sum(ch.dparam(V[:, ch.nodes]) * W[:, ch.nodes], axis=-1) * self.device.dparam_dg(self._p)
        return np.concatenate([edges, self.circuit.signal_products(V, W)[:, self.circuit.m:]], axis=1)

    def outside_linear(self, V):
        """Per example, the channels saturated or cut off at states V (level-1 devices), None for BSIM; or the
        circuit's elements outside their linear region."""
        if not isinstance(self.device, Mosfet):
            c = self.circuit
            return sum((grp.outside_linear(V[:, grp.nodes]).sum(axis=1) for grp in c.elements), np.zeros(len(V), int))
        ch = self._level1()
        return None if ch is None else ch.outside_linear(V[:, ch.nodes]).sum(axis=1)

    def voltmeter(self, V) -> np.ndarray:
        """What the voltmeters report for node voltages V (volts, (batch, n)): noise and ADC, ground exact."""
        V = np.array(V, float)
        if self.nonideal.noise or self.nonideal.adc_bits:
            V[:, self._read_idx] = self.nonideal.measure(V[:, self._read_idx], self._rng)
        return V

    @property
    def has_sens(self) -> bool:
        """Whether ngspice's ``sens`` analysis can give this circuit's own gradient (not on BSIM4 channels, nor on
        circuits with other element kinds, whose reference is central differences through ngspice)."""
        return self.device.sens and not self.circuit.elements

    def sens_gradient(self, X, Y) -> np.ndarray:
        """dC/dg from ngspice's ``sens`` analysis (V^2/S): the circuit's own gradient, in one run per output.

        dC/dg_e = mean_i sum_o r_io dV_o/dp_e dp_e/dg_e, p_e the element value sens varies.
        """
        from hil.substrate import Experiment, Free
        c = self.circuit
        if not self.has_sens:
            raise SubstrateError(f"device {self.device.name}: ngspice's sens analysis does not run on its model; "
                                 "use --reference fd (central differences through ngspice)")
        with self.noiseless():
            r = self.measure(X, Y, [Free()]).residual
        title = self.titles["open"]
        self._sync_decks()
        self.s.use(title)
        names = [self.device.sens_vector(e).encode("ascii") for e in range(c.m)]
        names += [f"{self._gv[j]}_gain".encode("ascii") for j in c.trainable_vccs]
        free = Experiment.free(len(X), len(c.outputs))
        dV = np.zeros((len(X), len(c.outputs), len(names)))
        for i, x in enumerate(np.atleast_2d(X)):
            self._set_sources(title, x, free, i)
            for k, o in enumerate(c.outputs):
                self.s.command(f"sens v({netlist.node_name(c, o)})", what=f"sens of output '{c.nodes[o]}' on {c.name}")
                dV[i, k] = self.s.scalars(names)
                self.s.destroy_plots()
        dpdg = np.concatenate([self.device.dparam_dg(self._p), np.ones(len(c.trainable_vccs))])
        return np.mean(np.einsum("io,ioe->ie", r, dV), axis=0) * dpdg

    def homeostasis(self) -> tuple:
        """(H, dH/dtheta) (S^2, S): with ideal resistors every element of the deck is linear and its A is the
        model's (edges plus G elements), so H is exact; a nonlinear device needs small-signal probes."""
        from hil.exact import homeostasis, homeostasis_gradient
        c = self.circuit
        if c.elements:
            raise SubstrateError(f"circuit '{c.name}': homeostasis on ngspice needs small-signal probes of A at each "
                                 "operating point (not implemented for diodes, channels and VCVS); use the ideal backend")
        if self.device.name != "resistor":
            raise SubstrateError(f"homeostasis on the {self.device.name} device needs small-signal probes of A "
                                 "(not implemented); use --device resistor or the ideal backend")
        if c.reciprocal:
            return 0.0, np.zeros(c.n_params)
        theta = self.read()
        return homeostasis(c, theta), homeostasis_gradient(c, theta)

    def diagnostics(self) -> list:
        """ngspice's notes and warnings since the last call (for the run log)."""
        return self.s.take_messages()

    def close(self) -> None:
        if not self._closed:
            for title in self.titles.values():
                self.s.remove(title)
            self._closed = True
