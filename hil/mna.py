"""Modified nodal analysis over element stamps: the embedded solver of any circuit of :mod:`hil.elements`.

Unknowns x = (V, i_b): every node voltage, then one branch current per VCVS. The
residual R(x) = sum over elements of the currents leaving each node (and each VCVS's
branch equation) minus the injected currents; its Jacobian J = dR/dx is the sum of the
element stamps. Source nodes (ground, inputs, biases; clamped outputs) are held; the
rest U are solved by Newton's method, batched over examples:

    J_UU dx = -R_U,   x <- x + t dx,

t halved until the residual norm falls (damping), started from a given state (the
previous solution) and stopped when every node's KCL residual is below ``rtol`` times
the largest element current. The linear elements' stamps are assembled once per
parameter vector, already restricted to the unknowns (J_UU, u x u); only the nonlinear kinds
are re-evaluated per iteration, and their stamps added where they land inside J_UU (no N x N
matrix per example). The batched dense solves run on one BLAS thread up to
:data:`ONE_THREAD_UNKNOWNS` unknowns: LAPACK's threads on a matrix this small cost more than
the work (a (30, 220, 220) solve: 50 ms on one thread, 0.1-0.7 s on two contended cores). A
linear circuit converges in one step.
"""

from __future__ import annotations

import contextlib

import numpy as np
import scipy.sparse as sp

from hil.substrate import SubstrateError

#: Newton stops when max |R_node| <= RTOL * (largest element current) and likewise for branch rows in volts
RTOL = 1e-14
MAX_ITER = 200
#: up to this many unknowns per example the batched dense solves run on one BLAS thread
ONE_THREAD_UNKNOWNS = 1024
#: Newton solves this many bytes' worth of examples at a time (J_UU of each, u x u), so that a whole training set
#: (the curvature's free states) is solved in bounded memory
CHUNK_BYTES = 64 << 20
_blas = []


@contextlib.contextmanager
def one_blas_thread(size: int, limit: int = ONE_THREAD_UNKNOWNS):
    """Inside: BLAS on one thread when the problem's size (unknowns, or edges) is at most ``limit``.

    At these sizes handing work to BLAS threads costs more than the work, and on shared
    cores their spinning slows the process down.
    """
    if size > limit:
        yield
        return
    if not _blas:
        from threadpoolctl import ThreadpoolController
        _blas.append(ThreadpoolController())
    with _blas[0].limit(limits=1, user_api="blas"):
        yield


