"""The circuit: a validated graph of nodes, conductance edges, sources and outputs.

Notation follows docs/math.md, section 1: nodes
0..n-1, edges e = (a, b) with conductance g_e > 0 (siemens), incidence B with
row e = +1 at a and -1 at b. S = the source nodes (ground first, then the
inputs, in file order), F = every other node, O = the outputs (a subset of F).

A circuit file is TOML::

    name = "divider"
    ground = "gnd"
    inputs = ["in"]
    outputs = ["out"]
    g_min = 1.0e-5        # optional, siemens
    g_max = 1.0e-2
    [[edge]]
    name = "R1"
    a = "in"
    b = "out"
    g = 1.0e-3
    [[vccs]]              # optional: voltage-controlled current sources (SPICE G)
    name = "G1"
    out_p = "out"         # gm (V_ctrl_p - V_ctrl_n) amperes leave out_p through
    out_n = "gnd"         # the element and enter out_n
    ctrl_p = "in"
    ctrl_n = "gnd"
    gm = 2.0e-4           # siemens, may be negative
    fixed = false         # optional: true keeps gm out of the trained parameters

A circuit may also say how large a default step suits it, ``lr_fraction = 2.5`` (optional,
default 0.25): the training loop's default learning rate is lr_fraction / lambda_max of the loss's
Gauss-Newton curvature (:mod:`hil.train`); ``hil generate drn`` writes one.

The trainable parameter vector is theta = (g, then the gm of every VCCS that is
not fixed), siemens; a circuit without VCCS has theta = g. Trainable gm stay in
[-gm_max, gm_max] (top-level ``gm_max``, default g_max).

Every validation error is a :class:`CircuitError` whose message starts with
``file:line:`` and names the offending edge or node.
"""

from __future__ import annotations

import bisect
import math
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from hil.elements import ElementError

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

#: Names are plain identifiers: they reach SPICE decks and SCPI streams, so
#: nothing but letters, digits and underscores, starting with a letter.
NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,31}$")
#: A circuit's own name may also hold '.' and '-' (generated names: ``random16_d3.2_s5``), never a
#: slash, a quote or a line break: it reaches deck titles, file contents and messages.
CIRCUIT_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,63}$")

DEFAULT_G_MIN = 1e-6
DEFAULT_G_MAX = 1.0


class CircuitError(ValueError):
    """A circuit definition that cannot be used; the message names file, line and element."""


