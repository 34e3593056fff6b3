"""The reference gradient a rule's estimate is judged against, on any substrate (spec section 2).

On the ideal substrate: the exact adjoint formula. On any other: central finite
differences of the loss through the substrate itself (the circuit's own
gradient, with every non-ideality it simulates), never the ideal-resistor formula.
"""

from __future__ import annotations

import numpy as np

from hil.substrate import Free, Substrate


def finite_difference_gradient(sub: Substrate, X, Y, rel_step: float = 1e-4) -> np.ndarray:
    """dC/dg_e by central differences through ``sub`` (V^2/S); step rel_step * g_e.

    Restores the substrate's conductances afterwards. Costs 2 m solves of the batch.
    """
    g0 = sub.read()
    grad = np.zeros_like(g0)
    try:
        for e in range(len(g0)):
            h = rel_step * g0[e]
            losses = []
            for sign in (1, -1):
                g = g0.copy()
                g[e] += sign * h
                sub.write(g)
                losses.append(sub.measure(X, Y, [Free()]).loss())
            grad[e] = (losses[0] - losses[1]) / (2 * h)
    finally:
        sub.write(g0)
    return grad


def reference_gradient(sub: Substrate, X, Y) -> np.ndarray:
    """The substrate's own dC/dg at its current conductances (V^2/S)."""
    from hil.ideal import IdealSubstrate
    if isinstance(sub, IdealSubstrate):
        from hil.exact import gradient
        return gradient(sub.circuit, X, Y, sub.read())
    return finite_difference_gradient(sub, X, Y)
