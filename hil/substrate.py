"""The substrate interface and the measurement types.

A substrate is anything that holds a circuit's trainable parameters and can
run *experiments* on it and report node voltages: the ideal model
(:mod:`hil.ideal`), ngspice, a bench. Learning rules never see a substrate:
they ask for *states* (:class:`Free`, :class:`Nudge`, :class:`Clamp`, ...) and
read the :class:`Measurements` that come back.

An :class:`Experiment` is one physical configuration of the outputs, as a bench
would set it up:

- sources on (inputs at s, ground at 0 V) or all sources at 0 V (adjoint);
- each output either open with an injected current (A; 0 A = free),
  loaded by a conductance beta (S) to a source at a target voltage (closed-loop
  nudge), or clamped by a voltage source (V).

:meth:`Substrate.measure` turns the requested states into experiments in
rounds (an open-loop nudge or a clamp depends on the measured free state; AL's
clamp on the measured adjoint state; a closed-loop nudge depends on nothing
measured and joins the free state's round) and hands each round to
:meth:`Substrate.run` at once, so each substrate solves a round its fastest way.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from hil.circuit import Circuit

# -- states a rule may request ------------------------------------------------


@dataclass(frozen=True)
class Free:
    """The free state: inputs applied, outputs open."""

    key = "free"


@dataclass(frozen=True)
class Nudge:
    """EP's nudged state at beta (siemens).

    closed loop (default): each output gets a conductance beta to a source at its
    target y, i.e. (L V)_F = beta P^T (y - V_O). beta may be complex (a complex
    admittance; ideal and AC-capable substrates only).
    open loop: the fixed current beta (y - V_O^free) (amperes) is injected into each output.
    """

    beta: complex
    open_loop: bool = False

    @property
    def key(self):
        return ("nudge-open" if self.open_loop else "nudge", complex(self.beta))


@dataclass(frozen=True)
class Clamp:
    """CL's clamped state: outputs held at V_O + eta (y - V_O); eta dimensionless."""

    eta: float

    @property
    def key(self):
        return ("clamp", float(self.eta))


@dataclass(frozen=True)
class Adjoint:
    """The adjoint state lambda: every source at 0 V, current r = V_O - y injected into the outputs
    of the adjoint network (A_FF^T lambda = P^T r; the circuit itself when it is reciprocal)."""

    key = "adjoint"


@dataclass(frozen=True)
class AdjointClamp:
    """AL's clamped state: outputs held at V_O - (eta / kappa) K r.

    K r is read from the adjoint experiment (ohm-volts); kappa (ohms, the scale
    of K, normally kappa_max) makes eta dimensionless: K / kappa_max has its
    eigenvalues in (0, 1], so eta = 1 is a full-size clamp as in CL. Exactly,
    V^C = V - (eta / kappa) lambda.
    """

    eta: float
    kappa: float

    @property
    def key(self):
        return ("adjoint-clamp", float(self.eta), float(self.kappa))


# -- experiments a substrate runs ----------------------------------------------


@dataclass(frozen=True)
class Experiment:
    """One configuration of sources and outputs for a whole batch.

    sources_on : inputs at their values (True) or every source at 0 V (False).
    mode : 'current' | 'load' | 'clamp'.
    values : (batch, |O|): injected current (A), load target (V) or clamp voltage (V).
    beta : the load conductance (S), for mode 'load' only; may be complex.

    transpose : run it on the adjoint network (A_FF^T: every VCCS with its output and
        control ports swapped); the same circuit when it is reciprocal. Sources at 0 V only.

    linearised : mode 'load' only: the nudged state of the circuit linearised about its free
        operating point, V = V_free + dV with (A + beta P P^T) dV = beta P^T (y - V_O^free)
        (a simulator's AC analysis, where beta may be complex). A linear substrate's plain
        nudged state is this state exactly.
    """

    sources_on: bool
    mode: str
    values: np.ndarray
    beta: complex = 0.0
    transpose: bool = False
    linearised: bool = False

    @staticmethod
    def free(batch, n_out, sources_on=True):
        return Experiment(sources_on, "current", np.zeros((batch, n_out)))


@dataclass
class Measurements:
    """Node voltages of every requested state for one batch.

    voltages : dict state.key -> (batch, n) array, volts (complex for a complex nudge).
    inputs, targets : the batch, (batch, |inputs|) and (batch, |O|) volts.
    """

    circuit: Circuit
    inputs: np.ndarray
    targets: np.ndarray
    voltages: dict

    def __getitem__(self, state) -> np.ndarray:
        return self.voltages[state.key]

    @property
    def residual(self) -> np.ndarray:
        """r = V_O - y in the free state, (batch, |O|) volts."""
        return self.voltages["free"][:, list(self.circuit.outputs)] - self.targets

    def loss(self) -> float:
        """C = mean over the batch of 1/2 ||r||^2 (V^2)."""
        r = self.residual
        return float(0.5 * np.mean(np.sum(r * r, axis=1)))


class SubstrateError(RuntimeError):
    """A substrate could not run an experiment (unsupported, failed, out of limits)."""


