"""Classification tasks: labelled data onto a circuit's sources and outputs, and what they report.

The encoding (Kendall et al. 2020; Scellier 2024), one convention:

- **features**: each feature x_j is standardised with the mean and standard deviation of
  the *training* split, z_j = u (x_j - m_j) / s_j with u = 1 V per standard deviation
  (``--input-volts``: a bench whose sources are limited to +-2 V wants about 0.5), and
  drives input sources. The
  circuit's inputs, in file order, are read as one of these layouts (d features):

  ============  =========  ====================================================
  inputs        layout     sources
  ============  =========  ====================================================
  d             plain      z_1, ..., z_d
  d + 1         plain      z_1, ..., z_d, then a bias source at +V_b
  2d            pairs      +z_1, -z_1, +z_2, -z_2, ... (signed weights from positive conductances)
  2d + 1        pairs      the pairs, then +V_b
  2d + 2        pairs      the pairs, then +V_b, -V_b
  ============  =========  ====================================================

  (d = 1 with 2 inputs is read as a pair.) V_b = :data:`BIAS_VOLTS` (1 V). In the plain
  layouts a feature column named like an input node drives that node; otherwise the
  columns drive the inputs in file order.
- **outputs**: one output per class (reading V_c), or, with twice as many outputs as
  classes, a pair per class in file order read differentially (V_c = V_c+ - V_c-).
- **targets**: the true class's reading at V_on, every other class's at V_off (a pair:
  V_c+ = +t/2, V_c- = -t/2). Defaults :data:`V_ON` and :data:`V_OFF`.
- **prediction**: the class whose reading is highest (argmax_c V_c).

The cost stays C = 1/2 ||V_O - y||^2 (V^2), so every rule applies unchanged. Accuracy is
the fraction of examples whose prediction equals their label.

With ``cost = "hinge"`` (``--cost hinge``) an output already past its target on the right
side (the true class's reading above V_on, another's below V_off) counts no error and is not
nudged: C = 1/2 sum_o max(0, s_o (y_o - V_o))^2, s_o = +1 where y_o is the output's upper
target, -1 where it is the lower one (a squared hinge). The rules are unchanged: each step
reads the free outputs first and replaces the targets of the outputs past theirs by their own
readings (:func:`hinge_targets`), so r = V_O - y' is dC/dV_O and every rule's nudge, clamp or
adjoint acts on the outputs in error only.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hil.tasks import Task, TaskError, plain_number

DATASETS = ("iris", "digits", "wine", "breast-cancer")
GENERATED = ("xor", "moons", "circles")
#: volts of a bias source (the second of a bias pair sits at -BIAS_VOLTS)
BIAS_VOLTS = 1.0
#: target reading of the true class and of the others, volts
V_ON, V_OFF = 0.5, -0.5
#: examples of a generated data set (xor: the four corners, repeated with noise)
GENERATED_EXAMPLES = 200


@dataclass
class Labelled:
    """Examples with labels, before the split: X (N, d) features, y (N,) class indices into ``classes``."""

    X: np.ndarray
    y: np.ndarray
    classes: list
    features: list
    source: str


# -- reading data ---------------------------------------------------------------------------------

def _class_codes(values, where) -> tuple:
    """Labels as class indices: integers sort numerically, strings alphabetically."""
    values = [v.strip() if isinstance(v, str) else v for v in values]
    nums = [plain_number(v) if isinstance(v, str) else float(v) for v in values]
    if all(n is not None and float(n).is_integer() for n in nums):
        keys = sorted({int(n) for n in nums})
        codes = np.array([keys.index(int(n)) for n in nums])
        return codes, [str(k) for k in keys]
    keys = sorted(set(map(str, values)))
    return np.array([keys.index(str(v)) for v in values]), keys


def load_labelled_csv(path, label: str) -> Labelled:
    """A CSV file with a header: ``label`` names the label column (strings or integers), every other column is a
    feature (plain decimal numbers). A bare file name that is not in the current folder may name a shipped
    example (``iris.csv``: Fisher's Iris, label column ``species``). TaskError naming file, line and column for anything else."""
    path = Path(path)
    if not path.exists() and path.name == str(path):  # a bare name: the shipped example of that name, if any
        from hil.data import folder
        shipped = folder("circuits") / path.name
        path = shipped if shipped.is_file() and shipped.suffix == ".csv" else path
    if not path.is_file():
        raise TaskError(f"{path}: no such data file" if not path.exists() else f"{path}: not a file")
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            rows = [(i + 1, r) for i, r in enumerate(csv.reader(fh))
                    if r and any(x.strip() for x in r) and not r[0].startswith("#")]
    except UnicodeDecodeError as exc:
        raise TaskError(f"{path}: not a UTF-8 text file (byte {exc.start}); save the CSV as UTF-8") from None
    except csv.Error as exc:
        raise TaskError(f"{path}: not a CSV file ({exc})") from None
    if not rows:
        raise TaskError(f"{path}: empty data file (expected a header naming the feature and label columns)")
    hline, header = rows[0]
    header = [h.strip() for h in header]
    if label not in header:
        raise TaskError(f"{path}:{hline}: --label {label!r}: no such column (columns: {', '.join(header)})")
    for h in header:
        if header.count(h) > 1:
            raise TaskError(f"{path}:{hline}: column '{h}' appears twice")
    li = header.index(label)
    feats = [h for h in header if h != label]
    if not feats:
        raise TaskError(f"{path}:{hline}: no feature column besides the label column '{label}'")
    X, labels = [], []
    for line, r in rows[1:]:
        if len(r) != len(header):
            raise TaskError(f"{path}:{line}: {len(r)} values, the header has {len(header)}")
        if not r[li].strip():
            raise TaskError(f"{path}:{line}: column {li + 1} '{label}': empty label")
        vals = []
        for col, x in enumerate(r):
            if col == li:
                continue
            v = plain_number(x)
            if v is None:
                what = "missing" if x.strip().lower() in ("", "nan", "na", "n/a", "null") else repr(x.strip())
                raise TaskError(f"{path}:{line}: column {col + 1} '{header[col]}': feature value {what} is not a "
                                "number (plain decimals such as -0.25 or 1e-3; remove or fill the row)")
            vals.append(v)
        X.append(vals)
        labels.append(r[li])
    if not X:
        raise TaskError(f"{path}: no examples after the header")
    y, classes = _class_codes(labels, path)
    return Labelled(np.array(X, float), y, classes, feats, str(path))


def load_npz(path) -> Labelled:
    """Arrays ``X`` (N, d) and ``y`` (N,) of a .npz file (y: integers or strings); TaskError naming what is missing."""
    path = Path(path)
    if not path.is_file():
        raise TaskError(f"{path}: no such data file" if not path.exists() else f"{path}: not a file")
    try:
        z = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise TaskError(f"{path}: not a .npz file numpy can read ({type(exc).__name__}: {exc})") from None
    with z:
        missing = [k for k in ("X", "y") if k not in z.files]
        if missing:
            raise TaskError(f"{path}: no array {' or '.join(repr(k) for k in missing)} (arrays: "
                            f"{', '.join(z.files) or 'none'}); a data file holds X (examples x features) and y "
                            "(one label per example)")
        X, y = z["X"], z["y"]
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim > 2:
        X = X.reshape(len(X), -1)  # images: one feature per pixel
    if y.ndim != 1 or len(y) != len(X):
        raise TaskError(f"{path}: y has shape {y.shape}; expected one label per example of X ({len(X)})")
    if not np.issubdtype(X.dtype, np.number) or np.issubdtype(X.dtype, np.complexfloating):
        raise TaskError(f"{path}: X holds {X.dtype}, not real numbers")
    if np.issubdtype(y.dtype, np.floating) and not np.all(np.mod(y[np.isfinite(y)], 1) == 0):
        raise TaskError(f"{path}: y holds non-whole numbers; labels are integers or strings")
    if np.issubdtype(y.dtype, np.floating) and not np.all(np.isfinite(y)):
        raise TaskError(f"{path}: y holds NaN or infinite labels")
    y, classes = _class_codes(y.astype(int) if np.issubdtype(y.dtype, np.number) else y.astype(str), path)
    return Labelled(X, y, classes, [f"x{j + 1}" for j in range(X.shape[1])], str(path))


def load_dataset(name: str, seed: int = 0) -> Labelled:
    """A data set shipped with scikit-learn (nothing is downloaded) or generated from ``seed``."""
    if name in GENERATED:
        return generated(name, seed)
    if name not in DATASETS:
        raise TaskError(f"--dataset {name!r}: known data sets: {', '.join(DATASETS + GENERATED)}")
    from sklearn import datasets
    d = getattr(datasets, "load_" + name.replace("-", "_"))()
    classes = [str(c) for c in d.target_names]
    feats = [str(f).replace(" ", "_") for f in getattr(d, "feature_names", [])] or \
        [f"x{j + 1}" for j in range(d.data.shape[1])]
    return Labelled(np.asarray(d.data, float), np.asarray(d.target, int), classes, feats, f"dataset:{name}")


def generated(name: str, seed: int = 0, n: int = GENERATED_EXAMPLES) -> Labelled:
    """xor (the four corners of [-1, 1]^2, label x1 x2 > 0, noise 0.1), moons and circles (scikit-learn's
    generators, noise 0.1 and, for circles, factor 0.5), ``n`` examples drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    if name == "xor":
        corners = np.array([[-1, -1], [-1, 1], [1, -1], [1, 1]], float)
        X = corners[np.arange(n) % 4] + 0.1 * rng.standard_normal((n, 2))
        y = (corners[np.arange(n) % 4].prod(axis=1) > 0).astype(int)
    else:
        from sklearn import datasets
        rs = int(rng.integers(2**31))
        X, y = (datasets.make_moons(n, noise=0.1, random_state=rs) if name == "moons"
                else datasets.make_circles(n, noise=0.1, factor=0.5, random_state=rs))
    return Labelled(np.asarray(X, float), np.asarray(y, int), ["0", "1"], ["x1", "x2"], f"dataset:{name}")


# -- the encoding -----------------------------------------------------------------------------------

def layout(n_inputs: int, d: int, where: str) -> tuple:
    """(pairs, bias voltages) of a circuit with ``n_inputs`` inputs for ``d`` features (see the module docstring)."""
    table = [(2 * d, True, []), (2 * d + 1, True, [BIAS_VOLTS]), (2 * d + 2, True, [BIAS_VOLTS, -BIAS_VOLTS]),
             (d, False, []), (d + 1, False, [BIAS_VOLTS])]
    for k, pairs, bias in table:
        if k == n_inputs:
            return pairs, bias
    raise TaskError(f"{where}: {n_inputs} inputs do not fit {d} features: the circuit needs d, d + 1 (a bias), "
                    f"2d (+-x pairs), 2d + 1 or 2d + 2 (pairs and a bias or a bias pair) inputs, i.e. "
                    f"{d}, {d + 1}, {2 * d}, {2 * d + 1} or {2 * d + 2} (`hil generate board-iris` and "
                    "`hil generate drn` write circuits that fit)")


def encoding_for(circuit, data: Labelled, v_on: float = V_ON, v_off: float = V_OFF, volts: float = 1.0) -> dict:
    """The encoding of ``data`` onto ``circuit`` (a dict recorded in the run; mean and scale come with the split)."""
    where = f"{circuit.source}: circuit '{circuit.name}'"
    d, C, n_out = data.X.shape[1], len(data.classes), len(circuit.outputs)
    pairs, bias = layout(len(circuit.inputs), d, where)
    if n_out == C:
        differential = False
    elif n_out == 2 * C:
        differential = True
    else:
        more = "more classes than outputs" if C > n_out else "outputs that fit no class count"
        raise TaskError(f"{where}: {n_out} outputs for {C} classes ({', '.join(data.classes[:10])}"
                        f"{' ...' if C > 10 else ''}) in {data.source}: {more}; one output per class ({C}) or a "
                        f"differential pair per class ({2 * C}) is needed")
    if isinstance(volts, bool) or not (isinstance(volts, (int, float)) and math.isfinite(volts) and volts > 0):
        raise TaskError(f"--input-volts {volts!r}: volts per standard deviation must be a positive number")
    if not (math.isfinite(v_on) and math.isfinite(v_off)) or v_on <= v_off:
        raise TaskError(f"--v-on {v_on} --v-off {v_off}: the true class's target must be above the others' (volts)")
    order = list(range(d))
    if not pairs and set(circuit.input_names[:d]) == set(data.features):  # columns named after input nodes
        order = [data.features.index(n) for n in circuit.input_names[:d]]
    return {"features": list(data.features), "classes": list(data.classes), "volts": float(volts), "pairs": pairs, "bias": bias,
            "differential": differential, "v_on": float(v_on), "v_off": float(v_off), "order": order}


def encode_inputs(enc: dict, X) -> np.ndarray:
    """Source voltages (N, |inputs|): standardised features times ``volts`` (V per standard deviation), in the
    encoding's order, as pairs if asked, then the biases."""
    Z = enc.get("volts", 1.0) * (np.asarray(X, float)[:, enc["order"]] - np.asarray(enc["mean"])[enc["order"]]) / \
        np.asarray(enc["scale"])[enc["order"]]
    if enc["pairs"]:
        Z = np.stack([Z, -Z], axis=2).reshape(len(Z), 2 * Z.shape[1])
    if enc["bias"]:
        Z = np.hstack([Z, np.broadcast_to(np.asarray(enc["bias"], float), (len(Z), len(enc["bias"])))])
    return Z


def encode_targets(enc: dict, y) -> np.ndarray:
    """Target output voltages (N, |O|): the true class's reading at v_on, the others' at v_off."""
    C = len(enc["classes"])
    T = np.where(np.arange(C)[None, :] == np.asarray(y)[:, None], enc["v_on"], enc["v_off"])
    if enc["differential"]:
        T = np.stack([T / 2, -T / 2], axis=2).reshape(len(T), 2 * C)
    return T


def readings(enc: dict, VO) -> np.ndarray:
    """Each class's reading (N, C), volts: its output, or its pair's difference V_c+ - V_c-."""
    VO = np.asarray(VO, float)
    return VO[:, 0::2] - VO[:, 1::2] if enc["differential"] else VO


def predict(enc: dict, VO) -> np.ndarray:
    """The predicted class of each example: argmax_c of the readings."""
    return np.argmax(readings(enc, VO), axis=1)


def accuracy(pred, labels) -> float:
    """The fraction of examples whose prediction equals the label, in [0, 1] (NaN for no example)."""
    pred, labels = np.asarray(pred), np.asarray(labels)
    return float(np.mean(pred == labels)) if len(labels) else float("nan")


def confusion(pred, labels, n_classes: int) -> np.ndarray:
    """Counts (C, C): row = true class, column = predicted class."""
    M = np.zeros((n_classes, n_classes), int)
    np.add.at(M, (np.asarray(labels, int), np.asarray(pred, int)), 1)
    return M


# -- the task ---------------------------------------------------------------------------------------

def stratified_split(y, n_classes: int, test_fraction: float, seed: int, classes, source) -> tuple:
    """(train, test) indices: round(n_c f) examples of each class c held out, drawn with ``seed``.

    TaskError when a class ends with no training example."""
    rng = np.random.default_rng(seed)
    tr, te = [], []
    for c in range(n_classes):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = int(round(len(idx) * test_fraction))
        if len(idx) - k < 1:
            raise TaskError(f"{source}: class '{classes[c]}' has {len(idx)} example(s); with --test-fraction "
                            f"{test_fraction} none is left for training")
        te.append(idx[:k])
        tr.append(idx[k:])
    return np.sort(np.concatenate(tr)), np.sort(np.concatenate(te))


#: the costs a classification trains on: the squared error to the targets, or its squared hinge
COSTS = ("squared", "hinge")


def hinge_targets(enc: dict, Y, VO) -> np.ndarray:
    """The targets y' (N, |O|) volts of the hinge cost at free outputs VO: y'_o = V_o where output o is already
    past its target y_o on the right side (above it where y_o is the output's upper target, below where it is
    the lower one), y_o elsewhere; with y' the rules' residual V_O - y' is dC/dV_O of
    C = 1/2 sum_o max(0, s_o (y_o - V_o))^2."""
    Y, VO = np.asarray(Y, float), np.asarray(VO, float)
    T = encode_targets(enc, np.arange(len(enc["classes"])))  # (C, |O|): each class's targets
    mid = 0.5 * (T.max(axis=0) + T.min(axis=0))               # between each output's two targets
    upper = Y > mid
    past = np.where(upper, VO >= Y, VO <= Y)
    return np.where(past, VO, Y)


def classification_task(circuit, data: Labelled, test_fraction: float = 0.2, seed: int = 0,
                        v_on: float = V_ON, v_off: float = V_OFF, volts: float = 1.0, cost: str = "squared") -> Task:
    """The task of classifying ``data`` with ``circuit``: X in source volts, Y the target volts, the labels beside.

    Standardisation is fitted on the training split only and recorded in the task's encoding; ``cost``
    "squared" (default) or "hinge" (:func:`hinge_targets`) is recorded there too.
    """
    if isinstance(test_fraction, bool) or not (0 <= test_fraction < 1):
        raise TaskError(f"--test-fraction {test_fraction}: must be at least 0 and below 1")
    if cost not in COSTS:
        raise TaskError(f"--cost {cost!r}: known costs: {', '.join(COSTS)}")
    C = len(data.classes)
    if C < 2:
        raise TaskError(f"{data.source}: one class only ('{data.classes[0]}'): there is nothing to tell apart")
    bad = ~np.isfinite(np.asarray(data.X, float))
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise TaskError(f"{data.source}: example {i + 1}, feature column {j + 1} '{data.features[j]}': "
                        f"{data.X[i, j]} is not a finite number")
    enc = encoding_for(circuit, data, v_on, v_off, volts)
    tr, te = stratified_split(data.y, C, test_fraction, seed, data.classes, data.source)
    Xtr = np.asarray(data.X[tr], float)
    mean, scale = Xtr.mean(axis=0), Xtr.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)  # a constant feature stays at 0 V
    enc.update(mean=mean.tolist(), scale=scale.tolist())
    if cost != "squared":  # absent: the squared error (every run recorded before the hinge existed)
        enc["cost"] = cost
    task = Task(encode_inputs(enc, Xtr), encode_targets(enc, data.y[tr]),
                encode_inputs(enc, data.X[te]), encode_targets(enc, data.y[te]),
                description=f"classify {data.source} ({C} classes)",
                meta={"data": data.source, "test_fraction": test_fraction, "split_seed": seed})
    task.encoding, task.labels_train, task.labels_test = enc, data.y[tr], data.y[te]
    return task
