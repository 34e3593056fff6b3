"""Layered circuits with one-way stages (docs/math.md, section 8).

A layered circuit is a chain of crossbar layers k = 0..L-1, layer k mapping
d_k input lines to d_(k+1) summing lines:

- crosspoint (j, i) is a differential pair: g+_ji (S) from input line i (at
  +h_i volts) and g-_ji from its inverted copy (at -h_i) to summing line j;
- summing line j is held at 0 V (virtual ground) by a transimpedance stage, an
  op-amp with feedback resistance R_j (ohms): its output is t_j = -R_j I_j,
  I_j = sum_i (g+_ji - g-_ji) h_i;
- a one-way buffer (unity inverting stage, resistors r_inv) turns t_j into
  +h'_j = R_j I_j, and t_j itself is the inverted copy -h'_j the next layer needs.

So layer k computes h_(k+1) = W_k h_k with the signed weight
W_k = diag(R) (G+ - G-) (dimensionless, volts per volt), and the circuit
o = W_(L-1) ... W_0 x. Inputs x are driven with both polarities (a DAC pair).
Nothing downstream of a buffer can move a voltage upstream of it.

The file format is TOML with ``kind = "layered"``::

    kind = "layered"
    name = "layered8x3x6"
    g_min = 1.0e-6          # siemens, bounds on every g+ and g-
    g_max = 1.0e-4
    r_inv = 1.0e4           # ohms, the buffers' resistors (optional)
    [[layer]]
    name = "W"
    r_f = [1.0e5, 1.0e5, 1.0e5]            # ohms, one per summing line
    g_plus = [[...], ...]                   # d_(k+1) rows of d_k siemens
    g_minus = [[...], ...]

Errors are :class:`hil.circuit.CircuitError` with ``file:line:`` and the layer,
row and column.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hil.circuit import NAME_RE, CircuitError, _toml_str, circuit_name

DEFAULT_R_INV = 1e4


@dataclass(frozen=True)
class OpAmp:
    """An op-amp model: open-loop gain A (V/V) and differential input resistance r_in (ohms).

    The output is an ideal voltage source A (V+ - V-); r_in joins the two inputs.
    ``OpAmp()`` is the ideal one (A = r_in = inf: a nullor, V- = V+).
    """

    gain: float = math.inf
    r_in: float = math.inf


@dataclass(frozen=True)
class LayeredCircuit:
    """Crossbar layers joined by transimpedance stages and one-way buffers.

    Attributes
    ----------
    name : str
    layer_names : tuple of str
    g_plus, g_minus : tuples of (d_(k+1), d_k) arrays, siemens.
    r_f : tuple of (d_(k+1),) arrays, feedback resistances, ohms.
    g_min, g_max : bounds on every conductance, siemens.
    r_inv : the buffers' resistors, ohms (they set no weight: the buffer's gain is -1).
    source : where it came from.
    """

    name: str
    layer_names: tuple
    g_plus: tuple
    g_minus: tuple
    r_f: tuple
    g_min: float = 1e-6
    g_max: float = 1e-4
    r_inv: float = DEFAULT_R_INV
    source: str = "<memory>"

    kind = "layered"

    # -- sizes ------------------------------------------------------------------
    @property
    def sizes(self) -> tuple:
        """(d_0, d_1, ..., d_L): input width, hidden widths, output width."""
        return (self.g_plus[0].shape[1],) + tuple(gp.shape[0] for gp in self.g_plus)

    @property
    def n_layers(self) -> int:
        return len(self.g_plus)

    @property
    def n_params(self) -> int:
        """P = 2 sum_k d_k d_(k+1): every g+ and g-."""
        return 2 * sum(gp.size for gp in self.g_plus)

    @property
    def g(self) -> np.ndarray:
        """All conductances as one vector (P,), siemens: per layer g+ row-major, then g- row-major."""
        return pack(self.g_plus, self.g_minus)

    @property
    def param_names(self) -> tuple:
        """Names of the entries of :attr:`g`: ``W+[j,i]`` / ``W-[j,i]`` (layer, sign, summing line j, input line i)."""
        names = []
        for nm, gp in zip(self.layer_names, self.g_plus):
            for s in "+-":
                names += [f"{nm}{s}[{j},{i}]" for j in range(gp.shape[0]) for i in range(gp.shape[1])]
        return tuple(names)

    def unpack(self, g) -> tuple:
        """(g_plus list, g_minus list) from a vector laid out as :attr:`g` (siemens)."""
        g = np.asarray(g, float)
        if g.shape != (self.n_params,):
            raise CircuitError(f"{self.source}: expected {self.n_params} conductances for layered circuit "
                               f"'{self.name}', got shape {g.shape}")
        gps, gms, k = [], [], 0
        for gp in self.g_plus:
            gps.append(g[k:k + gp.size].reshape(gp.shape)); k += gp.size
            gms.append(g[k:k + gp.size].reshape(gp.shape)); k += gp.size
        return gps, gms

    def weights(self, g=None) -> list:
        """W_k = diag(R_k) (G+_k - G-_k), (d_(k+1), d_k), volts per volt, at ``g`` (default: the stored g)."""
        gps, gms = (self.g_plus, self.g_minus) if g is None else self.unpack(g)
        return [r[:, None] * (gp - gm) for r, gp, gm in zip(self.r_f, gps, gms)]

    def check_g(self, g) -> np.ndarray:
        """``g`` as a float vector (P,) of positive finite siemens; CircuitError naming the crosspoint otherwise."""
        g = np.asarray(g, float)
        self.unpack(g)
        bad = np.flatnonzero(~np.isfinite(g) | (g <= 0))
        if bad.size:
            raise CircuitError(f"{self.source}: crosspoint {self.param_names[bad[0]]}: conductance "
                               f"{float(g[bad[0]])!r} is not a positive finite number")
        return g

    def with_g(self, g) -> "LayeredCircuit":
        gps, gms = self.unpack(self.check_g(g))
        return LayeredCircuit(self.name, self.layer_names, tuple(x.copy() for x in gps), tuple(x.copy() for x in gms),
                              self.r_f, self.g_min, self.g_max, self.r_inv, self.source)

    # -- serialisation --------------------------------------------------------------
    def to_toml(self) -> str:
        """The circuit as a layered circuit file (round-trips through :func:`hil.circuit.load_any`)."""
        mat = lambda A: "[" + ", ".join("[" + ", ".join(repr(float(v)) for v in row) + "]" for row in A) + "]"
        lines = ['kind = "layered"', f"name = {_toml_str(self.name)}", f"g_min = {self.g_min!r}",
                 f"g_max = {self.g_max!r}", f"r_inv = {self.r_inv!r}", ""]
        for nm, gp, gm, r in zip(self.layer_names, self.g_plus, self.g_minus, self.r_f):
            lines += ["[[layer]]", f"name = {_toml_str(nm)}",
                      "r_f = [" + ", ".join(repr(float(v)) for v in r) + "]",
                      f"g_plus = {mat(gp)}", f"g_minus = {mat(gm)}", ""]
        return "\n".join(lines)

    def save(self, path, header: str | None = None) -> Path:
        """Write the circuit as TOML to ``path`` atomically (``header``: a first comment line); returns the path."""
        from hil.runs import atomic_write
        path = Path(path)
        atomic_write(path, (f"# {header}\n" if header else "") + self.to_toml())
        return path


def pack(g_plus, g_minus) -> np.ndarray:
    """The parameter vector: per layer g+ row-major then g- row-major (siemens)."""
    return np.concatenate([np.concatenate([gp.ravel(), gm.ravel()]) for gp, gm in zip(g_plus, g_minus)])


# -- reading and validating -------------------------------------------------------

def layered_from_dict(data: dict, source: str = "<memory>", text: str = "") -> LayeredCircuit:
    """Validate a parsed ``kind = "layered"`` file into a LayeredCircuit (CircuitError with file:line)."""
    lines = text.splitlines()
    heads = [i + 1 for i, ln in enumerate(lines) if re.match(r"^\s*\[\[\s*layer\s*\]\]", ln)]

    def at(key=None, layer=None):
        if layer is not None and layer < len(heads):
            start, stop = heads[layer], heads[layer + 1] if layer + 1 < len(heads) else len(lines) + 1
            for ln in range(start, stop - 1):
                if key is not None and re.match(rf"^\s*{re.escape(key)}\s*=", lines[ln]):
                    return f"{source}:{ln + 1}"
            return f"{source}:{start}"
        for i, ln in enumerate(lines):
            if key is not None and re.match(rf"^\s*{re.escape(key)}\s*=", ln):
                return f"{source}:{i + 1}"
        return source

    known = {"kind", "name", "g_min", "g_max", "r_inv", "layer"}
    for k in data:
        if k not in known:
            raise CircuitError(f"{at(k)}: unknown key '{k}' in a layered circuit (expected one of "
                               f"{', '.join(sorted(known))})")
    name = circuit_name(data, source, at)
    g_min = _positive(data.get("g_min", 1e-6), f"{at('g_min')}: g_min", "siemens")
    g_max = _positive(data.get("g_max", 1e-4), f"{at('g_max')}: g_max", "siemens")
    if not g_min < g_max:
        raise CircuitError(f"{at('g_min')}: g_min = {g_min} must be below g_max = {g_max}")
    r_inv = _positive(data.get("r_inv", DEFAULT_R_INV), f"{at('r_inv')}: r_inv", "ohms")
    layers = data.get("layer")
    if not isinstance(layers, list) or not layers:
        raise CircuitError(f"{at('layer') if 'layer' in data else source}: a layered circuit needs at least one "
                           "[[layer]] table")
    names, gps, gms, rfs, seen = [], [], [], [], {}
    d_in = None
    for k, layer in enumerate(layers):
        where = at(layer=k)
        if not isinstance(layer, dict):
            raise CircuitError(f"{where}: layer #{k + 1} is not a table")
        for key in layer:
            if key not in ("name", "r_f", "g_plus", "g_minus"):
                raise CircuitError(f"{at(key, k)}: layer #{k + 1}: unknown key '{key}' (expected name, r_f, "
                                   "g_plus, g_minus)")
        nm = layer.get("name", f"L{k + 1}")
        if not isinstance(nm, str) or not NAME_RE.match(nm):
            raise CircuitError(f"{at('name', k)}: layer name {nm!r} is not a plain identifier")
        if nm.lower() in seen:
            raise CircuitError(f"{at('name', k)}: duplicate layer name '{nm}' (first at {seen[nm.lower()]})")
        seen[nm.lower()] = where
        for key in ("r_f", "g_plus", "g_minus"):
            if key not in layer:
                raise CircuitError(f"{where}: layer '{nm}': missing '{key}'")
        gp = _matrix(layer["g_plus"], at("g_plus", k), nm, "g_plus", g_min, g_max)
        gm = _matrix(layer["g_minus"], at("g_minus", k), nm, "g_minus", g_min, g_max)
        if gm.shape != gp.shape:
            raise CircuitError(f"{at('g_minus', k)}: layer '{nm}': g_minus is {gm.shape[0]} x {gm.shape[1]}, "
                               f"g_plus {gp.shape[0]} x {gp.shape[1]}")
        if d_in is not None and gp.shape[1] != d_in:
            raise CircuitError(f"{at('g_plus', k)}: layer '{nm}': {gp.shape[1]} input lines, but the layer before "
                               f"has {d_in} summing lines")
        r = layer["r_f"]
        if not isinstance(r, list) or len(r) != gp.shape[0]:
            raise CircuitError(f"{at('r_f', k)}: layer '{nm}': r_f needs one resistance per summing line "
                               f"({gp.shape[0]}), got {len(r) if isinstance(r, list) else r!r}")
        rf = np.array([_positive(v, f"{at('r_f', k)}: layer '{nm}': r_f[{j}]", "ohms") for j, v in enumerate(r)])
        d_in = gp.shape[0]
        names.append(nm); gps.append(gp); gms.append(gm); rfs.append(rf)
    return LayeredCircuit(name, tuple(names), tuple(gps), tuple(gms), tuple(rfs), g_min, g_max, r_inv, source)


def _positive(v, what, unit) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise CircuitError(f"{what} = {v!r} is not a positive finite number ({unit})")
    return float(v)


def _matrix(rows, where, layer, key, g_min, g_max) -> np.ndarray:
    if not isinstance(rows, list) or not rows or not all(isinstance(r, list) and r for r in rows):
        raise CircuitError(f"{where}: layer '{layer}': {key} must be a non-empty list of non-empty rows")
    width = len(rows[0])
    for j, row in enumerate(rows):
        if len(row) != width:
            raise CircuitError(f"{where}: layer '{layer}': {key} row {j} has {len(row)} entries, row 0 has {width}")
        for i, v in enumerate(row):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise CircuitError(f"{where}: layer '{layer}': {key}[{j}][{i}] = {v!r} is not a positive finite "
                                   "conductance (siemens)")
            if not g_min <= v <= g_max:
                raise CircuitError(f"{where}: layer '{layer}': {key}[{j}][{i}] = {v!r} S is outside "
                                   f"[g_min, g_max] = [{g_min}, {g_max}]")
    return np.array(rows, float)


# -- generating ---------------------------------------------------------------------

def generate_layered(sizes, seed: int = 0, g_min: float = 1e-6, g_max: float = 1e-4, r_f: float = 1e5,
                     init: float = 0.1) -> LayeredCircuit:
    """A layered circuit of widths ``sizes`` = (d_0, ..., d_L), seeded.

    Every feedback resistance is ``r_f`` ohms; each pair sits symmetric about the
    middle conductance g_c = (g_min + g_max) / 2, g+- = g_c +- W / (2 r_f), with
    W_ji ~ N(0, (init / sqrt(d_k))^2) the initial weight (small, as in the
    factorisation experiments), clipped into the bounds.
    """
    sizes = tuple(int(x) for x in sizes)
    if len(sizes) < 2 or min(sizes) < 1:
        raise ValueError(f"--sizes {','.join(map(str, sizes))}: need at least an input and an output width, each >= 1")
    rng = np.random.default_rng(seed)
    gc = 0.5 * (g_min + g_max)
    gps, gms, rfs, names = [], [], [], []
    for k in range(len(sizes) - 1):
        W = rng.standard_normal((sizes[k + 1], sizes[k])) * init / np.sqrt(sizes[k])
        gps.append(np.clip(gc + W / (2 * r_f), g_min, g_max))
        gms.append(np.clip(gc - W / (2 * r_f), g_min, g_max))
        rfs.append(np.full(sizes[k + 1], float(r_f)))
        names.append(("W", "Z")[k] if len(sizes) == 3 else f"L{k + 1}")
    return LayeredCircuit("layered" + "x".join(map(str, sizes)) + f"_s{seed}", tuple(names), tuple(gps), tuple(gms),
                          tuple(rfs), g_min, g_max, DEFAULT_R_INV, f"generate_layered({sizes}, seed={seed})")


# -- solving ---------------------------------------------------------------------

def forward(c: LayeredCircuit, X, g=None) -> list:
    """The exact ideal solve: [h_0 = x, h_1, ..., h_L = o], each (N, d_k) volts, h_(k+1) = W_k h_k.

    ``X`` is (N, d_0) volts; ``g`` defaults to the stored conductances.
    """
    h = [np.atleast_2d(np.asarray(X, float))]
    for W in c.weights(g):
        h.append(h[-1] @ W.T)
    return h


def node_voltages(c: LayeredCircuit, X, g=None, opamp: OpAmp = OpAmp()) -> dict:
    """Kirchhoff's current law at every node of the circuit, with op-amps of model ``opamp`` (volts).

    An independent check of :func:`forward`: nodes per layer k are the summing
    lines s_j, the transimpedance outputs t_j, the buffers' inverting inputs
    a_j and outputs u_j (= +h_(k+1), j). Equations: KCL at s_j and a_j
    (crosspoints, feedback R_j, buffer resistors r_inv, op-amp input
    resistance to ground) and each op-amp's output V_out / A + V_- = 0.
    Returns {"s", "t", "a", "u"}: lists per layer of (N, d_(k+1)) arrays.
    """
    X = np.atleast_2d(np.asarray(X, float))
    gps, gms = (c.g_plus, c.g_minus) if g is None else c.unpack(g)
    g_in = 0.0 if math.isinf(opamp.r_in) else 1.0 / opamp.r_in
    inv_a = 0.0 if math.isinf(opamp.gain) else 1.0 / opamp.gain
    out = {"s": [], "t": [], "a": [], "u": []}
    plus, minus = X, -X  # the input lines' two polarities
    for gp, gm, R in zip(gps, gms, c.r_f):
        d = gp.shape[0]
        # unknowns [s, t, a, u] (4d); the layer's inputs are known (one-way: nothing later feeds back)
        A = np.zeros((4 * d, 4 * d))
        rhs = np.zeros((len(X), 4 * d))
        S, T, Aa, U = (np.arange(d) + q * d for q in range(4))
        gf, gi = 1.0 / R, 1.0 / c.r_inv
        # KCL at s_j: sum_i g+ (p_i - s) + g- (n_i - s) + gf (t - s) - g_in s = 0
        A[S, S] = -(gp.sum(1) + gm.sum(1) + gf + g_in)
        A[S, T] = gf
        rhs[:, S] = -(plus @ gp.T + minus @ gm.T)
        # TIA op-amp (+ input grounded, - input s): t / A + s = 0
        A[T, T], A[T, S] = inv_a, 1.0
        # KCL at a_j: gi (t - a) + gi (u - a) - g_in a = 0
        A[Aa, T], A[Aa, U], A[Aa, Aa] = gi, gi, -(2 * gi + g_in)
        # buffer op-amp: u / A + a = 0
        A[U, U], A[U, Aa] = inv_a, 1.0
        V = np.linalg.solve(A, rhs.T).T
        for key, idx in zip("stau", (S, T, Aa, U)):
            out[key].append(V[:, idx])
        plus, minus = V[:, U], V[:, T]
    return out


def outputs_kcl(c: LayeredCircuit, X, g=None, opamp: OpAmp = OpAmp()) -> np.ndarray:
    """o (N, d_L) volts from :func:`node_voltages`: the last buffer's outputs."""
    return node_voltages(c, X, g, opamp)["u"][-1]


