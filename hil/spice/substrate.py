"""The ngspice substrate: the circuit simulated by libngspice, changed in place with ``alter``.

Two decks of the circuit are loaded once (:mod:`hil.spice.netlist`): ``open``
(outputs with current sources and switchable loads) and ``clamp`` (outputs held
by voltage sources). A conductance update alters each changed edge resistor in
both; each solve alters the source values that changed, runs ``op``, reads every
node voltage from the plot and destroys the plot. Nothing is re-parsed per step.
"""

from __future__ import annotations

import itertools

import numpy as np

from hil.circuit import Circuit, CircuitError
from hil.spice import netlist
from hil.spice.session import session
from hil.substrate import Substrate, SubstrateError

_ids = itertools.count(1)


class NgSpiceSubstrate(Substrate):
    """A circuit in ngspice. ``device``: 'resistor' (ideal resistors, the cross-check against the ideal substrate)."""

    supports_complex = False  # a complex nudge needs an AC analysis (not yet)

    def __init__(self, circuit: Circuit, g=None, device: str = "resistor"):
        if device != "resistor":
            raise SubstrateError(f"ngspice device {device!r} is not available (known: resistor)")
        self.circuit, self.device = circuit, device
        self.s = session()
        n = next(_ids)
        self.titles = {"open": f"hil{n}_open", "clamp": f"hil{n}_clamp"}
        g0 = circuit.g if g is None else np.asarray(g, float)
        self._check(g0)
        self._values = {}  # deck -> {(element, param): value} as last written
        for variant, title in self.titles.items():
            self.s.load(title, str(netlist.build(circuit, g0, variant, title)) + ".end\n")
            self._values[title] = {}
        self._g = g0.copy()
        c = circuit
        self._edge = [netlist.element("r", "e", nm) for nm in c.edge_names]
        self._vin = [netlist.element("v", "in", c.nodes[i]) for i in c.inputs]
        self._inj = [netlist.element("i", "inj", c.nodes[o]) for o in c.outputs]
        self._rld = [netlist.element("r", "ld", c.nodes[o]) for o in c.outputs]
        self._vld = [netlist.element("v", "ld", c.nodes[o]) for o in c.outputs]
        self._vcl = [netlist.element("v", "cl", c.nodes[o]) for o in c.outputs]
        self._read_idx = np.array([i for i in range(c.n) if i != c.ground])
        self._read_names = [netlist.node_name(c, i).encode("ascii") for i in self._read_idx]
        self.solves = 0
        self._closed = False

    def _check(self, g):
        c = self.circuit
        if g.shape != (c.m,):
            raise SubstrateError(f"expected {c.m} conductances for circuit '{c.name}', got shape {g.shape}")
        bad = np.flatnonzero(~np.isfinite(g) | (g <= 0))
        if bad.size:
            e = bad[0]
            raise CircuitError(f"{c.source}: edge '{c.edge_names[e]}': conductance {float(g[e])!r} "
                               "is not a positive finite number")

    def _set(self, title, elem, param, value):
        """alter one element parameter of deck ``title`` (current) if it changed."""
        key = (elem, param)
        value = float(value)
        if self._values[title].get(key) != value:
            cmd = f"alter {elem} {param} = {value!r}" if param else f"alter {elem} = {value!r}"
            self.s.command(cmd)
            self._values[title][key] = value

    def write(self, g) -> np.ndarray:
        g = np.asarray(g, dtype=float)
        self._check(g)
        changed = np.flatnonzero(g != self._g)
        for title in self.titles.values():
            self.s.use(title)
            for e in changed:
                self._set(title, self._edge[e], "", 1.0 / g[e])
        self._g = g.copy()
        return self._g.copy()

    def read(self) -> np.ndarray:
        return self._g.copy()

    def run(self, inputs, experiments) -> list:
        c = self.circuit
        X = np.atleast_2d(np.asarray(inputs, float))
        out = []
        for e in experiments:
            vals = np.asarray(e.values)
            if np.iscomplexobj(vals) or complex(e.beta).imag:
                raise SubstrateError("ngspice substrate: complex values need an AC analysis (not supported)")
            title = self.titles["clamp" if e.mode == "clamp" else "open"]
            self.s.use(title)
            V = np.zeros((len(X), c.n))
            for i in range(len(X)):
                for k, el in enumerate(self._vin):
                    self._set(title, el, "dc", X[i, k] if e.sources_on else 0.0)
                for k in range(len(c.outputs)):
                    if e.mode == "clamp":
                        self._set(title, self._vcl[k], "dc", vals[i, k])
                        continue
                    if e.mode == "current":
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
                self.s.op(f"circuit '{c.name}' ({title})")
                V[i, self._read_idx] = self.s.scalars(self._read_names)
                self.s.destroy_plots()
                self.solves += 1
            out.append(V)
        return out

    def close(self) -> None:
        if not self._closed:
            for title in self.titles.values():
                self.s.remove(title)
            self._closed = True