@dataclass(frozen=True)
class Circuit:
    """A resistor network with voltage-source nodes and output nodes.

    Attributes
    ----------
    name : str
    nodes : tuple of str, all node names; index i is node i.
    edge_names : tuple of str
    a, b : int arrays (m,), the endpoints of each edge (B[e, a] = +1, B[e, b] = -1).
    g : float array (m,), the conductances stored with the circuit, siemens.
    ground : int, the node held at 0 V.
    inputs : int tuple, the nodes held by input voltage sources.
    outputs : int tuple, the output nodes (free nodes that are read).
    g_min, g_max : float, bounds on every trainable conductance, siemens.
    source : str, where the circuit came from (a path, or a generator call).
    vccs_names : tuple of str, the voltage-controlled current sources (docs/math.md, section 7.1).
    vccs_nodes : int array (k, 4): out_p, out_n, ctrl_p, ctrl_n of each VCCS.
    gm : float array (k,), transconductances, siemens (any sign).
    gm_fixed : bool array (k,), True where gm is not trained.
    gm_max : float, bound on |gm| of a trainable VCCS, siemens (None: g_max).
    calibration : dict or None, a calibrated circuit's per-edge record (``hil calibrate``): ``written``
        (S, what the bench was told), ``scale`` (actual / written, 1) and ``sigma`` (the
        scale's standard uncertainty, 1), plus ``bench`` (the bench file it came from).
    edge_fixed : bool array (m,), True for a resistor that is not trained: it stays in theta (theta[:m] is
        always the conductances) with bounds [g, g], so a step never moves it.
    biases : int tuple, nodes held at constant voltages ``bias_v`` (V) for every example: sources, like inputs.
    elements : tuple of :class:`hil.elements.Kind`, the other element kinds (diodes, channels, VCVS), one
        group per kind in :data:`hil.elements.KINDS` order; empty groups are left out.
    """

    name: str
    nodes: tuple
    edge_names: tuple
    a: np.ndarray
    b: np.ndarray
    g: np.ndarray
    ground: int
    inputs: tuple
    outputs: tuple
    g_min: float = DEFAULT_G_MIN
    g_max: float = DEFAULT_G_MAX
    source: str = "<memory>"
    vccs_names: tuple = ()
    vccs_nodes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), int))
    gm: np.ndarray = field(default_factory=lambda: np.zeros(0))
    gm_fixed: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    gm_max: float | None = None
    _cache: dict = field(default_factory=dict, compare=False, repr=False)
    calibration: dict | None = field(default=None, compare=False, repr=False)
    edge_fixed: np.ndarray | None = None
    biases: tuple = ()
    bias_v: np.ndarray = field(default_factory=lambda: np.zeros(0))
    elements: tuple = ()
    #: the default step's fraction of 1 / lambda_max (:func:`hil.train.default_lr`); None: the loop's own
    lr_fraction: float | None = None
    #: the weight matrices a generator remembers (:mod:`hil.matrices`, ``[[matrix]]`` tables): which edges form
    #: which signed matrix W = diag(R) (G+ - G-)
    matrices: tuple = ()

    def __post_init__(self):
        if self.edge_fixed is None:
            object.__setattr__(self, "edge_fixed", np.zeros(len(self.edge_names), bool))

    # -- sizes and index sets ------------------------------------------------
    @property
    def n(self) -> int:
        """Number of nodes."""
        return len(self.nodes)

    @property
    def m(self) -> int:
        """Number of edges."""
        return len(self.edge_names)

    @property
    def k(self) -> int:
        """Number of VCCS elements."""
        return len(self.vccs_names)

    @property
    def reciprocal(self) -> bool:
        """True when A = dF/dV is symmetric at every state: no VCCS, no VCVS, every channel's gate at the midpoint."""
        return self.k == 0 and all(grp.reciprocal for grp in self.elements)

    @property
    def linear(self) -> bool:
        """True when the circuit is linear in V (edges, VCCS, VCVS and sources only): one linear solve."""
        return all(grp.linear for grp in self.elements)

    def group(self, kind):
        """The circuit's group of ``kind`` (a :class:`hil.elements.Kind` subclass), or None."""
        return next((grp for grp in self.elements if type(grp) is kind), None)

    @property
    def trainable_elements(self) -> tuple:
        """((group, indices), ...) of the element kinds beyond edges and VCCS with trained parameters, theta's order."""
        return tuple((grp, grp.trainable) for grp in self.elements if len(grp.trainable))

    def element_groups(self, theta=None) -> list:
        """Every element as kind groups (edges and VCCS included) at parameters theta: what the solver stamps."""
        from hil.elements import VCCS, Resistor
        g, gm = self.split(self.theta if theta is None else theta)
        out = [Resistor(self.edge_names, np.column_stack([self.a, self.b]), {"g": g}, self.edge_fixed)]
        if self.k:
            out.append(VCCS(self.vccs_names, self.vccs_nodes, {"gm": gm}, self.gm_fixed))
        theta = self.theta if theta is None else np.asarray(theta, float)
        pos = self.m + len(self.trainable_vccs)
        for grp in self.elements:
            j = grp.trainable
            if len(j) and theta.shape == (self.n_params,):
                vals = grp.values[grp.param].copy()
                vals[j] = theta[pos:pos + len(j)]
                grp = grp.with_values(**{grp.param: vals})
                pos += len(j)
            out.append(grp)
        return out

    @property
    def trainable_vccs(self) -> np.ndarray:
        """Indices of the VCCS whose gm is trained, in file order."""
        return np.flatnonzero(~np.asarray(self.gm_fixed, bool))

    @property
    def n_params(self) -> int:
        """Length of theta: m conductances, the trainable transconductances, then the other kinds' parameters."""
        return self.m + len(self.trainable_vccs) + sum(len(j) for _, j in self.trainable_elements)

    @property
    def param_names(self) -> tuple:
        """Names of theta's entries: the edges, the trainable VCCS, then the trainable elements of other kinds."""
        return (tuple(self.edge_names) + tuple(self.vccs_names[j] for j in self.trainable_vccs)
                + tuple(grp.names[i] for grp, j in self.trainable_elements for i in j))

    @property
    def theta(self) -> np.ndarray:
        """theta = (g, gm of the trainable VCCS, then e.g. the vg of trainable channels): siemens, then volts."""
        return np.concatenate([self.g, np.asarray(self.gm, float)[self.trainable_vccs]]
                              + [grp.values[grp.param][j] for grp, j in self.trainable_elements])

    def split(self, theta) -> tuple:
        """(g (m,), gm (k,)) from theta (n_params,) siemens; a vector of m conductances keeps the stored gm."""
        theta = np.asarray(theta, dtype=float)
        gm = np.array(self.gm, dtype=float)
        if theta.shape == (self.m,):
            return theta, gm
        t = len(self.trainable_vccs)
        gm[self.trainable_vccs] = theta[self.m:self.m + t]
        return theta[:self.m], gm

    def bounds(self) -> tuple:
        """(lo, hi), (n_params,) each: [g_min, g_max] for conductances ([g, g] for a fixed edge),
        [-gm_max, gm_max] for gm (siemens), [vg_min, vg_max] for a channel's gate (volts)."""
        t = len(self.trainable_vccs)
        gmx = self.gm_max if self.gm_max is not None else self.g_max
        fx = np.asarray(self.edge_fixed, bool)
        lo = np.where(fx, self.g, self.g_min)
        hi = np.where(fx, self.g, self.g_max)
        extra = [grp.bounds() for grp, _ in self.trainable_elements]
        return (np.concatenate([lo, np.full(t, -gmx)] + [b[0] for b in extra]),
                np.concatenate([hi, np.full(t, gmx)] + [b[1] for b in extra]))

    @property
    def sources(self) -> np.ndarray:
        """S: the nodes held by voltage sources, ground first, then the inputs, then the biases."""
        return np.array((self.ground,) + tuple(self.inputs) + tuple(self.biases), dtype=int)

    @property
    def free(self) -> np.ndarray:
        """F: every node not in S, in node order."""
        if "free" not in self._cache:
            mask = np.ones(self.n, bool)
            mask[self.sources] = False
            self._cache["free"] = np.flatnonzero(mask)
        return self._cache["free"]

    @property
    def out_in_free(self) -> np.ndarray:
        """Positions of the outputs O inside F (the selector P as indices)."""
        if "out_in_free" not in self._cache:
            pos = {int(v): i for i, v in enumerate(self.free)}
            self._cache["out_in_free"] = np.array([pos[o] for o in self.outputs], dtype=int)
        return self._cache["out_in_free"]

    def incidence(self) -> sp.csr_matrix:
        """B, the m x n incidence matrix (row e: +1 at a_e, -1 at b_e)."""
        if "B" not in self._cache:
            rows = np.repeat(np.arange(self.m), 2)
            cols = np.column_stack([self.a, self.b]).ravel()
            vals = np.tile([1.0, -1.0], self.m)
            self._cache["B"] = sp.csr_matrix((vals, (rows, cols)), shape=(self.m, self.n))
        return self._cache["B"]

    def drops(self, V: np.ndarray) -> np.ndarray:
        """dV = B V along the last axis: V (..., n) volts -> (..., m) volts (V_a - V_b)."""
        return V[..., self.a] - V[..., self.b]

    def control_drops(self, V: np.ndarray) -> np.ndarray:
        """V_ctrl_p - V_ctrl_n of each VCCS: V (..., n) -> (..., k) volts."""
        nd = self.vccs_nodes
        return V[..., nd[:, 2]] - V[..., nd[:, 3]]

    def output_drops(self, V: np.ndarray) -> np.ndarray:
        """V_out_p - V_out_n of each VCCS: V (..., n) -> (..., k) volts."""
        nd = self.vccs_nodes
        return V[..., nd[:, 0]] - V[..., nd[:, 1]]

    def signal_products(self, V: np.ndarray, W: np.ndarray) -> np.ndarray:
        """W^T dF/dtheta at state V, per example: (..., n_params), amperes per siemens times W's unit.

        F is the current leaving each node through the elements (docs/math.md, section 7.1), so
        dF/dg_e = b_e dV_e and dF/dgm_j = (e_out_p - e_out_n) (V_ctrl_p - V_ctrl_n).
        Contracted with a node vector W: dW_e dV_e for an edge, (W_out_p - W_out_n)
        (V_ctrl_p - V_ctrl_n) for a trainable VCCS. dC/dtheta = -lambda^T dF/dtheta.
        """
        parts = [self.drops(V) * self.drops(W)]
        if len(self.trainable_vccs):
            j = self.trainable_vccs
            parts.append(self.control_drops(V)[..., j] * self.output_drops(W)[..., j])
        if self.trainable_elements:  # any kind: sum over its terminals of W_t d i_t / d theta at V
            for grp, j in self.trainable_elements:
                di = grp.dparam(V[..., grp.nodes])
                parts.append(np.sum(di * W[..., grp.nodes], axis=-1)[..., j])
        return np.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0]

    def node(self, name: str) -> int:
        """Index of node ``name``; CircuitError naming the node when unknown."""
        try:
            return self.nodes.index(name)
        except ValueError:
            raise CircuitError(f"{self.source}: unknown node '{name}' (nodes: {', '.join(self.nodes)})") from None

    @property
    def input_names(self) -> list:
        return [self.nodes[i] for i in self.inputs]

    @property
    def output_names(self) -> list:
        return [self.nodes[i] for i in self.outputs]

    def check_g(self, g) -> np.ndarray:
        """``g`` as theta (n_params,): positive finite conductances then finite gm (S).

        CircuitError naming the edge or VCCS otherwise. Without trainable VCCS this is (m,).
        """
        g = np.asarray(g, dtype=float)
        if g.shape != (self.n_params,):
            what = "conductances" if self.n_params == self.m else \
                f"parameters ({self.m} conductances, then {self.n_params - self.m} transconductances)"
            raise CircuitError(f"{self.source}: expected {self.n_params} {what} for circuit '{self.name}', "
                               f"got shape {g.shape}")
        bad = np.flatnonzero(~np.isfinite(g[:self.m]) | (g[:self.m] <= 0))
        if bad.size:
            e = bad[0]
            raise CircuitError(f"{self.source}: edge '{self.edge_names[e]}': conductance {float(g[e])!r} "
                               "is not a positive finite number")
        bad = np.flatnonzero(~np.isfinite(g[self.m:]))
        if bad.size:
            e = self.m + bad[0]
            t = len(self.trainable_vccs)
            what = (f"vccs '{self.param_names[e]}': transconductance" if bad[0] < t
                    else f"element '{self.param_names[e]}': parameter")
            raise CircuitError(f"{self.source}: {what} {float(g[e])!r} is not a finite number")
        return g

    def with_g(self, g) -> "Circuit":
        """The same circuit with parameters theta = ``g`` (siemens), validated; (m,) changes the edges only."""
        g = np.asarray(g, dtype=float)
        if g.shape == (self.m,) and self.n_params != self.m:
            g = np.concatenate([g, self.theta[self.m:]])
        g = self.check_g(g)
        edges, gm = self.split(g)
        groups = self.element_groups(g)[1 + bool(self.k):]
        return replace(self, g=edges.copy(), gm=gm, calibration=None,  # as before: a record of other parts
                       elements=tuple(groups))

    # -- serialisation ---------------------------------------------------------
    def to_toml(self) -> str:
        """The circuit as a TOML circuit file (round-trips through :func:`load_circuit`)."""
        q = _toml_str
        lines = [f"name = {q(self.name)}", f"ground = {q(self.nodes[self.ground])}",
                 "inputs = [" + ", ".join(q(self.nodes[i]) for i in self.inputs) + "]",
                 "outputs = [" + ", ".join(q(self.nodes[i]) for i in self.outputs) + "]",
                 f"g_min = {self.g_min!r}", f"g_max = {self.g_max!r}"]
        lines += ([f"lr_fraction = {self.lr_fraction!r}"] if self.lr_fraction is not None else []) + [""]
        for e in range(self.m):
            lines += ["[[edge]]", f"name = {q(self.edge_names[e])}", f"a = {q(self.nodes[self.a[e]])}",
                      f"b = {q(self.nodes[self.b[e]])}", f"g = {float(self.g[e])!r}"]
            lines += ["fixed = true", ""] if self.edge_fixed[e] else [""]
        if self.k and self.gm_max is not None:
            lines.insert(6, f"gm_max = {self.gm_max!r}")
        for j in range(self.k):
            nd = [q(self.nodes[i]) for i in self.vccs_nodes[j]]
            lines += ["[[vccs]]", f"name = {q(self.vccs_names[j])}", f"out_p = {nd[0]}", f"out_n = {nd[1]}",
                      f"ctrl_p = {nd[2]}", f"ctrl_n = {nd[3]}", f"gm = {float(self.gm[j])!r}"]
            lines += ["fixed = true", ""] if self.gm_fixed[j] else [""]
        for i, v in zip(self.biases, self.bias_v):
            lines += ["[[bias]]", f"node = {q(self.nodes[i])}", f"v = {float(v)!r}", ""]
        for grp in self.elements:
            for j in range(len(grp)):
                lines += grp.toml(j, self.nodes)
        if self.matrices:
            from hil.matrices import toml
            for mat in self.matrices:
                lines += toml(mat, self.edge_names, self.nodes)
        if self.calibration:
            cal = self.calibration
            lines += ["# per edge, in the order of the [[edge]] tables: actual = scale x written", "[calibration]",
                      f"bench = {q(str(cal.get('bench', '')))}"]
            lines += [f"{k} = [" + ", ".join(repr(float(v)) for v in cal[k]) + "]" for k in CALIBRATION_ARRAYS]
            lines.append("")
        return "\n".join(lines)

    def save(self, path, header: str | None = None) -> Path:
        """Write the circuit as TOML to ``path`` atomically (``header``: a first comment line); returns the path."""
        from hil.runs import atomic_write
        path = Path(path)
        atomic_write(path, (f"# {header}\n" if header else "") + self.to_toml())
        return path


