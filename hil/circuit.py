"""The circuit: a validated graph of nodes, conductance edges, sources and outputs.

Notation follows the spec (``shared/spec/learning-rules.md`` section 1): nodes
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

Every validation error is a :class:`CircuitError` whose message starts with
``file:line:`` and names the offending edge or node.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

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
    calibration : dict or None, a calibrated circuit's per-edge record (``hil calibrate``): ``written``
        (S, what the bench was told), ``scale`` (actual / written, 1) and ``sigma`` (the
        scale's standard uncertainty, 1), plus ``bench`` (the bench file it came from).
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
    _cache: dict = field(default_factory=dict, compare=False, repr=False)
    calibration: dict | None = field(default=None, compare=False, repr=False)

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
    def sources(self) -> np.ndarray:
        """S: the nodes held by voltage sources, ground first then the inputs."""
        return np.array((self.ground,) + tuple(self.inputs), dtype=int)

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
        """``g`` as a float array (m,) of positive finite conductances (S); CircuitError naming the edge otherwise."""
        g = np.asarray(g, dtype=float)
        if g.shape != (self.m,):
            raise CircuitError(f"{self.source}: expected {self.m} conductances for circuit '{self.name}', "
                               f"got shape {g.shape}")
        bad = np.flatnonzero(~np.isfinite(g) | (g <= 0))
        if bad.size:
            e = bad[0]
            raise CircuitError(f"{self.source}: edge '{self.edge_names[e]}': conductance {float(g[e])!r} "
                               "is not a positive finite number")
        return g

    def with_g(self, g) -> "Circuit":
        """The same circuit with conductances ``g`` (siemens), validated."""
        g = self.check_g(g)
        return Circuit(self.name, self.nodes, self.edge_names, self.a, self.b, g.copy(), self.ground,
                       self.inputs, self.outputs, self.g_min, self.g_max, self.source)

    # -- serialisation ---------------------------------------------------------
    def to_toml(self) -> str:
        """The circuit as a TOML circuit file (round-trips through :func:`load_circuit`)."""
        q = _toml_str
        lines = [f"name = {q(self.name)}", f"ground = {q(self.nodes[self.ground])}",
                 "inputs = [" + ", ".join(q(self.nodes[i]) for i in self.inputs) + "]",
                 "outputs = [" + ", ".join(q(self.nodes[i]) for i in self.outputs) + "]",
                 f"g_min = {self.g_min!r}", f"g_max = {self.g_max!r}", ""]
        for e in range(self.m):
            lines += ["[[edge]]", f"name = {q(self.edge_names[e])}", f"a = {q(self.nodes[self.a[e]])}",
                      f"b = {q(self.nodes[self.b[e]])}", f"g = {float(self.g[e])!r}", ""]
        if self.calibration:
            cal = self.calibration
            lines += ["# per edge, in the order of the [[edge]] tables: actual = scale x written", "[calibration]",
                      f"bench = {q(str(cal.get('bench', '')))}"]
            lines += [f"{k} = [" + ", ".join(repr(float(v)) for v in cal[k]) + "]" for k in CALIBRATION_ARRAYS]
            lines.append("")
        return "\n".join(lines)

    def save(self, path, header: str | None = None) -> Path:
        """Write the circuit as TOML to ``path`` atomically (``header``: a first comment line); returns the path."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text((f"# {header}\n" if header else "") + self.to_toml())
        os.replace(tmp, path)
        return path


def _toml_str(s: str) -> str:
    # Names are validated identifiers; the escape is for circuit names only.
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


# -- building and validating -------------------------------------------------

def _edge_lines(text: str) -> list:
    """1-based line numbers of each ``[[edge]]`` table header, in order."""
    return [i + 1 for i, line in enumerate(text.splitlines()) if re.match(r"^\s*\[\[\s*edge\s*\]\]", line)]


def _key_line(text: str, key: str) -> int:
    for i, line in enumerate(text.splitlines()):
        if re.match(rf"^\s*{re.escape(key)}\s*=", line):
            return i + 1
    return 1


def load_circuit(path) -> Circuit:
    """Read and validate a circuit file (TOML). A bare name finds a shipped circuit.

    Raises CircuitError with ``file:line:`` and the offending edge or node; a
    layered circuit (``kind = "layered"``) is refused here: see :func:`load_any`.
    """
    c = load_any(path)
    if getattr(c, "kind", None) == "layered":
        raise CircuitError(f"{c.source}: kind = \"layered\": this command works on reciprocal networks only "
                           "(layered circuits: hil train, hil grad, hil info, hil netlist)")
    return c


