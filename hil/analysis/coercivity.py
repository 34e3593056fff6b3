"""Coercivity and convergence (docs/math.md, section 6): will training converge exponentially, and how fast?

J = dV_O/dg stacked over the examples (V/S). The constant that governs the loss
is c = lambda_min(J J^T) on the subspace the residuals live in (for a linear
circuit V_O = T x, so N examples give |O| rank(X) independent constraints; see
:func:`hil.exact.residual_basis`), divided by N because the loss is a mean.
Columns of edges pinned at a conductance bound are left out: clipping freezes them.

Predicted loss factor per step: (1 - alpha c)^2 for gd, EP and AL (which
descend C), (1 - alpha c_CL)^2 for CL with c_CL from J J^T K^-1.
"""

from __future__ import annotations

import numpy as np

from hil import exact
from hil.circuit import Circuit


def pinned(c: Circuit, g) -> np.ndarray:
    """Parameters at a bound (bool, (n_params,)): clipping holds them there."""
    g = np.asarray(g)
    if g.shape != (c.n_params,):
        return (g <= c.g_min * (1 + 1e-12)) | (g >= c.g_max * (1 - 1e-12))
    lo, hi = c.bounds()
    return (g <= lo + 1e-12 * np.abs(lo)) | (g >= hi - 1e-12 * np.abs(hi))


def dead_edges(c: Circuit, X, g=None, tol: float = 1e-9) -> list:
    """Edges whose column of J vanishes, with why: ({'edge', 'reason'})."""
    g = c.theta if g is None else np.asarray(g)
    J = exact.jacobian(c, X, g)
    dV = c.drops(exact.free_state(c, X, g))
    scale = np.abs(J).max() or 1.0
    out = []
    for e in range(c.m):
        if np.abs(J[:, e]).max() <= tol * scale:
            if np.abs(dV[:, e]).max() <= tol * max(np.abs(dV).max(), 1e-300):
                why = "no current: the edge's two nodes sit at the same voltage in every example (a balanced bridge)"
            else:
                why = "no transfer to an output: changing this edge moves no output voltage"
            out.append({"edge": c.edge_names[e], "reason": why})
    return out


def unreachable(c: Circuit, X, g=None, active=None) -> list:
    """Residual directions no first-order change of g reaches: the rank J is missing.

    Left singular vectors u of Q^T J (Q: :func:`hil.exact.residual_basis`; J: the
    ``active`` edges' columns) with singular value below numpy's rank tolerance.
    Each direction Q u is a residual r_i = A x_i with A (|O| x |in|) of rank one on
    a single input, A = s a b^T: returned as {'outputs': {node: a_j}, 'inputs':
    {node: b_k}, 'sigma': singular value (V/S)}, a and b unit vectors. A direction is
    defined up to sign; the sign reported is :func:`sign_convention`'s (the first output
    coefficient of largest magnitude positive), so every machine prints the same one.
    """
    X = np.atleast_2d(np.asarray(X, float))
    J = exact.jacobian(c, X, g)
    return _directions(c, X, exact.residual_basis(c, X), J if active is None else J[:, active])[0]


def _directions(c: Circuit, X, Q, J) -> tuple:
    """(the unreachable directions of :func:`unreachable`, the largest singular value of Q^T J)."""
    if not Q.size:
        return [], 0.0
    M = Q.T @ J
    U, sv = np.linalg.svd(M, full_matrices=True)[:2] if M.shape[1] else (np.eye(M.shape[0]), np.zeros(0))
    sv = np.concatenate([sv, np.zeros(U.shape[1] - len(sv))])
    tol = sv.max() * max(M.shape) * np.finfo(float).eps
    out = []
    for k in np.flatnonzero(sv <= tol):
        V = (Q @ U[:, k]).reshape(len(X), len(c.outputs))  # residual per example and output
        A = np.linalg.lstsq(X, V, rcond=None)[0].T          # V_i = A x_i
        a, _, bt = np.linalg.svd(A)
        a, b = a[:, 0], bt[0]
        if sign_convention(a) < 0:
            a, b = -a, -b
        out.append({"outputs": dict(zip(c.output_names, np.round(a, 6).tolist())),
                    "inputs": dict(zip(c.input_names, np.round(b, 6).tolist())), "sigma": float(sv[k])})
    return out, float(sv.max())


def sign_convention(v, rtol: float = 1e-6) -> float:
    """+1 or -1: the sign of v's first component whose magnitude is the largest to ``rtol``.

    A singular or eigenvector is defined up to sign, and a tie in magnitude (0.707, -0.707)
    is broken by rounding differently on each BLAS; the first of the tied components decides.
    """
    v = np.asarray(v, float)
    mag = np.abs(v)
    k = int(np.flatnonzero(mag >= mag.max() * (1 - rtol))[0])
    return 1.0 if v[k] >= 0 else -1.0