def _toml_str(s: str) -> str:
    # Names are validated identifiers; the escape is for circuit names only.
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


# -- building and validating -------------------------------------------------

_INDEXED = [None, None]  # the text last indexed, held by identity (comparing contents would cost a pass), and its index


def _text_index(text: str) -> tuple:
    """The index of ``text`` (:func:`_build_index`), built once per text object."""
    if _INDEXED[0] is not text:
        _INDEXED[:] = [text, _build_index(text)]
    return _INDEXED[1]


def _build_index(text: str) -> tuple:
    """One pass over a file's lines: (lines, 1-based lines of every table header, {array-table name:
    its [[name]] header lines}, {key: the first line that sets it})."""
    lines = text.splitlines()
    headers, tables, keys = [], {}, {}
    for i, line in enumerate(lines):
        if _HEADER_RE.match(line):
            headers.append(i + 1)
            m = _ARRAY_TABLE_RE.match(line)
            if m:
                tables.setdefault(m.group(1), []).append(i + 1)
            continue
        m = _KEY_RE.match(line)
        if m:
            keys.setdefault(m.group(1), i + 1)
    return lines, headers, tables, keys


_HEADER_RE = re.compile(r"^\s*\[")
_ARRAY_TABLE_RE = re.compile(r"^\s*\[\[\s*([^\s\]]+)\s*\]\]")
_KEY_RE = re.compile(r"^\s*([^\s=\[]+)\s*=")


