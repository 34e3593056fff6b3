"""The training loop: measure -> rule -> update -> write, recorded in a run directory.

Each step draws a batch (seeded), asks the substrate for the rule's states,
turns the measurements into ghat and writes g <- clip(g - alpha ghat, g_min,
g_max). Row k of the log is the state after k steps (row 0: the start).

Defaults (when ``lr`` or ``nudge`` is None), derived from the circuit so that a
user need not guess S^2/V^2:

- nudge: EP's beta = 0.05 / kappa_max (siemens), 5 % of the convergence radius
  1/kappa_max of the nudged state's series (kappa_max = largest eigenvalue of
  K, ohms); CL's and AL's eta = 0.05. On a nonlinear substrate (transistor
  channels) a nudged state may have no operating point (ep-sym's -beta is a
  negative, active load): the default is then divided by :data:`NUDGE_BACKOFF`
  until every state the rule needs solves on the training set
  (:func:`settle_default_nudge`); config.json records the nudge kept and the ones
  refused, with the reason.
- lr: alpha_k = 0.25 / lambda_max(H(g_k)), H = mean over the training set of
  J^T W J, the Gauss-Newton curvature of the loss (W = I; W = K^-1 for CL, whose
  update descends L_K), computed on the circuit model at the conductances g_k
  written at step k and re-estimated every ``lr_every`` steps (default
  :data:`LR_EVERY`). 1 / lambda_max is the largest stable step of the quadratic
  model; the curvature grows as small conductances shrink (J ~ dV / g), so a
  step fixed at the start becomes unstable (net16: a burst of 5x at step ~75
  with the step of step 0). The step in force is logged per step (log.csv
  column ``lr``) and checkpointed, so a resumed run repeats it bit for bit.
  An explicit ``lr`` is a fixed step (``lr_every`` None). A circuit file may set its own fraction
  in place of 0.25 (``lr_fraction``; ``hil generate drn`` writes 2.5).
"""

from __future__ import annotations

import math
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import numpy as np

from hil.circuit import Circuit
from hil.losslog import LossLog, default_log_every
from hil.progress import Progress
from hil.rules import Rule, make_rule
from hil.runs import LOG_FIELDS, Run, RunError, plot_losses, write_json
from hil.substrate import Free, Substrate
from hil.tasks import Task

LR_FRACTION = 0.25
#: steps without any parameter changing after which a run says it has stalled
STALL_STEPS = 20
ROUNDINGS = ("nearest", "stochastic")
#: a default nudge with no operating point on a nonlinear substrate is divided by this ...
NUDGE_BACKOFF = 4.0
#: ... at most this many times (down to 0.05 / 4^6 = 1.2e-5 of the radius 1/kappa_max)
NUDGE_TRIES = 6
#: steps between re-estimates of the default learning rate's curvature
LR_EVERY = 10


@dataclass
class TrainConfig:
    """What a run needs besides its circuit and task. Units: lr in S^2/V^2, nudge in S (EP) or 1 (CL, AL)."""

    rule: str = "ep-sym"
    nudge: float | None = None
    points: int | None = None
    lr: float | None = None           # None: the curvature default; then lr is the step at step 0
    lr_every: int | None = None       # steps between curvature re-estimates; None: lr is fixed
    steps: int = 1000
    batch: int | None = None          # None: the whole training set every step
    seed: int = 0
    checkpoint_every: int | None = None   # None: about 20 checkpoints a run
    backend: str = "ideal"
    backend_options: dict = field(default_factory=dict)
    kappa_max: float | None = None    # ohms; measured on the substrate at the start, then fixed
    homeostasis: float = 0.0          # w (V^2/S^2): Delta theta = -alpha (ghat + w dH/dtheta), docs/math.md, section 7.3
    log_every: int | None = None      # steps between logged losses; None: hil.losslog.default_log_every
    rounding: str = "nearest"         # onto a substrate's discrete levels (taps): nearest, or stochastic
    epochs: int | None = None         # training by epochs: steps = epochs x ceil(n_train / batch), batches shuffled


#: up to this many edges the curvature runs on one BLAS thread (see :func:`one_blas_thread`)
ONE_THREAD_EDGES = 1024


def one_blas_thread(m: int):
    """Inside: BLAS on one thread when the problem has m <= ONE_THREAD_EDGES edges.

    At these sizes handing work to BLAS threads costs more than the work, and on
    shared cores their spinning slows the process down: the curvature at 64 nodes
    took 3-22 ms on two threads, 2 ms on one.
    """
    from hil.mna import one_blas_thread as limited
    return limited(m, ONE_THREAD_EDGES)


class ConfigError(ValueError):
    """A training option with a meaningless value; the message names the option (or the file and key)."""


def check_fields(cfg, where: str = "", whole=(), optional=(), positive=()) -> None:
    """ConfigError unless each ``whole`` field is a whole number >= its bound (``optional`` ones may be None)
    and each ``positive`` field is None or a positive finite number; named ``--option`` (or ``where: key``)."""
    def bad(key, value, what):
        name = f"{where}: {key} =" if where else "--" + key.replace("_", "-")
        raise ConfigError(f"{name} {value!r}: {key.replace('_', ' ')} {what}")

    for key, lo in whole:
        v = getattr(cfg, key)
        if v is None and key in optional:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            bad(key, v, f"must be a whole number >= {lo}")
    for key in positive:
        v = getattr(cfg, key)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            bad(key, v, "must be a positive finite number" + (" (S^2/V^2)" if key == "lr" else ""))
        if v < sys.float_info.min:  # subnormal: no precision left; a step or a nudge of it changes nothing
            bad(key, v, f"is below the smallest normal number {sys.float_info.min:.3g}: it would change nothing")


