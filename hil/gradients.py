"""The reference gradient a rule's estimate is judged against, on any substrate (spec section 2).

On the ideal substrate: the exact adjoint formula. On any other: central finite
differences of the loss through the substrate itself (the circuit's own
gradient, with every non-ideality it simulates), never the ideal-resistor formula.
"""

from __future__ import annotations

import numpy as np

from hil.substrate import Free, Substrate


def finite_difference_gradient(sub: Substrate, X, Y, rel_step: float = 1e-4) -> np.ndarray:
    """dC/dtheta by central differences through ``sub`` (V^2/S); step rel_step * |theta_e|
    (a zero transconductance steps by rel_step times the median |theta|).

    Restores the substrate's parameters afterwards. Costs 2 n_params solves of the batch.
    """
    g0 = sub.read()
    grad = np.zeros_like(g0)
    try:
        for e in range(len(g0)):
            h = rel_step * (abs(g0[e]) or float(np.median(np.abs(g0))))
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


def reference_gradient(sub: Substrate, X, Y, method: str = "auto") -> np.ndarray:
    """The substrate's own dC/dtheta at its current parameters (V^2/S).

    method: 'auto' (the adjoint formula on the ideal substrate, the simulator's own
    ``sens`` analysis where the substrate has one, else finite differences),
    'sens' or 'fd'. Measurement noise is switched off where the substrate can.
    A quantized device (digipot) has no finite differences: use sens.
    """
    import contextlib

    from hil.ideal import IdealSubstrate
    if isinstance(sub, IdealSubstrate) and method in ("auto", "exact"):
        from hil.exact import gradient
        return gradient(sub.circuit, X, Y, sub.read())
    quiet = sub.noiseless() if hasattr(sub, "noiseless") else contextlib.nullcontext()
    with quiet:
        if method in ("auto", "sens") and hasattr(sub, "sens_gradient"):
            return sub.sens_gradient(X, Y)
        if method == "sens":
            raise ValueError(f"{type(sub).__name__} has no sensitivity analysis; use --reference fd")
        return finite_difference_gradient(sub, X, Y)