def _edge_lines(text: str, table: str = "edge") -> list:
    """1-based line numbers of each ``[[table]]`` header (``[[edge]]`` by default), in order."""
    return list(_text_index(text)[2].get(table, ()))


def _table_end(text: str, start: int) -> int:
    """The 1-based line after the table whose header is at ``start``: the next table header or the end."""
    lines, headers, _, _ = _text_index(text)
    k = bisect.bisect_right(headers, start)
    return headers[k] if k < len(headers) else len(lines) + 1


def _key_line(text: str, key: str) -> int:
    """The 1-based line that first sets ``key`` (1 if none does)."""
    return _text_index(text)[3].get(key, 1)


def load_circuit(path) -> Circuit:
    """Read and validate a circuit file (TOML). A bare name finds a shipped circuit.

    Raises CircuitError with ``file:line:`` and the offending edge or node.
    """
    return load_any(path)


def load_any(path):
    """A circuit file as a :class:`Circuit`. A run directory or one of its checkpoints stands for
    the trained circuit it holds (:func:`hil.runs.trained_circuit`)."""
    p = Path(path)
    if p.is_dir() or (p.suffix == ".npz" and p.is_file()):
        from hil.runs import trained_circuit
        return trained_circuit(p, load_any)
    if not p.exists():
        from hil.circuits import shipped_path
        found = shipped_path(str(path))
        if found is None:
            raise CircuitError(f"{path}: no such circuit file (and no shipped circuit of that name; see `hil circuits`)")
        p = found
    text = p.read_text()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CircuitError(f"{p}: not valid TOML: {exc}") from None
    except RecursionError:  # arrays or tables nested thousands deep
        raise CircuitError(f"{p}: not valid TOML: nested too deeply to read") from None
    kind = data.pop("kind", None)
    if kind == "layered":  # the matrix format of earlier versions: the same circuit is now written in elements
        raise CircuitError(f"{p}:{_key_line(text, 'kind')}: kind = \"layered\" is the matrix format of earlier hil "
                           "versions; a layered circuit is now an ordinary circuit of edges and VCVS: write it with "
                           "`hil generate layered --sizes m,r,n`")
    if kind is not None:
        raise CircuitError(f"{p}:{_key_line(text, 'kind')}: unknown kind {kind!r} (a circuit file has no 'kind'; "
                           "layered circuits are written by `hil generate layered`)")
    return circuit_from_dict(data, source=str(p), text=text)


def circuit_name(data: dict, source: str, at) -> str:
    """The circuit's ``name`` (a plain name: it reaches file names, SPICE titles and TOML), or the file's stem
    made one; CircuitError at the key's line (``at('name')``) otherwise."""
    if "name" in data:
        name = data["name"]
        if not isinstance(name, str) or not CIRCUIT_NAME_RE.match(name):
            raise CircuitError(f"{at('name')}: circuit name {name!r} is not a plain name (a letter, then letters, "
                               "digits, '_', '.' or '-', at most 64 characters)")
        return name
    name = re.sub(r"[^A-Za-z0-9_.\-]", "_", Path(source).stem)[:63] or "circuit"
    return name if name[0].isalpha() else "c" + name


