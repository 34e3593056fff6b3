"""Reference mathematics for linear circuits (docs/math.md, sections 1, 2, 3, 6 and 7).

Plain, direct formulas: the reference every substrate and estimator is tested
against. They favour clarity over speed; the fast batched solver is
:mod:`hil.ideal`. Shapes: ``X`` (batch, |inputs|) volts, ``Y`` (batch, |O|)
volts, ``g`` the parameters theta (n_params,) siemens: the conductances, then
the trainable transconductances (a vector of m conductances keeps the stored
gm). Loss: C = mean over the batch of 1/2 ||V_O - y||^2 (V^2).

With VCCS elements the circuit's Jacobian A = dF/dV (docs/math.md, section 7.1) is L plus the
G stamps, non-symmetric: the free state solves A_FF V_F = -A_FS s, the exact
gradient's adjoint solves the transposed system A_FF^T lambda = P^T r, and
EP's error vector mu = A_FF^-1 P^T r differs from lambda.
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


def conductance_matrix(c: Circuit, g=None) -> sp.csr_matrix:
    """A = dF/dV over every node (n x n, siemens): L plus each VCCS's stamp
    gm (e_out_p - e_out_n)(e_ctrl_p - e_ctrl_n)^T (docs/math.md, section 7.1). Equal to L without VCCS."""
    edges, gm = c.split(c.theta if g is None else g)
    L = laplacian(c, edges)
    if not c.k:
        return L
    nd = c.vccs_nodes
    rows = np.concatenate([nd[:, 0], nd[:, 0], nd[:, 1], nd[:, 1]])
    cols = np.concatenate([nd[:, 2], nd[:, 3], nd[:, 2], nd[:, 3]])
    vals = np.concatenate([gm, -gm, -gm, gm])
    return (L + sp.csr_matrix((vals, (rows, cols)), shape=(c.n, c.n))).tocsr()


def jacobian_blocks(c: Circuit, g=None) -> tuple:
    """(A_FF (CSC), A_FS): the free rows of A = dF/dV, split into free and source columns (siemens)."""
    A = conductance_matrix(c, g)
    F, S = c.free, c.sources
    return A[F][:, F].tocsc(), A[F][:, S]


_blocks = jacobian_blocks


def _solve(A, rhs, transpose: bool = False):
    """A^-1 rhs (or A^-T rhs) for a sparse square A."""
    if A.shape[0] <= 2000:
        M = A.toarray()
        return np.linalg.solve(M.T if transpose else M, rhs)
    rhs = np.asarray(rhs, dtype=A.dtype) if not np.iscomplexobj(rhs) else rhs
    return spla.splu(A).solve(rhs, trans="T" if transpose else "N")


def source_values(c: Circuit, X) -> np.ndarray:
    """s: (batch, |S|) source voltages, ground (0 V) first, then the inputs X, then the biases."""
    X = np.atleast_2d(np.asarray(X, float))
    return np.column_stack([np.zeros(len(X)), X] + ([np.broadcast_to(c.bias_v, (len(X), len(c.biases)))]
                                                     if len(c.biases) else []))


def free_state(c: Circuit, X, g=None) -> np.ndarray:
    """V: (batch, n) free-state node voltages: V_S = s, L_FF V_F = -L_FS s (volts); F(V) = 0 by Newton's
    method (:mod:`hil.mna`) when the circuit has other element kinds."""
    if c.elements:
        from hil.mna import operating_point
        return operating_point(c, X, g)[1][:, :c.n]
    LFF, LFS = _blocks(c, g)
    s = source_values(c, X)
    V = np.zeros((len(s), c.n))
    V[:, c.sources] = s
    V[:, c.free] = _solve(LFF, -(LFS @ s.T)).T
    return V


def output_green(c: Circuit, g=None) -> np.ndarray:
    """K = P A_FF^-1 P^T, the |O| x |O| output Green's matrix (ohms).

    Symmetric positive definite for resistor circuits; non-symmetric with VCCS. With other element
    kinds: about the free operating point at 0 V inputs (:func:`operating_jacobian`).
    """
    if c.elements:
        from hil.mna import linear_response, operating_point
        system, x = operating_point(c, np.zeros((1, len(c.inputs))), g)
        n_out = len(c.outputs)
        return np.column_stack([linear_response(system, x, np.eye(n_out)[k][None])[0, list(c.outputs)]
                                for k in range(n_out)])
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


def _error_state(c: Circuit, X, Y, g, transpose: bool) -> np.ndarray:
    if c.elements:  # about each example's free operating point: J_UU^(T) x = P^T r
        from hil.mna import linear_response, operating_point
        system, x = operating_point(c, X, g)
        r = x[:, list(c.outputs)] - np.asarray(Y)
        return linear_response(system, x, r, transpose=transpose)[:, :c.n]
    AFF, _ = _blocks(c, g)
    V = free_state(c, X, g)
    r = V[:, list(c.outputs)] - np.asarray(Y)
    rhs = np.zeros((len(c.free), len(r)))
    rhs[c.out_in_free] = r.T
    out = np.zeros_like(V)
    out[:, c.free] = _solve(AFF, rhs, transpose=transpose).T
    return out


def adjoint_state(c: Circuit, X, Y, g=None) -> np.ndarray:
    """lambda: (batch, n) with A_FF^T lambda_F = P^T r, lambda_S = 0 (V/A x ohm... = volts per volt of error).

    The adjoint uses the transpose (docs/math.md, section 7.2); for resistors A = L_FF is symmetric.
    """
    return _error_state(c, X, Y, g, transpose=not c.reciprocal or bool(c.elements))


def error_vector(c: Circuit, X, Y, g=None) -> np.ndarray:
    """mu: (batch, n) with A_FF mu_F = P^T r, mu_S = 0: EP's error vector, dV/dbeta at beta = 0 is -mu (docs/math.md, section 7.2)."""
    return _error_state(c, X, Y, g, transpose=False)


