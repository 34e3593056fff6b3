"""The ideal substrate: exact linear resistor circuits solved with numpy/scipy.

One factorization of L_FF per conductance vector serves every example and
every state of a step. With Z = L_FF^-1 P^T (|F| x |O|) and K = P Z, every
experiment of :mod:`hil.substrate` is the base solution plus Z c for a small
output current c (|O| per example):

- injected current I:            c = I
- load beta to a source at y:    (I + beta K) V_O = V_O^0 + beta K y,  c = beta (y - V_O)
- outputs clamped at t:          c = K^-1 (t - V_O^0)

where V^0 is the solution with the outputs open (sources on: the free state;
sources off: zero). So a step costs one factorization, |O| + 1 batched
triangular solves, and |O| x |O| algebra per experiment. Dense Cholesky for
small circuits, sparse LU (SuperLU) beyond ``dense_limit`` free nodes (200: the
crossover measured on random networks and lattices).

With VCCS elements (docs/math.md, section 7.1) L_FF becomes the non-symmetric A_FF (L plus the G
stamps): a dense LU (LAPACK gesv, kept as the inverse) replaces the Cholesky, K is non-symmetric, and an experiment
on the adjoint network (``Experiment.transpose``) solves A_FF^T instead.
Resistor-only circuits keep the Cholesky path unchanged.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from hil.circuit import Circuit
from hil.exact import source_values
from hil.substrate import Substrate, SubstrateError


class _Stamps:
    """Where each edge's four Laplacian stamps (+g at aa, bb; -g at ab, ba) land in L_FF and L_FS.

    Computed once per circuit, so a step assembles the blocks from g without
    generic sparse-matrix algebra.
    """

    def __init__(self, c: Circuit):
        pos = -np.ones(c.n, dtype=int)
        pos[c.free] = np.arange(len(c.free))
        spos = -np.ones(c.n, dtype=int)
        spos[c.sources] = np.arange(len(c.sources))
        rows = np.concatenate([c.a, c.b, c.a, c.b])
        cols = np.concatenate([c.a, c.b, c.b, c.a])
        self.sign = np.concatenate([np.ones(2 * c.m), -np.ones(2 * c.m)])
        self.edge = np.tile(np.arange(c.m), 4)
        if c.k:  # each VCCS: +gm at (out_p, ctrl_p), (out_n, ctrl_n); -gm at (out_p, ctrl_n), (out_n, ctrl_p)
            nd = c.vccs_nodes
            rows = np.concatenate([rows, nd[:, 0], nd[:, 1], nd[:, 0], nd[:, 1]])
            cols = np.concatenate([cols, nd[:, 2], nd[:, 3], nd[:, 3], nd[:, 2]])
            self.sign = np.concatenate([self.sign, np.ones(2 * c.k), -np.ones(2 * c.k)])
            self.edge = np.concatenate([self.edge, c.m + np.tile(np.arange(c.k), 4)])
        ff = (pos[rows] >= 0) & (pos[cols] >= 0)
        fs = (pos[rows] >= 0) & (spos[cols] >= 0)
        self.ff, self.fs = ff, fs
        self.ff_r, self.ff_c = pos[rows[ff]], pos[cols[ff]]
        self.fs_r, self.fs_c = pos[rows[fs]], spos[cols[fs]]
        self.nf, self.ns = len(c.free), len(c.sources)

    def blocks(self, g: np.ndarray, dense: bool):
        """(A_FF, A_FS): dense arrays, or a CSC and a CSR matrix. ``g``: conductances, then every gm."""
        w = self.sign * g[self.edge]
        if dense:
            LFF = np.bincount(self.ff_r * self.nf + self.ff_c, w[self.ff], self.nf * self.nf).reshape(self.nf, self.nf)
            LFS = np.bincount(self.fs_r * self.ns + self.fs_c, w[self.fs], self.nf * self.ns).reshape(self.nf, self.ns)
            return LFF, LFS
        LFF = sp.csc_matrix((w[self.ff], (self.ff_r, self.ff_c)), shape=(self.nf, self.nf))
        LFS = sp.csr_matrix((w[self.fs], (self.fs_r, self.fs_c)), shape=(self.nf, self.ns))
        return LFF, LFS


class _Factorization:
    """A_FF factorized once for a parameter vector, with Z = A_FF^-1 P^T and K = P Z.

    Resistors: A_FF = L_FF, Cholesky (dense) or SuperLU (sparse). With VCCS: LU.
    """

    def __init__(self, c: Circuit, g: np.ndarray, stamps: _Stamps, dense_limit: int):
        F = c.free
        self.dense = len(F) <= dense_limit
        self.symmetric = c.reciprocal
        AFF, self.LFS = stamps.blocks(g, self.dense)
        try:
            if self.dense and self.symmetric:
                self._cho = sla.cho_factor(AFF, lower=True, check_finite=False)
            elif self.dense:
                # LU by LAPACK's gesv against I: the explicit inverse; scipy's lu_solve costs ~1-15 ms a call
                # on a small matrix (measured with scipy 1.17), against microseconds for a product
                self._inv = np.linalg.inv(AFF)
            else:
                self._lu = spla.splu(AFF, permc_spec="MMD_AT_PLUS_A" if self.symmetric else "COLAMD")
        except (np.linalg.LinAlgError, RuntimeError) as exc:
            raise SubstrateError(f"circuit '{c.name}': A_FF is singular ({exc}); "
                                 "a node may have no path to a source") from None
        self.Pt = np.zeros((len(F), len(c.outputs)))
        self.Pt[c.out_in_free, np.arange(len(c.outputs))] = 1.0
        self.Z = self.solve(self.Pt)
        self.K = self.Z[c.out_in_free]
        self._Zt = None
        if self.symmetric:
            self.K_cho = sla.cho_factor(self.K, lower=True, check_finite=False)
        else:
            self.K_inv = np.linalg.inv(self.K)

    @property
    def Zt(self) -> np.ndarray:
        """A_FF^-T P^T: the adjoint network's response to output currents (Z itself for resistors)."""
        if self.symmetric:
            return self.Z
        if self._Zt is None:
            self._Zt = self.solve(self.Pt, transpose=True)
        return self._Zt

    def solve_K(self, rhs: np.ndarray) -> np.ndarray:
        """K^-1 rhs for rhs (|O|, k)."""
        if self.symmetric:
            return sla.cho_solve(self.K_cho, rhs, check_finite=False)
        return self.K_inv @ rhs

    def solve(self, rhs: np.ndarray, transpose: bool = False) -> np.ndarray:
        """A_FF^-1 rhs (A_FF^-T rhs with ``transpose``) for rhs (|F|, k), real or complex."""
        if np.iscomplexobj(rhs):
            return self.solve(rhs.real, transpose) + 1j * self.solve(rhs.imag, transpose)
        if self.dense and self.symmetric:
            return sla.cho_solve(self._cho, rhs, check_finite=False)
        if self.dense:
            return (self._inv.T if transpose else self._inv) @ rhs
        return self._lu.solve(np.ascontiguousarray(rhs), trans="T" if transpose and not self.symmetric else "N")


