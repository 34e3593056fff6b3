"""Learning rules: measured states -> a gradient estimate ghat (docs/math.md, sections 2 to 5).

Every rule reads only node voltages from :class:`hil.substrate.Measurements`
and, per edge, the co-content derivative f_e = dE/dg_e = 1/2 dV_e^2 (V^2).
The update is Delta g = -alpha * ghat for every rule, clipped to
[g_min, g_max] by the training loop. ghat has units V^2/S (the units of dC/dg).

==========  ======================================  ==============  ============
rule        ghat_e (mean over the batch)            nudge           error
==========  ======================================  ==============  ============
gd          -dV_e dlambda_e  (adjoint experiment)   none            exact
ep          [f_e(beta) - f_e(0)] / beta             beta, siemens   O(beta)
ep-sym      [f_e(beta) - f_e(-beta)] / (2 beta)     beta, siemens   O(beta^2)
ep-holo     Re 1/N sum_k f_e(beta_k) / beta_k       beta, siemens   O(beta^N)
ep-open     as ep-sym, open-loop current nudge      beta, siemens   exact (linear)
ep-stencil  sum_j w_j f_e(j beta) / beta,           beta, siemens   O(beta^2N)
            j = +-1..+-N (central stencil, real)
cl          [f_e(clamped) - f_e(free)] / eta        eta, 1          -> grad L_K
al          kappa [f_e(clamp) - f_e(free)] / eta,   eta, 1          -> grad C
            clamp at V_O - (eta / kappa) K r
==========  ======================================  ==============  ============

beta_k = beta exp(2 pi i k / N). kappa = kappa_max, the largest eigenvalue of K
(ohms), measured once by the substrate: it makes AL's eta dimensionless, as
CL's (K r is in ohm-volts; K / kappa_max has eigenvalues in (0, 1]). CL's update written as in docs/math.md, section 4, is
Delta g_e = alpha / (2 eta) [(dV_e^F)^2 - (dV_e^C)^2], the same number.
"""

from __future__ import annotations

import numpy as np

from hil.substrate import Adjoint, AdjointClamp, Clamp, Free, Measurements, Nudge

#: default nudge: EP's beta as a fraction of the convergence radius 1/kappa_max,
#: CL's and AL's eta as a plain number.
EP_NUDGE_FRACTION = 0.05
CLAMP_ETA = 0.05


def cocontent(meas: Measurements, state) -> np.ndarray:
    """f_theta per example and parameter, (batch, n_params) V^2; holomorphic (no conjugate).

    Each element's local signal: an edge's co-content 1/2 dV_e^2; a
    trainable VCCS's (V_ctrl_p - V_ctrl_n) at the free state times (V_out_p - V_out_n)
    at ``state``; every other kind's own (:meth:`hil.elements.Kind.local_signal`: a channel's
    di/dvg at the free state times its drop at ``state``, or its co-content's dG/dvg with the
    gate at the midpoint), so that d f / d beta at 0 is -mu^T dF/dtheta for every kind.
    """
    c = meas.circuit
    V = meas[state]
    dV = c.drops(V)
    f = 0.5 * dV * dV
    j = c.trainable_vccs
    if len(j):
        vc = c.control_drops(meas[Free()])[:, j]
        f = np.concatenate([f, vc * c.output_drops(V)[:, j]], axis=1)
    if c.trainable_elements:
        Vf = meas[Free()]
        f = np.concatenate([f] + [grp.local_signal(Vf[:, grp.nodes], V[:, grp.nodes])[:, j]
                                  for grp, j in c.trainable_elements], axis=1)
    return f


