"""Reference mathematics for linear resistor circuits (spec sections 1, 2, 3 and 6).

Plain, direct formulas: the reference every substrate and estimator is tested
against. They favour clarity over speed; the fast batched solver is
:mod:`hil.ideal`. Shapes: ``X`` (batch, |inputs|) volts, ``Y`` (batch, |O|)
volts, ``g`` (m,) siemens. Loss: C = mean over the batch of 1/2 ||V_O - y||^2 (V^2).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from hil.circuit import Circuit


def laplacian(c: Circuit, g=None) -> sp.csr_matrix:
    """L = B^T diag(g) B, the weighted Laplacian (n x n, siemens)."""
    B = c.incidence()
    g = c.g if g is None else np.asarray(g)
    return (B.T @ sp.diags(g) @ B).tocsr()


def _blocks(c, g):
    L = laplacian(c, g)
    F, S = c.free, c.sources
    return L[F][:, F].tocsc(), L[F][:, S]


def _solve(A, rhs):
    if A.shape[0] <= 2000:
        return np.linalg.solve(A.toarray(), rhs)
    return spla.splu(A).solve(np.asarray(rhs, dtype=A.dtype) if not np.iscomplexobj(rhs) else rhs)


def source_values(c: Circuit, X) -> np.ndarray:
    """s: (batch, |S|) source voltages, ground (0 V) first then the inputs X."""
    X = np.atleast_2d(np.asarray(X, float))
    return np.column_stack([np.zeros(len(X)), X])


def free_state(c: Circuit, X, g=None) -> np.ndarray:
    """V: (batch, n) free-state node voltages: V_S = s, L_FF V_F = -L_FS s (volts)."""
    LFF, LFS = _blocks(c, g)
    s = source_values(c, X)
    V = np.zeros((len(s), c.n))
    V[:, c.sources] = s
    V[:, c.free] = _solve(LFF, -(LFS @ s.T)).T
    return V


def output_green(c: Circuit, g=None) -> np.ndarray:
    """K = P L_FF^-1 P^T, the |O| x |O| output Green's matrix (ohms), symmetric positive definite."""
    LFF, _ = _blocks(c, g)
    nf = len(c.free)
    Pt = np.zeros((nf, len(c.outputs)))
    Pt[c.out_in_free, np.arange(len(c.outputs))] = 1.0
    return _solve(LFF, Pt)[c.out_in_free]


def loss(c: Circuit, X, Y, g=None) -> float:
    """C = mean over the batch of 1/2 ||V_O - y||^2 (V^2)."""
    V = free_state(c, X, g)
    r = V[:, list(c.outputs)] - np.asarray(Y)
    return float(0.5 * np.mean(np.sum(r * r, axis=1)))


def adjoint_state(c: Circuit, X, Y, g=None) -> np.ndarray:
    """lambda: (batch, n) with lambda_F = L_FF^-1 P^T r, lambda_S = 0 (volts per volt of error x ohms x siemens = volts)."""
    LFF, _ = _blocks(c, g)
    V = free_state(c, X, g)
    r = V[:, list(c.outputs)] - np.asarray(Y)
    rhs = np.zeros((len(c.free), len(r)))
    rhs[c.out_in_free] = r.T
    lam = np.zeros_like(V)
    lam[:, c.free] = _solve(LFF, rhs).T
    return lam


def gradient(c: Circuit, X, Y, g=None) -> np.ndarray:
    """dC/dg_e = mean over the batch of -dV_e dlambda_e (V^2 / S); the exact gradient."""
    V = free_state(c, X, g)
    lam = adjoint_state(c, X, Y, g)
    return -np.mean(c.drops(V) * c.drops(lam), axis=0)


def jacobian(c: Circuit, X, g=None) -> np.ndarray:
    """J = dV_O/dg stacked over examples: (batch * |O|, m), V/S. Row order: example-major.

    Per example J = -P L_FF^-1 B_F^T diag(B V).
    """
    LFF, _ = _blocks(c, g)
    V = free_state(c, X, g)
    BF = c.incidence()[:, c.free]
    Z = _solve(LFF, _eye_cols(len(c.free), c.out_in_free))  # L_FF^-1 P^T
    rows = []
    for v in V:
        dV = c.drops(v)
        rows.append(-(BF @ Z).T * dV[None, :])  # (|O|, m): -(P L^-1 B_F^T) diag(dV)
    return np.vstack(rows)