def circuit_from_dict(data: dict, source: str = "<memory>", text: str = "") -> Circuit:
    """Validate a parsed circuit definition (the TOML schema as a dict) into a Circuit."""
    edge_lines = _edge_lines(text)
    vccs_lines = _edge_lines(text, "vccs")

    lines = _text_index(text)[0]

    heads_of = {"edge": edge_lines, "vccs": vccs_lines}

    def at(key=None, edge=None, table=None):
        if table is not None and table not in heads_of:
            heads_of[table] = _edge_lines(text, table)
        heads = heads_of[table or "edge"]
        if edge is not None and edge < len(heads):
            start = heads[edge]
            stop = _table_end(text, start)
            for ln in range(start, stop - 1):  # the key's own line inside this [[edge]] table
                if key is not None and re.match(rf"^\s*{re.escape(key)}\s*=", lines[ln]):
                    return f"{source}:{ln + 1}"
            return f"{source}:{start}"
        if edge is not None and text:  # 'edge' given as something other than [[edge]] tables
            return f"{source}:{_key_line(text, 'edge')}"
        if key is not None and text:
            return f"{source}:{_key_line(text, key)}"
        return source

    from hil.elements import KINDS
    known = {"name", "ground", "inputs", "outputs", "g_min", "g_max", "edge", "vccs", "gm_max", "calibration",
             "bias", "matrix", "lr_fraction"} | {kind.table for kind in KINDS}
    for k in data:
        if k not in known:
            raise CircuitError(f"{at(k)}: unknown key '{k}' (expected one of {', '.join(sorted(known))})")
    for k in ("ground", "inputs", "outputs", "edge"):
        if k not in data:
            raise CircuitError(f"{source}: missing key '{k}'")
    name = circuit_name(data, source, at)
    edges = data["edge"]
    if not isinstance(edges, list) or not edges:
        raise CircuitError(f"{at('edge')}: 'edge' must be a non-empty array of [[edge]] tables")

    g_min = _positive(data.get("g_min", DEFAULT_G_MIN), f"{at('g_min')}: g_min")
    g_max = _positive(data.get("g_max", DEFAULT_G_MAX), f"{at('g_max')}: g_max")
    if not g_min < g_max:
        raise CircuitError(f"{at('g_min')}: g_min = {g_min} must be below g_max = {g_max}")

    nodes: list = []
    index: dict = {}
    lower: dict = {}

    def check_name(nm, where, what):
        if not isinstance(nm, str) or not NAME_RE.match(nm):
            raise CircuitError(f"{where}: {what} name {nm!r} is not a plain identifier "
                               "(a letter, then letters, digits or '_', at most 32 characters)")

    def add_node(nm, where):
        check_name(nm, where, "node")
        if nm not in index:
            if nm.lower() in lower:  # SPICE folds case: 'Out' and 'out' would be one node
                raise CircuitError(f"{where}: node '{nm}' differs from node '{lower[nm.lower()]}' only in case")
            index[nm] = len(nodes)
            lower[nm.lower()] = nm
            nodes.append(nm)
        return index[nm]

    names, a, b, g, fixed = [], [], [], [], []
    seen = {}
    for e, edge in enumerate(edges):
        where = at(edge=e)
        if not isinstance(edge, dict):
            raise CircuitError(f"{where}: edge #{e + 1} is not a table")
        for k in edge:
            if k not in ("name", "a", "b", "g", "fixed"):
                raise CircuitError(f"{where}: edge #{e + 1}: unknown key '{k}' (expected name, a, b, g, fixed)")
        nm = edge.get("name", f"E{e + 1}")
        check_name(nm, at("name", e), "edge")
        if nm.lower() in seen:
            raise CircuitError(f"{at('name', e)}: duplicate edge name '{nm}' (first at {seen[nm.lower()]})")
        seen[nm.lower()] = where
        for k in ("a", "b", "g"):
            if k not in edge:
                raise CircuitError(f"{where}: edge '{nm}': missing '{k}'")
        if edge["a"] == edge["b"]:
            raise CircuitError(f"{where}: edge '{nm}' is a self-loop on node '{edge['a']}'")
        ia, ib = add_node(edge["a"], at("a", e)), add_node(edge["b"], at("b", e))
        gv = edge["g"]
        if isinstance(gv, bool) or not isinstance(gv, (int, float)) or not math.isfinite(gv) or gv <= 0:
            raise CircuitError(f"{at('g', e)}: edge '{nm}': conductance {gv!r} is not a positive finite number (siemens)")
        fx = edge.get("fixed", False)
        if not isinstance(fx, bool):
            raise CircuitError(f"{at('fixed', e)}: edge '{nm}': fixed = {fx!r} must be true or false")
        if not fx and not g_min <= gv <= g_max:
            raise CircuitError(f"{at('g', e)}: edge '{nm}': conductance {gv!r} S is outside [g_min, g_max] = [{g_min}, {g_max}]")
        names.append(nm); a.append(ia); b.append(ib); g.append(float(gv)); fixed.append(fx)

    ctx = _ElementContext(at, add_node, check_name, seen, index)
    elements = []
    for kind in KINDS:
        if kind.table in data:
            try:
                grps = kind.parse(data[kind.table], ctx)
            except ElementError as exc:
                raise CircuitError(str(exc)) from None
            elements += [grp for grp in (grps if isinstance(grps, list) else [grps]) if len(grp)]

    def lookup(nm, key):
        if not isinstance(nm, str) or nm not in index:
            raise CircuitError(f"{at(key)}: {key}: unknown node {nm!r} (no element touches it)")
        return index[nm]

    ground = lookup(data["ground"], "ground")
    for key in ("inputs", "outputs"):
        if not isinstance(data[key], list):
            raise CircuitError(f"{at(key)}: '{key}' must be a list of node names")
    inputs = [lookup(x, "inputs") for x in data["inputs"]]
    outputs = [lookup(x, "outputs") for x in data["outputs"]]
    if not outputs:
        raise CircuitError(f"{at('outputs')}: a circuit needs at least one output")
    for key, lst in (("inputs", inputs), ("outputs", outputs)):
        if len(set(lst)) != len(lst):
            dup = next(nodes[i] for i in lst if lst.count(i) > 1)
            raise CircuitError(f"{at(key)}: node '{dup}' is listed twice in {key}")
    if ground in inputs:
        raise CircuitError(f"{at('inputs')}: input '{nodes[ground]}' is the ground node")
    for o in outputs:
        if o == ground or o in inputs:
            role = "ground" if o == ground else "an input"
            raise CircuitError(f"{at('outputs')}: output '{nodes[o]}' is also {role}")

    gm_max = _positive(data["gm_max"], f"{at('gm_max')}: gm_max") if "gm_max" in data else None
    lr_fraction = data.get("lr_fraction")
    if lr_fraction is not None and (isinstance(lr_fraction, bool) or not isinstance(lr_fraction, (int, float))
                                    or not math.isfinite(lr_fraction) or not 0 < lr_fraction <= 10):
        raise CircuitError(f"{at('lr_fraction')}: lr_fraction = {lr_fraction!r}: the default step's fraction of "
                           "1 / lambda_max must be a number in (0, 10] (the loop's own is 0.25)")
    vccs = _vccs_from_dict(data.get("vccs", []), at, index, seen, check_name,
                           gm_max if gm_max is not None else g_max, at("vccs"))
    vccs_nodes = np.asarray(vccs[1], int).reshape(-1, 4)
    for key, lst in (("outputs", outputs), ("inputs", inputs)):
        # every output at 0 V whatever g, or every input driving only ground: nothing to learn
        # (a VCCS whose output, or control, is the terminal reaches it past the edges)
        port = vccs_nodes[:, :2] if key == "outputs" else vccs_nodes[:, 2:]
        port = np.concatenate([port.ravel()] + [grp.nodes.ravel() for grp in elements])
        grounded = [t for t in lst if all(ground in (a[e], b[e]) for e in range(len(a)) if t in (a[e], b[e]))
                    and t not in port]
        if lst and len(grounded) == len(lst):
            t = grounded[0]
            touching = [names[e] for e in range(len(a)) if t in (a[e], b[e])]
            what = ("its voltage is 0 V whatever the conductances" if key == "outputs"
                    else "it drives nothing but ground")
            raise CircuitError(f"{at(key)}: {key[:-1]} '{nodes[t]}' is joined only to ground "
                               f"(edge {', '.join(touching)}): {what}" + (" (and so is every other)" if len(lst) > 1 else ""))
    calibration = _calibration(data["calibration"], len(names), at) if "calibration" in data else None
    biases, bias_v = _biases(data.get("bias", []), at, index, ground, inputs, outputs)
    matrices = ()
    if "matrix" in data:
        from hil.matrices import parse
        try:
            matrices = parse(data["matrix"], lambda k, j: at(k, j, "matrix") if j is not None else at("matrix"),
                             {nm: e for e, nm in enumerate(names)}, index, fixed)
        except ValueError as exc:
            raise CircuitError(str(exc)) from None
    _check_vccs_outputs(vccs, [ground] + inputs + list(biases), nodes, at)
    _check_feedback(matrices, g, g_min, g_max, names, at)
    circuit = Circuit(name, tuple(nodes), tuple(names), np.array(a, int), np.array(b, int),
                      np.array(g, float), ground, tuple(inputs), tuple(outputs), g_min, g_max, source,
                      *vccs, gm_max=gm_max, calibration=calibration, edge_fixed=np.array(fixed, bool),
                      biases=biases, bias_v=bias_v, elements=tuple(elements), matrices=matrices,
                      lr_fraction=None if lr_fraction is None else float(lr_fraction))
    _check_connected(circuit, at)
    if circuit.k and not circuit.elements:
        _check_operating_point(circuit, at(edge=0, table="vccs"))
    return circuit