def check_config(cfg: TrainConfig, where: str = "") -> TrainConfig:
    """Refuse meaningless options before any work: names each as ``--option`` (or ``where: key`` for a file)."""
    check_fields(cfg, where, whole=(("steps", 1), ("batch", 1), ("seed", 0), ("checkpoint_every", 1),
                                    ("points", 1), ("lr_every", 1), ("log_every", 1), ("epochs", 1)),
                 optional=("batch", "checkpoint_every", "points", "lr_every", "log_every", "epochs"), positive=("lr", "nudge"))
    make_rule(cfg.rule, cfg.nudge, cfg.points)  # an unknown rule names itself
    if cfg.rounding not in ROUNDINGS:
        name = f"{where}: rounding =" if where else "--rounding"
        raise ConfigError(f"{name} {cfg.rounding!r}: known: {', '.join(ROUNDINGS)}")
    if cfg.backend not in ("ideal", "ngspice", "bench"):
        name = f"{where}: backend =" if where else "--backend"
        raise ConfigError(f"{name} {cfg.backend!r}: known backends: ideal, ngspice, bench")
    if not isinstance(cfg.backend_options, dict):
        name = f"{where}: backend_options =" if where else "backend options"
        raise ConfigError(f"{name} {cfg.backend_options!r}: must be a table")
    return cfg


@contextmanager
def sigint_flag():
    """While training, Ctrl-C (SIGINT) sets a flag that the loop checks between steps.

    A KeyboardInterrupt raised where Python happens to be can land inside a C callback
    (PySpice's cffi output callback), where it is printed and swallowed: the run went on.
    The loop raises it itself, at a step boundary; a second Ctrl-C raises at once.
    """
    import signal
    import threading
    state = {"hits": 0}
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, None):
        yield state
        return

    def handler(signum, frame):
        state["hits"] += 1
        if state["hits"] > 1:
            raise KeyboardInterrupt

    old = signal.signal(signal.SIGINT, handler)
    try:
        yield state
    finally:
        signal.signal(signal.SIGINT, old)


def curvature(circuit: Circuit, g, X, weight=None, Y=None) -> float:
    """lambda_max of H = mean_i J_i^T W J_i (V^2/S^2), the Gauss-Newton curvature of the loss in g, over the
    parameters that move (a fixed element's bounds [g, g] keep it out).

    On a reciprocal circuit H is never formed: Lanczos (:func:`hil.exact.largest_eigenvalue`, from a
    fixed start, so a resume repeats it) on its products H v (:func:`hil.exact.gauss_newton_operator`),
    in memory linear in the edges: at 15,040 edges (a 64-100-10 deep resistive network) the dense H
    alone would take 1.8 GB. Otherwise (VCCS, VCVS, channels with a grounded gate) H is formed
    (:func:`hil.exact.gauss_newton`, m x m whatever the number of examples). A circuit with weight
    matrices (``[[matrix]]`` tables: products of crossbars) adds the residual part's bound
    2 R_max^2 ||E^T X|| / N (E = o - y at ``Y``, R_max the largest feedback resistance): the loss is
    bilinear there, the cross derivatives d^2C / dW_k dW_(k+1) are E^T X / N whatever the weights, and at a
    small start the Gauss-Newton part alone would vanish.
    """
    import scipy.sparse.linalg as spla

    from hil.exact import free_state, gauss_newton, gauss_newton_operator, largest_eigenvalue

    lo, hi = circuit.bounds()
    moving = np.flatnonzero(hi > lo)
    with one_blas_thread(circuit.m):
        if circuit.reciprocal:
            op = gauss_newton_operator(circuit, X, g, weight)
            if len(moving) < circuit.m:
                def restricted(V):
                    full = np.zeros((circuit.m,) + V.shape[1:])
                    full[moving] = V
                    return op.matmat(full.reshape(circuit.m, -1))[moving].reshape(V.shape)
                op = spla.LinearOperator((len(moving),) * 2, matvec=restricted, matmat=restricted, dtype=float)
            lam = largest_eigenvalue(op)
        else:
            H = gauss_newton(circuit, X, g, weight)[np.ix_(moving, moving)]
            lam = largest_eigenvalue(spla.aslinearoperator(H)) if len(moving) > ONE_THREAD_EDGES else \
                float(np.linalg.eigvalsh(H).max()) if len(moving) else 0.0
    if circuit.matrices and Y is not None:
        X = np.atleast_2d(np.asarray(X, float))
        E = free_state(circuit, X, g)[:, list(circuit.outputs)] - np.atleast_2d(Y)
        gg = circuit.g if g is None else np.asarray(g, float)
        R = max(float(np.max(1.0 / gg[mat.feedback])) for mat in circuit.matrices)
        lam += 2 * R * R * float(np.linalg.norm(E.T @ X, 2)) / len(X)
    return lam


def default_lr(circuit: Circuit, g, X, rule: Rule, Y=None) -> float:
    """alpha = f / lambda_max(H) (S^2/V^2), f the circuit's ``lr_fraction`` (default LR_FRACTION); see the module
    docstring and :func:`curvature`."""
    from hil.exact import output_green

    with one_blas_thread(circuit.m):
        W = np.linalg.inv(output_green(circuit, g)) if rule.descends == "L_K" else None
    return (circuit.lr_fraction or LR_FRACTION) / curvature(circuit, g, X, W, Y)


def open_substrate(circuit: Circuit, backend: str = "ideal", **options) -> Substrate:
    """The substrate called ``backend`` holding ``circuit``.

    A calibrated circuit (a ``[calibration]`` table, from ``hil calibrate``) on a
    simulated backend is its bench's twin: each write g realises scale * g.
    """
    cal = circuit.calibration
    if cal is not None and backend != "bench":
        from hil.twin import CalibratedSubstrate, actual_circuit
        inner = open_substrate(actual_circuit(circuit, cal["scale"]), backend, **options)
        return CalibratedSubstrate(circuit, inner, cal["scale"])
    if backend == "ideal":
        from hil.ideal import IdealChannelSubstrate, IdealSubstrate
        device = options.pop("device", "resistor")
        if device != "resistor":  # the edges as level-1 channels, ideal elements
            return IdealChannelSubstrate(circuit, device, **options)
        return IdealSubstrate(circuit, **options)
    if backend == "ngspice":
        from hil.spice.substrate import NgSpiceSubstrate
        return NgSpiceSubstrate(circuit, **options)
    if backend == "bench":
        if circuit.elements or circuit.biases:  # a bench has parts for edges and sources at its inputs only
            what = [f"{grp.table} '{grp.names[0]}'" for grp in circuit.elements] + \
                [f"bias node '{circuit.nodes[i]}'" for i in circuit.biases]
            raise ValueError(f"{circuit.source}: the bench has no part for {what[0]}"
                             f"{' (and ' + str(len(what) - 1) + ' more)' if len(what) > 1 else ''}; "
                             "circuits with diodes, channels, VCVS or biases run on --backend ideal or ngspice")
        from hil.bench.substrate import BenchSubstrate
        if "bench" not in options:
            raise ValueError("backend bench needs a bench file (--bench FILE; `hil emulate` writes one)")
        return BenchSubstrate(circuit, options["bench"], from_board=bool(options.get("from_board")))
    raise ValueError(f"unknown backend '{backend}' (known: ideal, ngspice, bench)")