class Rule:
    """A learning rule. ``nudge``: beta (S) for EP rules, eta (dimensionless) for CL/AL."""

    name = "rule"
    nudge_unit = ""
    uses_nudge = True
    #: the loss whose gradient ghat estimates: "C" or "L_K" (CL's K^-1-weighted loss)
    descends = "C"

    def __init__(self, nudge: float | None = None, points: int = 2):
        if self.uses_nudge and nudge is not None and not (np.isfinite(nudge) and nudge > 0):
            raise ValueError(f"rule {self.name}: nudge must be a positive finite number, got {nudge!r}")
        self.nudge = nudge
        self.points = points
        self.kappa = None

    def configure(self, kappa_max: float) -> "Rule":
        """Fix the circuit scale kappa_max (ohms): sets the default nudge when none was given."""
        self.kappa = float(kappa_max)
        if self.nudge is None and self.uses_nudge:
            self.nudge = self.default_nudge(kappa_max)
        return self

    def states(self) -> list:
        """The states this rule needs measured."""
        raise NotImplementedError

    def estimate(self, meas: Measurements) -> np.ndarray:
        """ghat (m,), the estimate of dC/dg (or dL_K/dg for cl), V^2/S."""
        raise NotImplementedError

    def default_nudge(self, kappa_max: float) -> float:
        """The nudge used when none is given: beta = 0.05 / kappa_max (S) for EP, eta = 0.05 for CL/AL."""
        return EP_NUDGE_FRACTION / kappa_max if self.nudge_unit == "S" else CLAMP_ETA

    def _need_nudge(self):
        if self.nudge is None:
            raise ValueError(f"rule {self.name}: no nudge set (call default_nudge)")
        return self.nudge

    def describe(self) -> str:
        n = "" if not self.uses_nudge else f" nudge={self.nudge:g}{' S' if self.nudge_unit == 'S' else ''}"
        return f"{self.name}{n}" + (f" points={self.points}" if self.name == "ep-holo" else "")


class GradientDescent(Rule):
    """Exact gradient from the adjoint experiment: ghat = -lambda^T dF/dtheta (edges: -dV dlambda)."""

    name, uses_nudge = "gd", False

    def states(self):
        return [Free(), Adjoint()]

    def estimate(self, meas):
        c = meas.circuit
        if c.n_params == c.m:
            return -np.mean(c.drops(meas[Free()]) * c.drops(meas[Adjoint()]), axis=0)
        return -np.mean(c.signal_products(meas[Free()], meas[Adjoint()]), axis=0)


class EP(Rule):
    """One-sided EP: [f(beta) - f(0)] / beta, closed-loop nudge. Bias O(beta)."""

    name, nudge_unit = "ep", "S"

    def states(self):
        return [Free(), Nudge(self._need_nudge())]

    def estimate(self, meas):
        b = self._need_nudge()
        return np.mean(cocontent(meas, Nudge(b)) - cocontent(meas, Free()), axis=0) / b


class EPSymmetric(Rule):
    """Symmetric EP: [f(beta) - f(-beta)] / (2 beta). Bias O(beta^2)."""

    name, nudge_unit = "ep-sym", "S"
    open_loop = False

    def states(self):
        b = self._need_nudge()
        return [Free(), Nudge(b, self.open_loop), Nudge(-b, self.open_loop)]

    def estimate(self, meas):
        b = self._need_nudge()
        d = cocontent(meas, Nudge(b, self.open_loop)) - cocontent(meas, Nudge(-b, self.open_loop))
        return np.mean(d, axis=0) / (2 * b)


class EPOpen(EPSymmetric):
    """Symmetric EP with the open-loop current nudge beta (y - V_O^free): exact for linear circuits."""

    name = "ep-open"
    open_loop = True


class EPHolomorphic(Rule):
    """Holomorphic (Cauchy) EP with N points beta_k = beta e^(2 pi i k/N). Error O(beta^N)."""

    name, nudge_unit = "ep-holo", "S"

    def __init__(self, nudge=None, points: int = 4):
        if not isinstance(points, (int, np.integer)) or points < 1:
            raise ValueError(f"rule ep-holo: points must be a positive integer, got {points!r}")
        super().__init__(nudge, int(points))

    def betas(self) -> np.ndarray:
        b = self._need_nudge()
        k = np.arange(self.points)
        betas = b * np.exp(2j * np.pi * k / self.points)
        # exact real values where the root of unity is real (k = 0, and k = N/2)
        betas[np.isclose(betas.imag, 0, atol=1e-15 * b)] = betas[np.isclose(betas.imag, 0, atol=1e-15 * b)].real
        return betas

    def states(self):
        return [Free()] + [Nudge(complex(bk)) for bk in self.betas()]

    def estimate(self, meas):
        acc = 0
        for bk in self.betas():
            acc = acc + np.mean(cocontent(meas, Nudge(complex(bk))), axis=0) / bk
        if self.points == 1:
            acc = acc - np.mean(cocontent(meas, Free()), axis=0) / self._need_nudge()
        return np.real(acc / self.points)


