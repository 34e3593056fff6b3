"""XOR on a network of transistor edges (hil generate transistor), trained by coupled learning."""

import json

import numpy as np
import pytest

from helpers import run_hil
from hil.circuit import load_circuit
from hil.elements import Mosfet, level1_parameters


def _generate(tmp_path, *extra):
    path = tmp_path / "xor.toml"
    r = run_hil("generate", "transistor", "-o", path, *extra)
    assert r.returncode == 0, r.stderr
    return path, load_circuit(path)


def test_the_generator_writes_channels_from_sources_to_hidden_nodes_to_outputs(tmp_path):
    from hil.data import folder
    path, c = _generate(tmp_path, "--hidden", "5", "--sizes", "3,2")
    ch = c.group(Mosfet)
    ins, outs = set(c.input_names), set(c.output_names)
    hid = {f"h{j + 1}" for j in range(5)}
    ends = [{c.nodes[a], c.nodes[b]} for a, b in ch.nodes]
    # 3 features as pairs and a bias pair (the encoding's 2d + 2 layout), each joined to each hidden node,
    # each hidden node to each of the 2 outputs
    assert c.input_names == ["x1p", "x1n", "x2p", "x2n", "x3p", "x3n", "biasp", "biasn"]
    assert len(ch) == 8 * 5 + 5 * 2 == len({frozenset(e) for e in ends})
    assert all(len(e & ins) == 1 and len(e & hid) == 1 or len(e & hid) == 1 and len(e & outs) == 1 for e in ends)
    assert not ch.midpoint.any() and len(ch.trainable) == len(ch)  # gates against ground, every vg trained
    card = level1_parameters((folder("netlists") / "nmos_level1.lib").read_text())
    assert np.allclose(ch.values["kp"], card["kp"]) and np.allclose(ch.values["vto"], card["vto"])
    assert np.allclose(ch.values["w"] / ch.values["l"], 6.0)  # the W/L of --device mosfet
    assert np.all((ch.values["vg"] >= 1.0) & (ch.values["vg"] <= 6.0))


def test_the_untrained_network_is_not_affine_in_its_inputs(tmp_path):
    """XOR needs a term in x1 x2. An affine circuit's outputs at the four corners cancel in
    V(++) + V(--) - V(+-) - V(-+) (to rounding: the same topology with each channel a resistor of its
    small-signal conductance k (vg - vto)); the channels' k (vg - vto - V_low) leaves millivolts."""
    import hil
    from hil.circuit import make_circuit
    _, c = _generate(tmp_path)
    X = np.array([[s1, -s1, s2, -s2, 1.0, -1.0] for s1, s2 in ((2, 2), (-2, -2), (2, -2), (-2, 2))])
    defect = lambda V: np.abs(V[0] + V[1] - V[2] - V[3])
    ch = c.group(Mosfet)
    g = ch.values["kp"] * ch.values["w"] / ch.values["l"] * (ch.values["vg"] - ch.values["vto"])
    edges = [(f"R{k}", c.nodes[a], c.nodes[b], g[k]) for k, (a, b) in enumerate(ch.nodes)]
    edges += [(c.edge_names[e], c.nodes[c.a[e]], c.nodes[c.b[e]], c.g[e]) for e in range(c.m)]
    linear = make_circuit("linear", edges, "gnd", c.input_names, c.output_names, 1e-6, 1.0)
    assert np.all(defect(hil.predict(linear, X)) < 1e-12)
    assert np.all(defect(hil.predict(c, X)) > 2e-3)  # 4.1 and 9.6 mV at seed 0


def _learns_xor(tmp_path, backend):
    """Train the generated network on XOR with cl (default nudge, 20 epochs of 10, seed 0) on ``backend``; then
    count, independently of hil's accuracy, the corners (+-1, +-1) the trained circuit classifies right."""
    import hil
    path, _ = _generate(tmp_path)
    out = tmp_path / f"run-{backend}"
    r = run_hil("train", path, "--dataset", "xor", "--rule", "cl", "--input-volts", "2", "--epochs", "20",
                "--backend", backend, "--out", out, "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    enc = json.loads((out / "task.json").read_text())["encoding"]
    corners = np.array([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]])
    z = 2.0 * (corners - enc["mean"]) / enc["scale"]
    X = np.column_stack([z[:, 0], -z[:, 0], z[:, 1], -z[:, 1], np.ones(4), -np.ones(4)])
    V = hil.predict(load_circuit(out / "trained.toml"), X, backend)
    right = int(np.sum((V[:, 1] > V[:, 0]) == (corners[:, 0] * corners[:, 1] > 0)))  # y2: class 1, same signs
    return res, right


def test_coupled_learning_learns_xor_on_the_embedded_substrate(tmp_path):
    res, right = _learns_xor(tmp_path, "ideal")
    assert right == 4
    assert res["test_accuracy"] == 1.0 and res["confusion_test"] == [[20, 0], [0, 20]]
    assert res["final_loss"] < 0.8 * res["initial_loss"]


def test_coupled_learning_learns_xor_on_ngspice(tmp_path, ngspice):
    res, right = _learns_xor(tmp_path, "ngspice")
    assert right == 4
    assert res["test_accuracy"] == 1.0 and res["confusion_test"] == [[20, 0], [0, 20]]


@pytest.mark.parametrize("args, words", [(("--hidden", "0"), ("--hidden 0", "at least 1")),
                                         (("--sizes", "2"), ("--sizes", "2,2"))])
def test_bad_transistor_options_are_named(tmp_path, args, words):
    r = run_hil("generate", "transistor", "-o", tmp_path / "t.toml", *args)
    assert r.returncode == 2 and all(w in r.stderr for w in words), r.stderr
    assert not (tmp_path / "t.toml").exists()
