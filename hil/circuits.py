"""Circuit generators and the shipped circuits.

Generators return validated :class:`hil.circuit.Circuit` objects, seeded and
reproducible; ``circuit.save(path)`` writes them as TOML. Initial conductances
are log-uniform in the middle of [g_min, g_max] (siemens).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from hil.circuit import Circuit, load_circuit, make_circuit
from hil.data import folder

G_MIN, G_MAX = 1e-5, 1e-2  # 100 ohm .. 100 kohm, the range of common programmable resistors


def _initial_g(rng, m, g_min, g_max):
    lo, hi = np.log(g_min), np.log(g_max)
    mid, half = (lo + hi) / 2, (hi - lo) / 4
    return np.exp(rng.uniform(mid - half, mid + half, m))


def random_network(n_nodes: int, degree: float = 3.0, seed: int = 0, n_inputs: int = 2, n_outputs: int = 2,
                   g_min: float = G_MIN, g_max: float = G_MAX) -> Circuit:
    """A connected random disordered network: a random spanning tree plus random edges.

    ``n_nodes`` nodes with mean degree ``degree`` (so about n_nodes * degree / 2
    edges); node n0 is ground, the next ``n_inputs`` nodes are inputs, the last
    ``n_outputs`` nodes are outputs.
    """
    if n_nodes < 2 + n_inputs + n_outputs - 1 or n_outputs < 1:
        raise ValueError(f"random_network: {n_nodes} nodes cannot hold ground, {n_inputs} inputs and {n_outputs} outputs")
    rng = np.random.default_rng(seed)
    m_target = max(n_nodes - 1, int(round(n_nodes * degree / 2)))
    m_target = min(m_target, n_nodes * (n_nodes - 1) // 2)
    order = rng.permutation(n_nodes)
    pairs = set()
    for i in range(1, n_nodes):
        j = order[rng.integers(0, i)]
        pairs.add(tuple(sorted((int(order[i]), int(j)))))
    while len(pairs) < m_target:
        a, b = rng.choice(n_nodes, 2, replace=False)
        pairs.add(tuple(sorted((int(a), int(b)))))
    pairs = sorted(pairs)
    g = _initial_g(rng, len(pairs), g_min, g_max)
    names = [f"n{i}" for i in range(n_nodes)]
    edges = [(f"R{k + 1}", names[a], names[b], g[k]) for k, (a, b) in enumerate(pairs)]
    return make_circuit(f"random{n_nodes}_d{degree:g}_s{seed}", edges, "n0", names[1:1 + n_inputs],
                        names[n_nodes - n_outputs:], g_min, g_max,
                        source=f"random_network({n_nodes}, {degree}, seed={seed})")


def lattice(rows: int, cols: int, seed: int = 0, n_inputs: int = 2, n_outputs: int = 2,
            g_min: float = G_MIN, g_max: float = G_MAX) -> Circuit:
    """A rows x cols square lattice: ground at the top-left corner, inputs spread
    down the left column, outputs spread down the right column. 2 rows cols - rows - cols edges."""
    if rows < 2 or cols < 2 or rows < n_inputs + 1 or rows < n_outputs:
        raise ValueError(f"lattice: {rows}x{cols} is too small for {n_inputs} inputs and {n_outputs} outputs")
    rng = np.random.default_rng(seed)
    nm = lambda r, c: f"n{r}_{c}"
    pairs = [(nm(r, c), nm(r, c + 1)) for r in range(rows) for c in range(cols - 1)]
    pairs += [(nm(r, c), nm(r + 1, c)) for r in range(rows - 1) for c in range(cols)]
    g = _initial_g(rng, len(pairs), g_min, g_max)
    edges = [(f"R{k + 1}", a, b, g[k]) for k, (a, b) in enumerate(pairs)]
    in_rows = np.linspace(1, rows - 1, n_inputs).round().astype(int)
    out_rows = np.linspace(0, rows - 1, n_outputs).round().astype(int)
    return make_circuit(f"lattice{rows}x{cols}_s{seed}", edges, nm(0, 0), [nm(r, 0) for r in in_rows],
                        [nm(r, cols - 1) for r in out_rows], g_min, g_max,
                        source=f"lattice({rows}, {cols}, seed={seed})")


def crossbar(layers=(2, 4, 2), seed: int = 0, g_min: float = G_MIN, g_max: float = G_MAX) -> Circuit:
    """A layered crossbar: every node of a layer joined to every node of the next,
    and every non-input node joined to ground (its column's load conductance).
    Layer 0 are the inputs, the last layer the outputs."""
    layers = tuple(int(x) for x in layers)
    if len(layers) < 2 or min(layers) < 1:
        raise ValueError(f"crossbar: layers {layers} need at least an input and an output layer")
    rng = np.random.default_rng(seed)
    names = [[("in" if k == 0 else "out" if k == len(layers) - 1 else f"h{k}_") + f"{i}" for i in range(n)]
             for k, n in enumerate(layers)]
    pairs = [(a, b) for k in range(len(layers) - 1) for a in names[k] for b in names[k + 1]]
    pairs += [(a, "gnd") for k in range(1, len(layers)) for a in names[k]]
    g = _initial_g(rng, len(pairs), g_min, g_max)
    edges = [(f"G{k + 1}", a, b, g[k]) for k, (a, b) in enumerate(pairs)]
    return make_circuit("crossbar" + "x".join(map(str, layers)) + f"_s{seed}", edges, "gnd", names[0], names[-1],
                        g_min, g_max, source=f"crossbar({layers}, seed={seed})")


#: the transistor network's channel: netlists/nmos_level1.lib (kp A/V^2, vto V) at W/L = 6, as ``--device mosfet``
CHANNEL = {"kp": 2e-4, "vto": 0.5, "lambda": 0.0, "w": 6e-6, "l": 1e-6}
#: gate voltages drawn uniformly in this range at the start (V); trained within [0, 10] V
VG_START = (1.0, 6.0)
#: each hidden and output node's fixed path to ground (S): a read-out's 100 kohm input resistance
G_LEAK = 1e-5


def transistor_network(features: int = 2, classes: int = 2, hidden: int = 6, seed: int = 0) -> Circuit:
    """A network of transistor edges in the manner of Dillavou et al. (PNAS 121, e2319718121, 2024, "Machine
    learning without a processor: emergent learning in a nonlinear analog network"): every edge an n-channel
    MOSFET whose gate voltage vg (V, against ground) is the learning degree of freedom, trained by coupled
    learning.

    The channels (SPICE level 1, :data:`CHANNEL`) join every source to every one of ``hidden`` hidden nodes
    and every hidden node to every class output: (2 features + 2) x hidden + hidden x classes channels. A
    channel's conductance k (vg - vto - V_low) falls as the lower of its two node voltages rises, so a hidden
    node fed by +x1 and +x2 reads a term in x1 x2: the product XOR needs. Sources follow the classification
    encoding's 2d + 2 layout (a +-x pair per feature ``x1p``, ``x1n``, ..., then ``biasp`` at +1 V and
    ``biasn`` at -1 V); outputs ``y1`` .. ``yC``, one per class. Every hidden and output node has a fixed
    :data:`G_LEAK` to ground, so that a node whose channels are all cut off still has a voltage. Gate
    voltages start uniform in :data:`VG_START`, seeded.
    """
    if features < 1 or classes < 2 or hidden < 1:
        raise ValueError(f"transistor: --sizes {features},{classes} --hidden {hidden}: at least 1 feature, 2 classes "
                         "and 1 hidden node")
    from hil.circuit import circuit_from_dict

    rng = np.random.default_rng(seed)
    ins = [f"x{j + 1}{s}" for j in range(features) for s in ("p", "n")] + ["biasp", "biasn"]
    hid = [f"h{j + 1}" for j in range(hidden)]
    outs = [f"y{c + 1}" for c in range(classes)]
    pairs = [(i, h) for h in hid for i in ins] + [(h, o) for o in outs for h in hid]
    vg = rng.uniform(*VG_START, len(pairs))
    data = {"name": f"transistor{features}x{hidden}x{classes}_s{seed}", "ground": "gnd", "inputs": ins,
            "outputs": outs, "g_min": G_MIN, "g_max": G_MAX,
            "edge": [{"name": f"RL_{n}", "a": n, "b": "gnd", "g": G_LEAK, "fixed": True} for n in hid + outs],
            "mosfet": [{"name": f"M{k + 1}", "d": a, "s": b, "gate": "ground", "vg": float(vg[k]), "vg_min": 0.0,
                        "vg_max": 10.0, **CHANNEL} for k, (a, b) in enumerate(pairs)]}
    return circuit_from_dict(data, source=f"transistor_network({features}, {classes}, hidden={hidden}, seed={seed})")


#: edges a resistor board holds (the firmware's limit: one digital potentiometer per edge)
BOARD_EDGES = 30


def board_classifier(features: int = 4, classes: int = 3, seed: int = 0, g_min: float = G_MIN,
                     g_max: float = G_MAX) -> Circuit:
    """A board-sized linear classifier in the manner of Dillavou et al. (Phys. Rev. Applied 18, 014040, 2022):
    every source joined to every class output by one programmable resistor.

    Sources: a +-x pair per feature (``x1p``, ``x1n``, ...), a bias ``bias`` (the classification
    encoding's 2d + 1 layout: +1 V) and ground; outputs ``y1`` .. ``yC``, one per class. That is
    (2 features + 2) x classes edges: 30 for Iris (4 features, 3 classes), a board's limit.
    """
    if features < 1 or classes < 2:
        raise ValueError(f"board: --sizes {features},{classes}: at least 1 feature and 2 classes")
    rng = np.random.default_rng(seed)
    ins = [f"x{j + 1}{s}" for j in range(features) for s in ("p", "n")] + ["bias"]
    outs = [f"y{c + 1}" for c in range(classes)]
    pairs = [(i, o) for o in outs for i in ins + ["gnd"]]
    g = _initial_g(rng, len(pairs), g_min, g_max)
    edges = [(f"R{k + 1}", a, b, g[k]) for k, (a, b) in enumerate(pairs)]
    return make_circuit(f"board{features}x{classes}_s{seed}", edges, "gnd", ins, outs, g_min, g_max,
                        source=f"board_classifier({features}, {classes}, seed={seed})")


def add_vccs(c: Circuit, pairs: int = 2, seed: int = 0, scale: float | None = None, asymmetry: float = 1.0,
             singles: int = 0) -> Circuit:
    """The circuit with random VCCS couplings between free nodes (docs/math.md, section 7.1), trainable.

    ``pairs`` pairs a->b and b->a: G_ab drives gm_ab V_a (volts at a against ground)
    into row b of A, G_ba the reverse, with gm_ab = s and gm_ba = s (1 - asymmetry):
    asymmetry 0 is reciprocal (A stays symmetric), 1 is one-way. ``singles`` adds one-way
    couplings on other node pairs. s is drawn in [0.5, 1] x ``scale`` (siemens; default
    a quarter of the median edge conductance), seeded.
    """
    if not 0 <= asymmetry <= 1:
        raise ValueError(f"add_vccs: asymmetry must be in [0, 1] (0 reciprocal, 1 one-way), got {asymmetry}")
    free = [int(i) for i in c.free]
    need = pairs + singles
    if need and len(free) < 2:
        raise ValueError(f"add_vccs: circuit '{c.name}' has fewer than two free nodes")
    rng = np.random.default_rng(seed)
    scale = 0.25 * float(np.median(c.g)) if scale is None else float(scale)
    cand = [(a, b) for i, a in enumerate(free) for b in free[i + 1:]]
    if need > len(cand):
        raise ValueError(f"add_vccs: {need} couplings asked, circuit '{c.name}' has {len(cand)} free node pairs")
    chosen = [cand[i] for i in rng.choice(len(cand), need, replace=False)]
    gnd = c.nodes[c.ground]
    vccs = list(zip(c.vccs_names, *(np.array(c.nodes)[c.vccs_nodes].T if c.k else [[]] * 4), c.gm, c.gm_fixed))
    k = c.k
    for i, (a, b) in enumerate(chosen):
        s = scale * rng.uniform(0.5, 1.0)
        na, nb = c.nodes[a], c.nodes[b]
        vccs.append((f"G{k + 1}", nb, gnd, na, gnd, s, False))
        k += 1
        if i < pairs:
            vccs.append((f"G{k + 1}", na, gnd, nb, gnd, s * (1 - asymmetry), False))
            k += 1
    edges = [(c.edge_names[e], c.nodes[c.a[e]], c.nodes[c.b[e]], c.g[e]) for e in range(c.m)]
    return make_circuit(c.name + f"_vccs{pairs}p{singles}s_a{asymmetry:g}", edges, c.nodes[c.ground], c.input_names,
                        c.output_names, c.g_min, c.g_max, vccs=vccs, gm_max=c.gm_max or c.g_max,
                        source=f"add_vccs({c.name}, pairs={pairs}, seed={seed}, asymmetry={asymmetry})")


def vccs_pairs(c: Circuit) -> list:
    """The VCCS pairs of ``c`` as (forward, reverse) indices: G_f drives row b from V_a and G_r row a from V_b,
    both against ground (:func:`add_vccs`'s pairs); forward is the one with the larger |gm| (the first on a tie)."""
    g = c.ground
    ends = {}
    for j, (op, on, cp, cn) in enumerate(c.vccs_nodes):
        if on == g and cn == g:
            ends.setdefault((int(cp), int(op)), j)
    out = []
    for (a, b), j in ends.items():
        r = ends.get((b, a))
        if r is not None and j < r:
            out.append((j, r) if abs(c.gm[j]) >= abs(c.gm[r]) else (r, j))
    return sorted(out)


def couplings(c: Circuit, scale: float | None = None, asymmetry: float | None = None) -> Circuit:
    """``c`` with its VCCS couplings rescaled and made (a)symmetric, for a sweep over coupling strength and asymmetry.

    ``scale`` (S): every gm multiplied by scale / max |gm|, so that the strongest coupling is ``scale``.
    ``asymmetry`` a in [0, 1]: in each pair (:func:`vccs_pairs`) the reverse gm becomes the forward gm times
    (1 - a), as :func:`add_vccs` draws them (0 reciprocal, 1 one-way). ValueError naming the option where the
    circuit has no VCCS (no pair), a value is out of range, or a gm would pass the file's gm_max.
    """
    gm = np.array(c.gm, float)
    if scale is not None:
        if not c.k or not np.any(gm):
            raise ValueError(f"--vccs-scale: circuit '{c.name}' ({c.source}) has no VCCS couplings to scale")
        if not (np.isfinite(scale) and scale > 0):
            raise ValueError(f"--vccs-scale {scale!r}: must be a positive number of siemens")
        gm = gm * (scale / np.max(np.abs(gm)))
    if asymmetry is not None:
        pairs = vccs_pairs(c)
        if not pairs:
            raise ValueError(f"--asymmetry: circuit '{c.name}' ({c.source}) has no VCCS pair a->b, b->a "
                             "(`hil generate ... --vccs-pairs P` makes some)")
        if not (np.isfinite(asymmetry) and 0 <= asymmetry <= 1):
            raise ValueError(f"--asymmetry {asymmetry!r}: must be in [0, 1] (0 reciprocal, 1 one-way)")
        for f, r in pairs:
            gm[r] = gm[f] * (1 - asymmetry)
    gmx = c.gm_max if c.gm_max is not None else c.g_max
    if np.any(np.abs(gm) > gmx):
        raise ValueError(f"--vccs-scale {scale!r}: a transconductance would pass the circuit's bound gm_max = {gmx!r} S")
    from dataclasses import replace
    return replace(c, gm=gm)


def shipped() -> dict:
    """Shipped circuit files: name -> path."""
    return {p.stem: p for p in sorted(folder("circuits").glob("*.toml"))}


def shipped_path(name: str) -> Path | None:
    """The shipped circuit called ``name`` (with or without .toml), or None."""
    return shipped().get(Path(name).stem if name.endswith(".toml") else name)


def load(name: str) -> Circuit:
    """Load a shipped circuit by name, or any circuit file by path."""
    return load_circuit(name)


def perturb(c: Circuit, scale: float, seed: int = 0) -> Circuit:
    """The circuit with g_e -> clip(g_e exp(scale z_e), g_min, g_max), z_e ~ N(0, 1) seeded (S).

    A reproducible starting point near a teacher (``scale`` is the sigma of log g;
    0.1 moves each conductance by about 10 %). Same topology, name and bounds.
    """
    if not np.isfinite(scale) or scale < 0:
        raise ValueError(f"perturb: scale must be a finite number >= 0, got {scale}")
    z = np.random.default_rng(seed).standard_normal(c.m)
    return c.with_g(np.clip(c.g * np.exp(scale * z), c.g_min, c.g_max))


def with_elements(circuit: Circuit, seed: int = 0, diodes: int = 2, mosfets: int = 2, midpoint: int = 0,
                  vcvs: int = 0, vccs: int = 0, biases: int = 0, rs: float = 0.0) -> Circuit:
    """``circuit`` with element kinds added between random nodes (seeded): Shockley diodes (I_s = 1e-12 A,
    series ``rs`` ohms), level-1 channels with the gate against ground (``mosfets``) or at the midpoint
    (``midpoint``; kp = 1e-3 A/V^2, vto = 0.7 V, vg in [1.5, 4] V, trainable), VCVS buffers of gain 0.5
    each driving a new node joined to the network by an edge, trainable VCCS of small gm, and bias nodes
    (a new node at v in [-0.5, 0.5] V joined by an edge). Every element's name is a plain identifier."""
    import tomllib

    from hil.circuit import circuit_from_dict

    rng = np.random.default_rng([seed, 21])
    data = tomllib.loads(circuit.to_toml())
    nodes = list(circuit.nodes)
    held = set(circuit.sources) | set(circuit.outputs)
    free = [circuit.nodes[i] for i in range(circuit.n) if i not in held]
    pair = lambda: [nodes[i] for i in rng.choice(len(nodes), 2, replace=False)]
    g_mid = float(np.sqrt(circuit.g_min * circuit.g_max))
    data["diode"] = [dict(zip(("a", "b"), pair()), name=f"D{j + 1}", **{"is": 1e-12, "n": 1.0, "rs": rs})
                     for j in range(diodes)]
    data["mosfet"] = [dict(zip(("d", "s"), pair()), name=f"M{j + 1}", gate="midpoint" if j >= mosfets else "ground",
                           vg=float(rng.uniform(1.5, 4.0)), vg_min=0.0, vg_max=5.0, kp=1e-3, vto=0.7)
                      for j in range(mosfets + midpoint)]
    for j in range(vcvs):
        out = f"buf{j + 1}"
        data["vcvs"] = data.get("vcvs", []) + [{"name": f"E{j + 1}", "out_p": out, "out_n": nodes[circuit.ground],
                                                "ctrl_p": nodes[int(rng.integers(len(nodes)))],
                                                "ctrl_n": nodes[circuit.ground], "gain": 0.5}]
        data["edge"].append({"name": f"Rbuf{j + 1}", "a": out, "b": free[int(rng.integers(len(free)))] if free
                             else nodes[circuit.outputs[0]], "g": g_mid})
    data["vccs"] = [dict(zip(("out_p", "out_n", "ctrl_p", "ctrl_n"), pair() + pair()), name=f"G{j + 1}",
                         gm=float(rng.uniform(-0.1, 0.1) * g_mid)) for j in range(vccs)]
    data["bias"] = []
    for j in range(biases):
        b = f"vb{j + 1}"
        data["edge"].append({"name": f"Rb{j + 1}", "a": b, "b": free[int(rng.integers(len(free)))] if free
                             else nodes[circuit.outputs[0]], "g": g_mid})
        data["bias"].append({"node": b, "v": float(rng.uniform(-0.5, 0.5))})
    for k in ("diode", "mosfet", "vccs", "bias"):
        if not data[k]:
            del data[k]
    data["name"] = f"{circuit.name}_el{seed}"
    return circuit_from_dict(data, source=f"with_elements({circuit.name}, seed={seed})")


def layered(sizes, seed: int = 0, g_min: float = 1e-6, g_max: float = 1e-4, r_f: float = 1e5, init: float = 0.1,
            gain: float = math.inf, r_inv: float = 1e4) -> Circuit:
    """A layered circuit of widths ``sizes`` = (d_0, ..., d_L) as an ordinary circuit of elements, seeded.

    Inputs x_i (V) and their inverted copies (a VCVS of gain -1 each); per matrix k, crosspoint (j, i) a pair
    of trainable edges g+_ji from line +h_i and g-_ji from line -h_i to summing line s_j; s_j held at 0 V by a
    transimpedance stage (an op-amp, a VCVS of gain ``gain`` from -s_j, with fixed feedback edge 1/``r_f``)
    whose output t_j = -R_j I_j is the next matrix's inverted line; a one-way buffer (op-amp, two fixed edges
    1/``r_inv``) gives u_j = -t_j = +h_(k+1),j. So h_(k+1) = W_k h_k with W_k = diag(R) (G+ - G-) (V/V), and
    the outputs are the last buffers'. Each pair sits about g_c = (g_min + g_max) / 2,
    g+- = g_c +- W / (2 r_f), W_ji ~ N(0, (init / sqrt(d_k))^2), clipped into [g_min, g_max] (siemens).
    The ``[[matrix]]`` tables remember which edges form which W (:mod:`hil.matrices`).
    """
    from hil.circuit import circuit_from_dict

    sizes = tuple(int(x) for x in sizes)
    if len(sizes) < 2 or min(sizes) < 1:
        raise ValueError(f"--sizes {','.join(map(str, sizes))}: need at least an input and an output width, each >= 1")
    rng = np.random.default_rng(seed)
    gc = 0.5 * (g_min + g_max)
    names = ("W", "Z") if len(sizes) == 3 else tuple(f"L{k + 1}" for k in range(len(sizes) - 1))
    edges, vcvs, matrices = [], [], []
    plus = [f"x{i}" for i in range(sizes[0])]
    minus = [f"xn{i}" for i in range(sizes[0])]
    for i in range(sizes[0]):
        vcvs.append({"name": f"Ex{i}", "out_p": minus[i], "out_n": "gnd", "ctrl_p": plus[i], "ctrl_n": "gnd",
                     "gain": -1.0})
    for k, L in enumerate(names):
        W = rng.standard_normal((sizes[k + 1], sizes[k])) * init / np.sqrt(sizes[k])
        gp, gm = (np.clip(gc + s * W / (2 * r_f), g_min, g_max) for s in (1, -1))
        rows_p, rows_m, fb, outs = [], [], [], []
        for j in range(sizes[k + 1]):
            s, t, a, u = (f"{L}{q}{j}" for q in "stau")
            rows_p.append([f"{L}p_{j}_{i}" for i in range(sizes[k])])
            rows_m.append([f"{L}m_{j}_{i}" for i in range(sizes[k])])
            for i in range(sizes[k]):
                edges.append({"name": rows_p[j][i], "a": plus[i], "b": s, "g": float(gp[j, i])})
                edges.append({"name": rows_m[j][i], "a": minus[i], "b": s, "g": float(gm[j, i])})
            edges += [{"name": f"{L}f{j}", "a": s, "b": t, "g": 1.0 / r_f, "fixed": True},
                      {"name": f"{L}i{j}", "a": t, "b": a, "g": 1.0 / r_inv, "fixed": True},
                      {"name": f"{L}o{j}", "a": a, "b": u, "g": 1.0 / r_inv, "fixed": True}]
            vcvs += [{"name": f"E{L}t{j}", "out_p": t, "out_n": "gnd", "ctrl_p": "gnd", "ctrl_n": s, "gain": gain},
                     {"name": f"E{L}u{j}", "out_p": u, "out_n": "gnd", "ctrl_p": "gnd", "ctrl_n": a, "gain": gain}]
            fb.append(f"{L}f{j}"); outs.append(u)
        matrices.append({"name": L, "plus": rows_p, "minus": rows_m, "feedback": fb, "outputs": outs})
        plus, minus = outs, [f"{L}t{j}" for j in range(sizes[k + 1])]
    data = {"name": "layered" + "x".join(map(str, sizes)) + f"_s{seed}", "ground": "gnd",
            "inputs": [f"x{i}" for i in range(sizes[0])], "outputs": plus, "g_min": g_min, "g_max": g_max,
            "edge": edges, "vcvs": vcvs, "matrix": matrices}
    return circuit_from_dict(data, source=f"layered({','.join(map(str, sizes))}, seed={seed})")




#: the papers a generated DRN follows (its file's header)
DRN_CITATION = ("Deep resistive network after Kendall et al. (2020), 'Training end-to-end analog neural networks with",
                "equilibrium propagation', arXiv:2006.01981, and Scellier (ICML 2024), 'A fast algorithm to simulate",
                "nonlinear resistive networks', PMLR 235 (repository energy-based-learning, papers/fast-drn).",
                "Inputs: +-x pairs per feature, then bias +1 V, -1 V; hidden nodes clipped at 0 V by diodes to",
                "ground (first half >= 0, the rest <= 0); outputs: a differential pair per class.")
#: a DRN's conductance bounds and the scale of its initial conductances (siemens)
DRN_G_MIN, DRN_G_MAX, DRN_G_INIT = 1e-7, 1e-3, 1e-4
#: a DRN's default step, as a fraction of 1 / lambda_max (the circuit file's ``lr_fraction``; the loop's own is
#: 0.25): its curvature is set by the output layer, whose bias edges carry drops ~10x the hidden layer's, so
#: at 0.25 the hidden layer learns ~10x slower than it can (docs/classification.md has the measurements)
DRN_LR_FRACTION = 2.5
#: a Shockley diode's saturation current (A) in ``deep_resistive_network(..., diode="shockley")``
DRN_IS = 1e-12


def deep_resistive_network(sizes, seed: int = 0, diode: str = "ideal", g_min: float = DRN_G_MIN,
                           g_max: float = DRN_G_MAX, g_init: float = DRN_G_INIT) -> Circuit:
    """A deep resistive network (DRN) of widths ``sizes`` = (d, H_1, ..., H_L, C), seeded.

    Sources: Kendall et al. (2020), "Training end-to-end analog neural networks with equilibrium
    propagation" (arXiv:2006.01981); Scellier (ICML 2024), "A fast algorithm to simulate nonlinear
    resistive networks" (PMLR 235; repository ``energy-based-learning``, ``papers/fast-drn``).

    - Inputs: the classification encoding's 2d + 2 layout (:func:`hil.classify.layout`): a pair
      ``x{j}p`` = +z_j, ``x{j}n`` = -z_j per feature (signed weights from positive conductances), then
      the bias pair ``bp`` = +1 V and ``bn`` = -1 V.
    - Hidden layer k: H_k nodes ``h{k}_{j}``; the first ceil(H_k / 2) excitatory, held at V >= 0 by a
      diode from ground (anode ground), the others inhibitory, held at V <= 0 by a diode to ground
      (anode the node): Scellier's DRN, whose units are clipped at 0 V (Kendall et al. bias their
      diodes' other ends; here that bias is ground). ``diode``: "ideal" (Scellier's: a short or an
      open, embedded substrate only) or "shockley" (I_s = :data:`DRN_IS`, n = 1: what ngspice simulates).
    - Outputs: a pair ``y{c}p``, ``y{c}n`` per class, read differentially; linear nodes (no diode).
    - Edges (trainable, g in [g_min, g_max]): every node of a layer to every node of the next, and the
      bias pair to every node of every later layer (with the first layer's they make each node's
      signed bias current, Scellier's per-unit bias). No amplifier between layers: Scellier's DRNs
      join their layers directly (Kendall et al.'s bidirectional amplifiers restore the signal between
      layers; a one-way VCVS would break the reciprocity EP needs).

    Initial conductances: g = g_init u / sqrt(fan-in), u ~ U(0, 1), clipped into [g_min, g_max]: the
    positive half of Scellier's initialisation (Kaiming-uniform, the negative half clamped to 0).
    Of the (2d + 2) H_1 + sum_k (H_k + 2) H_(k+1) edges, (H_L + 2) 2C join the outputs. The file's
    ``lr_fraction`` = :data:`DRN_LR_FRACTION` sets the default step (see there).
    """
    from hil.circuit import circuit_from_dict
    from hil.classify import layout

    sizes = tuple(int(x) for x in sizes)
    if len(sizes) < 3 or min(sizes) < 1 or sizes[-1] < 2:
        raise ValueError(f"drn: --sizes {','.join(map(str, sizes))}: expected N_in,H1[,H2...],N_classes: at "
                         "least one hidden layer, every width >= 1 and at least 2 classes (e.g. 4,8,3)")
    if diode not in ("ideal", "shockley"):
        raise ValueError(f"drn: --diode {diode!r}: expected ideal or shockley")
    d, hidden, C = sizes[0], sizes[1:-1], sizes[-1]
    rng = np.random.default_rng(seed)
    bias = ["bp", "bn"]
    ins = [f"x{j + 1}{s}" for j in range(d) for s in ("p", "n")] + bias
    layout(len(ins), d, "drn")  # the encoding reads these inputs as pairs and a bias pair
    layers = [ins] + [[f"h{k + 1}_{j + 1}" for j in range(H)] for k, H in enumerate(hidden)] + \
        [[f"y{c + 1}{s}" for c in range(C) for s in ("p", "n")]]
    edges = []
    for k in range(1, len(layers)):
        pre = layers[k - 1] + (bias if k > 1 else [])
        g = np.clip(g_init * rng.uniform(0.0, 1.0, (len(pre), len(layers[k]))) / np.sqrt(len(pre)), g_min, g_max)
        edges += [{"name": f"G{k}_{a}_{b}", "a": a, "b": b, "g": float(g[i, j])}
                  for i, a in enumerate(pre) for j, b in enumerate(layers[k])]
    diodes = []
    for k, H in enumerate(hidden):
        for j, h in enumerate(layers[k + 1]):
            t = {"name": f"D{h}", "a": "gnd", "b": h} if j < (H + 1) // 2 else {"name": f"D{h}", "a": h, "b": "gnd"}
            diodes.append({**t, "model": "ideal"} if diode == "ideal" else {**t, "is": DRN_IS, "n": 1.0})
    spec = ",".join(map(str, sizes))
    data = {"name": "drn" + "x".join(map(str, sizes)) + f"_s{seed}", "ground": "gnd", "inputs": ins,
            "outputs": layers[-1], "g_min": g_min, "g_max": g_max, "lr_fraction": DRN_LR_FRACTION, "edge": edges, "diode": diodes}
    return circuit_from_dict(data, source=f"deep_resistive_network({spec}, seed={seed}, diode={diode})")