def combination(coef: dict) -> str:
    """'0.707 out1 - 0.707 out2' from {'out1': 0.707, 'out2': -0.707}; terms below 1e-3 left out."""
    text = ""
    for k, v in coef.items():
        if abs(v) >= 1e-3:
            text += (" - " if v < 0 else (" + " if text else "")) + f"{abs(v):.3g} {k}"
    return text.strip() or "0"


def passive_floor(c: Circuit, X, Y) -> float | None:
    """The least loss (V^2) any passive network with these inputs could reach on targets Y: a lower bound.

    In a network of positive conductances each node voltage is a weighted mean of the
    fixed voltages (inputs and ground at 0 V), so V_O = T x with T >= 0 and every row of T
    summing to at most 1, whatever the conductances. The floor is min over such T of the
    loss mean_i 1/2 ||T x_i - y_i||^2, a convex problem solved per output (SLSQP). Targets
    such as y = x_1 - x_2 leave it above zero: no training reaches them. None for a circuit
    with VCCS (active: the bound does not hold).
    """
    from scipy.optimize import minimize
    if c.k:
        return None
    X, Y = np.atleast_2d(np.asarray(X, float)), np.atleast_2d(np.asarray(Y, float))
    n, p = X.shape
    Xg = np.hstack([X, np.zeros((n, 1))])  # ground as a source at 0 V: the weights then sum to exactly 1
    total = 0.0
    for y in Y.T:
        f = lambda t: 0.5 * np.mean((Xg @ t - y) ** 2)
        jac = lambda t: Xg.T @ (Xg @ t - y) / n
        res = minimize(f, np.full(p + 1, 1.0 / (p + 1)), jac=jac, method="SLSQP", bounds=[(0, 1)] * (p + 1),
                       constraints=[{"type": "eq", "fun": lambda t: t.sum() - 1, "jac": lambda t: np.ones_like(t)}],
                       options={"ftol": 1e-15, "maxiter": 500})
        total += float(res.fun)
    return total


def report(c: Circuit, X, g=None, lr: dict | None = None, Y=None) -> dict:
    """Everything `hil coercivity` prints: constant, rank, constraints, dead edges, predicted rates.

    'constant' c and 'lambda_max' (V^2/S^2): the smallest and largest eigenvalues of J J^T / N on the
    residual subspace (active edges); 'unreachable': the directions :func:`unreachable` finds.

    ``lr``: learning rate per rule family {'ep': alpha, 'cl': alpha} (S^2/V^2); default: each
    rule's default learning rate (:func:`hil.train.default_lr`). With targets ``Y``: 'floor', the
    least loss any passive network reaches on them (:func:`passive_floor`; None with VCCS).
    """
    from hil.rules import make_rule
    from hil.train import default_lr

    g = c.theta if g is None else np.asarray(g, float)
    X = np.atleast_2d(X)
    J = exact.jacobian(c, X, g)
    Q = exact.residual_basis(c, X)
    active = ~pinned(c, g)
    missing, top = _directions(c, X, Q, J[:, active])
    rank = int(Q.shape[1]) - len(missing)  # of the active columns, on the residual subspace
    K = exact.output_green(c, g)
    c_ep = exact.coercivity(c, X, g, active=active)
    c_cl = exact.coercivity(c, X, g, weight=np.linalg.inv(K), active=active)
    lr = lr or {"ep": default_lr(c, g, X, make_rule("gd")), "cl": default_lr(c, g, X, make_rule("cl"))}
    rate = {fam: 1 - (1 - lr[fam] * cc) ** 2 for fam, cc in (("ep", c_ep), ("cl", c_cl))}
    return {"constant": c_ep, "lambda_max": top ** 2 / len(X), "constant_cl": c_cl, "rank": rank,
            "constraints": int(Q.shape[1]), "rows": int(J.shape[0]),
            "coercive": bool(rank == Q.shape[1] and c_ep > 1e-12 * (np.abs(J).max() ** 2)),
            "dead_edges": dead_edges(c, X, g), "unreachable": missing,
            "pinned_edges": [c.edge_names[e] for e in np.flatnonzero(~active)], "lr": lr, "rate": rate,
            "floor": passive_floor(c, X, Y) if Y is not None else None}


def measured_rate(loss: np.ndarray, window: float = 0.25, floor: float = 1e-28, steps=None) -> float:
    """Loss decay rate per step, 1 - exp(slope of log loss), fitted over the last ``window`` of the logged rows.

    ``steps``: the step of each row (default 0, 1, 2, ...: every step logged).
    """
    loss = np.asarray(loss, float)
    n = len(loss)
    x = np.arange(n, dtype=float) if steps is None else np.asarray(steps, float)
    k = np.arange(int(n * (1 - window)), n)
    k = k[np.isfinite(loss[k]) & (loss[k] > floor)]
    if len(k) < 5:
        return float("nan")
    return float(1 - np.exp(np.polyfit(x[k], np.log(loss[k]), 1)[0]))