class System:
    """A circuit's stamps at parameters theta: J_lin (constant) and the nonlinear groups' scatter maps."""

    def __init__(self, c, theta=None):
        self.c = c
        self.groups = c.element_groups(theta)
        n = c.n
        nb = sum(len(grp) for grp in self.groups if grp.branch)
        self.n, self.N = n, n + nb
        self.idx = []  # per group: (k, T) unknown indices of its terminals (and its branch)
        b0 = n
        for grp in self.groups:
            idx = grp.nodes
            if grp.branch:
                idx = np.column_stack([idx, b0 + np.arange(len(grp))])
                b0 += len(grp)
            self.idx.append(idx)
        N = self.N
        self.J_lin = np.zeros((N, N))
        self.nonlinear = []  # (group, terminal indices (k, T), flat (row, col) positions of its stamp in J)
        self.linear_currents = []
        for grp, idx in zip(self.groups, self.idx):
            T = idx.shape[1]
            rows = np.repeat(idx, T, axis=1).ravel()
            cols = np.tile(idx, (1, T)).ravel()
            if grp.linear:
                _, G = grp.evaluate(np.zeros((1,) + idx.shape))
                np.add.at(self.J_lin, (rows, cols), G[0].ravel())
                if len(grp):
                    self.linear_currents.append((grp, idx))
            else:
                self.nonlinear.append((grp, idx, rows * N + cols))
        self.branch_rows = np.arange(n, N)
        node_diag = np.abs(np.diag(self.J_lin)[:n])
        self.gscale = float(node_diag.max()) if node_diag.size and node_diag.max() > 0 else 1e-3
        self._lin_i, self._lin_branch = self._linear_current_map()
        self._reduced = {}

    def _linear_current_map(self):
        """(C, b): the linear two-terminal-or-more elements' terminal currents are C x (a sparse map, A per V),
        the linear branch currents are x[:, b]; for the largest element current of a state."""
        rows, cols, vals, branch = [], [], [], []
        r0 = 0
        for grp, idx in self.linear_currents:
            if grp.branch:
                branch.append(idx[:, -1])
                continue
            _, G = grp.evaluate(np.zeros((1,) + idx.shape))
            G = G[0]
            k, T = idx.shape
            if T == 2 and np.array_equal(G[:, 1], -G[:, 0]):
                G = G[:, :1]  # a two-terminal element: what leaves b is what enters a; one row is enough
            t = G.shape[1]
            rows.append(r0 + np.repeat(np.arange(k * t), T))
            cols.append(np.tile(idx, (1, t)).ravel())
            vals.append(G.ravel())
            r0 += k * t
        C = sp.csr_matrix((np.concatenate(vals) if vals else np.zeros(0),
                           (np.concatenate(rows) if rows else np.zeros(0, int),
                            np.concatenate(cols) if cols else np.zeros(0, int))), shape=(r0, self.N))
        return C, (np.concatenate(branch) if branch else np.zeros(0, int))

    def reduced(self, clamp_outputs=False) -> "_Reduced":
        """The Jacobian's pieces over the unknowns (:class:`_Reduced`), once per clamp mode."""
        if clamp_outputs not in self._reduced:
            self._reduced[clamp_outputs] = _Reduced(self, self.unknowns(clamp_outputs))
        return self._reduced[clamp_outputs]

    def held(self, clamp_outputs=False) -> np.ndarray:
        """Unknowns held fixed: the sources, and the outputs when they are clamped."""
        S = list(self.c.sources) + (list(self.c.outputs) if clamp_outputs else [])
        return np.array(S, int)

    def unknowns(self, clamp_outputs=False) -> np.ndarray:
        mask = np.ones(self.N, bool)
        mask[self.held(clamp_outputs)] = False
        return np.flatnonzero(mask)

    def evaluate(self, x, jacobian=True):
        """(R (B, N), J (B, N, N) or None, I_max (B,)): residual of the elements only, its Jacobian, and the
        largest element current per example (A). The solver itself assembles J over the unknowns only
        (:meth:`_Reduced.jacobian`); the full J is for callers that want every row."""
        B, N = len(x), self.N
        R, imax, Gs = self._residual(x, jacobian)
        J = None
        if jacobian:
            J = np.empty((B, N, N))
            J[:] = self.J_lin
            for (grp, idx, flat), G in zip(self.nonlinear, Gs):
                posj = (np.arange(B) * (N * N))[:, None] + flat[None, :]
                J += np.bincount(posj.ravel(), G.reshape(-1), B * N * N).reshape(B, N, N)
        return R, J, imax

    def _residual(self, x, stamps=False):
        """(R (B, N), I_max (B,), [G (B, k, T, T) per nonlinear group, when ``stamps``])."""
        B, N = len(x), self.N
        R = x @ self.J_lin.T
        imax = np.zeros(B)
        if self._lin_i.shape[0]:
            imax = np.abs(self._lin_i @ x.T).max(axis=0)
        if len(self._lin_branch):
            imax = np.maximum(imax, np.abs(x[:, self._lin_branch]).max(axis=1))
        Gs = []
        for grp, idx, flat in self.nonlinear:
            i, G = grp.evaluate(x[:, idx])
            pos = (np.arange(B) * N)[:, None] + idx.ravel()[None, :]
            R += np.bincount(pos.ravel(), i.reshape(-1), B * N).reshape(B, N)
            imax = np.maximum(imax, np.abs(i).reshape(B, -1).max(axis=1, initial=0))
            if stamps:
                Gs.append(G)
        return R, imax, Gs

    def currents(self, x) -> list:
        """Each group's terminal currents (B, k, T) at states x (A); a VCVS's last column is its constraint (V)."""
        return [grp.evaluate(x[:, idx])[0] for grp, idx in zip(self.groups, self.idx)]


class _Reduced:
    """J over the unknowns U: its constant linear part A = J_lin[U, U] and, per nonlinear group, where its
    stamp entries land (those whose row and column are both unknowns), summed over duplicates."""

    def __init__(self, system: System, U):
        N = system.N
        u = len(U)
        self.U, self.u = U, u
        pos = -np.ones(N, int)
        pos[U] = np.arange(u)
        self.A = system.J_lin[np.ix_(U, U)]
        self.scatter = []  # per nonlinear group: (flat positions in u x u, sparse sum over its stamp entries)
        for grp, idx, _ in system.nonlinear:
            T = idx.shape[1]
            r = np.repeat(pos[idx], T, axis=1).ravel()
            c = np.tile(pos[idx], (1, T)).ravel()
            keep = np.flatnonzero((r >= 0) & (c >= 0))
            flat, inv = np.unique(r[keep] * u + c[keep], return_inverse=True)
            S = sp.csr_matrix((np.ones(len(keep)), (inv, keep)), shape=(len(flat), len(r)))
            self.scatter.append((flat, S))

    def jacobian(self, Gs, B: int) -> np.ndarray:
        """J_UU (B, u, u) from the nonlinear groups' stamps Gs (each (B, k, T, T))."""
        J = np.empty((B, self.u, self.u))
        J[:] = self.A
        Jf = J.reshape(B, -1)
        for (flat, S), G in zip(self.scatter, Gs):
            Jf[:, flat] += (S @ G.reshape(B, -1).T).T
        return J