#: the largest weight R (g_max - g_min) a [[matrix]] row may reach (V/V): beyond it the circuit's equations keep
#: fewer than half of double precision's digits (a 3-2-2 layered circuit's free state is off by 3e-7 at
#: R = 1e16 ohm, and every output reads 0 V at 1e20 ohm)
MAX_WEIGHT = 1e8


def _check_vccs_outputs(vccs, sources, nodes, at) -> None:
    """CircuitError naming a VCCS whose output terminals are both sources (ground, inputs, biases): its current
    flows between two fixed voltages and changes nothing."""
    for j, (nm, idx) in enumerate(zip(vccs[0], vccs[1])):
        if idx[0] in sources and idx[1] in sources:
            raise CircuitError(f"{at('out_p', j, 'vccs')}: vccs '{nm}': out_p '{nodes[idx[0]]}' and out_n "
                               f"'{nodes[idx[1]]}' are both sources (ground, inputs, biases): its current flows "
                               "between two fixed voltages and changes nothing; connect an output terminal to a "
                               "free node")


def _check_feedback(matrices, g, g_min, g_max, names, at) -> None:
    """CircuitError naming a [[matrix]] feedback edge whose conductance 1/R makes the weights W = R (G+ - G-)
    reach beyond MAX_WEIGHT."""
    for mat in matrices:
        for row, e in enumerate(mat.feedback):
            w = (g_max - g_min) / g[e]
            if w > MAX_WEIGHT:
                raise CircuitError(f"{at('g', e)}: edge '{names[e]}' (feedback of matrix '{mat.name}', row {row}): "
                                   f"conductance {g[e]!r} S (R = {1 / g[e]:.3g} ohm) lets the row's weights reach "
                                   f"R (g_max - g_min) = {w:.3g} V/V; at most {MAX_WEIGHT:g} V/V (a feedback "
                                   f"conductance of at least {(g_max - g_min) / MAX_WEIGHT:.3g} S): beyond it the "
                                   "circuit's equations keep fewer than half of their digits")


