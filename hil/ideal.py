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

Circuits with other element kinds (diodes, channels, VCVS; :mod:`hil.elements`) are
solved by Newton's method on the element stamps (:mod:`hil.mna`), batched over the
examples and started from the last free state of the same batch. There each
experiment with the sources on is a Newton solve started from the free state; a
``linearised`` or complex nudge, and every experiment with the sources at 0 V (K, the
adjoint network, dV/dbeta), is the response of the circuit linearised about each
example's free operating point, exactly as a simulator's AC analysis. "Ideal" means
ideal elements: each kind's equations exactly, nothing parasitic.
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
        self._system = None
        self._free = None  # (theta, X, x): the last free state, the next Newton's start
        self._round = None  # (X, {experiment key: x}): the last round's nudged states, the next round's starts
        self._stamps = _Stamps(circuit)
        self.solves = 0  # factorizations performed, for diagnostics
        self.write(circuit.theta if g is None else g)

    def write(self, g) -> np.ndarray:
        """Set theta = (conductances, trainable gm), siemens; returns what was written."""
        self._g = self.circuit.check_g(g).copy()
        self._fact = None
        self._system = None
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
        if c.elements:
            from hil.exact import homeostasis_nonlinear
            return homeostasis_nonlinear(c, np.zeros((1, len(c.inputs))), self._g)
        full = np.concatenate(c.split(self._g))
        A = self._stamps.blocks(full, True)[0]  # dense A_FF
        return float(0.5 * np.sum((A - A.T) ** 2)), homeostasis_gradient(c, A=A)

    def output_green(self, inputs=None) -> np.ndarray:
        """K = P A_FF^-1 P^T at the written parameters (ohms); non-symmetric with VCCS. With nonlinear elements:
        about the operating point of each example of ``inputs`` (default 0 V), the K of largest spectral radius."""
        if self.circuit.elements:
            from hil.mna import linear_response
            c = self.circuit
            X = np.zeros((1, len(c.inputs))) if inputs is None else np.atleast_2d(np.asarray(inputs, float))[:32]
            xf = self.free_unknowns(X)
            n_out = len(c.outputs)
            Ks = np.stack([linear_response(self.system(), xf, np.repeat(np.eye(n_out)[k][None], len(X), 0))[:, c.outputs]
                           for k in range(n_out)], axis=2)
            radius = [np.abs(np.linalg.eigvals(K)).max() for K in Ks]
            return Ks[int(np.argmax(radius))]
        return self.factorization().K.copy()

    def system(self):
        """The element stamps at the written parameters (:class:`hil.mna.System`), once per write."""
        from hil.mna import System
        if self._system is None:
            self._system = System(self.circuit, self._g)
        return self._system

    def free_unknowns(self, X) -> np.ndarray:
        """The free state's unknowns (B, N) of a nonlinear circuit: Newton from the last free state of a batch
        of the same size (reused as it is for the same batch and parameters)."""
        from hil.mna import newton, start
        sysm = self.system()
        if self._free is not None:
            g0, X0, x0 = self._free
            if np.array_equal(g0, self._g) and np.array_equal(X0, X):
                return x0
        x = start(sysm, X)
        if self._free is not None and self._free[2].shape == x.shape:
            U = sysm.unknowns()
            x[:, U] = self._free[2][:, U]
        x = newton(sysm, x)
        self._free = (self._g.copy(), X.copy(), x)
        self.solves += 1
        return x

    def small_signal_jacobian(self, inputs) -> np.ndarray:
        """A = dF/dV over the free unknowns at each example's free operating point, (batch, u, u) siemens
        (circuits with other element kinds; with VCVS the unknowns include their branch currents)."""
        from hil.mna import jacobian_UU
        return jacobian_UU(self.system(), self.free_unknowns(np.atleast_2d(np.asarray(inputs, float))))

    def _newton_rows(self, X, exps, starts):
        """The states of the experiments ``exps`` (sources on: injected currents, real loads; None for the free
        state) stacked into one batched Newton solve from ``starts`` (len(exps) x (B, N)); a list of (B, N)."""
        from hil.mna import newton
        c, B = self.circuit, len(X)
        n_out = len(c.outputs)
        inject, beta, y = np.zeros((len(exps), B, n_out)), np.zeros((len(exps), B)), np.zeros((len(exps), B, n_out))
        for j, e in enumerate(exps):
            if e is None:
                continue
            if e.mode == "current":
                inject[j] = e.values
            else:
                beta[j], y[j] = float(np.real(e.beta)), e.values
        what = "free and nudged states" if len(exps) > 1 else "free state" if exps[0] is None else "nudged state"
        try:
            x = newton(self.system(), np.concatenate(starts), inject=inject.reshape(-1, n_out),
                       load=(beta.reshape(-1), y.reshape(-1, n_out)), what=what, batch=B)
        except SubstrateError as exc:
            if not (beta < 0).any():
                raise
            raise SubstrateError(f"{exc}: a negative load (as ep-sym's -beta) may leave no operating point near the "
                                 "free state; try a smaller --nudge, or a rule whose nudges are positive (ep, "
                                 "ep-holo:N)") from None
        return list(x.reshape(len(exps), B, -1))

    def _run_newton(self, X, experiments) -> list:
        from hil.mna import linear_response, newton
        c = self.circuit
        sysm = self.system()
        out = list(c.outputs)
        # the nonlinear solves of the round (nudges by a real load, injected currents), keyed for the next round's start
        stacked = [k for k, e in enumerate(experiments) if e.sources_on and not e.transpose and (
            (e.mode == "current" and np.any(e.values)) or (e.mode == "load" and not e.linearised
                                                           and complex(e.beta).imag == 0))]
        keys = [(experiments[k].mode, float(np.real(experiments[k].beta)), j) for j, k in enumerate(stacked)]
        prev = self._round if (self._round is not None and np.array_equal(self._round[0], X) and self._free is not None
                               and np.array_equal(self._free[1], X)) else None
        have_free = self._free is not None and np.array_equal(self._free[0], self._g) and \
            np.array_equal(self._free[1], X)
        solved = {}
        if stacked and not have_free and prev is not None and all(k in prev[1] for k in keys):
            # free and nudged states at once, each from its own state of the last round (a training step moves
            # the parameters a little: Newton starts next to every solution)
            from hil.mna import start
            x0 = start(sysm, X)
            U = sysm.unknowns()
            starts = []
            for key in [None] + keys:
                s0 = x0.copy()
                s0[:, U] = (self._free[2] if key is None else prev[1][key])[:, U]
                starts.append(s0)
            xs = self._newton_rows(X, [None] + [experiments[k] for k in stacked], starts)
            self._free = (self._g.copy(), X.copy(), xs[0])
            self.solves += 1
            solved = dict(zip(stacked, xs[1:]))
        xf = self.free_unknowns(X)
        todo = [k for k in stacked if k not in solved]
        if todo:
            solved.update(zip(todo, self._newton_rows(X, [experiments[k] for k in todo], [xf] * len(todo))))
        if stacked:
            self._round = (X.copy(), {key: solved[k] for key, k in zip(keys, stacked)})
        results = []
        for k, e in enumerate(experiments):
            vals = np.asarray(e.values)
            if k in solved:
                x = solved[k]
            elif not e.sources_on:
                if e.mode != "current":
                    raise SubstrateError(f"an experiment with every source at 0 V is realised with injected currents "
                                         f"only (got mode {e.mode!r})")
                x = linear_response(sysm, xf, vals, transpose=e.transpose)
            elif e.transpose:
                raise SubstrateError("the adjoint network is realised with every source at 0 V only")
            elif e.mode == "current":
                x = xf
            elif e.mode == "load":  # linearised about the free operating point (a complex beta too)
                x = xf + linear_response(sysm, xf, e.beta * (vals - xf[:, out]), beta=e.beta)
            elif e.mode == "clamp":
                x0 = xf.copy()
                x0[:, out] = vals
                x = newton(sysm, x0, clamp_outputs=True, what="clamped state")
            else:
                raise SubstrateError(f"unknown experiment mode {e.mode!r}")
            results.append(np.array(x[:, :c.n]))
        return results

    def run(self, inputs, experiments) -> list:
        c = self.circuit
        if c.elements:
            return self._run_newton(np.atleast_2d(np.asarray(inputs, float)), experiments)
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


