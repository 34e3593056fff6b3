"""The reference gradient a rule's estimate is judged against, on any substrate (docs/math.md, section 2).

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
    ``sens`` analysis where the substrate has one that runs on its devices, else finite differences),
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
        if method == "sens" or (method == "auto" and hasattr(sub, "sens_gradient") and getattr(sub, "has_sens", True)):
            if not hasattr(sub, "sens_gradient"):
                raise ValueError(f"{type(sub).__name__} has no sensitivity analysis; use --reference fd")
            return sub.sens_gradient(X, Y)
        return finite_difference_gradient(sub, X, Y)


# -- the two biases of an EP estimate (docs/math.md, section 7.2) ----------------------------------

def error_vectors(sub: Substrate, X, Y, jacobians=None) -> tuple:
    """(mu, lambda), each (batch, n) volts: the forward and adjoint networks' responses to r (docs/math.md, section 7.2).

    mu = A^-1 P^T r = -dV/dbeta at 0 (:meth:`Substrate.nudge_derivative`: an AC analysis on
    ngspice, a small-signal or sources-off experiment elsewhere); lambda = A^-T P^T r from the
    current g_adj r injected into the outputs of the adjoint network with every source at 0 V
    (readings divided by g_adj). Equal when the circuit is reciprocal. On a nonlinear substrate,
    whose adjoint network is not realisable, lambda is solved from the measured small-signal
    A_FF of each example (``jacobians``, (batch, |F|, |F|) siemens), or None without them.
    """
    from hil.substrate import Experiment
    mu = -sub.nudge_derivative(X, Y)
    r = sub.measure(X, Y, [Free()]).residual
    if sub.small_signal:
        if jacobians is None:
            return mu, None
        c = sub.circuit
        lam = np.zeros_like(mu)
        for i, A in enumerate(jacobians):
            rhs = np.zeros(len(c.free))
            rhs[c.out_in_free] = r[i]
            lam[i, c.free] = np.linalg.solve(A.T, rhs)
        return mu, lam
    gain = sub.adjoint_gain()
    Xz = np.atleast_2d(np.asarray(X, float))
    lam = sub.run(Xz, [Experiment(False, "current", gain * r, transpose=True)])[0]
    return mu, lam / gain


def ep_limit(sub: Substrate, X, Y) -> np.ndarray:
    """ghat(0) = mean over the batch of -mu^T dF/dtheta (V^2/S): generalised EP at an infinitesimal nudge.

    dV/dbeta at beta = 0 is -mu (:meth:`Substrate.nudge_derivative`), so ghat(0), the derivative
    of the rules' local signal at 0, needs no finite nudge: on ngspice one AC analysis about the
    free operating point per example (exact for nonlinear circuits too), exact on the ideal
    substrate, a small-signal experiment on a nonlinear bench.
    """
    V = sub.measure(X, Y, [Free()])[Free()]
    return np.mean(sub.circuit.signal_products(V, sub.nudge_derivative(X, Y)), axis=0)


def symmetry_index(sub: Substrate, jacobians=None):
    """||A_sym|| / (||A_sym|| + ||A_anti||) of A_FF at the substrate's parameters, or None where unknown.

    Exact for linear substrates (ideal; ngspice with ideal resistors and VCCS, whose A is the
    model's); for a nonlinear one the mean over the examples of the index of each measured
    small-signal A_FF (``jacobians``), None without them.
    """
    from hil.exact import conductance_matrix
    from hil.exact import symmetry_index as index
    c = sub.circuit
    linear = not c.elements and (type(sub).__name__ == "IdealSubstrate"
                                 or getattr(getattr(sub, "device", None), "name", "") == "resistor")
    inner = getattr(sub, "inner", None)  # a wrapper (noisy readings) around a substrate
    if inner is not None:
        return symmetry_index(inner, jacobians)
    if not linear:
        return None if jacobians is None else float(np.mean([index(A) for A in jacobians]))
    A = conductance_matrix(c, sub.read())
    return index(A[c.free][:, c.free])


def small_signal_jacobians(sub: Substrate, X):
    """Each example's measured small-signal A_FF (batch, |F|, |F|) on a nonlinear substrate that can
    measure it (ngspice: AC probes at every free node), else None."""
    inner = getattr(sub, "inner", sub)
    nonlinear = getattr(inner, "small_signal", False) or bool(getattr(inner.circuit, "elements", ()))
    if not nonlinear or not hasattr(inner, "small_signal_jacobian"):
        return None
    return inner.small_signal_jacobian(X)


def _cos(a, b):
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(a @ b / (na * nb)) if na > 0 and nb > 0 else None


def _inner(sub):
    while getattr(sub, "inner", None) is not None and not hasattr(sub, "param_signal"):
        sub = sub.inner
    return sub


def true_limit(sub: Substrate, V, mu) -> np.ndarray | None:
    """-mu^T dF/dtheta, mean over the batch (V^2/S): generalised EP's limit when the local signal is dF/dtheta.

    ``V`` (batch, n) the free states, ``mu`` (batch, n) the error vectors. dF/dtheta is the substrate's own
    (:meth:`param_signal`: a channel's di/dvg where an edge is realised by a transistor), else the circuit's
    element kinds (:meth:`hil.circuit.Circuit.signal_products`, what every rule of :mod:`hil.rules` reads);
    None where the substrate's physics is not known in closed form (a BSIM channel).
    """
    inner = _inner(sub)
    if hasattr(inner, "param_signal"):
        out = inner.param_signal(V, -mu)
        return None if out is None else np.mean(out, axis=0)
    return np.mean(sub.circuit.signal_products(V, -mu), axis=0)


def outside_linear(sub: Substrate, V) -> list | None:
    """Per example, the number of elements outside their linear region at the free states V (channels saturated or
    cut off, diodes conducting); None where unknown."""
    inner = _inner(sub)
    if hasattr(inner, "outside_linear"):
        out = inner.outside_linear(V)
        return None if out is None else [int(x) for x in out]
    c = sub.circuit
    if not c.elements:
        return [0] * len(V)
    return [int(x) for x in sum(grp.outside_linear(V[:, grp.nodes]).sum(axis=1) for grp in c.elements)]


def decomposition(sub: Substrate, X, Y, reference=None, limit=None) -> dict:
    """The quantities of docs/math.md, sections 7.2 and 9.3, that do not depend on a nudge, at the substrate's parameters.

    Returns {'limit': ghat(0), the rule's limit; 'true_limit': -mu^T dF/dtheta (None where unknown);
    'reference': dC/dtheta; relative to ||dC/dtheta||: 'local_signal_bias' ||ghat(0) - (-mu^T dF/dtheta)||
    (the rule's local signal is not dF/dtheta: a channel out of triode read as 1/2 dV^2) and
    'asymmetry_bias' ||(lambda - mu)^T dF/dtheta|| = ||-mu^T dF/dtheta - dC/dtheta|| (||ghat(0) - dC/dtheta||
    where dF/dtheta is unknown, 'local_signal_bias' then None);
    'cos_limit': cos(ghat(0), dC/dtheta), 'cos_mu_lambda': per-example cos(mu, lambda) (list),
    'symmetry_index': float or None, 'outside_linear': per example the elements outside their linear
    region}. The nudge bias of an estimate is :func:`nudge_bias`; the three error vectors add up to
    ghat(beta) - dC/dtheta exactly.
    """
    import contextlib
    ref = reference_gradient(sub, X, Y) if reference is None else np.asarray(reference)
    quiet = sub.noiseless() if hasattr(sub, "noiseless") else contextlib.nullcontext()
    with quiet:  # the substrate's own quantities, as its reference gradient: without voltmeter noise
        g0 = ep_limit(sub, X, Y) if limit is None else np.asarray(limit)
        jac = small_signal_jacobians(sub, X)
        mu, lam = error_vectors(sub, X, Y, jac)
        V = sub.measure(X, Y, [Free()])[Free()]
        g0_true = true_limit(sub, V, mu)
        outside = outside_linear(sub, V)
    n = float(np.linalg.norm(ref))
    cos_ml = [_cos(a, b) for a, b in zip(mu, lam)] if lam is not None else [None] * len(mu)
    rel = lambda v: float(np.linalg.norm(v) / n) if n > 0 else None
    return {"limit": g0, "true_limit": g0_true, "reference": ref, "ref_norm": n,
            "local_signal_bias": rel(g0 - g0_true) if g0_true is not None else None,
            "asymmetry_bias": rel((g0 if g0_true is None else g0_true) - ref), "limit_bias": rel(g0 - ref),
            "cos_limit": _cos(g0, ref), "cos_mu_lambda": cos_ml, "symmetry_index": symmetry_index(sub, jac),
            "outside_linear": outside}


def nudge_bias(estimate, dec: dict):
    """||ghat(beta) - ghat(0)|| / ||dC/dtheta|| for an EP estimate, given :func:`decomposition`'s result."""
    n = dec["ref_norm"]
    return float(np.linalg.norm(np.asarray(estimate) - dec["limit"]) / n) if n > 0 else None
