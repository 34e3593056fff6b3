"""Tasks: CSV parsing with located errors, teacher tasks, splits."""

import numpy as np
import pytest

from hil.circuit import load_circuit
from hil.exact import free_state
from hil.tasks import TaskError, circuit_teacher_task, load_csv_task, teacher_task, write_csv_task


@pytest.fixture
def net16():
    return load_circuit("net16")


def test_csv_round_trip_and_split(tmp_path, net16):
    rng = np.random.default_rng(0)
    X, Y = rng.uniform(-1, 1, (10, 2)), rng.uniform(-1, 1, (10, 2))
    p = write_csv_task(net16, X, Y, tmp_path / "t.csv")
    t = load_csv_task(net16, p, test_fraction=0.2, seed=1)
    assert t.n_train == 8 and len(t.X_test) == 2
    allX = np.vstack([t.X_train, t.X_test])
    assert sorted(map(tuple, allX)) == sorted(map(tuple, X))


def test_csv_columns_in_any_order(tmp_path, net16):
    p = tmp_path / "t.csv"
    p.write_text("n7,n1,n6,n2\n0.5,1,0.25,-1\n")
    t = load_csv_task(net16, p)
    np.testing.assert_array_equal(t.X_train, [[1, -1]])
    np.testing.assert_array_equal(t.Y_train, [[0.25, 0.5]])


@pytest.mark.parametrize("text, message", [
    ("n1,n2,n6,zz\n1,2,3,4\n", ":1: column 4 'zz' is an unknown node"),
    ("n1,n2,n6,n3\n1,2,3,4\n", ":1: column 4 'n3' is a node that is neither an input nor an output"),
    ("n1,n2,n6\n1,2,3\n", ":1: no column for output node 'n7'"),
    ("n1,n2,n6,n7\n1,2,3,4\n1,2,x,4\n", ":3: column 3 'n6': 'x' is not a number"),
    ("n1,n2,n6,n7\n1,2,3\n", ":2: 3 values, the header has 4"),
    ("n1,n2,n6,n7\n", "no examples after the header"),
    ("", "empty task file"),
])
def test_csv_errors_name_line_and_column(tmp_path, net16, text, message):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(TaskError) as err:
        load_csv_task(net16, p)
    assert str(p) in str(err.value) and message in str(err.value)


def test_teacher_task_is_reachable_and_seeded(net16):
    t = teacher_task(net16, seed=4, examples=12)
    assert t.n_train == 12 and len(t.X_test) == 3
    assert np.all(np.abs(t.X_train) <= 1)
    g = np.array(t.meta["g_teacher"])
    assert np.all((g >= net16.g_min) & (g <= net16.g_max))
    np.testing.assert_allclose(free_state(net16, t.X_train, g)[:, list(net16.outputs)], t.Y_train)
    np.testing.assert_array_equal(teacher_task(net16, seed=4, examples=12).Y_train, t.Y_train)


def test_circuit_teacher_task_uses_the_teacher_file_and_checks_its_topology(tmp_path):
    kite = load_circuit("kite")
    student = kite.with_g(kite.g * 1.3)
    task = circuit_teacher_task(student, kite, seed=3, examples=8)
    O = list(kite.outputs)
    assert np.allclose(task.Y_train, free_state(kite, task.X_train)[:, O], atol=1e-15)
    assert np.allclose(task.Y_train[:, 0], task.Y_train[:, 1], atol=1e-12)  # the mirror: out1 = out2
    assert task.X_train.shape == (8, 1) and task.X_test.shape == (2, 1)
    rewired = tmp_path / "rewired.toml"
    text = open(kite.source).read()
    i = text.index('name = "left_out2"')
    rewired.write_text(text[:i] + text[i:].replace('b = "out2"', 'b = "out1"', 1))
    with pytest.raises(TaskError, match=r"edge 7 is left_out2 between left/out1, expected left_out2 between "
                                        r"left/out2"):
        circuit_teacher_task(kite, load_circuit(rewired))
