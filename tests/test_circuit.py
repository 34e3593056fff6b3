"""Circuit files: loading, round trips, generators, and every validation error with its message."""

import numpy as np
import pytest

from hil.circuit import CircuitError, load_circuit
from hil.circuits import crossbar, lattice, random_network, shipped

GOOD = """name = "t"
ground = "gnd"
inputs = ["vin"]
outputs = ["out"]
g_min = 1.0e-5
g_max = 1.0e-2

[[edge]]
name = "R1"
a = "vin"
b = "out"
g = 1.0e-3

[[edge]]
name = "R2"
a = "out"
b = "gnd"
g = 2.0e-3
"""


def write(tmp_path, text):
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


def test_load_divider_and_round_trip(tmp_path):
    c = load_circuit(write(tmp_path, GOOD))
    assert c.nodes == ("vin", "out", "gnd")
    assert c.edge_names == ("R1", "R2")
    np.testing.assert_array_equal(c.g, [1e-3, 2e-3])
    assert [c.nodes[i] for i in c.sources] == ["gnd", "vin"]
    assert c.output_names == ["out"]
    c2 = load_circuit(c.save(tmp_path / "again.toml"))
    assert c2.nodes == c.nodes and c2.edge_names == c.edge_names
    np.testing.assert_array_equal(c2.g, c.g)
    assert (c2.g_min, c2.g_max) == (c.g_min, c.g_max)


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace('b = "gnd"', 'b = "out"'), ":14: edge 'R2' is a self-loop on node 'out'"),
    (lambda t: t.replace("g = 2.0e-3", "g = -2.0e-3"), ":18: edge 'R2': conductance -0.002 is not a positive finite number"),
    (lambda t: t.replace("g = 2.0e-3", "g = 0.0"), ":18: edge 'R2': conductance 0.0 is not a positive finite number"),
    (lambda t: t.replace("g = 2.0e-3", "g = nan"), "edge 'R2': conductance nan is not a positive finite number"),
    (lambda t: t.replace("g = 2.0e-3", 'g = "2m"'), "edge 'R2': conductance '2m' is not a positive finite number"),
    (lambda t: t.replace("g = 2.0e-3", "g = 1.0"), ":18: edge 'R2': conductance 1.0 S is outside [g_min, g_max]"),
    (lambda t: t.replace('name = "R2"', 'name = "R1"'), ":15: duplicate edge name 'R1'"),
    (lambda t: t.replace('name = "R2"', 'name = "r1"'), "duplicate edge name 'r1'"),
    (lambda t: t.replace('outputs = ["out"]', 'outputs = ["nowhere"]'), ":4: outputs: unknown node 'nowhere'"),
    (lambda t: t.replace('ground = "gnd"', 'ground = "earth"'), ":2: ground: unknown node 'earth'"),
    (lambda t: t.replace('outputs = ["out"]', 'outputs = ["vin"]'), "output 'vin' is also an input"),
    (lambda t: t.replace('outputs = ["out"]', 'outputs = ["gnd"]'), "output 'gnd' is also ground"),
    (lambda t: t.replace('inputs = ["vin"]', 'inputs = ["gnd"]'), "input 'gnd' is the ground node"),
    (lambda t: t.replace('outputs = ["out"]', 'outputs = ["out", "out"]'), "node 'out' is listed twice in outputs"),
    (lambda t: t.replace('b = "out"', 'b = "o-ut"'), ":11: node name 'o-ut' is not a plain identifier"),
    (lambda t: t.replace('name = "R2"', 'name = "R2; .control"'), "edge name 'R2; .control' is not a plain identifier"),
    (lambda t: t.replace('b = "gnd"', 'b = "Out"'), "node 'Out' differs from node 'out' only in case"),
    (lambda t: t.replace("g_min = 1.0e-5", "g_min = 1.0"), "g_min = 1.0 must be below g_max"),
    (lambda t: t + "\n[[edge]]\nname = \"R3\"\na = \"x\"\nb = \"y\"\ng = 1e-3\n",
     "floating subnetwork: node(s) x, y have no path to ground or an input"),
    (lambda t: t.replace("name = \"t\"", "name = \"t\"\ncolour = 3"), ":2: unknown key 'colour'"),
    (lambda t: t.replace("g = 2.0e-3", "g = 2.0e-3\nohms = 5"), ":14: edge #2: unknown key 'ohms'"),
    (lambda t: t.replace("[[edge]]\nname = \"R1\"", "[[edge]]\nname = \"R1\"\n[oops", 1), "not valid TOML"),
])
def test_validation_errors_name_file_line_and_element(tmp_path, edit, message):
    p = write(tmp_path, edit(GOOD))
    with pytest.raises(CircuitError) as err:
        load_circuit(p)
    assert str(p) in str(err.value)
    assert message in str(err.value)


def test_missing_file_and_shipped_names():
    with pytest.raises(CircuitError, match="no such circuit file"):
        load_circuit("/nonexistent/x.toml")
    names = shipped()
    assert {"divider", "bridge", "net16"} <= set(names)
    assert load_circuit("net16").m == 16
    for name, path in names.items():
        assert load_circuit(path).name


def test_with_g_rejects_bad_conductance():
    c = load_circuit("divider")
    with pytest.raises(CircuitError, match="edge 'R2': conductance -1.0"):
        c.with_g([1e-3, -1.0])


@pytest.mark.parametrize("make", [
    lambda: random_network(30, 3.5, seed=4),
    lambda: lattice(5, 7, seed=1),
    lambda: crossbar((3, 5, 2), seed=2),
])
def test_generators_are_seeded_valid_and_round_trip(tmp_path, make):
    c = make()
    again = make()
    np.testing.assert_array_equal(c.g, again.g)
    assert np.all((c.g >= c.g_min) & (c.g <= c.g_max))
    c2 = load_circuit(c.save(tmp_path / "gen.toml"))
    np.testing.assert_array_equal(c2.g, c.g)
    np.testing.assert_array_equal(c2.a, c.a)


def test_generator_sizes():
    assert lattice(100, 100).m == 2 * 100 * 99
    r = random_network(64, 4, seed=0)
    assert r.n == 64 and r.m == 128
    assert crossbar((2, 4, 2)).m == 2 * 4 + 4 * 2 + 4 + 2