VCCS_KEYS = ("name", "out_p", "out_n", "ctrl_p", "ctrl_n", "gm", "fixed")


class _ElementContext:
    """What an element kind's parser needs from the loader: lines, node creation, names seen."""

    def __init__(self, at, add_node, check_name, seen, index):
        self.at, self.add_node, self.check_name, self.seen, self.index = at, add_node, check_name, seen, index

    def tables(self, tables, kind):
        """The [[table]] list checked: tables with known keys only."""
        if not isinstance(tables, list):
            raise CircuitError(f"{self.at(kind.table)}: '{kind.table}' must be an array of [[{kind.table}]] tables")
        for j, t in enumerate(tables):
            if not isinstance(t, dict):
                raise CircuitError(f"{self.at(edge=j, table=kind.table)}: {kind.table} #{j + 1} is not a table")
            for k in t:
                if k not in kind.keys:
                    raise CircuitError(f"{self.at(k, j, kind.table)}: {kind.table} '{t.get('name', f'#{j + 1}')}': "
                                       f"unknown key '{k}' (expected {', '.join(kind.keys)})")
        return tables

    def header(self, t, j, kind) -> tuple:
        """(name, where) of element j: a plain identifier used by no other element."""
        nm = t.get("name", f"{kind.prefix}{j + 1}")
        where = self.at(edge=j, table=kind.table)
        self.check_name(nm, self.at("name", j, kind.table), kind.table)
        if nm.lower() in self.seen:
            raise CircuitError(f"{self.at('name', j, kind.table)}: duplicate element name '{nm}' "
                               f"(first at {self.seen[nm.lower()]})")
        self.seen[nm.lower()] = where
        return nm, where

    def terminal(self, t, key, j, kind, what) -> int:
        if key not in t:
            raise CircuitError(f"{self.at(edge=j, table=kind.table)}: {what}: missing '{key}'")
        return self.add_node(t[key], self.at(key, j, kind.table))

    def two_terminals(self, t, j, kind, what) -> list:
        ia, ib = (self.terminal(t, key, j, kind, what) for key in kind.terminals)
        if ia == ib:
            raise CircuitError(f"{self.at(kind.terminals[1], j, kind.table)}: {what} is a self-loop on node "
                               f"'{t[kind.terminals[0]]}'")
        return [ia, ib]


def _biases(tables, at, index, ground, inputs, outputs) -> tuple:
    """The [[bias]] tables checked: (nodes, volts); each a known node that is no other source or an output."""
    if not isinstance(tables, list):
        raise CircuitError(f"{at('bias')}: 'bias' must be an array of [[bias]] tables")
    nodes, volts = [], []
    for j, t in enumerate(tables):
        where = at(edge=j, table="bias")
        if not isinstance(t, dict):
            raise CircuitError(f"{where}: bias #{j + 1} is not a table")
        for k in t:
            if k not in ("node", "v"):
                raise CircuitError(f"{at(k, j, 'bias')}: bias #{j + 1}: unknown key '{k}' (expected node, v)")
        for k in ("node", "v"):
            if k not in t:
                raise CircuitError(f"{where}: bias #{j + 1}: missing '{k}'")
        nm = t["node"]
        if not isinstance(nm, str) or nm not in index:
            raise CircuitError(f"{at('node', j, 'bias')}: bias #{j + 1}: unknown node {nm!r} (no element touches it)")
        i = index[nm]
        role = ("the ground node" if i == ground else "an input" if i in inputs else "an output" if i in outputs
                else "biased twice" if i in nodes else None)
        if role:
            raise CircuitError(f"{at('node', j, 'bias')}: bias '{nm}': the node is {role}")
        v = t["v"]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise CircuitError(f"{at('v', j, 'bias')}: bias '{nm}': v = {v!r} is not a finite number (volts)")
        nodes.append(i); volts.append(float(v))
    return tuple(nodes), np.array(volts, float)


def _vccs_from_dict(tables, at, index, seen, check_name, gm_max, where_all) -> tuple:
    """Validate the [[vccs]] tables: (names, nodes (k, 4), gm (k,), fixed (k,)); CircuitError with file:line."""
    if not isinstance(tables, list):
        raise CircuitError(f"{where_all}: 'vccs' must be an array of [[vccs]] tables")
    names, nodes, gms, fixed = [], [], [], []
    for j, t in enumerate(tables):
        where = at(edge=j, table="vccs")
        if not isinstance(t, dict):
            raise CircuitError(f"{where}: vccs #{j + 1} is not a table")
        for k in t:
            if k not in VCCS_KEYS:
                raise CircuitError(f"{at(k, j, 'vccs')}: vccs #{j + 1}: unknown key '{k}' "
                                   f"(expected {', '.join(VCCS_KEYS)})")
        nm = t.get("name", f"G{j + 1}")
        check_name(nm, at("name", j, "vccs"), "vccs")
        if nm.lower() in seen:  # theta's entries are named by element: one name, one element
            raise CircuitError(f"{at('name', j, 'vccs')}: duplicate element name '{nm}' (first at {seen[nm.lower()]})")
        seen[nm.lower()] = where
        idx = []
        for k in ("out_p", "out_n", "ctrl_p", "ctrl_n", "gm"):
            if k not in t:
                raise CircuitError(f"{where}: vccs '{nm}': missing '{k}'")
        for k in ("out_p", "out_n", "ctrl_p", "ctrl_n"):
            v = t[k]
            if not isinstance(v, str) or v not in index:
                raise CircuitError(f"{at(k, j, 'vccs')}: vccs '{nm}': {k}: unknown node {v!r} (no edge touches it)")
            idx.append(index[v])
        if idx[0] == idx[1]:
            raise CircuitError(f"{at('out_n', j, 'vccs')}: vccs '{nm}': out_p and out_n are both node '{t['out_p']}'")
        if idx[2] == idx[3]:
            raise CircuitError(f"{at('ctrl_n', j, 'vccs')}: vccs '{nm}': ctrl_p and ctrl_n are both node "
                               f"'{t['ctrl_p']}' (its current would always be zero)")
        gv = t["gm"]
        if isinstance(gv, bool) or not isinstance(gv, (int, float)) or not math.isfinite(gv):
            raise CircuitError(f"{at('gm', j, 'vccs')}: vccs '{nm}': transconductance {gv!r} is not a finite number "
                               "(siemens)")
        fx = t.get("fixed", False)
        if not isinstance(fx, bool):
            raise CircuitError(f"{at('fixed', j, 'vccs')}: vccs '{nm}': fixed = {fx!r} must be true or false")
        if not fx and abs(gv) > gm_max:
            raise CircuitError(f"{at('gm', j, 'vccs')}: vccs '{nm}': transconductance {gv!r} S is outside "
                               f"[-gm_max, gm_max] = [{-gm_max}, {gm_max}]")
        names.append(nm); nodes.append(idx); gms.append(float(gv)); fixed.append(fx)
    return (tuple(names), np.array(nodes, int).reshape(-1, 4), np.array(gms, float), np.array(fixed, bool))