#: ngspice's gmin (S) across each junction, and the level-1 card's default junction saturation current (A)
GMIN, JUNCTION_IS = 1e-12, 1e-14


class IdealChannelSubstrate(Substrate):
    """``--device mosfet`` / ``mosfet-mid`` on the embedded substrate: every edge an NMOS channel, SPICE level 1.

    The channel is the ngspice device's (the card ``netlists/nmos_level1.lib``, W/L of
    :class:`hil.spice.devices.Mosfet`), its gate against ground or at the midpoint; theta
    stays the edge conductances g (S), each realised as the gate voltage the device's
    calibration gives, g = I_d / V_ds at V_ds = 1 mV (computed here from the level-1 equation
    on ngspice's grid, where ngspice runs a DC sweep), interpolated as the ngspice device does.
    The states are the channel circuit's, solved by Newton (:class:`IdealSubstrate`); like the
    ngspice device, K, the adjoint response and dV/dbeta are small-signal quantities about each
    example's free operating point (here exact). The rule's local signal stays 1/2 dV^2 per edge.
    """

    supports_complex = True
    small_signal = True

    def __init__(self, circuit: Circuit, device: str = "mosfet", g=None):
        from dataclasses import replace

        from hil.data import folder
        from hil.elements import Diode, channels_on_edges, level1_parameters
        from hil.spice.devices import Mosfet, _model_card
        if device not in ("mosfet", "mosfet-mid"):
            raise SubstrateError(f"device '{device}' is not an ideal element (the ideal backend has mosfet and "
                                 "mosfet-mid, level-1 channels; others need --backend ngspice)")
        if circuit.k or circuit.elements:
            raise SubstrateError(f"--device {device} turns the edges of a resistor network into channels; circuit "
                                 f"'{circuit.name}' has other elements (write its channels as [[mosfet]] instead)")
        self.circuit, self.device_name = circuit, device
        card = level1_parameters(_model_card(folder("netlists") / Mosfet.model_file))
        self.k = card["kp"] * Mosfet.W / Mosfet.L
        self.vto, self.midpoint = card["vto"], device == "mosfet-mid"
        self.param_range = Mosfet.param_range
        # the calibration curve: ngspice's dc sweep grid 0 .. 10 V by 2 mV, the source grounded, V_ds = 1 mV
        step, vds = 0.002, Mosfet.VDS_CAL
        self.vg = np.arange(int(round(self.param_range[1] / step)) + 1) * step
        ov = self.vg + (0.5 * vds if self.midpoint else 0.0) - self.vto
        self.g = np.where(ov > 0, self.k * np.where(ov > vds, ov * vds - 0.5 * vds * vds, 0.5 * ov * ov) / vds, 0.0)
        on = self.g > 0
        self._vg_on, self._g_on = self.vg[on], self.g[on]
        chans = channels_on_edges(circuit, self.param_from_g(np.clip(circuit.g, circuit.g_min, circuit.g_max)),
                                  self.midpoint, card["kp"], card["vto"], card["lambda"], Mosfet.W, Mosfet.L)
        # the bulk junctions as ngspice's level-1 channel has them: from a bulk node held at V_BULK, a diode
        # (I_s = 1e-14 A, the card's default) and ngspice's gmin (1e-12 S) to each drain and source. They
        # hold a node whose channels are all cut off, and move the states by ~1e-9 V elsewhere
        n, m = circuit.n, circuit.m
        term = np.concatenate([circuit.a, circuit.b])
        bulk = np.full(2 * m, n)
        junctions = Diode(tuple(f"j{k}" for k in range(2 * m)), np.column_stack([bulk, term]),
                          {"is": np.full(2 * m, JUNCTION_IS), "n": np.ones(2 * m), "rs": np.zeros(2 * m)})
        self._gmin = np.full(2 * m, GMIN)
        self.channels = replace(circuit, nodes=circuit.nodes + ("hb_bulk",), edge_names=tuple(f"gmin{k}" for k in range(2 * m)),
                                a=term, b=bulk, g=self._gmin.copy(), edge_fixed=np.ones(2 * m, bool),
                                biases=circuit.biases + (n,), bias_v=np.append(circuit.bias_v, Mosfet.V_BULK),
                                elements=(junctions, chans), name=f"{circuit.name}_{device}", _cache={})
        self.inner = IdealSubstrate(self.channels)
        self.write(circuit.theta if g is None else g)

    # the device's believed map, as hil.spice.devices.Mosfet
    def g_from_param(self, p):
        return np.interp(np.asarray(p, float), self.vg, self.g)

    def param_from_g(self, g):
        return np.interp(np.asarray(g, float), self._g_on, self._vg_on)

    def dparam_dg(self, p) -> np.ndarray:
        """dV_gate/dg of the calibration segment that holds p (V/S)."""
        k = np.clip(np.searchsorted(self._vg_on, np.asarray(p, float)) - 1, 0, len(self._vg_on) - 2)
        return (self._vg_on[k + 1] - self._vg_on[k]) / (self._g_on[k + 1] - self._g_on[k])

    def write(self, g) -> np.ndarray:
        g = self.circuit.check_g(g)
        p = self.param_from_g(g)
        lo, hi = self.param_range
        bad = np.flatnonzero(~np.isfinite(p) | (p < lo) | (p > hi))
        if bad.size:
            e = bad[0]
            raise SubstrateError(f"edge '{self.circuit.edge_names[e]}': gate voltage {float(p[e])!r} V is outside "
                                 f"[{lo}, {hi}] V")
        self._p = p
        self.inner.write(np.concatenate([self._gmin, p]))
        return self.read()

    def read(self) -> np.ndarray:
        return self.g_from_param(self._p)

    def gates(self) -> np.ndarray:
        """The gate voltages now written (m,), volts."""
        return self._p.copy()

    def run(self, inputs, experiments) -> list:
        n = self.circuit.n
        return [V[:, :n] for V in self.inner.run(inputs, experiments)]  # the bulk node is the device's

    def output_green(self, inputs=None) -> np.ndarray:
        return self.inner.output_green(inputs)

    def small_signal_response(self, inputs, currents) -> np.ndarray:
        from hil.substrate import Experiment
        return self.run(np.atleast_2d(np.asarray(inputs, float)),
                        [Experiment(False, "current", np.atleast_2d(np.asarray(currents, float)))])[0]

    def small_signal_jacobian(self, inputs) -> np.ndarray:
        return self.inner.small_signal_jacobian(inputs)

    has_sens = True

    def sens_gradient(self, X, Y) -> np.ndarray:
        """dC/dg exactly (V^2/S): the channel circuit's adjoint gradient in vg times dV_gate/dg."""
        from hil.exact import gradient
        return gradient(self.channels, X, Y, self.inner.read())[2 * self.circuit.m:] * self.dparam_dg(self._p)

    def param_signal(self, V, W) -> np.ndarray:
        """W^T dF/dg at states V (batch, m): the channel's di/dvg (V_a - V_b at V) times (W_a - W_b) times
        dV_gate/dg; what a rule's local signal must read for generalised EP's limit to be exact."""
        ch = self.inner.circuit.elements[1]
        return np.sum(ch.dparam(V[:, ch.nodes]) * W[:, ch.nodes], axis=-1) * self.dparam_dg(self._p)

    def outside_linear(self, V) -> np.ndarray:
        """Per example, the number of channels saturated or cut off at states V (batch, n)."""
        grp = self.inner.circuit.elements[1]
        return grp.outside_linear(V[:, grp.nodes]).sum(axis=1)

    def homeostasis(self) -> tuple:
        raise SubstrateError(f"homeostasis acts on trainable asymmetries (VCCS); the {self.device_name} device has "
                             "none the rule trains")