def gradient(c: Circuit, X, Y, g=None) -> np.ndarray:
    """dC/dtheta = mean over the batch of -lambda^T dF/dtheta (V^2 / S); the exact gradient.

    Edges: -dV_e dlambda_e. VCCS: -(lambda_out_p - lambda_out_n)(V_ctrl_p - V_ctrl_n).
    """
    V = free_state(c, X, g)
    lam = adjoint_state(c, X, Y, g)
    return -np.mean(c.signal_products(V, lam), axis=0)


def ep_limit(c: Circuit, X, Y, g=None) -> np.ndarray:
    """ghat(0) = mean over the batch of -mu^T dF/dtheta (V^2/S): generalised EP's infinitesimal-nudge limit."""
    V = free_state(c, X, g)
    return -np.mean(c.signal_products(V, error_vector(c, X, Y, g)), axis=0)


def param_jacobian(c: Circuit, v: np.ndarray) -> np.ndarray:
    """dF_F/dtheta at one state v (n,): (|F|, n_params), amperes per siemens."""
    n, F = c.n, c.free
    D = np.zeros((n, c.n_params))
    dV = c.drops(v)
    cols = np.arange(c.m)
    np.add.at(D, (c.a, cols), dV)
    np.add.at(D, (c.b, cols), -dV)
    j = c.trainable_vccs
    if len(j):
        vc = c.control_drops(v)[j]
        cols = c.m + np.arange(len(j))
        np.add.at(D, (c.vccs_nodes[j, 0], cols), vc)
        np.add.at(D, (c.vccs_nodes[j, 1], cols), -vc)
    col = c.m + len(j)
    for grp, idx in c.trainable_elements:  # d i_t / d theta at each terminal t
        di = grp.dparam(v[grp.nodes][None])[0][idx]
        cols = col + np.arange(len(idx))
        for t in range(grp.nodes.shape[1]):
            np.add.at(D, (grp.nodes[idx, t], cols), di[:, t])
        col += len(idx)
    return D[F]


