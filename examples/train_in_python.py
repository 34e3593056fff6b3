"""Training a circuit from Python, cell by cell as in a notebook (run it whole: python examples/train_in_python.py).

A shipped 16-edge network learns the example data set circuits/net16-data.csv; then a
circuit built by hand learns to halve its input. No files are written.
"""

from pathlib import Path

import numpy as np

import hil

# %% A circuit: a shipped one by name, or any circuit file by path
circuit = hil.load_circuit("net16")
print(circuit.name, "inputs", circuit.input_names, "outputs", circuit.output_names, f"{circuit.m} edges")

# %% A task: your own measurements as CSV (header: input nodes, then output nodes; volts)
data = Path(__file__).resolve().parents[1] / "circuits" / "net16-data.csv"
task = hil.load_csv_task(circuit, data, test_fraction=0.2)
print(f"{task.n_train} training examples, {len(task.X_test)} held out")

# %% Train: symmetric equilibrium propagation on the ideal model, defaults for nudge and step
result = hil.train(circuit, task, rule="ep-sym", steps=1000)
print(f"loss {result.initial_loss:.4g} -> {result.final_loss:.4g} V^2; step {result.config.lr:.3g} S^2/V^2,"
      f" nudge {result.config.nudge:.3g} S")
test = result.log["test_loss"][np.isfinite(result.log["test_loss"])]
print(f"test loss {test[0]:.4g} -> {test[-1]:.4g} V^2")

# %% Predict: the trained circuit's outputs on the held-out inputs, against the measured ones
V_O = hil.predict(result.circuit, task.X_test)
rms = np.sqrt(np.mean((V_O - task.Y_test) ** 2))
print(f"held-out rms error {1e3 * rms:.2f} mV")

# %% A circuit built in Python: a divider that should halve its input (two conductances, siemens)
divider = hil.make_circuit("divider", [("R1", "vin", "out", 1e-3), ("R2", "out", "gnd", 4e-3)],
                           ground="gnd", inputs=["vin"], outputs=["out"])
X = np.linspace(-1, 1, 9)[:, None]
half = hil.Task(X, 0.5 * X, X[:0], X[:0], description="halve")
trained = hil.train(divider, half, rule="cl", steps=200, progress=False).circuit
print("divider ratio", hil.predict(trained, [[1.0]])[0, 0], "with g", trained.g)
