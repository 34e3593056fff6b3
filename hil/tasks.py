"""Tasks: examples of input voltages and target output voltages, with a held-out split.

A task holds ``X_train`` (N, |inputs|), ``Y_train`` (N, |O|) and the test split,
all in volts, columns in the circuit's input and output order.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hil.circuit import Circuit


#: the teacher's default input amplitude (V) on transistor channels: at 1 V, net16's mosfet channels
#: leave triode in 55 of 256 channel-examples (ep-sym's error 88x the gradient), at 0.1 V in 4 (error 0.13)
TRANSISTOR_AMPLITUDE = 0.1


def teacher_amplitude(device: str | None = None) -> float:
    """The teacher's default input amplitude a (V) for a device: 1 V, and TRANSISTOR_AMPLITUDE for the
    transistor channels (``mosfet*``), whose square law is a conductance only in triode, at small signals."""
    return TRANSISTOR_AMPLITUDE if (device or "").startswith("mosfet") else 1.0


class TaskError(ValueError):
    """A task that does not fit its circuit; the message names file, line and column."""


@dataclass
class Task:
    X_train: np.ndarray
    Y_train: np.ndarray
    X_test: np.ndarray
    Y_test: np.ndarray
    description: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def n_train(self) -> int:
        return len(self.X_train)

    def to_dict(self) -> dict:
        return {"description": self.description, "meta": self.meta,
                "X_train": self.X_train.tolist(), "Y_train": self.Y_train.tolist(),
                "X_test": self.X_test.tolist(), "Y_test": self.Y_test.tolist()}

    @staticmethod
    def from_dict(d: dict) -> "Task":
        arr = lambda k: np.array(d[k], dtype=float)
        return Task(arr("X_train"), arr("Y_train"), arr("X_test"), arr("Y_test"),
                    d.get("description", ""), d.get("meta", {}))


NUMBER_RE = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def plain_number(text: str):
    """``text`` as a float if it is a plain decimal number (no '_' separators, no inf or nan), else None."""
    t = text.strip()
    return float(t) if NUMBER_RE.fullmatch(t) else None


def _split(X, Y, test_fraction, seed):
    n = len(X)
    if test_fraction == 0:  # every row, in file order (the analyses)
        return X, Y, X[:0], Y[:0]
    n_test = int(round(n * test_fraction)) if n >= 5 else 0
    perm = np.random.default_rng(seed).permutation(n)
    te, tr = perm[:n_test], perm[n_test:]
    return X[tr], Y[tr], X[te], Y[te]


def load_csv_task(circuit: Circuit, path, test_fraction: float = 0.2, seed: int = 0) -> Task:
    """Read a CSV task: a header naming every input node and every output node, one example per row (volts).

    Rows are split at random (seeded) into train and test (``test_fraction``;
    no test split below 5 rows); with ``test_fraction`` 0 every row is a training
    example, in file order.
    """
    path = Path(path)
    if not path.exists():
        raise TaskError(f"{path}: no such task file")
    if not path.is_file():
        raise TaskError(f"{path}: not a file (a CSV task file is needed)")
    if isinstance(test_fraction, bool) or not (0 <= test_fraction < 1):  # also refuses nan
        raise TaskError(f"--test-fraction {test_fraction}: must be at least 0 and below 1")
    _check_inputs(circuit)
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except UnicodeDecodeError as exc:
        raise TaskError(f"{path}: not a UTF-8 text file (byte {exc.start}); save the CSV as UTF-8") from None
    except csv.Error as exc:
        raise TaskError(f"{path}: not a CSV file ({exc})") from None
    rows = [(i + 1, r) for i, r in enumerate(rows) if r and any(x.strip() for x in r) and not r[0].startswith("#")]
    if not rows:
        raise TaskError(f"{path}: empty task file (expected a header naming input and output nodes)")
    hline, header = rows[0]
    header = [h.strip() for h in header]
    ins, outs = circuit.input_names, circuit.output_names
    for col, h in enumerate(header):
        if h not in ins and h not in outs:
            role = "a node that is neither an input nor an output" if h in circuit.nodes else "an unknown node"
            raise TaskError(f"{path}:{hline}: column {col + 1} '{h}' is {role} of circuit '{circuit.name}' "
                            f"(inputs: {', '.join(ins)}; outputs: {', '.join(outs)})")
        if header.count(h) > 1:
            raise TaskError(f"{path}:{hline}: column '{h}' appears twice")
    for nm in ins + outs:
        if nm not in header:
            raise TaskError(f"{path}:{hline}: no column for {'input' if nm in ins else 'output'} node '{nm}'")
    data = []
    for line, r in rows[1:]:
        if len(r) != len(header):
            raise TaskError(f"{path}:{line}: {len(r)} values, the header has {len(header)}")
        vals = []
        for col, x in enumerate(r):
            v = plain_number(x)
            if v is None:
                raise TaskError(f"{path}:{line}: column {col + 1} '{header[col]}': {x.strip()!r} is not a number "
                                "(volts; plain decimals such as -0.25 or 1e-3)")
            if not math.isfinite(v):
                raise TaskError(f"{path}:{line}: column {col + 1} '{header[col]}': {v} is not finite")
            vals.append(v)
        data.append(vals)
    if not data:
        raise TaskError(f"{path}: no examples after the header")
    D = np.array(data)
    X = D[:, [header.index(n) for n in ins]].reshape(len(D), len(ins))
    Y = D[:, [header.index(n) for n in outs]]
    return Task(*_split(X, Y, test_fraction, seed), description=f"csv:{path}", meta={"csv": str(path)})


def teacher_task(circuit: Circuit, seed: int, examples: int = 16, test_examples: int | None = None,
                 amplitude: float = 1.0) -> Task:
    """A teacher task on the circuit's own topology: zero loss is reachable.

    Teacher conductances are log-uniform in [g_min, g_max] (seeded by ``seed``);
    ``examples`` training and ``test_examples`` (default examples // 4, at least 1)
    test inputs are uniform in [-a, a] V, a = ``amplitude`` (default 1 V; the same
    draws scaled, so targets scale by a too); targets are the teacher's free-state outputs.
    """
    _check_examples(examples)
    _check_inputs(circuit)
    _check_amplitude(amplitude)
    rng = np.random.default_rng(seed)
    g_teacher = np.exp(rng.uniform(np.log(circuit.g_min), np.log(circuit.g_max), circuit.m))
    amp = f" amplitude={amplitude:g}V" if amplitude != 1 else ""
    g_teacher[circuit.edge_fixed] = circuit.g[circuit.edge_fixed]  # a fixed resistor is the teacher's too
    return _teach(circuit, g_teacher, rng, examples, test_examples,
                  f"teacher seed={seed} examples={examples}{amp}", {"teacher_seed": seed, "amplitude": amplitude},
                  amplitude)


def circuit_teacher_task(circuit: Circuit, teacher: Circuit, seed: int = 0, examples: int = 16,
                         test_examples: int | None = None, amplitude: float = 1.0) -> Task:
    """A teacher task whose teacher is another circuit file of the same topology.

    The targets are ``teacher``'s free-state outputs V*_O(x) = T(g*) x (V) with g* =
    ``teacher.g`` (S); inputs are uniform in [-1, 1] V, seeded by ``seed``. Used where
    the teacher point matters, e.g. a symmetric teacher on the kite. Raises TaskError
    naming the first edge, node or terminal where the two circuits differ. ``amplitude``:
    inputs uniform in [-a, a] V instead (see :func:`teacher_task`).
    """
    _check_examples(examples)
    _check_inputs(circuit)
    _check_amplitude(amplitude)
    _check_same_topology(circuit, teacher)
    amp = f" amplitude={amplitude:g}V" if amplitude != 1 else ""
    return _teach(circuit, teacher.g, np.random.default_rng(seed), examples, test_examples,
                  f"teacher circuit {teacher.source} examples={examples}{amp}",
                  {"teacher_circuit": str(teacher.source), "input_seed": seed, "amplitude": amplitude}, amplitude)


def _check_inputs(circuit: Circuit) -> None:
    if not circuit.inputs:
        raise TaskError(f"{circuit.source}: circuit '{circuit.name}' has no inputs: every node sits at 0 V whatever "
                        "the conductances, so there is nothing to learn")


def _check_amplitude(amplitude):
    if isinstance(amplitude, bool) or not isinstance(amplitude, (int, float)) or not math.isfinite(amplitude) \
            or amplitude <= 0:
        raise TaskError(f"--amplitude {amplitude!r}: the teacher's input amplitude must be a positive number of volts")


def _check_examples(examples):
    if examples < 1:
        raise TaskError(f"teacher task: examples must be at least 1, got {examples}")


def _check_same_topology(c: Circuit, t: Circuit) -> None:
    where = f"teacher circuit {t.source} against {c.source}"
    names = lambda idx, circ: [circ.nodes[i] for i in idx]
    for what, mine, theirs in (("inputs", names(c.inputs, c), names(t.inputs, t)),
                               ("outputs", names(c.outputs, c), names(t.outputs, t)),
                               ("ground", [c.nodes[c.ground]], [t.nodes[t.ground]])):
        if mine != theirs:
            raise TaskError(f"{where}: {what} differ ({', '.join(theirs)} instead of {', '.join(mine)})")
    if c.m != t.m:
        raise TaskError(f"{where}: {t.m} edges instead of {c.m}")
    for e in range(c.m):
        ours = (c.edge_names[e], {c.nodes[c.a[e]], c.nodes[c.b[e]]})
        theirs = (t.edge_names[e], {t.nodes[t.a[e]], t.nodes[t.b[e]]})
        if ours != theirs:
            raise TaskError(f"{where}: edge {e + 1} is {theirs[0]} between {'/'.join(sorted(theirs[1]))}, "
                            f"expected {ours[0]} between {'/'.join(sorted(ours[1]))}")


def _teach(circuit, g_teacher, rng, examples, test_examples, description, meta, amplitude=1.0) -> Task:
    from hil.exact import free_state

    n_test = max(1, examples // 4) if test_examples is None else test_examples
    X = amplitude * rng.uniform(-1.0, 1.0, (examples + n_test, len(circuit.inputs)))
    Y = free_state(circuit, X, np.asarray(g_teacher, float))[:, list(circuit.outputs)]
    return Task(X[:examples], Y[:examples], X[examples:], Y[examples:], description=description,
                meta={**meta, "g_teacher": np.asarray(g_teacher, float).tolist()})


def write_csv_task(circuit: Circuit, X, Y, path) -> Path:
    """Write examples as a CSV task file (header: input names then output names)."""
    path = Path(path)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(circuit.input_names + circuit.output_names)
        for x, y in zip(np.atleast_2d(X), np.atleast_2d(Y)):
            w.writerow([repr(float(v)) for v in list(x) + list(y)])
    return path
