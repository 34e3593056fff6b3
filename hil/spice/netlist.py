"""SPICE decks for a circuit, built as PySpice objects, never concatenated from user text.

Every name that reaches a deck is a validated identifier (:data:`hil.circuit.NAME_RE`)
behind a fixed prefix: node ``out`` is ``nd_out``; edge ``R1`` is the resistor
``Re_R1``. The ground node is SPICE's ``0``. Values are written with Python's
shortest round-trip repr, so a deck carries full double precision.

Two variants realise the experiments of :mod:`hil.substrate` as elements, as a
bench would:

- ``open``: each output has a current source ``Iinj_<o>`` (0 -> o, amperes) and a
  load resistor ``Rld_<o>`` (1e30 ohm = off; 1/beta for a closed-loop nudge,
  negative for beta < 0) to a source ``Vld_<o>`` at the target;
- ``clamp``: each output is held by a voltage source ``Vcl_<o>``;
- ``network``: the edges and the source resistances only; the batched sweep
  (:mod:`hil.spice.sweep`) adds its own sources at :func:`input_drive` and the outputs.

With ``ac_loads`` the open deck's loads also serve the AC analysis (the small-signal
experiments of :class:`hil.spice.substrate.NgSpiceSubstrate`): ``Rld_<o>`` carries an AC
resistance (``ac=``, open at first) and a capacitor ``Cld_<o>`` (0 F at first) lies
beside it, so a complex admittance Re beta + j Im beta loads the output in the AC
analysis only, the DC operating point untouched; and every other free node has a current
source ``Ipr_<node>`` (0 -> node, 0 A) that injects AC probe currents (the measured
small-signal Jacobian).

Each input is a voltage source ``Vin_<i>`` (at :func:`input_drive`). A VCCS ``G1`` of the circuit is SPICE's
``Gv_G1 out_p out_n ctrl_p ctrl_n gm`` (its ``gain`` is altered on a write); the
adjoint deck (``adjoint=True``) swaps its output and control ports, which realises
A_FF^T (docs/math.md, section 7.2).

Every other element kind writes its own card (:meth:`hil.elements.Kind.card`): a diode
``D_<name>`` with its ``.model dm_<name>``; a level-1 channel ``M_<name>`` with its
``.model mm_<name>`` (the same kp, vto, lambda, W and L), its gate held by ``Vg_<name>``
(at the midpoint: two VCVS of gain 1/2 in series with it) and its bulk at ``hb_el``, a
source ``Vbulk_el`` far below every node (the level-1 junctions then stay off); a VCVS
``E_<name>``. Each bias node is a source ``Vbi_<node>``.
"""

from __future__ import annotations

import numpy as np

from hil.circuit import NAME_RE, Circuit

OPTIONS = ".options reltol=1e-9 abstol=1e-16 vntol=1e-13"
R_OFF = 1e30  # an open load: 1e-30 S vanishes beside any edge conductance in double precision


def node_name(c: Circuit, i: int) -> str:
    """The SPICE name of node i: '0' for ground, 'nd_<name>' otherwise (lower case, as ngspice reports it)."""
    if i == c.ground:
        return "0"
    name = c.nodes[i]
    if not NAME_RE.match(name):  # circuits are validated on load; this guards hand-made ones
        raise ValueError(f"node name {name!r} is not a plain identifier")
    return f"nd_{name}".lower()


def element(kind: str, prefix: str, name: str) -> str:
    """ngspice's (lower-case) name of an element built as ``kind`` + ``prefix_name``."""
    if not NAME_RE.match(name):
        raise ValueError(f"element name {name!r} is not a plain identifier")
    return f"{kind}{prefix}_{name}".lower()


def input_drive(c: Circuit, i: int, nonideal) -> str:
    """The node input i's source drives: behind the source resistance ('hs_<name>') if there is one."""
    return f"hs_{c.nodes[i]}".lower() if nonideal.source_resistance else node_name(c, i)


