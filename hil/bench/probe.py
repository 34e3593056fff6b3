"""Probe experiments on a bench: every SMU sources a voltage, every node voltage and every SMU current is read.

The data :func:`hil.analysis.calibration.fit_conductances` turns into each edge's
actual conductance. Each pattern drives the inputs and clamps the outputs at
random voltages (uniform in [-level, level]), as one source-list sweep per
``sweep_points`` patterns; SMU readings are the 2400's five elements
(voltage, current, resistance, time, status: PyMeasure sets that format on
connect), the scanner's the other nodes.
"""

from __future__ import annotations

import numpy as np

from hil.bench.substrate import BenchError, BenchSubstrate


def probe_patterns(sub: BenchSubstrate, patterns: int, seed: int = 0, level: float | None = None) -> dict:
    """Node voltages V (P, n) and injected currents I (P, n; A, non-zero at SMU nodes only) for random patterns.

    ``level`` (V) defaults to half the smallest SMU voltage limit, at most 1 V. A
    reading in compliance (the SMU could not hold its voltage) is an error naming the SMU.
    """
    c = sub.circuit
    if patterns < 1:
        raise BenchError(f"--patterns {patterns}: at least one probe pattern is needed")
    lim = min(s.voltage_limit for s in sub.smus.values())
    level = min(1.0, 0.5 * lim) if level is None else float(level)
    if not 0 < level <= lim:
        raise BenchError(f"probe level {level} V must be positive and within the SMUs' voltage limit {lim} V")
    rng = np.random.default_rng(seed)
    X = rng.uniform(-level, level, (patterns, len(c.inputs)))
    VO = rng.uniform(-level, level, (patterns, len(c.outputs)))
    V, I = np.zeros((patterns, c.n)), np.zeros((patterns, c.n))
    for start in range(0, patterns, sub.chunk):
        rows = slice(start, min(start + sub.chunk, patterns))
        # a fault on any instrument: every one reconnected (made safe, reconfigured), the chunk redone
        V[rows], I[rows] = sub._retry(lambda rows=rows: _probe_chunk(sub, X[rows], VO[rows]), sub._instruments())
    for inst in [*sub.smus.values()] + ([sub.scanner] if sub.scanner is not None else []):
        sub._check_errors(inst)  # an error any instrument queued during the probes stops the calibration
    return {"inputs": X, "clamps": VO, "V": V, "I": I, "level": level}


def _probe_chunk(sub: BenchSubstrate, X, VO):
    """One source-list sweep of the patterns X (inputs), VO (outputs): (V, I) (points, n)."""
    c, n = sub.circuit, len(X)
    V, I = np.zeros((n, c.n)), np.zeros((n, c.n))
    for k, node in enumerate(c.inputs):
        with sub._talk(sub.smus[node], "source list"):
            sub.smus[node].source_list("voltage", X[:, k])
    for k, node in enumerate(c.outputs):
        with sub._talk(sub.smus[node], "source list"):
            sub.smus[node].source_list("voltage", VO[:, k])
    # every instrument has processed its settings before any of them is triggered (separate sockets)
    for smu in sub.smus.values():
        with sub._talk(smu, "operation complete"):
            reply = smu.ask("*OPC?").strip()
            if reply != "1":
                raise ValueError(f"*OPC? answered {reply[:40]!r}, not 1")
    from hil.drivers.instruments import floats, in_compliance, linked_sweep
    # one sweep: the first SMU triggers the others and the scanner over the trigger link at each point
    replies, volts = linked_sweep(list(sub.smus.values()), sub.scanner, [ch for _, ch in sub._chan_nodes], n,
                                  sub._talk)
    for (node, smu), reply in zip(sub.smus.items(), replies):
        with sub._talk(smu, "probe reading"):   # (points, 5): voltage (V), current (A), resistance, time, status
            vals = floats(smu.name, reply, 5 * n).reshape(n, 5)
        if in_compliance(vals).any():
            raise BenchError(f"{smu.name}: in compliance during a probe (current limit {smu.current_limit} A); "
                             "lower the probe level")
        V[:, node], I[:, node] = vals[:, 0], vals[:, 1]
    if sub.scanner is not None:
        V[:, [node for node, _ in sub._chan_nodes]] = volts
    return V, I