def loss(c: LayeredCircuit, X, Y, g=None) -> float:
    """C = mean over examples of 1/2 ||o - y||^2 (V^2)."""
    r = forward(c, X, g)[-1] - np.atleast_2d(Y)
    return float(np.mean(0.5 * np.sum(r * r, axis=1)))


def weight_gradient_to_g(c: LayeredCircuit, dW) -> np.ndarray:
    """dC/dg from dC/dW_k (list): dC/dg+_ji = R_j dC/dW_ji, dC/dg-_ji = -R_j dC/dW_ji (V^2/S)."""
    return pack([r[:, None] * d for r, d in zip(c.r_f, dW)], [-r[:, None] * d for r, d in zip(c.r_f, dW)])


def gradient(c: LayeredCircuit, X, Y, g=None) -> np.ndarray:
    """The exact dC/dg (P,), V^2/S: backpropagation with the transposed weights.

    delta_L = o - y; delta_k = W_k^T delta_(k+1); dC/dW_k = mean delta_(k+1) h_k^T.
    """
    h = forward(c, X, g)
    W = c.weights(g)
    delta = h[-1] - np.atleast_2d(Y)
    dW = [None] * len(W)
    for k in range(len(W) - 1, -1, -1):
        dW[k] = delta.T @ h[k] / len(delta)
        delta = delta @ W[k]
    return weight_gradient_to_g(c, dW)


def jacobian(c: LayeredCircuit, X, g=None) -> np.ndarray:
    """do/dg stacked over examples: (N d_L, P), volts per siemens.

    do/dW_k[j, i] = A_k[:, j] h_k[i] with A_k = W_(L-1) ... W_(k+1).
    """
    h = forward(c, X, g)
    W = c.weights(g)
    N, n = h[-1].shape
    blocks = []
    A = np.eye(n)
    per = [None] * len(W)
    for k in range(len(W) - 1, -1, -1):
        Jk = np.einsum("oj,bi->boji", A, h[k]).reshape(N * n, -1)  # d o / d W_k
        per[k] = Jk * np.repeat(c.r_f[k], h[k].shape[1])[None, :]
        A = A @ W[k]
    for Jk in per:
        blocks += [Jk, -Jk]
    return np.concatenate(blocks, axis=1)