def edge_transfer(c: Circuit, g=None) -> np.ndarray:
    """E = B_F L_FF^-1 P^T (m x |O|, ohms): the drop across each edge per ampere injected into each output.

    Per example the Jacobian is J_i = -E^T diag(dV_i) (:func:`jacobian`).
    """
    LFF, _ = _blocks(c, g)
    BF = c.incidence()[:, c.free]
    return np.asarray(BF @ _solve(LFF, _eye_cols(len(c.free), c.out_in_free)))


def gauss_newton(c: Circuit, X, g=None, weight=None, chunk: int = 4096) -> np.ndarray:
    """H = mean_i J_i^T W J_i (m x m, V^2/S^2), the Gauss-Newton curvature of the mean loss in g.

    With J_i = -E^T diag(dV_i), H = (E W E^T) o (D^T D / N), o the elementwise product and
    D (N x m) the free-state drops: memory m^2 whatever the number of examples N (the free
    states are solved ``chunk`` examples at a time). ``weight`` W (|O| x |O|, symmetric;
    default I; CL: K^-1). H is symmetric positive semi-definite (Schur product theorem).
    """
    X = np.atleast_2d(np.asarray(X, float))
    g = c.g if g is None else np.asarray(g, float)
    E = edge_transfer(c, g)
    W = np.eye(len(c.outputs)) if weight is None else np.asarray(weight, float)
    DtD = np.zeros((c.m, c.m))
    for k in range(0, len(X), chunk):
        D = c.drops(free_state(c, X[k:k + chunk], g))
        DtD += D.T @ D
    return (E @ W @ E.T) * (DtD / max(len(X), 1))


def _eye_cols(n, idx):
    M = np.zeros((n, len(idx)))
    M[idx, np.arange(len(idx))] = 1.0
    return M


def residual_basis(c: Circuit, X) -> np.ndarray:
    """Orthonormal basis Q of the residuals a linear circuit can produce on inputs X.

    V_O = T x for a linear circuit (ground at 0 V), so the stacked residual
    r = (T - T*) x_i over the batch lies in R = {(A x_i)_i : A in R^(|O| x |in|)},
    of dimension |O| rank(X). Every column of J lies in R too. Rows example-major,
    as in :func:`jacobian`. Returns (batch * |O|, dim R).
    """
    X = np.atleast_2d(np.asarray(X, float))
    no = len(c.outputs)
    # columns: vec over examples of E_jk x_i for each output j and input k
    cols = [np.kron(X[:, k], np.eye(no)[:, j]) for j in range(no) for k in range(X.shape[1])]
    if not cols:
        return np.zeros((len(X) * no, 0))
    U, sv, _ = np.linalg.svd(np.column_stack(cols), full_matrices=False)
    return U[:, sv > sv.max() * 1e-10] if sv.size and sv.max() > 0 else U[:, :0]


def coercivity(c: Circuit, X, g=None, weight=None, restrict: bool = True, active=None) -> float:
    """The coercivity constant c(g) (V^2/S^2) of the mean loss at g on inputs X.

    restrict=False: the spec's lambda_min(J J^T) / batch, J stacked over the
    batch; zero whenever batch * |O| exceeds what J can reach.
    restrict=True (default): lambda_min of J J^T on the residual subspace R of
    :func:`residual_basis`, divided by the batch size: the constant of the PL
    inequality ||grad C||^2 >= 2 c C that holds along training on a linear
    circuit, so that gradient flow gives C(t) <= C(0) exp(-2 alpha c t).
    Divided by the batch because the loss is a mean.

    ``weight`` (|O| x |O|): use J J^T W blockwise (CL: W = K^-1); its
    eigenvalues are real and positive on R. ``active`` (bool (m,)): only these
    edges' columns (edges pinned at a conductance bound cannot move).
    """
    X = np.atleast_2d(X)
    J = jacobian(c, X, g)
    if active is not None:
        J = J[:, active]
    M = J @ J.T
    if weight is not None:
        M = M @ np.kron(np.eye(len(X)), weight)
    if restrict:
        Q = residual_basis(c, X)
        M = Q.T @ M @ Q
    ev = np.linalg.eigvals(M).real if weight is not None else np.linalg.eigvalsh(M)
    return float(np.min(ev)) / len(X) if ev.size else 0.0


def nudged_state_closed_form(c: Circuit, X, Y, beta, g=None) -> np.ndarray:
    """V^beta_O = V_O - beta K (I + beta K)^-1 r (spec 3): the closed-loop nudged outputs, (batch, |O|)."""
    V = free_state(c, X, g)
    VO = V[:, list(c.outputs)]
    r = VO - np.asarray(Y)
    K = output_green(c, g)
    I = np.eye(len(K))
    return VO - beta * (K @ np.linalg.solve(I + beta * K, r.T)).T