def settle_default_nudge(sub: Substrate, rule: Rule, X, Y) -> list:
    """Shrink ``rule``'s default nudge until its every state has an operating point on ``sub``.

    On a nonlinear substrate (``sub.small_signal``: transistor channels) the states of
    the rule are measured at every example of X (targets Y); while a nudged state fails
    (a SubstrateError: ngspice finds no operating point, or only a far one), the nudge
    is divided by NUDGE_BACKOFF, at most NUDGE_TRIES times. A linear substrate's nudged
    states exist for every beta inside the radius 1/kappa_max: nothing is measured.
    Returns the nudges refused, [{"nudge": beta, "reason": message}]; rule.nudge is the
    one kept. The free state failing, or every try, raises the SubstrateError.
    """
    from hil.substrate import SubstrateError
    refused = []
    if not getattr(sub, "small_signal", False) or not rule.uses_nudge:
        return refused
    sub.measure(X, Y, [Free()])  # the free state's own failure is not the nudge's
    for _ in range(NUDGE_TRIES + 1):
        try:
            sub.measure(X, Y, rule.states())
            return refused
        except SubstrateError as exc:
            refused.append({"nudge": rule.nudge, "reason": str(exc)})
            if len(refused) > NUDGE_TRIES:
                raise SubstrateError(f"{exc} (the default nudge divided by {NUDGE_BACKOFF:g} {NUDGE_TRIES} times, "
                                     f"down to {rule.nudge:.3g}, still has none)") from None
            rule.nudge /= NUDGE_BACKOFF


def nudge_note(refused: list, kept: float, unit: str = "S") -> str:
    """What a command says when the default nudge was shrunk (:func:`settle_default_nudge`)."""
    if not refused:
        return ""
    return (f"default nudge {refused[0]['nudge']:.3g} {unit}: no operating point for every nudged state "
            f"({len(refused)} tr{'y' if len(refused) == 1 else 'ies'} refused); using {kept:.3g} {unit}")


def stochastic_round(x, levels, rng) -> np.ndarray:
    """Each x_e (S) rounded to one of the two levels around it in ``levels[e]`` (ascending), the upper
    with probability (x_e - lo) / (hi - lo): unbiased, E[round(x)] = x, so an update smaller than the
    gap between levels still moves a parameter on average (stochastic rounding: Gupta, Agrawal,
    Gopalakrishnan, Narayanan, "Deep Learning with Limited Numerical Precision", ICML 2015, with
    its FPGA implementation). Values outside the levels' range go to the nearest end."""
    x = np.asarray(x, float)
    out = np.empty_like(x)
    u = rng.random(len(x))
    for e, (v, L) in enumerate(zip(x, levels)):
        k = int(np.clip(np.searchsorted(L, v), 1, len(L) - 1))
        lo, hi = L[k - 1], L[k]
        out[e] = lo if v <= lo else hi if v >= hi else (hi if u[e] < (v - lo) / (hi - lo) else lo)
    return out


def stall_message(step: int, loss: float, discrete: bool, rounding: str) -> str:
    """What a run says once no parameter has changed for STALL_STEPS steps (history.log, stderr, result.json)."""
    why = ("every update alpha * ghat is below half a tap of the digipots, so each write lands on the tap it "
           "left" if discrete else "every parameter sits at a bound it is pushed against, or ghat is zero")
    helps = ("--rounding stochastic (each update rounded to the tap above or below with probability in "
             "proportion: small updates move taps on average), or a larger fixed --lr"
             if discrete and rounding == "nearest" else "a larger fixed --lr" if discrete else
             "wider [g_min, g_max] in the circuit file, or another rule")
    return (f"stalled: no parameter has changed for {STALL_STEPS} steps (steps {step - STALL_STEPS + 1}-{step}; "
            f"train loss {loss:.4g} V^2): {why}. What helps: {helps}")


