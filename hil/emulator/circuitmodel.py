"""The circuit behind an emulated bench: node voltages for whatever every SMU is doing.

Each SMU node is a *port*. A port is held either at a voltage ('V') or at a
current ('I', amperes delivered into the network; 0 A is an open node), and may
carry a limit on the other quantity (the compliance). The substrate solves with
the input nodes as voltage sources and currents injected into the outputs
(:class:`~hil.substrate.Experiment` mode 'current'); the port variables
u = (x_inputs, c_outputs) are found so that every port satisfies its constraint,
by Newton's method on the finite-difference Jacobian (exact after one step on a
linear circuit, and cached per conductance vector).

Compliance (Keithley 2400 manual, "Compliance"): a voltage source whose current
would exceed its limit becomes a current source at the limit (the voltage falls
until the current is at the limit), and a current source whose voltage would
exceed its limit becomes a voltage source at the limit. The active set is
iterated until every port is consistent: a limited port is released when its
programmed level would no longer drive it past the limit.
"""

from __future__ import annotations

import contextlib

import numpy as np

from hil.substrate import Experiment, SubstrateError


class PortSolver:
    """Node voltages of ``substrate``'s circuit with every input and output node a port."""

    def __init__(self, substrate):
        self.sub = substrate
        c = self.c = substrate.circuit
        self.ports = list(c.inputs) + list(c.outputs)
        self.ni = len(c.inputs)
        self.P = len(self.ports)
        # the perturbation of each port variable for the Jacobian: 1 V, 1 mA
        self.h = np.r_[np.ones(self.ni), 1e-3 * np.ones(self.P - self.ni)]
        self._affine = None   # (g bytes, bv, Av, bi, Ai)

    def evaluate(self, U: np.ndarray):
        """V (B, n), port voltages (B, P) and port currents (B, P) for port variables U (B, P)."""
        c = self.c
        X, C = U[:, :self.ni], U[:, self.ni:]
        # the circuit as it is: no voltmeter noise (a non-ideal simulation adds it to readings only),
        # currents through the parts' actual conductances where the substrate knows them
        quiet = self.sub.noiseless() if hasattr(self.sub, "noiseless") else contextlib.nullcontext()
        with quiet:
            V = self.sub.run(X, [Experiment(True, "current", C)])[0]
        g = getattr(self.sub, "actual_conductances", lambda: None)()
        g = self.sub.read() if g is None else g
        I_edge = g * c.drops(V)
        Ip = np.empty((len(U), self.P))
        for k, node in enumerate(c.inputs):  # what the input's source delivers: KCL at its node
            Ip[:, k] = I_edge[:, c.a == node].sum(axis=1) - I_edge[:, c.b == node].sum(axis=1)
        Ip[:, self.ni:] = C                  # an output's injected current, exactly
        return V, V[:, self.ports], Ip

    def affine(self, U0=None):
        """(bv, Av, bi, Ai): port voltages and currents as bv + U Av, bi + U Ai about U0 (default 0)."""
        g = self.sub.read()
        key = g.tobytes()
        if U0 is None and self._affine is not None and self._affine[0] == key:
            return self._affine[1:]
        base = np.zeros((1, self.P)) if U0 is None else U0[None, :]
        h = self.h if U0 is None else 1e-3 * self.h   # about a point: small steps (1 mV, 1 uA)
        U = np.vstack([base, base + np.diag(h)])
        _, Vp, Ip = self.evaluate(U)
        Av = (Vp[1:] - Vp[0]) / h[:, None]
        Ai = (Ip[1:] - Ip[0]) / h[:, None]
        bv = Vp[0] - base[0] @ Av
        bi = Ip[0] - base[0] @ Ai
        if U0 is None:
            self._affine = (key, bv, Av, bi, Ai)
        return bv, Av, bi, Ai

    def _solve_u(self, isV, val, lin):
        """Port variables (N, P) meeting the constraints under the affine model ``lin``."""
        bv, Av, bi, Ai = lin
        # row p of the system: the voltage or the current of port p, as a function of u
        J = np.where(isV[:, :, None], Av.T[None], Ai.T[None])      # (N, P, P): [k, p, j]
        b = np.where(isV, bv, bi)
        rhs = val - b
        try:
            return np.linalg.solve(J, rhs[..., None])[..., 0]
        except np.linalg.LinAlgError:  # a node left floating by every port being open: least squares
            return np.stack([np.linalg.lstsq(J[k], rhs[k], rcond=None)[0] for k in range(len(J))])

    def solve(self, isV, val, limit, max_newton: int = 20):
        """Node voltages for N points of port constraints.

        isV (N, P) bool: the port is held at a voltage (else at a current);
        val (N, P): that voltage (V) or current (A); limit (N, P): the compliance on the
        other quantity (A for a voltage source, V for a current source; inf = none).
        Returns V (N, n), port voltages (N, P), port currents (N, P), in_compliance (N, P).
        """
        isV, val, limit = np.array(isV, bool), np.array(val, float), np.array(limit, float)
        mode_v, target = isV.copy(), val.copy()
        comp = np.zeros_like(isV)
        for _ in range(2 * self.P + 4):
            V, Vp, Ip = self._solve_exact(mode_v, target, max_newton)
            new_comp = comp.copy()
            # a voltage source past its current limit, a current source past its voltage limit
            over_i = isV & ~comp & (np.abs(Ip) > limit * (1 + 1e-9))
            over_v = ~isV & ~comp & (np.abs(Vp) > limit * (1 + 1e-9))
            # release: at the limit, the programmed level no longer reached past it
            rel_v = isV & comp & ((Vp - val) * np.sign(target) > 1e-12)
            rel_i = ~isV & comp & ((Ip - val) * np.sign(target) > 1e-15)
            new_comp |= over_i | over_v
            new_comp &= ~(rel_v | rel_i)
            if np.array_equal(new_comp, comp):
                return V, Vp, Ip, comp
            comp = new_comp
            mode_v = np.where(comp, ~isV, isV)
            target = np.where(over_i, np.sign(Ip) * limit, target)
            target = np.where(over_v, np.sign(Vp) * limit, target)
            target = np.where(comp, target, val)
        raise SubstrateError("the compliance of the SMUs did not settle (sources fighting at their limits)")

    def _solve_exact(self, mode_v, target, max_newton):
        """Port variables meeting the constraints: one affine step, then Newton while the circuit is nonlinear.

        Converged at 1e-9 relative (a linear circuit gets there in one step); a simulator's
        own tolerance (ngspice: reltol 1e-3, vntol 1 uV on a nonlinear device) may stop it
        short: then what it reaches within 1e-6 relative is accepted.
        """
        lin = self.affine()
        U = self._solve_u(mode_v, target, lin)
        scale = np.where(mode_v, 1 + np.abs(target), 1e-3 + np.abs(target))
        last = np.inf
        for _ in range(max_newton):
            V, Vp, Ip = self.evaluate(U)
            err = np.abs(np.where(mode_v, Vp - target, Ip - target)) / scale
            worst = float(err.max()) if err.size else 0.0
            if worst <= 1e-9 or (worst <= 1e-6 and worst > 0.5 * last):
                return V, Vp, Ip
            if worst > 0.5 * last and last <= 1e-6:
                break
            last = min(last, worst)
            # nonlinear circuit: Newton about each point
            U = np.stack([U[k] + self._solve_u(mode_v[k:k + 1], (target - np.where(mode_v, Vp, Ip))[k:k + 1],
                                               self._zero_offset(self.affine(U[k])))[0]
                          for k in range(len(U))])
        if worst <= 1e-6:
            return V, Vp, Ip
        raise SubstrateError(f"the circuit solve for the SMUs' settings did not converge (relative error {worst:.1e})")

    @staticmethod
    def _zero_offset(lin):
        bv, Av, bi, Ai = lin
        return np.zeros_like(bv), Av, np.zeros_like(bi), Ai
