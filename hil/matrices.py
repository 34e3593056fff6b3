"""Weight matrices of a circuit: which edges form which signed matrix (a generator's ``[[matrix]]`` table).

A layered circuit (``hil generate layered``) is an ordinary circuit of edges and VCVS; the only
thing it remembers beyond its elements is, per crossbar, the table::

    [[matrix]]
    name = "W"
    plus = [["Wp_0_0", "Wp_0_1"], ...]     # d_out rows of d_in edge names: g+_ji, from input line i
    minus = [["Wm_0_0", "Wm_0_1"], ...]    # g-_ji, from the inverted input line
    feedback = ["Wf0", ...]                 # the fixed feedback resistor R_j of each summing line j
    outputs = ["Wu0", ...]                  # the node carrying +h_j, the matrix's output line j

so that W = diag(R) (G+ - G-) (volts per volt, R_j = 1 / g of the feedback edge) can be read from
theta, and a rule that needs the hidden signals h_j (feedback alignment) finds them.
Matrices are listed from the inputs to the outputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KEYS = ("name", "plus", "minus", "feedback", "outputs")


@dataclass(frozen=True)
class Matrix:
    """One crossbar: plus, minus (d_out, d_in) edge indices; feedback (d_out,) edge indices; outputs (d_out,) nodes."""

    name: str
    plus: np.ndarray
    minus: np.ndarray
    feedback: np.ndarray
    outputs: np.ndarray

    @property
    def shape(self) -> tuple:
        return self.plus.shape

    def weights(self, g) -> np.ndarray:
        """W = diag(R) (G+ - G-), (d_out, d_in) volts per volt, from the edge conductances ``g`` (siemens)."""
        g = np.asarray(g, float)
        return (g[self.plus] - g[self.minus]) / g[self.feedback][:, None]


def weights(circuit, theta=None) -> list:
    """[W_0, ..., W_(L-1)]: each matrix of ``circuit`` at ``theta`` (default its stored g), volts per volt."""
    g = circuit.g if theta is None else np.asarray(theta, float)[:circuit.m]
    return [mat.weights(g) for mat in circuit.matrices]


def parse(tables, at, edge_index: dict, node_index: dict, fixed) -> tuple:
    """Validate ``[[matrix]]`` tables into Matrix objects; ValueError with file:line and the matrix otherwise.

    ``at(key, j)``: where key of table j is; ``edge_index``/``node_index``: name -> index; ``fixed``: per edge.
    """
    if not isinstance(tables, list):
        raise ValueError(f"{at(None, None)}: 'matrix' must be an array of [[matrix]] tables")
    out, seen = [], set()
    for j, t in enumerate(tables):
        if not isinstance(t, dict):
            raise ValueError(f"{at(None, j)}: matrix #{j + 1} is not a table")
        for k in t:
            if k not in KEYS:
                raise ValueError(f"{at(k, j)}: matrix #{j + 1}: unknown key '{k}' (expected {', '.join(KEYS)})")
        for k in KEYS:
            if k not in t:
                raise ValueError(f"{at(None, j)}: matrix #{j + 1}: missing '{k}'")
        nm = t["name"]
        if not isinstance(nm, str) or nm in seen:
            raise ValueError(f"{at('name', j)}: matrix name {nm!r} is not a string or is listed twice")
        seen.add(nm)
        what = f"matrix '{nm}'"

        def edges(key, rows):
            if not isinstance(rows, list) or not rows or not all(isinstance(r, list) and r for r in rows):
                raise ValueError(f"{at(key, j)}: {what}: {key} must be a non-empty list of non-empty rows of edge names")
            if len({len(r) for r in rows}) != 1:
                raise ValueError(f"{at(key, j)}: {what}: {key}'s rows differ in length")
            idx = np.zeros((len(rows), len(rows[0])), int)
            for r, row in enumerate(rows):
                for i, e in enumerate(row):
                    if e not in edge_index:
                        raise ValueError(f"{at(key, j)}: {what}: {key}[{r}][{i}] = {e!r} is not an edge")
                    idx[r, i] = edge_index[e]
                    if fixed[idx[r, i]]:
                        raise ValueError(f"{at(key, j)}: {what}: {key}[{r}][{i}]: edge '{e}' is fixed (a weight "
                                         "must be trainable)")
            return idx

        plus, minus = edges("plus", t["plus"]), edges("minus", t["minus"])
        if plus.shape != minus.shape:
            raise ValueError(f"{at('minus', j)}: {what}: minus is {minus.shape[0]} x {minus.shape[1]}, plus "
                             f"{plus.shape[0]} x {plus.shape[1]}")
        for key, index, kind in (("feedback", edge_index, "edge"), ("outputs", node_index, "node")):
            lst = t[key]
            if not isinstance(lst, list) or len(lst) != plus.shape[0] or any(x not in index for x in lst):
                raise ValueError(f"{at(key, j)}: {what}: {key} must list one {kind} name per row "
                                 f"({plus.shape[0]}), got {lst!r}")
        fb = np.array([edge_index[e] for e in t["feedback"]], int)
        if out and plus.shape[1] != out[-1].shape[0]:
            raise ValueError(f"{at('plus', j)}: {what}: {plus.shape[1]} input lines, but matrix "
                             f"'{out[-1].name}' before it has {out[-1].shape[0]} outputs")
        out.append(Matrix(nm, plus, minus, fb, np.array([node_index[x] for x in t["outputs"]], int)))
    return tuple(out)


def toml(mat: Matrix, edge_names, node_names) -> list:
    """The ``[[matrix]]`` table of ``mat`` as lines."""
    rows = lambda idx: "[" + ", ".join("[" + ", ".join(f'"{edge_names[e]}"' for e in r) + "]" for r in idx) + "]"
    return ["[[matrix]]", f'name = "{mat.name}"', f"plus = {rows(mat.plus)}", f"minus = {rows(mat.minus)}",
            "feedback = [" + ", ".join(f'"{edge_names[e]}"' for e in mat.feedback) + "]",
            "outputs = [" + ", ".join(f'"{node_names[x]}"' for x in mat.outputs) + "]", ""]