def jacobian(c: Circuit, X, g=None) -> np.ndarray:
    """J = dV_O/dtheta stacked over examples: (batch * |O|, n_params), V/S. Row order: example-major.

    Per example J = -P A_FF^-1 dF_F/dtheta (for resistors: -P L_FF^-1 B_F^T diag(B V)).
    TooBig (naming the size) before anything is allocated when J would not fit in memory.
    """
    from hil.memory import require_fits
    X = np.atleast_2d(np.asarray(X, float))
    require_fits((len(X) * len(c.outputs), c.n_params), f"the output Jacobian dV_O/dtheta on {len(X)} examples",
                 "use fewer examples, or a fixed --lr (the default step's curvature needs it)")
    if c.elements:  # A at each example's operating point: J_i = -(A_i^-T P^T)^T dF/dtheta
        from hil.mna import jacobian_UU, operating_point, out_positions
        system, x = operating_point(c, X, g)
        cc = c if g is None else c.with_g(g)
        A = jacobian_UU(system, x)
        U = system.unknowns()
        rows = []
        for i in range(len(x)):
            rhs = np.zeros((len(U), len(c.outputs)))
            rhs[out_positions(system), np.arange(len(c.outputs))] = 1.0
            Z = np.linalg.solve(A[i].T, rhs)
            D = np.zeros((len(U), c.n_params))
            D[:len(c.free)] = param_jacobian(cc, x[i, :c.n])  # U lists the free nodes first, then branches
            rows.append(-(Z.T @ D))
        return np.vstack(rows)
    AFF, _ = _blocks(c, g)
    V = free_state(c, X, g)
    if c.reciprocal:
        BF = c.incidence()[:, c.free]
        Z = _solve(AFF, _eye_cols(len(c.free), c.out_in_free))  # L_FF^-1 P^T
        return np.vstack([-(BF @ Z).T * c.drops(v)[None, :] for v in V])  # -(P L^-1 B_F^T) diag(dV)
    Z = _solve(AFF, _eye_cols(len(c.free), c.out_in_free), transpose=True)  # (P A_FF^-1)^T
    return np.vstack([-(Z.T @ param_jacobian(c, v)) for v in V])


def kappa_max(K) -> float:
    """The spectral radius of K (ohms): the nudged state's series converges for |beta| < 1/kappa_max.

    For a symmetric K (resistors) its largest eigenvalue.
    """
    K = np.asarray(K)
    if np.allclose(K, K.T, rtol=1e-10, atol=0):
        return float(np.linalg.eigvalsh(K).max())
    return float(np.abs(np.linalg.eigvals(K)).max())


def symmetry_index(A) -> float:
    """||A_sym||_F / (||A_sym||_F + ||A_anti||_F): 1 when reciprocal, 1/2 as antisymmetric as symmetric (docs/math.md, section 7.2)."""
    if sp.issparse(A):  # in the matrix's own memory: a large circuit's A has no dense copy
        from scipy.sparse.linalg import norm as sparse_norm
        A = sp.csr_matrix(A)
        s, a = sparse_norm(0.5 * (A + A.T)), sparse_norm(0.5 * (A - A.T))
    else:
        A = np.asarray(A)
        s, a = np.linalg.norm(0.5 * (A + A.T)), np.linalg.norm(0.5 * (A - A.T))
    return float(s / (s + a))


def operating_jacobian(c: Circuit, X=None, g=None) -> np.ndarray:
    """A = dF/dV over the free unknowns (dense, siemens) at the free operating point of the inputs X
    (one example; default 0 V): A_FF for a linear circuit, J_UU of :mod:`hil.mna` (free nodes, then
    each VCVS's branch) with other element kinds."""
    if not c.elements:
        return _blocks(c, g)[0].toarray()
    from hil.mna import jacobian_UU, operating_point
    X = np.zeros((1, len(c.inputs))) if X is None else np.atleast_2d(np.asarray(X, float))[:1]
    system, x = operating_point(c, X, g)
    return jacobian_UU(system, x)[0]


def homeostasis(c: Circuit, g=None) -> float:
    """H = 1/2 ||A_FF - A_FF^T||_F^2 (S^2) at the operating point (docs/math.md, section 7.3; 0 V inputs); zero for resistors."""
    if not c.elements:  # linear: sparse, a large circuit's A_FF has no dense copy
        A = sp.csr_matrix(_blocks(c, g)[0])
        D = A - A.T
        return float(0.5 * D.multiply(D).sum())
    A = operating_jacobian(c, None, g)
    return float(0.5 * np.sum((A - A.T) ** 2))


