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


#: the largest voltage a task may hold (V): a megavolt is beyond any circuit or bench hil drives, and the
#: squares the loss and the curvature take of such values stay far inside double precision (past 1e154 V they overflow)
MAX_VOLTS = 1e6


class TaskError(ValueError):
    """A task that does not fit its circuit; the message names file, line and column."""


@dataclass
class Task:
    """Examples in volts, and what the task reports beside the loss.

    A classification task (``encoding`` set, see :mod:`hil.classify`) also holds each
    example's class (``labels_train``, ``labels_test``) and reports accuracy; the loop logs
    the scores :meth:`scores` names, whatever the task.
    """

    X_train: np.ndarray
    Y_train: np.ndarray
    X_test: np.ndarray
    Y_test: np.ndarray
    description: str = ""
    meta: dict = field(default_factory=dict)
    encoding: dict | None = None
    labels_train: np.ndarray | None = None
    labels_test: np.ndarray | None = None

    @property
    def n_train(self) -> int:
        return len(self.X_train)

    @property
    def kind(self) -> str:
        return "classification" if self.encoding is not None else "regression"

    @property
    def score_names(self) -> list:
        """The log's columns beside the losses: ``train_accuracy``, ``test_accuracy`` for a classification."""
        return ["train_accuracy", "test_accuracy"] if self.encoding is not None else []

    def scores(self, split: str, VO) -> dict:
        """What the task reports for ``split`` ('train' or 'test') from the free-state outputs VO (N, |O|) volts."""
        if self.encoding is None:
            return {}
        from hil.classify import accuracy, predict
        labels = self.labels_train if split == "train" else self.labels_test
        return {f"{split}_accuracy": accuracy(predict(self.encoding, VO), labels)}

    def summary(self, VO_train, VO_test) -> dict:
        """The end of a run: the final scores and, for a classification, the confusion matrices (row: true class)."""
        if self.encoding is None:
            return {}
        from hil.classify import confusion, predict
        C = len(self.encoding["classes"])
        out = {**self.scores("train", VO_train), **self.scores("test", VO_test), "classes": self.encoding["classes"]}
        for split, VO, y in (("train", VO_train, self.labels_train), ("test", VO_test, self.labels_test)):
            out[f"confusion_{split}"] = confusion(predict(self.encoding, VO), y, C).tolist()
        return out

    def to_dict(self) -> dict:
        d = {"description": self.description, "meta": self.meta,
             "X_train": self.X_train.tolist(), "Y_train": self.Y_train.tolist(),
             "X_test": self.X_test.tolist(), "Y_test": self.Y_test.tolist()}
        if self.encoding is not None:
            d.update(encoding=self.encoding, labels_train=np.asarray(self.labels_train).tolist(),
                     labels_test=np.asarray(self.labels_test).tolist())
        return d

    def record(self, folder) -> dict:
        """task.json's content for a run in ``folder``; a classification task's arrays go to ``folder/task.npz``
        (binary, exact, read back without a JSON parse of every number)."""
        if self.encoding is None:
            return self.to_dict()
        import io

        from hil.runs import atomic_write
        buf = io.BytesIO()
        np.savez(buf, X_train=self.X_train, Y_train=self.Y_train, X_test=self.X_test, Y_test=self.Y_test,
                 labels_train=np.asarray(self.labels_train, int), labels_test=np.asarray(self.labels_test, int))
        atomic_write(Path(folder) / "task.npz", buf.getvalue())
        return {"description": self.description, "meta": self.meta, "kind": self.kind, "encoding": self.encoding,
                "arrays": "task.npz"}

    @staticmethod
    def from_dict(d: dict, folder=None) -> "Task":
        """The task of a to_dict() or record() dict (``folder``: where record() put its arrays)."""
        if "arrays" in d:
            with np.load(Path(folder) / d["arrays"], allow_pickle=False) as z:
                a = {k: z[k] for k in z.files}
            d = {**d, **a}
        arr = lambda k: np.array(d[k], dtype=float)
        t = Task(arr("X_train"), arr("Y_train"), arr("X_test"), arr("Y_test"),
                 d.get("description", ""), d.get("meta", {}))
        if d.get("encoding") is not None:
            t.encoding = d["encoding"]
            t.labels_train = np.asarray(d["labels_train"], int)
            t.labels_test = np.asarray(d["labels_test"], int)
        return t


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
            if abs(v) > MAX_VOLTS:
                raise TaskError(f"{path}:{line}: column {col + 1} '{header[col]}': {x.strip()} V is beyond "
                                f"+-{MAX_VOLTS:g} V (no circuit holds it; check the column's unit)")
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
    # the teacher's own parameters: its conductances and every VCCS's gm (not the student's)
    return _teach(teacher, teacher.theta, np.random.default_rng(seed), examples, test_examples,
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
    if amplitude > MAX_VOLTS:
        raise TaskError(f"--amplitude {amplitude!r}: inputs of up to {amplitude:g} V are beyond +-{MAX_VOLTS:g} V")


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
    if c.k != t.k:
        raise TaskError(f"{where}: {t.k} VCCS instead of {c.k}")
    for j in range(c.k):
        ours = (c.vccs_names[j], [c.nodes[i] for i in c.vccs_nodes[j]])
        theirs = (t.vccs_names[j], [t.nodes[i] for i in t.vccs_nodes[j]])
        if ours != theirs:
            raise TaskError(f"{where}: vccs {j + 1} is {theirs[0]} on {'/'.join(theirs[1])}, "
                            f"expected {ours[0]} on {'/'.join(ours[1])}")


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


def factorize_task(circuit: Circuit, rank: int, seed: int = 0, scale: float = 1.0, inputs: str = "onehot",
                   examples: int | None = None) -> Task:
    """The factorisation task: y = Y x for a target map Y (|O| x |inputs|, V/V) of rank ``rank``.

    Y = U diag(s) V^T with U, V random orthonormal (seeded), s = scale * linspace(1, 0.5, rank). ``inputs``:
    'onehot' (the |inputs| unit vectors, 1 V: the targets are Y's columns; no test split) or 'random'
    (``examples`` inputs N(0, 1) V, default 4 |inputs|, and a quarter more held out). meta holds Y and
    the rank. On a layered circuit of hidden width r the least loss is :func:`eckart_young` at r.
    """
    m, n = len(circuit.inputs), len(circuit.outputs)
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1 or rank > min(m, n):
        raise TaskError(f"factorize: --rank {rank} must be between 1 and min(inputs, outputs) = {min(m, n)} "
                        f"for {circuit.name} ({m} inputs, {n} outputs)")
    if not np.isfinite(scale) or scale <= 0:
        raise TaskError(f"factorize: --scale {scale} must be a positive number (volts per volt)")
    if scale > MAX_VOLTS:
        raise TaskError(f"factorize: --scale {scale:g}: targets of up to {scale:g} V for 1 V inputs, beyond "
                        f"+-{MAX_VOLTS:g} V; Y's largest singular value is at most {MAX_VOLTS:g} V/V")
    rng = np.random.default_rng([int(seed), 0xF0])
    U = np.linalg.qr(rng.standard_normal((n, rank)))[0]
    V = np.linalg.qr(rng.standard_normal((m, rank)))[0]
    Y = U @ np.diag(scale * np.linspace(1.0, 0.5, rank)) @ V.T
    if inputs == "onehot":
        X, Xt = np.eye(m), np.zeros((0, m))
    elif inputs == "random":
        N = 4 * m if examples is None else int(examples)
        if N < 1:
            raise TaskError(f"factorize: --examples {N} must be at least 1")
        Xall = rng.standard_normal((N + max(1, N // 4), m))
        X, Xt = Xall[:N], Xall[N:]
    else:
        raise TaskError(f"factorize: --inputs {inputs!r}: expected onehot or random")
    return Task(X, X @ Y.T, Xt, Xt @ Y.T,
                description=f"factorize rank={rank} scale={scale:g} inputs={inputs} seed={seed}",
                meta={"Y": Y.tolist(), "rank": rank, "scale": scale, "inputs": inputs, "seed": seed})


def eckart_young(X, Y, r: int) -> float:
    """The least loss mean 1/2 ||M x - y||^2 over maps M of rank <= r (V^2).

    With P the projector onto the column space of X (N x d_0): the part of the targets no linear map
    reaches, ||(I - P) Y||^2, plus the tail of P Y's singular values beyond r (Eckart-Young), over 2N.
    """
    X, Y = np.atleast_2d(X), np.atleast_2d(Y)
    Q = np.linalg.qr(X)[0][:, :np.linalg.matrix_rank(X)]
    PY = Q @ (Q.T @ Y)
    s = np.linalg.svd(PY, compute_uv=False)
    return float((np.sum((Y - PY) ** 2) + np.sum(s[r:] ** 2)) / (2 * len(X)))


def relative_excess(loss_value: float, X, Y, r: int) -> float:
    """(C - C*) / C_0: the loss above the rank-r optimum C* as a fraction of the zero map's loss C_0 (C* may be 0)."""
    c0 = float(np.sum(np.atleast_2d(Y) ** 2) / (2 * len(X)))
    return (loss_value - eckart_young(X, Y, r)) / c0