class IdealSubstrate(Substrate):
    """Exact linear circuit; conductances are the parameters (siemens)."""

    supports_complex = True

    def __init__(self, circuit: Circuit, g=None, dense_limit: int = 200):
        self.circuit = circuit
        self.dense_limit = dense_limit
        self._fact = None
        self._stamps = _Stamps(circuit)
        self.solves = 0  # factorizations performed, for diagnostics
        self.write(circuit.theta if g is None else g)

    def write(self, g) -> np.ndarray:
        """Set theta = (conductances, trainable gm), siemens; returns what was written."""
        self._g = self.circuit.check_g(g).copy()
        self._fact = None
        return self._g.copy()

    def read(self) -> np.ndarray:
        return self._g.copy()

    def factorization(self) -> _Factorization:
        """The factorization for the conductances now written (computed once per write)."""
        if self._fact is None:
            c = self.circuit
            full = self._g if c.reciprocal else np.concatenate(c.split(self._g))  # g, then every gm
            self._fact = _Factorization(c, full, self._stamps, self.dense_limit)
            self.solves += 1
        return self._fact

    def homeostasis(self) -> tuple:
        """(H, dH/dtheta) exactly, from A_FF at the written parameters (S^2, S); zero for resistors."""
        from hil.exact import homeostasis_gradient
        c = self.circuit
        if c.reciprocal:
            return 0.0, np.zeros(c.n_params)
        full = np.concatenate(c.split(self._g))
        A = self._stamps.blocks(full, True)[0]  # dense A_FF
        return float(0.5 * np.sum((A - A.T) ** 2)), homeostasis_gradient(c, A=A)

    def output_green(self) -> np.ndarray:
        """K = P A_FF^-1 P^T at the written parameters (ohms); non-symmetric with VCCS."""
        return self.factorization().K.copy()

    def run(self, inputs, experiments) -> list:
        c = self.circuit
        f = self.factorization()
        X = np.atleast_2d(np.asarray(inputs, float))
        s = source_values(c, X)
        oif = c.out_in_free
        V0 = None
        if any(e.sources_on for e in experiments):
            V0 = f.solve(-(f.LFS @ s.T)).T  # (batch, |F|)
        results = []
        for e in experiments:
            if e.transpose and e.sources_on:
                raise SubstrateError("the adjoint network is realised with every source at 0 V only")
            Z = f.Zt if e.transpose else f.Z
            base = V0 if e.sources_on else np.zeros((len(X), len(c.free)))
            VO0 = base[:, oif]
            vals = np.asarray(e.values)
            if e.mode == "current":
                cur = vals
            elif e.mode == "load":
                beta = e.beta
                K = Z[oif]
                A = np.eye(len(K)) + beta * K
                VO = np.linalg.solve(A, VO0.T + beta * (K @ vals.T)).T
                cur = beta * (vals - VO)
            elif e.mode == "clamp":
                cur = (f.solve_K((vals - VO0).T) if not e.transpose or f.symmetric else np.linalg.solve(Z[oif], (vals - VO0).T)).T
            else:
                raise SubstrateError(f"unknown experiment mode {e.mode!r}")
            VF = base + cur @ Z.T
            V = np.zeros((len(X), c.n), dtype=VF.dtype)
            if e.sources_on:
                V[:, c.sources] = s
            V[:, c.free] = VF
            if e.mode == "clamp":  # exact: the clamped outputs are the source values
                V[:, list(c.outputs)] = vals
            results.append(V)
        return results