def stencil_weights(n: int) -> np.ndarray:
    """w_1..w_N of the order-2N central first derivative on the points +-1..+-N (w_-j = -w_j):
    sum_j w_j [f(j h) - f(-j h)] / h = f'(0) + O(h^2N). N = 1: [1/2]; N = 2: [2/3, -1/12]."""
    j = np.arange(1, n + 1, dtype=float)
    M = np.array([2 * j ** p for p in range(1, 2 * n, 2)])  # odd moments
    rhs = np.zeros(n)
    rhs[0] = 1.0
    return np.linalg.solve(M, rhs)


class EPStencil(Rule):
    """EP with real nudges only (a bench): the 2N-point central stencil +-beta, ..., +-N beta (docs/math.md, section 7.2).

    ghat = sum_j w_j [f(j beta) - f(-j beta)] / beta; nudge bias O(beta^2N). N = 1 is ep-sym.
    """

    name, nudge_unit = "ep-stencil", "S"

    def __init__(self, nudge=None, points: int = 2):
        if not isinstance(points, (int, np.integer)) or points < 1:
            raise ValueError(f"rule ep-stencil: points (N, the stencil's half-width) must be a positive integer, "
                             f"got {points!r}")
        super().__init__(nudge, int(points))

    def states(self):
        b = self._need_nudge()
        return [Free()] + [Nudge(s * j * b) for j in range(1, self.points + 1) for s in (1, -1)]

    def estimate(self, meas):
        b = self._need_nudge()
        acc = 0
        for j, w in enumerate(stencil_weights(self.points), start=1):
            acc = acc + w * (cocontent(meas, Nudge(j * b)) - cocontent(meas, Nudge(-j * b)))
        return np.mean(acc, axis=0) / b

    def describe(self) -> str:
        return super().describe() + f" points={self.points}"


class CoupledLearning(Rule):
    """CL: ghat = [f(clamped at V_O + eta (y - V_O)) - f(free)] / eta -> grad of L_K = 1/2 r^T K^-1 r."""

    name = "cl"
    descends = "L_K"

    def _clamp(self):
        return Clamp(self._need_nudge())

    def states(self):
        return [Free(), self._clamp()]

    def estimate(self, meas):
        return np.mean(cocontent(meas, self._clamp()) - cocontent(meas, Free()), axis=0) / self._need_nudge()


class AdjointCoupledLearning(CoupledLearning):
    """AL: clamp at V_O - (eta/kappa) K r (K r from the adjoint experiment); ghat -> grad C.

    ghat = kappa [f(clamped) - f(free)] / eta = -dV dlambda + (eta / 2 kappa) dlambda^2.
    """

    name = "al"
    descends = "C"

    def _clamp(self):
        if self.kappa is None:
            raise ValueError("rule al: kappa_max not set (call configure)")
        return AdjointClamp(self._need_nudge(), self.kappa)

    def estimate(self, meas):
        return super().estimate(meas) * self.kappa


RULES = {r.name: r for r in (GradientDescent, EP, EPSymmetric, EPHolomorphic, EPOpen, EPStencil,
                             CoupledLearning, AdjointCoupledLearning)}


def make_rule(name: str, nudge: float | None = None, points: int | None = None) -> Rule:
    """A rule by name; ``ep-holo:4`` is ep-holo with 4 points."""
    if ":" in name:
        name, p = name.split(":", 1)
        if not p.isdigit():
            raise ValueError(f"rule '{name}:{p}': the points after ':' must be a positive integer")
        points = int(p)
    if name not in RULES:
        raise ValueError(f"unknown rule '{name}' (known: {', '.join(RULES)})")
    cls = RULES[name]
    if cls is EPHolomorphic:
        return cls(nudge, 4 if points is None else points)
    if cls is EPStencil:
        return cls(nudge, 2 if points is None else points)
    return cls(nudge)