class Trainer:
    """Runs (or resumes) the loop for one run directory."""

    def __init__(self, run: Run, circuit: Circuit, task: Task, config: TrainConfig, substrate: Substrate):
        self.run, self.circuit, self.task, self.cfg, self.sub = run, circuit, task, config, substrate
        run.circuit = circuit  # each checkpoint leaves the trained circuit (trained.toml)
        run.rule = config.rule  # and records the rule (a resume checks config.json against it)
        self.message_counts = {}
        self.rule = make_rule(config.rule, config.nudge, config.points, seed=config.seed)
        if config.kappa_max is None:
            config.kappa_max = substrate.kappa_max(task.X_train)
        self.rule.configure(config.kappa_max)
        #: default nudges refused on a nonlinear substrate (recorded in config.json)
        self.nudge_refused = []
        if config.nudge is None:
            self.nudge_refused = settle_default_nudge(substrate, self.rule, task.X_train, task.Y_train)
            config.nudge = self.rule.nudge
        if config.lr is None:
            try:
                config.lr = self.default_lr(substrate.read())
            except ZeroDivisionError:
                config.lr = float("inf")
            if not math.isfinite(config.lr):
                raise ConfigError(f"{circuit.source}: the outputs do not depend on any conductance for this task "
                                  "(zero curvature: an output or every input tied only to ground, or all inputs 0 V); "
                                  "there is nothing to learn, and no default --lr")
            config.lr_every = LR_EVERY if config.lr_every is None else config.lr_every
        if config.lr_every is not None and config.lr_every < 1:
            raise ValueError(f"lr_every = {config.lr_every}: must be a whole number of steps >= 1")
        w = config.homeostasis
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not np.isfinite(w) or w < 0:
            raise ValueError(f"--homeostasis {w!r}: the weight w must be a finite number >= 0 (V^2/S^2)")
        #: log H per step where it can be non-zero or is asked for
        self.log_H = bool(w) or not circuit.reciprocal
        if self.log_H:
            from hil.substrate import SubstrateError
            try:
                substrate.homeostasis()
            except SubstrateError:
                if w:
                    raise
                self.log_H = False  # not measurable here, and not asked for: the log goes without it
        if config.log_every is not None and (int(config.log_every) != config.log_every or config.log_every < 1):
            raise ValueError(f"log_every = {config.log_every!r}: give a whole number of steps >= 1")
        if config.log_every is None and config.epochs:
            config.log_every = steps_per_epoch(task.n_train, config.batch)  # a row per epoch
        if config.log_every is None:
            n = task.n_train
            config.log_every = default_log_every(self.rule.states(), min(config.batch or n, n), n, len(task.X_test))
        self.levels = substrate.levels()
        if config.rounding == "stochastic" and self.levels is None:
            raise ConfigError("--rounding stochastic: this substrate's conductances are continuous (no taps to "
                              "round to); it applies to --device digipot")
        #: the steps at which the run said it had stalled
        self.stalls = []

    def default_lr(self, g) -> float:
        """The curvature step alpha = LR_FRACTION / lambda_max(H(g)) on the training set (S^2/V^2)."""
        return default_lr(self.circuit, g, self.task.X_train, self.rule, self.task.Y_train)

    def _H(self) -> dict:
        """The log's homeostasis column: H (S^2) at the parameters now written."""
        return {"homeostasis_H": float(self.sub.homeostasis()[0])}

    def losses(self) -> tuple:
        """(train, test) loss at the conductances now written, V^2."""
        return self.train_loss(), self.test_loss()

    def evaluate(self, split: str) -> dict:
        """The log's columns for ``split`` ('train' or 'test'): its loss (V^2) and the task's scores, one free pass."""
        t = self.task
        X, Y = (t.X_train, t.Y_train) if split == "train" else (t.X_test, t.Y_test)
        if not len(X):
            return {f"{split}_loss": float("nan"), **{k: float("nan") for k in t.score_names if k.startswith(split)}}
        return self._scored(split, self.sub.measure(X, Y, [Free()]))

    def _scored(self, split: str, meas) -> dict:
        VO = meas.voltages["free"][:, list(self.circuit.outputs)]
        return {f"{split}_loss": meas.loss(), **self.task.scores(split, VO)}

    def train_loss(self) -> float:
        t = self.task
        return self.sub.measure(t.X_train, t.Y_train, [Free()]).loss()

    def test_loss(self) -> float:
        t = self.task
        return self.sub.measure(t.X_test, t.Y_test, [Free()]).loss() if len(t.X_test) else float("nan")

    def _rates(self, steps, loss, g, lr) -> dict:
        """Measured loss decay rate per step (last quarter of the run) beside the coercivity prediction at g."""
        from hil.analysis.coercivity import measured_rate, pinned
        from hil.exact import coercivity, output_green

        c, X = self.circuit, self.task.X_train
        if len(loss) < 20 or len(X) * len(c.outputs) * c.m > 5e6:
            return {}
        meas = measured_rate(loss, steps=steps)
        try:
            W = np.linalg.inv(output_green(c, g)) if self.rule.descends == "L_K" else None
            cc = coercivity(c, X, g, weight=W, active=~pinned(c, g))
        except Exception:  # a prediction is a courtesy; never lose a run over it
            return {"measured_rate": meas}
        pred = float(1 - (1 - lr * cc) ** 2)
        out = {"measured_rate": meas, "predicted_rate": pred, "coercivity": cc}
        i0 = int(len(loss) * 0.75)
        caveat = self._rate_caveat(loss[i0], meas, pred)
        if caveat:
            out["predicted_rate_note"] = caveat  # and no predicted line: it would describe a decay that is not there
        elif np.isfinite(meas) and loss[i0] > 0:
            k0 = steps[i0]
            k = np.arange(k0, steps[-1] + 1)
            out["_lines"] = {f"predicted decay ({pred:.3g}/step)": (k, loss[i0] * (1 - pred) ** (k - k0)),
                             f"measured ({meas:.3g}/step)": (k, loss[i0] * (1 - meas) ** (k - k0))}
        return out

    def _rate_caveat(self, loss_now: float, meas: float, pred: float) -> str | None:
        """Why the coercivity prediction (a decay to zero loss under the plain rule) does not describe the
        run's last quarter, or None where it may: the loss at a floor no passive network gets below, a loss
        that stopped falling, or the homeostatic term (the prediction leaves it out)."""
        from hil.analysis.coercivity import passive_floor
        if self.cfg.homeostasis:
            return (f"the prediction covers the rule's step alone; the homeostatic term w dH/dtheta (w = "
                    f"{self.cfg.homeostasis:g}) moves the parameters too, so the measured rate may differ")
        # a linear network's outputs are T x with fixed weights T (a nonlinear one's are not: no such floor)
        floor = None if getattr(self.sub, "small_signal", False) else \
            passive_floor(self.circuit, self.task.X_train, self.task.Y_train)
        if floor is not None and floor > 0 and loss_now <= 1.01 * floor:
            return (f"the loss sits at {loss_now:.4g} V^2, at the floor {floor:.4g} V^2 no passive network gets "
                    "below on these targets; the prediction is a decay toward zero")
        if np.isfinite(meas) and meas < 1e-3 * pred:
            return ("the loss has stopped falling (a floor of the task, a stall, or conductances at their bounds); "
                    "the prediction is a decay toward zero")
        return None
    def summary(self) -> dict:
        """The task's end-of-run report at the conductances now written (a classification: accuracy, confusion
        matrices), and its figures."""
        t, out = self.task, list(self.circuit.outputs)
        VO = lambda X, Y: self.sub.measure(X, Y, [Free()]).voltages["free"][:, out] if len(X) else np.zeros((0, len(out)))
        s = t.summary(VO(t.X_train, t.Y_train), VO(t.X_test, t.Y_test))
        from hil.runs import plot_summary
        plot_summary(self.run, s)
        return s

    def _diagnostics(self, step: int) -> None:
        """The substrate's own messages (ngspice notes, stepping) into substrate.log, counted."""
        if not hasattr(self.sub, "diagnostics"):
            return
        msgs = self.sub.diagnostics()
        if msgs:
            with open(self.run.path / "substrate.log", "a") as fh:
                for level, line in msgs:
                    fh.write(f"step {step}\t{level}\t{line}\n")
                    self.message_counts[level] = self.message_counts.get(level, 0) + 1

    def _stalled(self, step: int, loss, bar) -> None:
        """Say once per stall, in history.log and on screen, that no parameter has moved for STALL_STEPS steps."""
        loss = self.train_loss() if loss is None or not np.isfinite(loss) else loss
        msg = stall_message(step, loss, self.levels is not None, self.cfg.rounding)
        self.stalls.append({"step": step, "train_loss": float(loss), "message": msg})
        self.run.note(msg)
        write = getattr(bar, "write", None)  # a tqdm bar prints above itself
        lead = "\n" if write is None and getattr(bar, "enabled", False) else ""
        (write or (lambda m: print(lead + m, file=sys.stderr)))(f"hil: {self.run.path}: {msg}")

    def train(self, start_step: int = 0, rng=None, progress: bool | None = None, lr: float | None = None,
              checkpoint: dict | None = None, plot: bool = True) -> dict:
        """Run steps ``start_step`` .. cfg.steps; ``lr``: the step in force at ``start_step``, ``checkpoint``:
        the checkpoint's extras (a resume)."""
        cfg, t, c = self.cfg, self.task, self.circuit
        rng = rng or np.random.default_rng(cfg.seed)
        every = cfg.checkpoint_every or max(1, cfg.steps // 20)
        if hasattr(self.sub, "record_to"):  # a bench: every exchange and step into the run directory
            self.sub.record_to(self.run.path / "bench")
        g = self.sub.read()
        lo, hi = c.bounds()
        n = t.n_train
        batch = n if not cfg.batch or cfg.batch >= n else cfg.batch
        t0 = time.perf_counter()
        alpha = cfg.lr if lr is None else lr
        book = LossLog(cfg.log_every, cfg.steps, batch == n, lambda: self.evaluate("train"),
                       lambda: self.evaluate("test"), extra=self._H if self.log_H else None,
                       from_measurements=lambda meas: self._scored("train", meas))
        if start_step == 0:
            book.add(0, float("nan"), 0.0, alpha)
            self.run.save_checkpoint(0, g, rng.bit_generator.state, {"lr": alpha, **book.checkpoint_extra()})
        else:
            logged = self.run.read_log()["step"]
            if book.resume(checkpoint or {}):
                pass  # the checkpoint's row waits for the first step's free state, as it did before the stop
            elif len(logged) and logged[-1] == start_step and not book.exists(start_step):
                self.run.truncate_log(start_step - 1, keep_later=False)  # the old last step's row, off the new schedule
            elif book.exists(start_step) and (not len(logged) or logged[-1] < start_step):
                # the run stopped after this step's write but before its losses were logged:
                # they follow from the checkpoint's conductances (the gradient norm is gone)
                book.add(start_step, float("nan"), 0.0, alpha)
        step = start_step
        still = 0  # steps in a row that changed no parameter
        rng_before = rng.bit_generator.state
        mark = getattr(self.sub, "mark", None)  # a recording substrate notes where each step begins
        try:
            with sigint_flag() as stop, Progress(cfg.steps - start_step, f"train {cfg.rule}", enabled=progress) as bar:
                while step < cfg.steps:
                    if stop["hits"]:
                        raise KeyboardInterrupt  # Ctrl-C, taken here between steps
                    if mark:
                        mark(step + 1)
                    rng_before = rng.bit_generator.state  # an unfinished step is redone from here
                    if cfg.lr_every and step % cfg.lr_every == 0 and step > 0:
                        alpha = self.default_lr(g)  # the curvature follows the conductances
                    idx = np.arange(n) if batch == n else \
                        epoch_batch(cfg.seed, n, batch, step) if cfg.epochs else rng.choice(n, batch, replace=False)
                    meas = self.sub.measure(t.X_train[idx], t.Y_train[idx], self.rule.states())
                    book.measured(step, meas)
                    ghat = self.rule.estimate(meas)
                    step_dir = ghat + cfg.homeostasis * self.sub.homeostasis()[1] if cfg.homeostasis else ghat
                    target = np.clip(g - alpha * step_dir, lo, hi)
                    if cfg.rounding == "stochastic":
                        target[:c.m] = stochastic_round(target[:c.m], self.levels, rng)
                    g_before, g = g, self.sub.write(target)
                    step += 1
                    still = still + 1 if np.array_equal(g, g_before) else 0
                    if still == STALL_STEPS:
                        self._stalled(step, book.last_train, bar)
                    rng_before = rng.bit_generator.state
                    book.add(step, float(np.linalg.norm(ghat)), time.perf_counter() - t0, alpha)
                    if step % every == 0 or step == cfg.steps:
                        self._diagnostics(step)
                        self.run.append_log(book.take(complete=step == cfg.steps))
                        self.run.save_checkpoint(step, g, rng.bit_generator.state,
                                                 {"lr": alpha, **book.checkpoint_extra()})
                    bar.update(step - start_step, loss=book.last_train)
            if start_step == cfg.steps:
                self.run.append_log(book.take())
        except BaseException:
            # keep every step that completed: log and checkpoint agree on `step`, and the
            # random state is the one the unfinished step started from
            rows = book.salvage()
            if rows:
                self.run.append_log(rows)
            self.run.save_checkpoint(step, g, rng_before, {"lr": alpha, **book.checkpoint_extra()})
            raise
        finally:
            if hasattr(self.sub, "stop_recording"):
                self.sub.stop_recording()
        log = self.run.read_log()
        rates = self._rates(log["step"], log["train_loss"], g, alpha)
        lines = rates.pop("_lines", None)
        if plot:  # an experiment of many runs draws its own figures
            plot_losses(self.run, lines)
        result = {"initial_loss": float(log["train_loss"][0]), "final_loss": float(log["train_loss"][-1]),
                  "steps": int(step), "run_dir": str(self.run.path)}
        if t.score_names:
            result.update(self.summary())
        if "homeostasis_H" in log:
            result.update(initial_H=float(log["homeostasis_H"][0]), final_H=float(log["homeostasis_H"][-1]))
        if self.message_counts:
            result["substrate_messages"] = self.message_counts
        if self.stalls:
            result["stalled"] = self.stalls
        if self.nudge_refused:
            result["nudge_note"] = nudge_note(self.nudge_refused, self.cfg.nudge, self.rule.nudge_unit or "")
        result.update(rates)
        from hil.runs import write_json
        write_json(self.run.path / "result.json", result)
        return result


def steps_per_epoch(n_train: int, batch: int | None) -> int:
    """Minibatches in one pass through the training split (the last one may be smaller)."""
    return 1 if not batch or batch >= n_train else math.ceil(n_train / batch)


#: examples per step when training by epochs without a batch size
EPOCH_BATCH = 10


def by_epochs(cfg: "TrainConfig", n_train: int, epochs) -> "TrainConfig":
    """``cfg`` set to train ``epochs`` passes through ``n_train`` examples in shuffled minibatches (cfg.batch, default
    EPOCH_BATCH): cfg.steps = epochs x ceil(n_train / batch). ConfigError naming --epochs when not a whole number >= 1."""
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 1:
        raise ConfigError(f"--epochs {epochs!r}: epochs must be a whole number >= 1")
    cfg.batch = cfg.batch or EPOCH_BATCH
    cfg.epochs = int(epochs)
    cfg.steps = cfg.epochs * steps_per_epoch(n_train, cfg.batch)
    return cfg


def epoch_batch(seed: int, n: int, batch: int, step: int) -> np.ndarray:
    """The examples of ``step`` when training by epochs: epoch k = step // steps_per_epoch is one pass in the
    order of a permutation drawn from (seed, k), so a resumed run draws the same batches without any saved state."""
    spe = steps_per_epoch(n, batch)
    epoch, j = divmod(step, spe)
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    return perm[j * batch:(j + 1) * batch]


#: an EP nudge beta beyond this many convergence radii 1/kappa_max is refused: in the nudged circuit's equations
#: (A_FF + beta P^T P) the circuit's own part then keeps fewer than 4 of double precision's 16 digits
NUDGE_RADII_MAX = 1e12


def check_start(circuit: Circuit, task: Task, cfg: TrainConfig, rule: Rule, lr_given, nudge_given) -> None:
    """Refuse, before a run directory is made, options that would make every step meaningless; ConfigError
    naming the option, the value and a sensible one.

    - ``--nudge`` beta (S) above NUDGE_RADII_MAX / kappa_max;
    - ``--homeostasis`` w > 0 where no trained parameter enters A asymmetrically: dH/dtheta = 0 whatever
      theta (conductances enter A = dF/dV symmetrically; only trainable VCCS and channels' gates do not);
    - ``--lr`` alpha so large that the first update, g - alpha dC/dg (the model's exact gradient on the
      training set), puts every parameter the gradient moves at a bound: such a step keeps only the
      gradient's signs. The message gives the curvature step LR_FRACTION / lambda_max (the default).
    """
    kappa = rule.kappa or 0.0
    if nudge_given is not None and rule.nudge_unit == "S" and kappa > 0 and nudge_given * kappa > NUDGE_RADII_MAX:
        raise ConfigError(f"--nudge {nudge_given!r}: beta is {nudge_given * kappa:.3g} times the convergence radius "
                          f"1/kappa_max = {1 / kappa:.3g} S; above {NUDGE_RADII_MAX:g} times the nudged circuit's "
                          "equations lose the circuit's own part to rounding (the default is 5% of the radius, "
                          f"{rule.default_nudge(kappa):.3g} S)")
    if cfg.homeostasis and not len(circuit.trainable_vccs) and \
            all(grp.reciprocal for grp, _ in circuit.trainable_elements):
        fixed = [f"{grp.table} '{grp.names[0]}'" for grp in circuit.elements if not grp.reciprocal] + \
            [f"vccs '{nm}'" for nm in circuit.vccs_names[:1]]
        why = (f"its asymmetry is in fixed elements ({', '.join(fixed)}) and no trained parameter changes it"
               if not circuit.reciprocal else "it is reciprocal: H = 0 whatever its parameters")
        raise ConfigError(f"--homeostasis {cfg.homeostasis!r}: circuit '{circuit.name}': {why} (conductances enter "
                          "A symmetrically), so dH/dtheta = 0 and the term would do nothing; homeostasis acts on "
                          "trainable VCCS (hil generate random --vccs-pairs P)")
    if lr_given is not None:
        _check_first_step(circuit, task, rule, lr_given)


def _check_first_step(circuit: Circuit, task: Task, rule: Rule, lr: float) -> None:
    from hil.exact import gradient
    g = circuit.theta
    lo, hi = circuit.bounds()
    try:
        grad = gradient(circuit, task.X_train, task.Y_train, g)
    except Exception:  # the model cannot say (a circuit whose free state it cannot solve): the run will
        return
    if not np.all(np.isfinite(grad)):
        return
    moves = (np.abs(grad) > 1e-12 * np.abs(grad).max()) & (hi > lo)
    with np.errstate(over="ignore", invalid="ignore"):
        x = g - lr * grad
    if not moves.any() or not np.all(((x <= lo) | (x >= hi))[moves]):
        return
    a0 = default_lr(circuit, g, task.X_train, rule, task.Y_train)
    raise ConfigError(f"--lr {lr!r}: the first update would put every one of the {int(moves.sum())} parameters "
                      "the gradient moves at a bound (g_min or g_max): a step that large keeps only the gradient's "
                      f"signs; the curvature step here is {a0:.3g} S^2/V^2 ({LR_FRACTION:g} / lambda_max, the "
                      f"default: leave --lr out), and steps above 2 / lambda_max = {2 * a0 / LR_FRACTION:.3g} "
                      "diverge on the loss's quadratic model")


def start_run(circuit: Circuit, task: Task, config: TrainConfig, out, progress: bool | None = None,
              substrate: Substrate | None = None, force: bool = False, plot: bool = True) -> dict:
    """Train ``circuit`` on ``task`` from scratch, recording into the run directory ``out``.

    ``out`` must be new or empty (``force``: what it holds is moved into ``out/replaced-*/``);
    the run holds ``out/run.lock`` while it trains.
    """
    check_config(config)
    run = Run(out).prepare(force)
    sub = None
    lr_given, nudge_given = config.lr, config.nudge
    try:
        sub = substrate or open_substrate(circuit, config.backend, **config.backend_options)
        if getattr(sub, "from_board", False):  # the run records where it really started
            circuit = circuit.with_g(sub.read())
        trainer = Trainer(run, circuit, task, config, sub)
        check_start(circuit, task, config, trainer.rule, lr_given, nudge_given)
        cfg = asdict(config)
        cfg.update(circuit_name=circuit.name, circuit_source=circuit.source, task=task.description,
                   rule_description=trainer.rule.describe())
        if trainer.nudge_refused:
            cfg["nudge_refused"] = trainer.nudge_refused
        run.create(cfg, circuit.to_toml(), task.record(run.path),
                   fields=LOG_FIELDS + task.score_names + (["homeostasis_H"] if trainer.log_H else []))
        return trainer.train(progress=progress, plot=plot)
    finally:
        if substrate is None and sub is not None:
            sub.close()
        run.unlock()
        run.discard_if_unused()


#: options a resume may change (recorded in config.json's "changes" and history.log); any other is refused
RESUMABLE = ("steps", "checkpoint_every", "bench")


def _load_task(run: Run, circuit: Circuit) -> Task:
    """The run's task.json, checked against its circuit: RunError naming the file and what does not fit."""
    d = run.read_json_file("task.json")
    where = run.path / "task.json"
    try:
        task = Task.from_dict(d, run.path)
        assert task.X_train.ndim == 2 and len(task.X_train) == len(task.Y_train) > 0
        assert np.all(np.isfinite(task.X_train)) and np.all(np.isfinite(task.Y_train))
    except (KeyError, TypeError, ValueError, AssertionError, OSError):
        raise RunError(f"{where}: not a task (X_train, Y_train, X_test, Y_test of finite volts)") from None
    for key, want, what in (("X_train", len(circuit.inputs), "inputs"), ("Y_train", len(circuit.outputs), "outputs"),
                            ("X_test", len(circuit.inputs), "inputs"), ("Y_test", len(circuit.outputs), "outputs")):
        A = getattr(task, key)
        if A.size and (A.ndim != 2 or A.shape[1] != want):
            raise RunError(f"{where}: {key} has {A.shape[-1] if A.ndim else 0} columns; the run's circuit "
                           f"'{circuit.name}' has {want} {what}")
    if len(task.X_test) != len(task.Y_test):
        raise RunError(f"{where}: {len(task.X_test)} test inputs (X_test) but {len(task.Y_test)} targets (Y_test)")
    return task


def _log_check(run: Run, config: TrainConfig, n_train: int):
    """A check (for :meth:`Run.recover_checkpoint`) that a checkpoint is not past the log: no step the log's
    schedule holds lies between log.csv's last row and the checkpoint (those rows would be missing for good).
    None when the log cannot tell (missing, no rows: its own recovery says so)."""
    try:
        logged = run.read_log()["step"]
    except (RunError, OSError, ValueError, StopIteration):
        return lambda ck: None
    if not len(logged):
        return lambda ck: None
    last = int(logged.max())
    full = not config.batch or config.batch >= n_train
    every = int(config.log_every or 1)
    nxt = last + 1 if full else min((last // every + 1) * every, max(int(config.steps), last + 1))

    def check(ck):
        step = ck.get("step")
        if isinstance(step, (int, np.integer)) and not isinstance(step, bool) and step > nxt:
            return (f"step {step} is past log.csv's last row (step {last}): the rows from step {nxt} on are "
                    "missing (a checkpoint edited forward, or rows cut from the log)")
        return None
    return check


def _npz_check(run: Run):
    """A check that a checkpoint's parameters are those of the .npz checkpoint of its step, where one exists
    (checkpoint.json with its step edited by hand names another step's parameters)."""
    def check(ck):
        step = ck.get("step")
        f = run.path / "checkpoints" / f"step_{step:06d}.npz" if isinstance(step, (int, np.integer)) else None
        if f is None or not f.is_file():
            return None
        try:
            with np.load(f) as z:
                g = np.array(z["g"], float)
        except Exception:  # a damaged .npz is judged when its turn comes
            return None
        if g.shape != np.shape(ck["g"]) or not np.array_equal(g, ck["g"]):
            return f"its parameters are not those of checkpoints/{f.name} (step {step}): a step edited by hand?"
        return None
    return check


def _both(*checks):
    """One checkpoint check from several: the first reason any of them gives."""
    def check(ck):
        for c in checks:
            why = c(ck)
            if why is not None:
                return why
        return None
    return check


def _check_rule(run: Run, raw: dict, ck: dict) -> None:
    """RunError naming config.json when its rule is not the one the run trained with: the checkpoint's
    (recorded since checkpoints hold it) and config.json's own rule_description."""
    rule = raw.get("rule")
    base = str(rule).split(":", 1)[0]
    desc = str(raw.get("rule_description") or "").split(" ", 1)[0]
    for theirs, where in ((ck.get("rule"), "the checkpoint's"), (desc or None, "config.json's rule_description")):
        if theirs is not None and str(theirs).split(":", 1)[0] != base:
            raise RunError(f"{run.path / 'config.json'}: rule = {rule!r}, but the run trained with rule "
                           f"{str(theirs).split(':', 1)[0]!r} ({where}); a resume continues the run with its own "
                           "rule: restore it (to train on with another rule, start a new run from the trained "
                           f"circuit: hil train {run.path} ... --rule {rule})")


def _checkpoint_check(circuit: Circuit, steps: int):
    lo, hi = circuit.bounds()  # theta: conductances, transconductances, gate voltages (fixed edges at [g, g])
    names = circuit.param_names
    return checkpoint_check(circuit.n_params, lo, hi,
                            lambda e: f"{'edge' if e < circuit.m else 'vccs' if names[e] in circuit.vccs_names else 'parameter'} "
                                      f"'{names[e]}'")


def checkpoint_check(n: int, lo, hi, name_of, rng: bool = True):
    """A check of one checkpoint (for :meth:`Run.recover_checkpoint`): None, or why it is refused.

    ``n`` parameters theta, each in [lo, hi] S (scalars or (n,) arrays: the circuit's
    bounds; ``name_of(e)``: how parameter e is named), a whole step >= 0, a positive
    finite lr if any, a numpy random state when ``rng``.
    """
    lo, hi = np.broadcast_to(np.asarray(lo, float), (n,)), np.broadcast_to(np.asarray(hi, float), (n,))

    def check(ck):
        step, g = ck.get("step"), np.asarray(ck.get("g"), float)
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            return f"step {step!r} is not a whole number >= 0"
        if g.shape != (n,) or not np.all(np.isfinite(g)):
            return f"g is not {n} finite parameters (shape {g.shape})"
        out = np.flatnonzero((g < lo) | (g > hi))
        if out.size:
            e = out[0]
            return f"{name_of(e)} = {float(g[e])!r} S is outside its bounds [{lo[e]}, {hi[e]}]"
        lr = ck.get("lr")
        if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr)
                               or lr <= 0):
            return f"lr {lr!r} is not a positive finite number"
        row = ck.get("awaiting_row")
        if row is not None and not _log_row(row, step):
            return f"awaiting_row {str(row)[:60]} is not the log row of step {step} (a table of numbers)"
        if not rng:
            return None
        state = ck.get("rng")
        if not isinstance(state, dict) or "bit_generator" not in state:
            return "no random state"
        try:
            np.random.default_rng().bit_generator.state = state
        except Exception:
            return "the random state is not one numpy accepts"
        return None
    return check


def _log_row(row, step) -> bool:
    """Whether ``row`` is a log row of ``step``: a table of numbers whose step is ``step``."""
    if not isinstance(row, dict) or row.get("step") != step or isinstance(row.get("step"), bool):
        return False
    return all(isinstance(k, str) and not isinstance(v, bool) and isinstance(v, (int, float)) for k, v in row.items())


def apply_changes(run: Run, raw: dict, config, at_step: int, steps, changes, check, write: bool = True) -> list:
    """Apply a resume's option changes to ``config`` (only RESUMABLE ones; RunError naming any other).

    Each change is recorded in ``raw`` ("changes": option, from, to, at_step), written to
    config.json unless ``write`` is False (the caller writes ``raw`` once the resume can go
    on); ``check(config)`` validates the result. Returns the notes saying what changed.
    """
    wanted = dict(changes or {})
    if steps is not None:
        wanted["steps"] = steps
    for key in wanted:
        if key not in RESUMABLE:
            raise RunError(f"--{key.replace('_', '-')}: a resume continues the run with its recorded options "
                           f"and can change only {', '.join('--' + k.replace('_', '-') for k in RESUMABLE)}")
    if "steps" in wanted and wanted["steps"] < at_step:
        raise RunError(f"--steps {wanted['steps']}: the run already has {at_step} steps; a resume continues "
                       "it (--steps is the new total, at least that)")
    done = []
    for key, value in wanted.items():
        old = raw.get("backend_options", {}).get("bench") if key == "bench" else raw.get(key)
        if value is None or value == old:
            continue
        if key == "bench":
            if config.backend != "bench":
                raise RunError(f"--bench: the run's backend is {config.backend}, not bench")
            config.backend_options = {**config.backend_options, "bench": value}
            raw["backend_options"] = config.backend_options
        else:
            setattr(config, key, value)
            raw[key] = value
        done.append({"option": key, "from": old, "to": value, "at_step": at_step})
    check(config)
    if done:
        raw.setdefault("changes", []).extend(done)
    if done and write:
        write_json(run.path / "config.json", raw)
    return [f"--{d['option'].replace('_', '-')} changed from {d['from']} to {d['to']} at step {d['at_step']}"
            for d in done]


def say_recovered(run: Run, step: int, notes: list) -> None:
    """Record a resume at ``step`` and each note in history.log; print the notes (stderr)."""
    import os
    run.note(f"resume at step {step} (pid {os.getpid()})")
    for n in notes:
        run.note(n)
        print(f"hil: {run.path}: {n}", file=sys.stderr)


def resume_run(out, steps: int | None = None, progress: bool | None = None,
               substrate: Substrate | None = None, changes: dict | None = None) -> dict:
    """Continue the run in ``out`` from its last good checkpoint, exactly as if it had not stopped.

    ``steps`` sets the run's total step count (at least the checkpoint's step); ``changes``
    may also set ``checkpoint_every`` or the bench file (``bench``). Each change is recorded
    in config.json ("changes") and history.log. Damaged files: checkpoint.json falls back
    to the newest good .npz checkpoint; what was recovered is said (stderr) and recorded;
    nothing is deleted (replaced files go to recovered/).
    """
    from hil.circuit import load_circuit

    run = Run(out)
    if not run.path.is_dir():
        raise RunError(f"--resume {out}: no such run folder (no checkpoint.json to resume from)")
    if not (run.path / "checkpoint.json").exists() and not any((run.path / "checkpoints").glob("step_*.npz")):
        raise RunError(f"{run.path}: no checkpoint.json; not a run directory, or the run never reached its first checkpoint")
    run.lock()
    sub = None
    try:
        raw = run.config
        if not isinstance(raw, dict):
            raise RunError(f"{run.path / 'config.json'}: not a table of options")
        known = TrainConfig.__dataclass_fields__
        try:
            config = TrainConfig(**{k: v for k, v in raw.items() if k in known})
        except TypeError as exc:
            raise RunError(f"{run.path / 'config.json'}: {exc}") from None
        if "log_every" not in raw:
            config.log_every = 1  # a run from before log_every logged every step
        check_config(config, str(run.path / "config.json"))
        circuit = run.read_circuit(load_circuit)
        task = _load_task(run, circuit)
        ck, notes = run.recover_checkpoint(_both(_checkpoint_check(circuit, config.steps), _npz_check(run),
                                                 _log_check(run, config, task.n_train)))
        _check_rule(run, raw, ck)
        changed = apply_changes(run, raw, config, int(ck["step"]), steps, changes, check_config, write=False)
        sub = substrate or open_substrate(circuit, config.backend, **config.backend_options)
        sub.write(ck["g"])
        trainer = Trainer(run, circuit, task, config, sub)
        # the resume can go on: only now are its changes and its note recorded
        if changed:
            write_json(run.path / "config.json", raw)
        notes += changed
        # a checkpoint awaiting its step's train loss (hil.losslog) logs that row again: the log keeps the rows before it
        notes += run.truncate_log(ck["step"] - 1 if ck.get("awaiting_row") else ck["step"])
        say_recovered(run, int(ck["step"]), notes)
        rng = np.random.default_rng()
        rng.bit_generator.state = ck["rng"]
        result = trainer.train(start_step=int(ck["step"]), rng=rng, progress=progress, lr=ck.get("lr"), checkpoint=ck)
        if notes:
            result["recovered"] = notes
        return result
    finally:
        if substrate is None and sub is not None:
            sub.close()
        run.unlock()
