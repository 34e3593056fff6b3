"""A round of experiments on a whole batch as one ngspice DC sweep.

ngspice spends ~95 % of a per-example solve on command dispatch, ``alter`` and
reads; one ``dc`` sweep over the batch spends its time in the simulator. The
sweep deck is the circuit's network (:func:`hil.spice.netlist.build`, variant
``network``, at the current parameters) plus two index sources,

    Vix hix 0 0   Rix hix 0 1      example index i = 0 .. B-1 (inner sweep)
    Vex hex 0 0   Rex hex 0 1      experiment index e = 0 .. E-1 (outer sweep)

swept by ``dc vix 0 B-1 1 vex 0 E-1 1``, and behavioural sources whose values
are tables of the batch read at the index, ``pwl(v(hix), 0, x_0, 1, x_1, ...)``:

- each input: a voltage source at :func:`~hil.spice.netlist.input_drive`, x_i
  (0 V for an experiment with the sources off);
- each output, open deck: a current source into the output,
  I = I_inj[e, i] + beta[e] (y[e, i] - V_o) (A): an injected current plus a load
  conductance beta (S; 0 when free, negative for -beta) to a target y (V);
- each output, clamp deck: a voltage source at the clamp voltage (V).

ngspice's ``pwl`` interpolates exactly at its abscissae (the offset is 0), so
every point of the sweep solves the same circuit as the per-example deck; a
sentinel point past the end keeps the last abscissa interior. Runs of equal
values are written once (a free experiment's beta = 0 is one pair).
"""

from __future__ import annotations

import numpy as np

from hil.circuit import Circuit
from hil.spice import netlist


def _num(v) -> str:
    return repr(float(v))