def load_any(path):
    """A circuit file of any kind: a :class:`Circuit`, or with ``kind = "layered"`` a
    :class:`hil.layered.LayeredCircuit`."""
    p = Path(path)
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
    kind = data.pop("kind", None)
    if kind == "layered":
        from hil.layered import layered_from_dict
        return layered_from_dict(data, source=str(p), text=text)
    if kind is not None:
        raise CircuitError(f"{p}:{_key_line(text, 'kind')}: unknown kind {kind!r} (expected \"layered\", or no "
                           "kind for a reciprocal network)")
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

    lines = text.splitlines()

    def at(key=None, edge=None):
        if edge is not None and edge < len(edge_lines):
            start = edge_lines[edge]
            stop = edge_lines[edge + 1] if edge + 1 < len(edge_lines) else len(lines) + 1
            for ln in range(start, stop - 1):  # the key's own line inside this [[edge]] table
                if key is not None and re.match(rf"^\s*{re.escape(key)}\s*=", lines[ln]):
                    return f"{source}:{ln + 1}"
            return f"{source}:{start}"
        if edge is not None and text:  # 'edge' given as something other than [[edge]] tables
            return f"{source}:{_key_line(text, 'edge')}"
        if key is not None and text:
            return f"{source}:{_key_line(text, key)}"
        return source

    known = {"name", "ground", "inputs", "outputs", "g_min", "g_max", "edge", "calibration"}
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

    names, a, b, g = [], [], [], []
    seen = {}
    for e, edge in enumerate(edges):
        where = at(edge=e)
        if not isinstance(edge, dict):
            raise CircuitError(f"{where}: edge #{e + 1} is not a table")
        for k in edge:
            if k not in ("name", "a", "b", "g"):
                raise CircuitError(f"{where}: edge #{e + 1}: unknown key '{k}' (expected name, a, b, g)")
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
        if not g_min <= gv <= g_max:
            raise CircuitError(f"{at('g', e)}: edge '{nm}': conductance {gv!r} S is outside [g_min, g_max] = [{g_min}, {g_max}]")
        names.append(nm); a.append(ia); b.append(ib); g.append(float(gv))

    def lookup(nm, key):
        if not isinstance(nm, str) or nm not in index:
            raise CircuitError(f"{at(key)}: {key}: unknown node {nm!r} (no edge touches it)")
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

    for key, lst in (("outputs", outputs), ("inputs", inputs)):
        # every output at 0 V whatever g, or every input driving only ground: nothing to learn
        grounded = [t for t in lst if all(ground in (a[e], b[e]) for e in range(len(a)) if t in (a[e], b[e]))]
        if lst and len(grounded) == len(lst):
            t = grounded[0]
            touching = [names[e] for e in range(len(a)) if t in (a[e], b[e])]
            what = ("its voltage is 0 V whatever the conductances" if key == "outputs"
                    else "it drives nothing but ground")
            raise CircuitError(f"{at(key)}: {key[:-1]} '{nodes[t]}' is joined only to ground "
                               f"(edge {', '.join(touching)}): {what}" + (" (and so is every other)" if len(lst) > 1 else ""))
    calibration = _calibration(data["calibration"], len(names), at) if "calibration" in data else None
    circuit = Circuit(name, tuple(nodes), tuple(names), np.array(a, int), np.array(b, int),
                      np.array(g, float), ground, tuple(inputs), tuple(outputs), g_min, g_max, source,
                      calibration=calibration)
    _check_connected(circuit, at)
    return circuit


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
    adj = sp.coo_matrix((np.ones(c.m), (c.a, c.b)), shape=(c.n, c.n))
    ncomp, label = connected_components(adj, directed=False)
    anchored = set(label[c.sources].tolist())
    for comp in range(ncomp):
        if comp not in anchored:
            members = [c.nodes[i] for i in np.flatnonzero(label == comp)]
            first = int(np.flatnonzero(label[c.a] == comp)[0])  # the first edge of the floating part
            where = c.source if at is None else at("name", first)
            shown = ", ".join(members[:8]) + (" ..." if len(members) > 8 else "")
            raise CircuitError(f"{where}: floating subnetwork: node(s) {shown} have no path to ground or an input "
                               "(their voltages are undefined, the circuit is singular)")


def make_circuit(name, edges, ground, inputs, outputs, g_min=DEFAULT_G_MIN, g_max=DEFAULT_G_MAX,
                 source=None) -> Circuit:
    """Build a validated Circuit from Python data: ``edges`` is a list of (name, a, b, g)."""
    data = {"name": name, "ground": ground, "inputs": list(inputs), "outputs": list(outputs),
            "g_min": g_min, "g_max": g_max,
            "edge": [{"name": e[0], "a": e[1], "b": e[2], "g": float(e[3])} for e in edges]}
    return circuit_from_dict(data, source=source or f"<{name}>")