def homeostasis_gradient(c: Circuit, g=None, A=None) -> np.ndarray:
    """dH/dtheta (n_params,), siemens: 2 <A - A^T, S_j> over the free block for a trainable gm_j (docs/math.md, section 7.3),
    S_j its stamp (e_out_p - e_out_n)(e_ctrl_p - e_ctrl_n)^T; zero for conductances, which enter A
    symmetrically. ``A``: A_FF (dense) when the caller has it."""
    A = _blocks(c, g)[0].toarray() if A is None else np.asarray(A)
    D = A - A.T
    out = np.zeros(c.n_params)
    pos = -np.ones(c.n, int)
    pos[c.free] = np.arange(len(c.free))
    for i, j in enumerate(c.trainable_vccs):
        op, on, cp, cn = (pos[x] for x in c.vccs_nodes[j])
        acc = 0.0
        for r, sr in ((op, 1), (on, -1)):
            for q, sq in ((cp, 1), (cn, -1)):
                if r >= 0 and q >= 0:
                    acc += sr * sq * D[r, q]
        out[c.m + i] = 2.0 * acc  # d/dgm 1/2 ||D||_F^2 = <D, S - S^T> = 2 <D, S>, D antisymmetric
    return out


def edge_transfer(c: Circuit, g=None) -> np.ndarray:
    """E = B_F L_FF^-1 P^T (m x |O|, ohms): the drop across each edge per ampere injected into each output.

    Per example the Jacobian is J_i = -E^T diag(dV_i) (:func:`jacobian`).
    """
    LFF, _ = _blocks(c, g)
    BF = c.incidence()[:, c.free]
    return np.asarray(BF @ _solve(LFF, _eye_cols(len(c.free), c.out_in_free)))


def gauss_newton(c: Circuit, X, g=None, weight=None, chunk: int = 4096) -> np.ndarray:
    """H = mean_i J_i^T W J_i (m x m, V^2/S^2), the Gauss-Newton curvature of the mean loss in g
    (n_params x n_params in theta for a circuit with VCCS).

    With J_i = -E^T diag(dV_i), H = (E W E^T) o (D^T D / N), o the elementwise product and
    D (N x m) the free-state drops: memory m^2 whatever the number of examples N (the free
    states are solved ``chunk`` examples at a time). ``weight`` W (|O| x |O|, symmetric;
    default I; CL: K^-1). H is symmetric positive semi-definite (Schur product theorem).
    """
    X = np.atleast_2d(np.asarray(X, float))
    W = np.eye(len(c.outputs)) if weight is None else np.asarray(weight, float)
    if not c.reciprocal:  # theta holds transconductances: J_i = -P A^-1 dF/dtheta, (n_params x n_params)
        n_out = len(c.outputs)
        H = np.zeros((c.n_params, c.n_params))
        for k in range(0, len(X), chunk):
            J = jacobian(c, X[k:k + chunk], g).reshape(-1, n_out, c.n_params)
            H += np.einsum("ioa,op,ipb->ab", J, W, J)
        H = H / max(len(X), 1)
        return 0.5 * (H + H.T)  # W = K^-1 is not symmetric with VCCS: the symmetric part sets the step
    g = c.g if g is None else np.asarray(g, float)
    E = edge_transfer(c, g)
    DtD = np.zeros((c.m, c.m))
    for k in range(0, len(X), chunk):
        D = c.drops(free_state(c, X[k:k + chunk], g))
        DtD += D.T @ D
    return (E @ W @ E.T) * (DtD / max(len(X), 1))