def table(arg: str, values) -> str:
    """An expression equal to values[k] at arg = k (k = 0 .. len-1): a constant or a ``pwl``.

    Interior points of runs of equal values are dropped (exact: linear interpolation
    between equal values); a sentinel at len keeps the last abscissa interior.
    """
    v = values.tolist() if isinstance(values, np.ndarray) else [float(x) for x in values]
    n = len(v)
    if v.count(v[0]) == n:
        return repr(float(v[0]))
    flat = [0, v[0]]
    for k in range(1, n - 1):
        if v[k] != v[k - 1] or v[k] != v[k + 1]:
            flat += (k, v[k])
    flat += (n - 1, v[-1], n, v[-1])
    return f"pwl({arg}," + ("%d,%r," * (len(flat) // 2))[:-1] % tuple(flat) + ")"


def table2(values: np.ndarray) -> str:
    """An expression equal to values[e, i] at example i, experiment e (values: (E, B))."""
    values = np.asarray(values, float)
    E, B = values.shape
    if E == 1 or not (values != values[0]).any():
        return table("v(hix)", values[0])
    return table(f"(v(hix)+{B}*v(hex))", values.ravel())


class SweepDeck:
    """The network of one circuit as deck text, with a slot for each device parameter's element value.

    Built once through PySpice (names validated there); each round only the
    element values (floats) and the tables (floats) are written into it.
    """

    def __init__(self, c: Circuit, device, p0: np.ndarray):
        self.c, self.device = c, device
        text = str(netlist.build(c, p0, "network", "hilsweep", device))
        lines = [ln for ln in text.splitlines()[1:] if ln.strip()]  # without PySpice's .title
        first = {ln.split()[0].lower(): k for k, ln in enumerate(lines)}
        slots = []  # (line index, edge, k-th value of that edge)
        for e in range(c.m):
            for j, (elem, _, value) in enumerate(device.alters(e, float(p0[e]))):
                k = first.get(elem)
                if k is None or float(lines[k].split()[-1]) != value:
                    raise RuntimeError(f"sweep deck: element {elem} of edge {c.edge_names[e]} has no value slot "
                                       "as its last field")
                slots.append((k, e, j))
        # every channel's gate source (Vg_<name> ... vg): a slot after the device's, filled from vg (V)
        self._gates = []
        for grp in c.elements:
            if grp.param == "vg":
                for j in range(len(grp)):
                    k = first.get(grp.gate_source(j))
                    if k is None:
                        raise RuntimeError(f"sweep deck: channel {grp.names[j]} has no gate source")
                    slots.append((k, -1 - len(self._gates), 0))
                    self._gates.append(k)
        slots.sort()
        # the network as one %-template: a %r slot per element value (ngspice decks have no '%')
        out, start = [], 0
        self._edges, self._js = [], []
        for k, e, j in slots:
            out += [ln.replace("%", "%%") for ln in lines[start:k]] + [lines[k].rsplit(None, 1)[0].replace("%", "%%") + " %r"]
            self._edges.append(e)
            self._js.append(j)
            start = k + 1
        out += [ln.replace("%", "%%") for ln in lines[start:]]
        self._template = "\n".join(out)
        self._cache = (None, None)
        self.drives = [netlist.input_drive(c, i, device.nonideal) for i in c.inputs]
        self.outs = [netlist.node_name(c, o) for o in c.outputs]

    def network(self, p: np.ndarray, vg=None) -> str:
        """The network's lines at device parameters p and channel gates vg (V) (cached for the last ones)."""
        vg = np.zeros(0) if vg is None else np.asarray(vg, float)
        key = np.asarray(p, float).tobytes() + vg.tobytes()
        if self._cache[0] == key:
            return self._cache[1]
        ev = self.device.element_values(p)
        vals = [float(vg[-1 - e]) if e < 0 else float(ev[e, j]) for e, j in zip(self._edges, self._js)]
        text = self._template % tuple(vals)
        self._cache = (key, text)
        return text

    def deck(self, title: str, p: np.ndarray, X: np.ndarray, experiments: list, clamp: bool, vg=None) -> tuple:
        """(deck text, dc command) for the experiments (all on the open deck, or all clamped) on batch X (V)."""
        B, E = len(X), len(experiments)
        c = self.c
        lines = [f".title {title}", netlist.OPTIONS, self.network(p, vg),
                 "Vix hix 0 0", "Rix hix 0 1", "Vex hex 0 0", "Rex hex 0 1"]
        on = np.array([1.0 if e.sources_on else 0.0 for e in experiments])
        for k, (i, node) in enumerate(zip(c.inputs, self.drives)):
            x = table("v(hix)", X[:, k])
            if not on.any():
                x = "0"
            elif not on.all():
                x = f"{x}*{table('v(hex)', on)}"
            lines.append(f"Bin_{k} {node} 0 V={x}")
        for k, (i, v) in enumerate(zip(c.biases, c.bias_v)):  # biases: on with the sources
            on_v = "0" if not on.any() else repr(float(v)) if on.all() else f"{float(v)!r}*{table('v(hex)', on)}"
            lines.append(f"Bbi_{k} {netlist.node_name(c, i)} 0 V={on_v}")
        for k, node in enumerate(self.outs):
            vals = np.array([np.asarray(e.values, float)[:, k] for e in experiments])  # (E, B)
            if clamp:
                lines.append(f"Bcl_{k} {node} 0 V={table2(vals)}")
                continue
            current = np.array([vals[j] if e.mode == "current" else np.zeros(B) for j, e in enumerate(experiments)])
            beta = np.array([float(np.real(e.beta)) if e.mode == "load" else 0.0 for e in experiments])
            terms = []
            if current.any():
                terms.append(table2(current))
            if beta.any():
                loads = [j for j, e in enumerate(experiments) if e.mode == "load"]
                y = np.array([vals[j] if e.mode == "load" else vals[loads[0]] for j, e in enumerate(experiments)])
                terms.append(f"{table('v(hex)', beta)}*({table2(y)}-v({node}))")
            if terms:
                lines.append(f"Bo_{k} 0 {node} I={'+'.join(terms)}")
        lines.append(".end")
        cmd = f"dc vix 0 {B - 1} 1" + (f" vex 0 {E - 1} 1" if E > 1 else "")
        return "\n".join(lines) + "\n", cmd
