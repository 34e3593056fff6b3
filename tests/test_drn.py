"""hil generate drn: the deep resistive network's layout, its free state against independent solves, and Iris at the
defaults (the issue's Done-when, on the command line)."""

import json
import shutil

import numpy as np
import pytest
from helpers import run_hil

from hil import classify as cl
from hil.circuit import load_circuit
from hil.circuits import deep_resistive_network
from hil.elements import VT


@pytest.fixture(scope="module")
def iris_drn(tmp_path_factory):
    p = tmp_path_factory.mktemp("drn") / "iris.toml"
    r = run_hil("generate", "drn", "--sizes", "4,8,3", "-o", p)
    assert r.returncode == 0, r.stderr
    return p


def test_the_generator_writes_the_encodings_layout_and_cites_its_sources(iris_drn):
    text = iris_drn.read_text()
    assert "Kendall et al. (2020)" in text and "Scellier (ICML 2024)" in text and "papers/fast-drn" in text
    c = load_circuit(iris_drn)
    # 4 +-x pairs then a bias pair: the encoding's 2d + 2 layout; one differential pair per class
    assert cl.layout(len(c.inputs), 4, "t") == (True, [cl.BIAS_VOLTS, -cl.BIAS_VOLTS])
    assert tuple(c.input_names) == ("x1p", "x1n", "x2p", "x2n", "x3p", "x3n", "x4p", "x4n", "bp", "bn")
    assert tuple(c.output_names) == ("y1p", "y1n", "y2p", "y2n", "y3p", "y3n")
    enc = cl.encoding_for(c, cl.load_dataset("iris"))
    assert enc["pairs"] and enc["differential"] and enc["bias"] == [1.0, -1.0]
    # dense layers: 10 sources x 8 hidden, then (8 hidden + 2 biases) x 6 outputs
    assert c.m == 10 * 8 + 10 * 6
    gnd = c.ground
    (diodes,) = [grp for grp in c.elements if len(grp)]
    anodes, cathodes = diodes.nodes[:, 0], diodes.nodes[:, 1]
    assert sum(anodes == gnd) == 4 and sum(cathodes == gnd) == 4  # 4 excitatory (V >= 0), 4 inhibitory (V <= 0)
    assert c.lr_fraction == 2.5 and np.all((c.g >= c.g_min) & (c.g <= c.g_max))


@pytest.mark.parametrize("sizes, words", [("4,3", "at least one hidden layer"), ("4,0,3", "0 must be >= 1"),
                                          ("4,x,3", "'x' is not a whole number"), ("4,8,1", "at least 2 classes")])
def test_bad_sizes_are_refused_naming_the_option(tmp_path, sizes, words):
    r = run_hil("generate", "drn", "--sizes", sizes, "-o", tmp_path / "d.toml")
    assert r.returncode == 2 and "--sizes" in r.stderr and words in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "d.toml").exists()


def test_a_users_file_is_not_overwritten_without_force(tmp_path):
    p = tmp_path / "mine.toml"
    p.write_text("# my notes\n")
    r = run_hil("generate", "drn", "--sizes", "2,4,2", "-o", p)
    assert r.returncode == 2 and "--force" in r.stderr and p.read_text() == "# my notes\n"
    assert run_hil("generate", "drn", "--sizes", "2,4,2", "-o", p, "--force").returncode == 0
    assert load_circuit(p).m == 6 * 4 + 6 * 4


def _hidden(c):
    return [c.nodes.index(f"h1_{j + 1}") for j in range(sum(n.startswith("h1_") for n in c.nodes))]


def test_the_ideal_diode_free_state_is_the_least_dissipation_under_the_diodes_bounds():
    """The free state against an independent solve: the power 1/2 sum g (V_a - V_b)^2 minimised over the free nodes
    with each excitatory node >= 0 V and each inhibitory <= 0 V (scipy's bounded least squares), and KCL with the
    diode currents (each >= 0, flowing only where its node sits at 0 V)."""
    from scipy.optimize import lsq_linear

    from hil.exact import free_state

    c = deep_resistive_network((3, 6, 2), seed=4)
    rng = np.random.default_rng(0)
    X = np.hstack([np.repeat(rng.uniform(-2, 2, (5, 3)), 2, axis=1) * np.tile([1, -1], 3), np.tile([1.0, -1.0], (5, 1))])
    V = free_state(c, X)
    F = list(c.free)
    hid = _hidden(c)
    lo = np.array([0.0 if (i in hid and hid.index(i) < 3) else -np.inf for i in F])
    hi = np.array([0.0 if (i in hid and hid.index(i) >= 3) else np.inf for i in F])
    sq = np.sqrt(c.g)
    for x, v in zip(X, V):
        s = np.zeros(c.n)
        s[list(c.inputs)] = x
        # rows: sqrt(g_e) (V_a - V_b); free columns unknown, source columns moved to the right-hand side
        Bm = np.zeros((c.m, c.n))
        Bm[np.arange(c.m), c.a] = sq
        Bm[np.arange(c.m), c.b] -= sq
        ref = lsq_linear(Bm[:, F], -Bm @ s, bounds=(lo, hi), tol=1e-15, lsmr_tol="auto", method="bvls").x
        np.testing.assert_allclose(v[F], ref, atol=1e-9)
        # KCL: the edges' net current into each hidden node is what its diode carries
        net = np.zeros(c.n)
        i_e = c.g * (v[c.a] - v[c.b])
        np.add.at(net, c.a, -i_e)
        np.add.at(net, c.b, i_e)
        outs = list(c.outputs)
        np.testing.assert_allclose(net[outs], 0, atol=1e-12 * np.abs(i_e).max())
        for k, h in enumerate(hid):
            exc = k < 3
            i_d = -net[h] if exc else net[h]  # a diode from ground feeds the node; one to ground drains it
            assert i_d >= -1e-15
            assert (v[h] >= -1e-12) if exc else (v[h] <= 1e-12)
            assert abs(i_d * v[h]) <= 1e-12 * np.abs(i_e).max()