def gauss_newton_operator(c: Circuit, X, g=None, weight=None, chunk: int = 4096) -> spla.LinearOperator:
    """H of :func:`gauss_newton` on a reciprocal circuit as an m x m LinearOperator (V^2/S^2), never formed.

    H = (E W E^T) o (D^T D / N) with the drops D = V B^T (B the incidence, V (N x n) the free
    states), so D^T D = B C B^T with C = V^T V (n x n), and for a vector v

        H v = rowsum(E o (B C B^T (diag(v) E W^T))) / N,

    which costs O(m |O| + n^2 |O|) a product and keeps E (m x |O|), C (n x n) and B in memory:
    linear in the edges, whatever the number of examples N (the free states are solved ``chunk``
    examples at a time).
    """
    if not c.reciprocal:
        raise ValueError(f"circuit '{c.name}': the matrix-free Gauss-Newton curvature needs a reciprocal circuit")
    X = np.atleast_2d(np.asarray(X, float))
    W = np.eye(len(c.outputs)) if weight is None else np.asarray(weight, float)
    g = c.g if g is None else np.asarray(g, float)
    E = edge_transfer(c, g)
    C = np.zeros((c.n, c.n))
    for k in range(0, len(X), chunk):
        V = free_state(c, X[k:k + chunk], g)
        C += V.T @ V
    C /= max(len(X), 1)
    B = c.incidence()
    EW = E @ (0.5 * (W + W.T))  # W = I or K^-1, symmetric on a reciprocal circuit (to rounding)

    def matmat(Vs):
        Vs = np.asarray(Vs, float).reshape(c.m, -1)
        out = np.empty_like(Vs)
        for j in range(Vs.shape[1]):
            T = B @ (C @ (B.T @ (Vs[:, j, None] * EW)))
            out[:, j] = np.einsum("eo,eo->e", E, T)
        return out

    return spla.LinearOperator((c.m, c.m), matvec=lambda v: matmat(v)[:, 0], matmat=matmat, dtype=float)


def largest_eigenvalue(H: spla.LinearOperator, dense_below: int = 64) -> float:
    """lambda_max of a symmetric positive semi-definite operator H: Lanczos (ARPACK) from the start vector of
    ones (deterministic, so that a resumed run repeats it bit for bit), to machine precision; below
    ``dense_below`` rows the columns H I and ``eigvalsh``."""
    n = H.shape[0]
    if n == 0:
        return 0.0
    if n <= dense_below:
        M = H.matmat(np.eye(n))
        return float(np.linalg.eigvalsh(0.5 * (M + M.T)).max())
    return float(spla.eigsh(H, k=1, which="LA", return_eigenvectors=False, v0=np.ones(n), tol=0)[0])


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

    restrict=False: lambda_min(J J^T) / batch of docs/math.md, section 6, J stacked over the
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
    from hil.memory import require_fits
    X = np.atleast_2d(X)
    rows = len(X) * len(c.outputs)
    require_fits((rows, rows), f"coercivity on {len(X)} examples: J J^T ({len(X)} examples x {len(c.outputs)} outputs "
                               "squared)", "use fewer examples")
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
    """V^beta_O = V_O - beta K (I + beta K)^-1 r (docs/math.md, section 3): the closed-loop nudged outputs, (batch, |O|)."""
    V = free_state(c, X, g)
    VO = V[:, list(c.outputs)]
    r = VO - np.asarray(Y)
    K = output_green(c, g)
    I = np.eye(len(K))
    return VO - beta * (K @ np.linalg.solve(I + beta * K, r.T)).T


def homeostasis_stochastic(matvec, rmatvec, n: int, samples: int = 100, rng=None) -> tuple:
    """The stochastic estimate of H (docs/math.md, section 7.3): (mean, standard error), S^2.

    With eps ~ N(0, I_n): E[||A eps||^2 - eps^T A^2 eps] = ||A||_F^2 - tr(A^2) = H, and
    eps^T A^2 eps = (A^T eps) . (A eps). ``matvec(E)`` returns A E and ``rmatvec(E)``
    returns A^T E for E (n, samples): physically, the currents that displace the free
    nodes by eps, on the circuit and on its adjoint network.
    """
    rng = np.random.default_rng(rng)
    E = rng.standard_normal((n, samples))
    AE, ATE = matvec(E), rmatvec(E)
    vals = np.sum(AE * AE, axis=0) - np.sum(ATE * AE, axis=0)
    return float(vals.mean()), float(vals.std(ddof=1) / np.sqrt(samples)) if samples > 1 else float("nan")


def homeostasis_nonlinear(c: Circuit, X, g=None) -> tuple:
    """(H, dH/dtheta) with A = J_UU at the free operating point of each example of X, mean over the batch
    (S^2, S); dH/dtheta the VCCS part at the fixed operating point, as for a linear circuit."""
    from hil.mna import jacobian_UU, operating_point
    system, x = operating_point(c, X, g)
    A = jacobian_UU(system, x)
    H = float(np.mean([0.5 * np.sum((a - a.T) ** 2) for a in A]))
    grad = np.mean([homeostasis_gradient(c, g, A=a[:len(c.free)][:, :len(c.free)]) for a in A], axis=0)
    return H, grad
