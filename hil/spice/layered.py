"""Layered circuits in ngspice: crossbars of resistors, op-amps as voltage-controlled voltage sources.

The deck realises :mod:`hil.layered`'s circuit element by element:

- inputs: sources ``Vin_p<i>`` at +x_i and ``Vin_n<i>`` at -x_i;
- layer ``L``, summing line j: resistors ``RLp_<j>_<i>`` (1/g+) from the + line i and
  ``RLm_<j>_<i>`` (1/g-) from the - line i to node ``L_s<j>``; the feedback resistor
  ``RLf_<j>`` (R_j) from ``L_s<j>`` to the stage output ``L_t<j>``;
- each op-amp an E element (VCVS) of gain A from its inputs (+ at ground) to its output,
  with its input resistance r_in from the inverting input to ground when finite:
  ``ELt_<j>`` drives ``L_t<j>``, ``ELu_<j>`` the buffer output ``L_u<j>`` (= +h_j), the
  buffer's resistors ``RLi_<j>`` and ``RLo_<j>`` (r_inv) meeting at ``L_a<j>``.

SPICE has no nullor, so the ideal op-amp is an E element of gain :data:`IDEAL_GAIN`
(its error, about (1 + R_f sum g) / A, is ~1e-10 relative here). Names are validated
identifiers behind fixed prefixes; values are Python's round-trip repr.
"""

from __future__ import annotations

import math
from itertools import count

import numpy as np

from hil.circuit import NAME_RE
from hil.layered import LayeredCircuit, OpAmp
from hil.spice.netlist import OPTIONS

IDEAL_GAIN = 1e12
_ids = count()


def _node(layer: str, kind: str, j: int) -> str:
    if not NAME_RE.match(layer):
        raise ValueError(f"layer name {layer!r} is not a plain identifier")
    return f"{layer}_{kind}{j}".lower()


def build_layered(c: LayeredCircuit, g=None, opamp: OpAmp = OpAmp(), title: str = "hil_layered", inputs=None):
    """A PySpice ``Circuit`` of the layered circuit ``c`` at conductances ``g`` (S), op-amps of model ``opamp``.

    ``inputs`` (V, d_0) set the sources; default 0 V.
    """
    from PySpice.Spice.Netlist import Circuit as SpiceCircuit

    if not NAME_RE.match(title):
        raise ValueError(f"deck title {title!r} is not a plain identifier")
    gps, gms = (c.g_plus, c.g_minus) if g is None else c.unpack(c.check_g(g))
    gain = IDEAL_GAIN if math.isinf(opamp.gain) else float(opamp.gain)
    sc = SpiceCircuit(title)
    sc.raw_spice += OPTIONS + "\n"
    x = np.zeros(c.sizes[0]) if inputs is None else np.asarray(inputs, float).reshape(c.sizes[0])
    plus, minus = [], []
    for i, v in enumerate(x):
        sc.V(f"in_p{i}", f"x_p{i}", sc.gnd, repr(float(v)))
        sc.V(f"in_n{i}", f"x_n{i}", sc.gnd, repr(float(-v)))
        plus.append(f"x_p{i}"); minus.append(f"x_n{i}")

    def opamp_el(name, out, inv):
        sc.VCVS(name, out, sc.gnd, sc.gnd, inv, voltage_gain=repr(gain))
        if not math.isinf(opamp.r_in):
            sc.R(f"in{name}", inv, sc.gnd, repr(float(opamp.r_in)))

    for nm, gp, gm, R in zip(c.layer_names, gps, gms, c.r_f):
        s, t, a, u = ([_node(nm, q, j) for j in range(gp.shape[0])] for q in "stau")
        for j in range(gp.shape[0]):
            for i in range(gp.shape[1]):
                sc.R(f"{nm}p_{j}_{i}", plus[i], s[j], repr(1.0 / float(gp[j, i])))
                sc.R(f"{nm}m_{j}_{i}", minus[i], s[j], repr(1.0 / float(gm[j, i])))
            sc.R(f"{nm}f_{j}", s[j], t[j], repr(float(R[j])))
            opamp_el(f"{nm}t_{j}", t[j], s[j])
            sc.R(f"{nm}i_{j}", t[j], a[j], repr(float(c.r_inv)))
            sc.R(f"{nm}o_{j}", a[j], u[j], repr(float(c.r_inv)))
            opamp_el(f"{nm}u_{j}", u[j], a[j])
        plus, minus = u, t
    return sc


def standalone_layered_deck(c: LayeredCircuit, inputs, opamp: OpAmp = OpAmp()) -> str:
    """A deck ``ngspice -b`` runs on its own: the operating point at ``inputs`` (V), printing every stage output."""
    sc = build_layered(c, None, opamp, "hil_deck", inputs)
    outs = [_node(nm, "u", j) for nm, gp in zip(c.layer_names, c.g_plus) for j in range(gp.shape[0])]
    body = str(sc).split("\n", 1)[1]
    return (f"* hil: layered circuit {c.name!r}; op-amps are E sources of gain "
            f"{IDEAL_GAIN if math.isinf(opamp.gain) else opamp.gain:g}\n" + body
            + ".control\nset numdgt=12\nop\n"
            + f"if length(v({outs[0]})) = 1\n  print " + " ".join(f"v({n})" for n in outs) + "\n  quit 0\nend\n"
            + 'echo "hil: ngspice found no operating point"\nquit 1\n.endc\n.end\n')


def ngspice_forward(c: LayeredCircuit, X, g=None, opamp: OpAmp = OpAmp()) -> list:
    """[h_0 = x, h_1, ..., h_L] (N, d_k) volts: each stage's buffer outputs from ngspice's operating point.

    One deck (loaded once), the input sources altered per example.
    """
    from hil.spice.session import session

    s = session()
    X = np.atleast_2d(np.asarray(X, float))
    title = f"hil_layered{next(_ids)}"
    s.load(title, str(build_layered(c, g, opamp, title)) + ".end\n")
    names = [[_node(nm, "u", j).encode("ascii") for j in range(gp.shape[0])]
             for nm, gp in zip(c.layer_names, c.g_plus)]
    h = [X] + [np.zeros((len(X), len(n))) for n in names]
    try:
        for b in range(len(X)):
            for i, v in enumerate(X[b]):
                s.command(f"alter vin_p{i} dc = {float(v)!r}")
                s.command(f"alter vin_n{i} dc = {float(-v)!r}")
            s.op(f"layered circuit '{c.name}'")
            for k, nk in enumerate(names):
                h[k + 1][b] = s.scalars(nk)
            s.destroy_plots()
    finally:
        s.remove(title)
    return h