def test_the_shockley_diode_free_state_satisfies_kirchhoff():
    """--diode shockley: at every hidden node the edges' currents balance I_s (exp(v_j / V_t) - 1) of its diode."""
    from hil.exact import free_state

    c = deep_resistive_network((2, 4, 2), seed=1, diode="shockley")
    X = np.array([[0.8, -0.8, -0.3, 0.3, 1, -1], [-1.5, 1.5, 0.7, -0.7, 1, -1]])
    V = free_state(c, X)
    hid = _hidden(c)
    for v in V:
        net = np.zeros(c.n)
        i_e = c.g * (v[c.a] - v[c.b])
        np.add.at(net, c.a, -i_e)
        np.add.at(net, c.b, i_e)
        for k, h in enumerate(hid):
            vj = -v[h] if k < 2 else v[h]  # the drop anode -> cathode
            i_d = 1e-12 * np.expm1(vj / VT)
            assert net[h] == pytest.approx(-i_d if k < 2 else i_d, abs=1e-12 * np.abs(i_e).max())
        assert np.abs(net[list(c.outputs)]).max() <= 1e-12 * np.abs(i_e).max()


def _independent_accuracy(run, circuit, split):
    """Accuracy counted from the trained conductances: the exact free state of the run's recorded inputs, the
    class whose pair reads the largest difference V_c+ - V_c-, against the recorded labels."""
    from hil.exact import free_state

    z = np.load(run / "task.npz")
    trained = load_circuit(run / "trained.toml")
    VO = free_state(trained, z[f"X_{split}"])[:, list(circuit.outputs)]
    pred = np.argmax(VO[:, 0::2] - VO[:, 1::2], axis=1)
    return sum(int(p == t) for p, t in zip(pred, z[f"labels_{split}"])) / len(pred)


@pytest.mark.parametrize("data", [("--dataset", "iris"), ("--data", "my.csv", "--label", "species")])
def test_iris_on_a_generated_4_8_3_network_reaches_90_percent_at_the_defaults(tmp_path, iris_drn, data):
    """The Done-when as written: 30 epochs at the default rule, nudge and step; the last JSON line's accuracies
    are fractions equal to an independent count, and the test accuracy is at least 0.90."""
    shutil.copy(_shipped_iris(), tmp_path / "my.csv")
    r = run_hil("train", iris_drn, *data, "--epochs", 30, "--out", tmp_path / "r", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    last = json.loads(r.stdout.strip().splitlines()[-1])
    c = load_circuit(iris_drn)
    for split in ("train", "test"):
        assert 0 <= last[f"{split}_accuracy"] <= 1
        assert last[f"{split}_accuracy"] == _independent_accuracy(tmp_path / "r", c, split)
    assert last["test_accuracy"] >= 0.9 and last["train_accuracy"] >= 0.95


def _shipped_iris():
    from hil.data import folder
    return folder("circuits") / "iris.csv"


@pytest.mark.parametrize("value", ["-1", "0", "true", "\"big\"", "11"])
def test_a_bad_lr_fraction_is_named_with_its_line(tmp_path, iris_drn, value):
    text = iris_drn.read_text().replace("lr_fraction = 2.5", f"lr_fraction = {value}")
    p = tmp_path / "bad.toml"
    p.write_text(text)
    line = text.splitlines().index(f"lr_fraction = {value}") + 1
    r = run_hil("info", p)
    assert r.returncode == 2 and f"bad.toml:{line}: lr_fraction" in r.stderr and "Traceback" not in r.stderr


def test_the_default_step_is_the_circuits_fraction_of_the_curvature_step(iris_drn):
    """lr_fraction scales the default step and nothing else: 2.5 / 0.25 = 10 times the loop's own."""
    from dataclasses import replace

    from hil.rules import make_rule
    from hil.train import default_lr

    c = load_circuit(iris_drn)
    X = cl.classification_task(c, cl.load_dataset("iris")).X_train
    rule = make_rule("ep-sym")
    assert default_lr(c, c.g, X, rule) == pytest.approx(10 * default_lr(replace(c, lr_fraction=None), c.g, X, rule),
                                                        rel=1e-12)


def test_the_reports_reproductions_option_is_checked(tmp_path):
    r = run_hil("report", "--out", tmp_path / "x", "--reproductions", "some")
    assert r.returncode == 2 and "--reproductions" in r.stderr and "invalid choice" in r.stderr
    assert not (tmp_path / "x").exists()


def test_sizes_given_as_the_layered_default_are_not_replaced_by_another_generators_default(tmp_path):
    """Each generator has its own --sizes default; an explicit 8,3,6 is the user's, never swapped for 4,3."""
    r = run_hil("generate", "board", "--sizes", "8,3,6", "-o", tmp_path / "b.toml")
    assert r.returncode == 2 and "--sizes" in r.stderr and "8,3,6" in r.stderr
    r = run_hil("generate", "board", "-o", tmp_path / "b.toml")
    assert r.returncode == 0 and "30 edges" in r.stdout