def build(c: Circuit, params, variant: str, title: str, device=None, inputs=None, gm=None, adjoint: bool = False,
          ac_loads: bool = False):
    """A PySpice ``Circuit`` of ``c``, variant 'open', 'clamp' or 'network'.

    ``gm`` (k,) siemens: every VCCS's transconductance (default: the circuit's);
    ``adjoint``: each VCCS with output and control ports swapped (the adjoint network);
    ``ac_loads``: the open variant's loads with an AC resistance and a capacitor (module docstring).

    ``device`` (:mod:`hil.spice.devices`; default: ideal resistors) places each
    edge's elements at parameters ``params``; its non-idealities add a series
    wire resistance per edge and an output resistance per input source.
    ``inputs`` (V), if given, are the input sources' values; otherwise 0 V.
    """
    from PySpice.Spice.Netlist import Circuit as SpiceCircuit

    if device is None:
        from hil.spice.devices import Resistor
        from hil.spice.nonideal import NonIdeal
        device = Resistor(c, NonIdeal())
    if variant not in ("open", "clamp", "network"):
        raise ValueError(f"unknown deck variant {variant!r}")
    if not NAME_RE.match(title):
        raise ValueError(f"deck title {title!r} is not a plain identifier")
    ni = device.nonideal
    sc = SpiceCircuit(title)
    # ngspice's default reltol (1e-3) leaves a nonlinear operating point too loose for
    # gradients: with these, sens and central differences agree to ~1e-8
    sc.raw_spice += OPTIONS + "\n"
    nn = lambda i: sc.gnd if i == c.ground else node_name(c, i)
    device.preamble(sc)
    for e in range(c.m):
        name = c.edge_names[e]
        if not NAME_RE.match(name):
            raise ValueError(f"edge name {name!r} is not a plain identifier")
        na = nn(c.a[e])
        if ni.wire_resistance:
            sc.R(f"w_{name}", na, f"hw_{name}".lower(), repr(ni.wire_resistance))
            na = f"hw_{name}".lower()
        device.add_edge(sc, e, na, nn(c.b[e]), float(params[e]))
    add_elements(sc, c, nn)
    gm = c.gm if gm is None else np.asarray(gm, float)
    for j in range(c.k):
        name = c.vccs_names[j]
        if not NAME_RE.match(name):
            raise ValueError(f"vccs name {name!r} is not a plain identifier")
        op, on, cp, cn = (nn(i) for i in c.vccs_nodes[j])
        if adjoint:
            op, on, cp, cn = cp, cn, op, on
        sc.VCCS(f"v_{name}", op, on, cp, cn, repr(float(gm[j])))
    if variant != "network":  # the sweep deck switches the biases with the inputs
        for i, v in zip(c.biases, c.bias_v):
            sc.V(f"bi_{c.nodes[i]}", nn(i), sc.gnd, repr(float(v)))
    values = np.zeros(len(c.inputs)) if inputs is None else np.asarray(inputs, float).reshape(len(c.inputs))
    for i, v in zip(c.inputs, values):
        name = c.nodes[i]
        if variant != "network":
            sc.V(f"in_{name}", input_drive(c, i, ni), sc.gnd, repr(float(v)))
        if ni.source_resistance:
            sc.R(f"s_{name}", input_drive(c, i, ni), nn(i), repr(ni.source_resistance))
    if ac_loads and variant == "open":
        for i in c.free:
            if i not in c.outputs:
                sc.I(f"pr_{c.nodes[i]}", sc.gnd, nn(i), "0")
    for o in ([] if variant == "network" else c.outputs):
        name = c.nodes[o]
        if variant == "open":
            sc.I(f"inj_{name}", sc.gnd, nn(o), "0")
            if ac_loads:
                sc.R(f"ld_{name}", nn(o), f"nl_{name}".lower(), repr(R_OFF), ac=repr(R_OFF))
                sc.C(f"ld_{name}", nn(o), f"nl_{name}".lower(), "0")
            else:
                sc.R(f"ld_{name}", nn(o), f"nl_{name}".lower(), repr(R_OFF))
            sc.V(f"ld_{name}", f"nl_{name}".lower(), sc.gnd, "0")
        else:
            sc.V(f"cl_{name}", nn(o), sc.gnd, "0")
    return sc


#: the channels' bulk (V): below every node voltage a circuit reaches, so that no junction conducts
V_BULK_ELEMENTS = -50.0


def add_elements(sc, c: Circuit, nn) -> None:
    """Every element of the kinds beyond edges and VCCS as its own card(s), at the circuit's parameters."""
    from hil.elements import TEMPERATURE, Mosfet
    if c.elements:  # the embedded model's temperature (its thermal voltage), in degrees Celsius
        t = repr(TEMPERATURE - 273.15)
        sc.raw_spice += f".options temp={t} tnom={t}\n"
    for grp in c.elements:
        for name in grp.names:
            if not NAME_RE.match(name):
                raise ValueError(f"{grp.table} name {name!r} is not a plain identifier")
        if isinstance(grp, Mosfet) and len(grp):
            sc.V("bulk_el", "hb_el", sc.gnd, repr(V_BULK_ELEMENTS))
            sc.raw_spice += ".options gmin=1e-18\n"  # ngspice's gmin across the junctions: 1e-12 S x 50 V otherwise
        for j in range(len(grp)):
            grp.card(sc, nn, j)


def standalone_deck(c: Circuit, params, inputs, device=None) -> str:
    """A deck that ``ngspice -b`` runs on its own: the free state at ``inputs`` (V), printing every node voltage.

    ngspice exits 0 when the operating point was found and 1 when it was not (a failed
    ``op`` leaves an empty plot behind, so the deck tests that a node voltage exists).
    """
    sc = build(c, params, "open", "hil_deck", device=device, inputs=inputs)
    nodes = [node_name(c, i) for i in range(c.n) if i != c.ground]
    body = str(sc).split("\n", 1)[1]  # PySpice's .title line replaced by a comment naming the circuit
    kind = getattr(device, "name", "resistor")
    what = ("edges are resistors of 1/g ohms" if kind == "resistor" else
            "edges are digipots: resistors of R_W + code R_AB / N ohms at each g's nearest tap" if kind == "digipot"
            else f"edges are {kind} NMOS channels Me_*, each gate source Vge_* at the voltage whose small-V_ds "
                 "channel conductance is g") + ("; Gv_* are its VCCS (gm in siemens)" if c.k else "") + \
        ("; D_*, M_*, E_* its diodes, channels and VCVS, Vbi_* its biases" if c.elements or c.biases else "")
    return (f"* hil: free state of circuit {c.name!r}; {what}\n" + body
            + ".control\nop\n"
            + f"if length(v({nodes[0]})) = 1\n  print " + " ".join(f"v({n})" for n in nodes) + "\n  quit 0\nend\n"
            + 'echo "hil: ngspice found no operating point"\nquit 1\n.endc\n.end\n')