def _check_operating_point(c: Circuit, where) -> None:
    """With VCCS, A_FF can be singular although every node is connected: no unique operating point."""
    from hil.exact import jacobian_blocks

    A = jacobian_blocks(c)[0].toarray()
    sv = np.linalg.svd(A, compute_uv=False)
    if sv.min() <= 1e-12 * sv.max():
        raise CircuitError(f"{where}: the transconductances make the circuit singular (A_FF has condition number "
                           f"{sv.max() / max(sv.min(), 1e-300):.3g}): no unique operating point")


CALIBRATION_ARRAYS = ("written", "scale", "sigma")


def _calibration(cal, m: int, at) -> dict:
    """A [calibration] table checked: one positive finite written conductance and scale per edge, sigma >= 0."""
    if not isinstance(cal, dict):
        raise CircuitError(f"{at('calibration')}: 'calibration' must be a table")
    for k in cal:
        if k not in ("bench",) + CALIBRATION_ARRAYS:
            raise CircuitError(f"{at(k)}: [calibration]: unknown key '{k}' (expected bench, written, scale, sigma)")
    out = {"bench": str(cal.get("bench", ""))}
    for k in CALIBRATION_ARRAYS:
        v = cal.get(k)
        if not isinstance(v, list) or len(v) != m or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v):
            raise CircuitError(f"{at(k)}: [calibration]: '{k}' must be a list of {m} finite numbers, one per edge")
        arr = np.array(v, float)
        if (arr < 0).any() or (k != "sigma" and (arr <= 0).any()):
            e = int(np.flatnonzero(arr <= 0 if k != "sigma" else arr < 0)[0])
            raise CircuitError(f"{at(k)}: [calibration]: {k}[{e}] = {v[e]!r} must be "
                               f"{'non-negative' if k == 'sigma' else 'positive'}")
        out[k] = arr
    return out


def _positive(v, what) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise CircuitError(f"{what} = {v!r} is not a positive finite number (siemens)")
    return float(v)


def _check_connected(c: Circuit, at=None) -> None:
    """Every node needs a path to a source or ground; otherwise L_FF is singular."""
    pa = np.concatenate([c.a] + [grp.nodes[:, 0] for grp in c.elements])
    pb = np.concatenate([c.b] + [grp.nodes[:, 1] for grp in c.elements])
    adj = sp.coo_matrix((np.ones(len(pa)), (pa, pb)), shape=(c.n, c.n))
    ncomp, label = connected_components(adj, directed=False)
    anchored = set(label[c.sources].tolist())
    for comp in range(ncomp):
        if comp not in anchored:
            members = [c.nodes[i] for i in np.flatnonzero(label == comp)]
            hit = np.flatnonzero(label[c.a] == comp)  # the first edge of the floating part
            where = c.source if at is None or not len(hit) else at("name", int(hit[0]))
            shown = ", ".join(members[:8]) + (" ..." if len(members) > 8 else "")
            raise CircuitError(f"{where}: floating subnetwork: node(s) {shown} have no path to ground or an input "
                               "(their voltages are undefined, the circuit is singular)")


def make_circuit(name, edges, ground, inputs, outputs, g_min=1e-5, g_max=1e-2,
                 source=None, vccs=(), gm_max=None) -> Circuit:
    """Build a validated Circuit from Python data, as a circuit file would.

    ``edges`` is a list of (name, a, b, g), g in siemens; ``ground`` the node at 0 V;
    ``inputs`` the nodes held by input sources, ``outputs`` the nodes read; every trainable
    conductance stays in [``g_min``, ``g_max``] S (default 1e-5 .. 1e-2 S, 100 ohm to
    100 kohm, as in the shipped circuit files); ``vccs`` a list of (name, out_p, out_n,
    ctrl_p, ctrl_n, gm[, fixed]), gm in siemens. Raises CircuitError naming the element.
    """
    data = {"name": name, "ground": ground, "inputs": list(inputs), "outputs": list(outputs),
            "g_min": g_min, "g_max": g_max,
            "edge": [{"name": e[0], "a": e[1], "b": e[2], "g": float(e[3])} for e in edges]}
    if vccs:
        data["vccs"] = [dict(zip(VCCS_KEYS, (v[0], v[1], v[2], v[3], v[4], float(v[5])) + tuple(v[6:]))) for v in vccs]
    if gm_max is not None:
        data["gm_max"] = gm_max
    return circuit_from_dict(data, source=source or f"<{name}>")