def newton(system: System, x0, inject=None, load=None, clamp_outputs=False, what="free state", batch=None):
    """Solve R(x) + (load) - (inject) = 0 over the unknowns, from x0 (B, N) whose held entries are set.

    - ``inject``: (B, |O|) currents into the outputs (A), or None.
    - ``load``: a pair (beta, y): each output loaded by a real conductance beta (S; a number or one per row)
      to a source at y (B, |O|) volts.
    - ``batch``: rows per example block when several experiments are stacked (messages name the example).

    Returns x (B, N). SubstrateError naming circuit, example, node and residual when it does not converge.
    """
    u = len(system.unknowns(clamp_outputs))
    x0 = np.asarray(x0, float)
    B = len(x0)
    chunk = max(1, CHUNK_BYTES // (8 * max(u * u, system._lin_i.shape[0], 1)))
    if B <= chunk:
        with one_blas_thread(u):
            return _newton(system, x0, inject, load, clamp_outputs, what, batch or B, 0)
    x = np.empty_like(x0)
    for k in range(0, B, chunk):
        part = slice(k, k + chunk)
        with one_blas_thread(u):
            x[part] = _newton(system, x0[part], None if inject is None else inject[part],
                              None if load is None else (load[0][part] if np.ndim(load[0]) else load[0], load[1][part]),
                              clamp_outputs, what, batch or B, k)
    return x


def _newton(system, x0, inject, load, clamp_outputs, what, batch, offset):
    """:func:`newton` on rows offset .. offset + len(x0) of the whole batch (messages count from there)."""
    c = system.c
    out = np.array(c.outputs, int)
    red = system.reduced(clamp_outputs)
    U = red.U
    oU = np.searchsorted(U, out) if not clamp_outputs else None  # the outputs' positions in U (sorted)
    nodeU = U < system.n
    x = np.array(x0, float)
    B = len(x)
    active = np.arange(B)

    def full_residual(xa, jac, rows):
        R, imax, Gs = system._residual(xa, jac)
        J = red.jacobian(Gs, len(xa)) if jac else None
        if inject is not None:
            R[:, out] -= inject[rows]
        if load is not None:
            beta, y = load
            b = beta[rows, None] if np.ndim(beta) else beta
            R[:, out] += b * (xa[:, out] - y[rows])
            if jac and oU is not None:
                J[:, oU, oU] += b
        return R, J, imax

    def merit(R, imax, xa):
        RU = R[:, U]
        rn = np.abs(RU[:, nodeU]).max(axis=1, initial=0) / np.maximum(imax, 1e-300)
        rb = np.abs(RU[:, ~nodeU]).max(axis=1, initial=0) / np.maximum(np.abs(xa[:, :system.n]).max(axis=1), 1e-300)
        scaled = RU.copy()
        scaled[:, ~nodeU] *= system.gscale
        return np.maximum(rn, rb), np.sqrt(np.sum(scaled * scaled, axis=1))

    R, _, imax = full_residual(x, False, active)
    rel, norm = merit(R, imax, x)
    for it in range(MAX_ITER):
        done = rel <= RTOL
        if done.all():
            return x
        keep = ~done
        active, R, rel, norm = active[keep], R[keep], rel[keep], norm[keep]
        _, JUU, _ = full_residual(x[active], True, active)
        reg = 1e-14 * system.gscale
        JUU[:, np.arange(len(U)), np.arange(len(U))] += np.where(nodeU, reg, 0.0)
        try:
            dx = -np.linalg.solve(JUU, R[:, U][..., None])[..., 0]
        except np.linalg.LinAlgError:
            dx = -np.stack([np.linalg.lstsq(Jk, rk, rcond=None)[0] for Jk, rk in zip(JUU, R[:, U])])
        t = np.ones(len(active))
        xa = x[active]
        pending = np.ones(len(active), bool)
        newR = R.copy()
        new_rel, new_norm = rel.copy(), norm.copy()
        newx = xa.copy()
        for _ in range(60):
            idx = np.flatnonzero(pending)
            trial = xa[idx].copy()
            trial[:, U] += t[idx, None] * dx[idx]
            Rt, _, it_max = full_residual(trial, False, active[idx])
            rt, nt = merit(Rt, it_max, trial)
            ok = (nt <= (1 - 1e-4 * t[idx]) * norm[idx]) | (rt <= RTOL) | (nt == 0)
            acc = idx[ok]
            newx[acc], newR[acc], new_rel[acc], new_norm[acc] = trial[ok], Rt[ok], rt[ok], nt[ok]
            pending[acc] = False
            if not pending.any():
                break
            t[pending] *= 0.5
        stalled = np.flatnonzero(pending)
        if len(stalled):
            # no decrease at any step length: converged to rounding if the residual is already tiny
            small = rel[stalled] <= 1e-11
            if not small.all():
                _fail(system, x, (offset + active[stalled[~small]][0]) % batch, R[stalled[~small]][0], what, it)
            new_rel[stalled] = 0.0  # accept as converged at rounding
        x[active] = newx
        R, rel, norm = newR, new_rel, new_norm
    k = int(np.argmax(rel))
    _fail(system, x, (offset + active[k]) % batch, R[k], what, MAX_ITER)


def _fail(system, x, example, R, what, iterations):
    c = system.c
    U = system.unknowns()
    r = np.abs(R[U])
    j = U[int(np.argmax(r))]
    where = f"node '{c.nodes[j]}'" if j < system.n else f"the branch of vcvs #{j - system.n + 1}"
    raise SubstrateError(f"circuit '{c.name}': the {what} of example {int(example)} did not converge "
                         f"(Newton, {iterations} iterations): residual {float(np.max(r)):.3g} "
                         f"{'A' if j < system.n else 'V'} at {where}")


def start(system: System, X, bias=True) -> np.ndarray:
    """x (B, N) with the sources set (ground 0 V, inputs X, biases) and every other unknown at 0."""
    c = system.c
    X = np.atleast_2d(np.asarray(X, float))
    x = np.zeros((len(X), system.N))
    x[:, list(c.inputs)] = X
    if len(c.biases):
        x[:, list(c.biases)] = c.bias_v
    return x


def jacobian_UU(system: System, x, clamp_outputs=False) -> np.ndarray:
    """J restricted to the unknowns at states x: (B, u, u) siemens (volts-per-ampere rows for branches)."""
    red = system.reduced(clamp_outputs)
    _, _, Gs = system._residual(x, True)
    return red.jacobian(Gs, len(x))


def out_positions(system: System) -> np.ndarray:
    """Positions of the outputs inside the (unclamped) unknowns."""
    U = system.unknowns()
    pos = {int(u): i for i, u in enumerate(U)}
    return np.array([pos[o] for o in system.c.outputs], int)


def linear_response(system: System, x, currents, transpose=False, beta=None) -> np.ndarray:
    """dx (B, N) with (J_UU [+ beta P P^T]) dx_U = P^T currents (A) at states x; J^T with ``transpose``.

    The response of the circuit linearised about x (every source held at 0 V) to ``currents`` (B, |O|)
    injected into the outputs; complex ``beta`` and currents allowed.
    """
    U = system.unknowns()
    J = jacobian_UU(system, x).astype(complex if np.iscomplexobj(currents) or np.iscomplexobj(beta) else float)
    if transpose:
        J = np.swapaxes(J, 1, 2)
    op = out_positions(system)
    if beta is not None:
        J[:, op, op] += beta
    rhs = np.zeros((len(x), len(U)), dtype=J.dtype)
    rhs[:, op] = currents
    dx = np.zeros((len(x), system.N), dtype=J.dtype)
    with one_blas_thread(len(U)):
        dx[:, U] = np.linalg.solve(J, rhs[..., None])[..., 0]
    return dx


def operating_point(c, X, theta=None, x0=None) -> tuple:
    """(system, x): the free state x (B, N) of every example of X (B, |inputs|) volts at parameters theta."""
    system = System(c, theta)
    x = start(system, X)
    if x0 is not None:
        U = system.unknowns()
        x[:, U] = np.asarray(x0)[:, U]
    return system, newton(system, x)


def padded(system: System, V) -> np.ndarray:
    """Node voltages V (B, n) as unknowns (B, N), the branch currents 0 (the stamps do not depend on them)."""
    x = np.zeros((len(V), system.N), dtype=V.dtype)
    x[:, :system.n] = V
    return x