class Substrate(ABC):
    """The interface every substrate implements.

    Subclasses implement :meth:`write`, :meth:`read` and :meth:`run`; the
    protocol that turns states into experiments is shared here.
    """

    circuit: Circuit
    supports_complex = False

    @abstractmethod
    def write(self, g) -> np.ndarray:
        """Set the trainable conductances to ``g`` (siemens, shape (m,)); returns what was realised."""

    @abstractmethod
    def read(self) -> np.ndarray:
        """The conductances now on the substrate (siemens, shape (m,))."""

    @abstractmethod
    def run(self, inputs: np.ndarray, experiments: list) -> list:
        """Run each experiment on the batch ``inputs`` (batch, |inputs|) volts.

        Returns one (batch, n) array of node voltages per experiment.
        """

    def close(self) -> None:
        """Release whatever the substrate holds (a simulator, instruments)."""

    def levels(self) -> np.ndarray | None:
        """The conductances each edge can hold, (m, L) siemens ascending per row (a digipot's taps), or
        None where they are continuous (the default)."""
        return None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- the shared measurement protocol ----------------------------------------
    #: the test current (A) that measures K; a bench sets a small one
    probe_current = 1.0

    #: True where the circuit is nonlinear: K and the adjoint experiment are then small-signal
    #: experiments about the free operating point, with the sources on (a linear one is exact at any amplitude)
    small_signal = False
    #: the response (V) a small-signal experiment aims at: millivolts keep a channel in its linear regime
    signal_volts = 1e-4

    def output_green(self, inputs=None) -> np.ndarray:
        """K (|O| x |O|, ohms), measured.

        Linear substrates: sources at 0 V, ``probe_current`` into each output in turn;
        symmetrised for a reciprocal circuit (its K is symmetric), as measured with VCCS.
        Nonlinear substrates (``small_signal``): about the free operating point of each example
        of ``inputs`` (default 0 V; at most 32), +-dI into each output in turn with the sources on,
        K = (V_O(+dI) - V_O(-dI)) / (2 dI), dI set in a second pass so that the largest response
        is ``signal_volts``; returns the K with the largest spectral radius (the example whose
        nudge series converges least far sets the radius).
        """
        n_out = len(self.circuit.outputs)
        if not self.small_signal:
            X = np.zeros((n_out, len(self.circuit.inputs)))
            I = float(self.probe_current)
            V = self.run(X, [Experiment(False, "current", I * np.eye(n_out))])[0]
            K = V[:, list(self.circuit.outputs)].T / I
            return 0.5 * (K + K.T) if self.circuit.reciprocal else K
        X = np.zeros((1, len(self.circuit.inputs))) if inputs is None else np.atleast_2d(np.asarray(inputs, float))[:32]
        out = list(self.circuit.outputs)
        dI = np.full(len(X), self.signal_volts * float(np.median(np.abs(self.read()[:self.circuit.m]))))
        for _ in range(2):  # the second pass at the amplitude that moves the outputs by signal_volts
            exps = [Experiment(True, "current", sgn * dI[:, None] * np.eye(n_out)[k][None, :])
                    for k in range(n_out) for sgn in (1, -1)]
            Vs = self.run(X, exps)
            Ks = np.stack([(Vs[2 * k][:, out] - Vs[2 * k + 1][:, out]) / (2 * dI[:, None]) for k in range(n_out)],
                          axis=2)  # (batch, |O|, |O|): column k answers output k
            dI = self.signal_volts / np.maximum(np.abs(Ks).max(axis=(1, 2)), 1e-300)
        radius = [np.abs(np.linalg.eigvals(K)).max() for K in Ks]
        return Ks[int(np.argmax(radius))]

    def small_signal_response(self, inputs, currents) -> np.ndarray:
        """A^-1 P^T c about each example's free operating point (batch, n), volts per ampere x amperes.

        Sources on, +-a_i c_i injected into the outputs, (V(+) - V(-)) / (2 a_i); a_i is set in a
        second pass so that example i's largest node displacement is ``signal_volts`` (a channel
        near pinch-off stays in its linear regime). Exact for a linear circuit at any a_i.
        """
        X = np.atleast_2d(np.asarray(inputs, float))
        cur = np.atleast_2d(np.asarray(currents, float))
        a = self.signal_volts * self.adjoint_gain() / np.maximum(np.abs(cur).max(axis=1), 1e-300)
        for _ in range(2):
            Vp, Vm = self.run(X, [Experiment(True, "current", a[:, None] * cur),
                                  Experiment(True, "current", -a[:, None] * cur)])
            resp = (Vp - Vm) / (2 * a[:, None])
            a = self.signal_volts / np.maximum(np.abs(resp).max(axis=1), 1e-300)
        return resp

    def nudge_derivative(self, inputs, targets) -> np.ndarray:
        """dV/dbeta at beta = 0, (batch, n) volts per siemens: -mu = A^-1 P^T (y - V_O) (docs/math.md, section 7.2).

        The response to the current P^T (y - V_O^free) injected into the outputs: with every
        source at 0 V on a linear circuit (scaled by ``adjoint_gain``, exact at any amplitude), as
        a small-signal response about each free operating point on a nonlinear one. Simulators
        with an AC analysis override this with the exact small-signal response.
        """
        X = np.atleast_2d(np.asarray(inputs, float))
        r = self.measure(X, targets, [Free()]).residual
        if self.small_signal:
            return -self.small_signal_response(X, r)
        gain = self.adjoint_gain()
        return self.run(X, [Experiment(False, "current", -gain * r)])[0] / gain

    def kappa_max(self, inputs=None) -> float:
        """kappa_max (ohms): the spectral radius of the measured K; 1/kappa_max is EP's nudge radius.

        ``inputs``: the operating points of a nonlinear substrate (ignored by linear ones)."""
        from hil.exact import kappa_max
        return kappa_max(self.output_green(inputs) if self.small_signal else self.output_green())

    def homeostasis(self) -> tuple:
        """(H, dH/dtheta) at the written parameters: H = 1/2 ||A_FF - A_FF^T||_F^2 (S^2), dH/dtheta (S),
        the partial derivative at the fixed operating point (docs/math.md, section 7.3).

        Substrates that can measure A (or know it exactly) override this.
        """
        raise SubstrateError(f"{type(self).__name__} cannot measure the Jacobian's asymmetry H "
                             "(needs small-signal probes at every node)")

    def adjoint_gain(self) -> float:
        """g_adj (S): the adjoint experiment injects g_adj r amperes and divides the readings by g_adj.

        1 / kappa_max at first use, then fixed: the injected currents then move the
        outputs by at most about |r| volts, as a bench needs. Exact for a linear circuit
        at any gain.
        """
        if getattr(self, "_adjoint_gain", None) is None:
            self._adjoint_gain = 1.0 / self.kappa_max()
        return self._adjoint_gain

    def measure(self, inputs, targets, states) -> Measurements:
        """Measure every state in ``states`` on one batch; see the module docstring."""
        c = self.circuit
        X = np.atleast_2d(np.asarray(inputs, float))
        Y = np.atleast_2d(np.asarray(targets, float))
        if X.shape[1] != len(c.inputs) or Y.shape[1] != len(c.outputs) or len(X) != len(Y):
            raise SubstrateError(f"batch shapes {X.shape} inputs, {Y.shape} targets do not fit circuit "
                                 f"'{c.name}' ({len(c.inputs)} inputs, {len(c.outputs)} outputs)")
        batch, n_out = Y.shape
        out = list(c.outputs)
        states = list(dict.fromkeys(states))  # unique, in order
        for s in states:
            if isinstance(s, Nudge) and complex(s.beta).imag != 0 and not self.supports_complex:
                raise SubstrateError(f"{type(self).__name__} cannot realise a complex nudge (beta = {s.beta}); "
                                     "use the ideal substrate or an AC-capable one")

        # round 1: the free state and the closed-loop nudges (their loads need only y). With a complex
        # nudge among them, every closed-loop nudge is realised on the circuit linearised about its free
        # operating point (an AC analysis), so that an estimator combines states of one circuit
        linear = any(isinstance(s, Nudge) and complex(s.beta).imag != 0 for s in states)
        round1 = [("free", Experiment.free(batch, n_out))]
        round1 += [(s.key, Experiment(True, "load", Y, beta=s.beta, linearised=linear)) for s in states
                   if isinstance(s, Nudge) and not s.open_loop]
        V = {key: v for (key, _), v in zip(round1, self.run(X, [e for _, e in round1]))}
        VO = V["free"][:, out]
        r = VO - Y

        # round 2: everything that depends on the free state only
        round2 = []
        for s in states:
            if isinstance(s, Nudge) and s.open_loop:
                round2.append((s.key, Experiment(True, "current", s.beta * (Y - VO))))
            elif isinstance(s, Clamp):
                round2.append((s.key, Experiment(True, "clamp", VO + s.eta * (Y - VO))))
        gain = 1.0
        if any(isinstance(s, (Adjoint, AdjointClamp)) for s in states):
            gain = self.adjoint_gain()
            if self.small_signal:
                if not c.reciprocal:
                    raise SubstrateError("the adjoint network of a nonlinear non-reciprocal circuit is not realisable")
                V[Adjoint.key] = self.small_signal_response(X, r)
            else:
                round2.append((Adjoint.key, Experiment(False, "current", gain * r, transpose=True)))
        if round2:
            for (key, _), v in zip(round2, self.run(X, [e for _, e in round2])):
                V[key] = v / gain if key == Adjoint.key else v

        # round 3: AL clamps need the measured adjoint outputs K r
        round3 = [(s.key, Experiment(True, "clamp", VO - (s.eta / s.kappa) * V[Adjoint.key][:, out]))
                  for s in states if isinstance(s, AdjointClamp)]
        if round3:
            for (key, _), v in zip(round3, self.run(X, [e for _, e in round3])):
                V[key] = v
        return Measurements(c, X, Y, V)
