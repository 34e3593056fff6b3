"""Make circuits/net16-data.csv, the example data set the README's first quick start trains on.

Two input voltages (nodes n1, n2) and two measured outputs (n6, n7), as a lab notebook would
hold them: y = M x plus 1 mV of measurement noise, rounded to 0.1 mV. Whether net16 can
realise M exactly is for training to find out (a passive network's outputs are a weighted
mean of its inputs and 0 V).

    python examples/make_net16_data.py circuits/net16-data.csv
"""

import csv
import sys

import numpy as np

M = np.array([[0.65, 0.68],     # n6, n7 per volt at n1
              [0.13, 0.11]])    # n6, n7 per volt at n2
rng = np.random.default_rng(2026)
X = rng.uniform(-1.0, 1.0, size=(48, 2))              # volts at n1, n2
Y = X @ M + 1e-3 * rng.standard_normal((48, 2))       # volts at n6, n7

with open(sys.argv[1], "w", newline="") as fh:
    out = csv.writer(fh)
    out.writerow(["n1", "n2", "n6", "n7"])
    out.writerows([[f"{v:.4f}" for v in row] for row in np.hstack([X, Y])])
