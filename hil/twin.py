"""A calibrated twin: a simulated substrate whose parts deviate from what is written as the bench's do.

``hil calibrate`` measures each edge's ratio s_e = (actual conductance) / (written
conductance) on a bench and records it in the circuit file's ``[calibration]``
table. :class:`CalibratedSubstrate` wraps any simulated substrate so that writing
g (S) realises s * g on the simulated parts while the learning loop, like the
bench's, sees only the g it wrote.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from hil.circuit import Circuit
from hil.substrate import Substrate


def actual_circuit(circuit: Circuit, scale) -> Circuit:
    """The circuit with conductances scale * g (S), its bounds widened to hold them (a simulation of the parts)."""
    g = circuit.g * scale
    return dataclasses.replace(circuit, g=g, g_min=min(circuit.g_min, float(g.min())) * (1 - 1e-12),
                               g_max=max(circuit.g_max, float(g.max())) * (1 + 1e-12), calibration=None, _cache={})


class CalibratedSubstrate(Substrate):
    """``inner`` (built on :func:`actual_circuit`) seen through the written conductances: write g -> s * g."""

    def __init__(self, circuit: Circuit, inner: Substrate, scale):
        self.circuit, self.inner = circuit, inner
        self.scale = np.asarray(scale, float)
        if self.scale.shape != (circuit.m,) or not np.all(np.isfinite(self.scale) & (self.scale > 0)):
            raise ValueError(f"{circuit.source}: calibration scale needs {circuit.m} positive finite factors")
        self.supports_complex = inner.supports_complex
        self.probe_current = inner.probe_current
        self.write(circuit.g)

    def write(self, g) -> np.ndarray:
        """Realise scale * g on the simulated parts; returns the written g the parts now stand for (S)."""
        g = self.circuit.check_g(g)
        return self.inner.write(g * self.scale) / self.scale

    def read(self) -> np.ndarray:
        return self.inner.read() / self.scale

    def run(self, inputs, experiments) -> list:
        return self.inner.run(inputs, experiments)

    def output_green(self) -> np.ndarray:
        return self.inner.output_green()

    def diagnostics(self) -> list:
        return self.inner.diagnostics() if hasattr(self.inner, "diagnostics") else []

    def close(self) -> None:
        self.inner.close()
