"""Training layered circuits: substrate, rules (gd, fa, ep-sym), the factorisation task, the loop.

docs/math.md, section 8. The data path is the same as for the
reciprocal networks: circuit -> substrate (:class:`LayeredIdealSubstrate`, or
:class:`LayeredNgSpiceSubstrate` with an op-amp model)
-> measurements (:class:`LayeredMeasurements`: each stage's forward signal,
backward signals, nudged stage outputs) -> rule -> ghat -> g <- clip(g - alpha
ghat, g_min, g_max) -> substrate.

Notation: stage k maps h_k (d_k input lines, volts) to h_(k+1) = W_k h_k,
W_k = diag(R_k) (G+_k - G-_k). C = mean over the batch of 1/2 ||o - y||^2 (V^2),
e = o - y. The backward signal on stage k's summing lines is delta_(k+1)
(volts): delta_L = e, and

- ``gd`` (weight transport): delta_k = W_k^T delta_(k+1), a backward crossbar
  programmed with the forward conductances (exact, not local);
- ``fa`` (feedback alignment): delta_k = B_k delta_(k+1), B_k a fixed random
  feedback crossbar (d_k x d_(k+1)) drawn once from the run's seed;

and every crosspoint updates from its row's backward signal and its column's
forward signal, ghat(g+_ji) = R_j mean_b delta_(k+1),j h_k,i = -ghat(g-_ji)
(V^2/S): a local outer product.

``ep-sym``: a current beta (y_j - o_j) (beta in siemens) is injected into each
last-stage summing line; the one-way buffers keep it from every earlier stage.
A crosspoint reads its input line h_k,i and its stage's output h_(k+1),j in
the two nudged states, ghat(g+_ji) = -h_k,i [h_(k+1),j(beta) - h_(k+1),j(-beta)]
/ (2 beta). On the last stage, h_L(beta) = (o + R beta y) / (1 + R beta), so
ghat = R e h / (1 - R^2 beta^2): the gradient with an O(beta^2) bias. On every
earlier stage the nudged outputs equal the free ones: ghat = 0 exactly. (The
co-content 1/2 g dV^2 is no help here: a virtual ground pins every
crosspoint's drop at h_k,i, so it is the same in every state.)
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from hil import layered as ly
from hil.layered import LayeredCircuit
from hil.progress import Progress
from hil.runs import LOG_FIELDS, Run, RunError, plot_losses, write_json
from hil.tasks import Task, TaskError

LR_FRACTION = 0.25
LR_EVERY = 10
FEEDBACK_FILE = "feedback.json"


# -- substrate ---------------------------------------------------------------------

@dataclass(frozen=True)
class Forward:
    key = "forward"


@dataclass(frozen=True)
class Backward:
    """The backward pass driven with the measured output error: via 'transpose' (weight transport) or 'feedback' (B)."""

    via: str

    @property
    def key(self):
        return ("backward", self.via)


@dataclass(frozen=True)
class OutputNudge:
    """Current beta (y - o) (A; beta in S) injected into the last stage's summing lines, closed loop."""

    beta: float

    @property
    def key(self):
        return ("nudge", float(self.beta))


@dataclass
class LayeredMeasurements:
    """What one batch's experiments measured.

    signals : dict state.key -> list over stages: forward h_0..h_L (Forward, Nudge: (N, d_k) volts),
              backward delta_1..delta_L (Backward: delta_(k+1) on stage k's summing lines, volts).
    """

    circuit: LayeredCircuit
    inputs: np.ndarray
    targets: np.ndarray
    signals: dict

    def __getitem__(self, state):
        return self.signals[state.key]

    @property
    def residual(self) -> np.ndarray:
        """e = o - y in the free state, (N, d_L) volts."""
        return self.signals["forward"][-1] - self.targets

    def loss(self) -> float:
        r = self.residual
        return float(np.mean(0.5 * np.sum(r * r, axis=1)))


class LayeredIdealSubstrate:
    """The exact ideal model of a layered circuit (ideal op-amps): the matrix products of :mod:`hil.layered`.

    ``feedback``: the feedback crossbars' matrices B_k (d_k x d_(k+1), k = 1..L-1), set by the trainer.
    """

    def __init__(self, circuit: LayeredCircuit, g=None):
        self.circuit = circuit
        self._g = circuit.check_g(circuit.g if g is None else g).copy()
        self.feedback = None

    def read(self) -> np.ndarray:
        return self._g.copy()

    def write(self, g) -> np.ndarray:
        self._g = self.circuit.check_g(g).copy()
        return self.read()

    def measure(self, X, Y, states) -> LayeredMeasurements:
        c = self.circuit
        X, Y = np.atleast_2d(np.asarray(X, float)), np.atleast_2d(np.asarray(Y, float))
        h = ly.forward(c, X, self._g)
        sig = {"forward": h}
        W = c.weights(self._g)
        for s in states:
            if isinstance(s, Backward):
                sig[s.key] = self._backward(W, h[-1] - Y, s.via)
            elif isinstance(s, OutputNudge):
                R, b = c.r_f[-1], s.beta
                sig[s.key] = h[:-1] + [(h[-1] + R * b * Y) / (1 + R * b)]
            elif not isinstance(s, Forward):
                raise ValueError(f"layered circuits have no state {s!r}")
        return LayeredMeasurements(c, X, Y, sig)

    def _backward(self, W, e, via) -> list:
        if via == "feedback" and self.feedback is None:
            raise ValueError("fa: no feedback crossbars installed on the substrate")
        mats = [w.T for w in W[1:]] if via == "transpose" else list(self.feedback)
        delta = [None] * len(W)
        delta[-1] = e
        for k in range(len(W) - 1, 0, -1):
            delta[k - 1] = delta[k] @ mats[k - 1].T
        return delta

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class LayeredNgSpiceSubstrate(LayeredIdealSubstrate):
    """The layered circuit in ngspice (:mod:`hil.spice.layered`), op-amps of model ``opamp``.

    Forward: every stage's buffer outputs at the operating point. Backward: the backward
    crossbar is itself a one-stage layered circuit driven with e (and -e): for ``fa`` the
    feedback crossbar's stored pairs, for ``gd`` the next stage's pairs transposed (its
    feedback resistances must then be equal: R (G+ - G-)^T = W^T only for a uniform R).
    The output nudge of ``ep-sym`` (a current into the summing lines) is not built yet.
    """

    def __init__(self, circuit: LayeredCircuit, g=None, opamp=None):
        super().__init__(circuit, g)
        self.opamp = opamp or ly.OpAmp()
        self.feedback_pairs = None

    def measure(self, X, Y, states) -> LayeredMeasurements:
        from hil.spice.layered import ngspice_forward
        c = self.circuit
        X, Y = np.atleast_2d(np.asarray(X, float)), np.atleast_2d(np.asarray(Y, float))
        h = ngspice_forward(c, X, self._g, self.opamp)
        sig = {"forward": h}
        for s in states:
            if isinstance(s, Backward):
                sig[s.key] = self._spice_backward(h[-1] - Y, s.via)
            elif isinstance(s, OutputNudge):
                raise ValueError("ngspice: the output nudge of ep-sym on layered circuits is not built yet "
                                 "(use --backend ideal)")
            elif not isinstance(s, Forward):
                raise ValueError(f"layered circuits have no state {s!r}")
        return LayeredMeasurements(c, X, Y, sig)

    def _stage(self, k, via) -> LayeredCircuit:
        """The backward crossbar from stage k's summing lines to its input lines, as a one-stage circuit."""
        c = self.circuit
        if via == "feedback":
            if self.feedback_pairs is None:
                raise ValueError("fa: no feedback crossbars installed on the substrate")
            fb = self.feedback_pairs[k - 1]
            gp, gm = np.array(fb["g_plus"]), np.array(fb["g_minus"])
            R = np.full(gp.shape[0], float(fb["r_f"]))
        else:
            gps, gms = c.unpack(self._g)
            if np.ptp(c.r_f[k]) != 0:
                raise ValueError(f"gd on ngspice: stage {c.layer_names[k]} has unequal feedback resistances; the "
                                 "transposed crossbar realises W^T only for a uniform R_f")
            gp, gm = gps[k].T, gms[k].T
            R = np.full(gp.shape[0], float(c.r_f[k][0]))
        return LayeredCircuit(f"{c.name}_back{k}", ("B",), (gp,), (gm,), (R,), c.g_min, c.g_max, c.r_inv, c.source)

    def _spice_backward(self, e, via) -> list:
        from hil.spice.layered import ngspice_forward
        n = self.circuit.n_layers
        delta = [None] * n
        delta[-1] = e
        for k in range(n - 1, 0, -1):
            delta[k - 1] = ngspice_forward(self._stage(k, via), delta[k], None, self.opamp)[-1]
        return delta


def open_layered_substrate(circuit: LayeredCircuit, backend: str = "ideal", **options):
    """The substrate for a layered circuit: 'ideal' (exact) or 'ngspice' (options: opamp, an OpAmp)."""
    if backend == "ideal":
        return LayeredIdealSubstrate(circuit)
    if backend == "ngspice":
        return LayeredNgSpiceSubstrate(circuit, opamp=options.get("opamp"))
    if backend == "bench":
        raise ValueError(f"{circuit.source}: the bench cannot hold a layered circuit: there is no board with two "
                         "crossbars, transimpedance stages and buffers yet (see drivers/LAYERED.md)")
    raise ValueError(f"{circuit.source}: backend '{backend}' does not run layered circuits (ideal, ngspice)")


# -- feedback crossbars -------------------------------------------------------------

def draw_feedback(c: LayeredCircuit, seed: int, scale: float = 1.0) -> dict:
    """The fixed random feedback crossbars B_k (k = 1..L-1), drawn once from ``seed``.

    Each is a differential pair array like a forward layer: B_k = R_k^fb (G+ - G-),
    d_k x d_(k+1), with R^fb = the forward stage's feedback resistance and entries
    B ~ N(0, scale^2 / d_(k+1)), realised as g+- = g_c +- B / (2 R) clipped into
    [g_min, g_max] (the matrix stored is the one the clipped pairs realise).
    """
    rng = np.random.default_rng([int(seed), 0xFA])
    gc = 0.5 * (c.g_min + c.g_max)
    out = []
    for k in range(1, c.n_layers):
        d_in, d_out = c.sizes[k], c.sizes[k + 1]
        R = float(c.r_f[k - 1][0]) if np.ptp(c.r_f[k - 1]) == 0 else float(np.mean(c.r_f[k - 1]))
        B = rng.standard_normal((d_in, d_out)) * scale / np.sqrt(d_out)
        gp = np.clip(gc + B / (2 * R), c.g_min, c.g_max)
        gm = np.clip(gc - B / (2 * R), c.g_min, c.g_max)
        out.append({"for_layer": c.layer_names[k], "r_f": R, "g_plus": gp.tolist(), "g_minus": gm.tolist(),
                    "B": (R * (gp - gm)).tolist()})
    return {"seed": int(seed), "crossbars": out}


def feedback_matrices(fb: dict) -> list:
    """The B_k matrices (volts per volt) of a :func:`draw_feedback` record."""
    return [np.array(x["B"], float) for x in fb["crossbars"]]


# -- rules -----------------------------------------------------------------------------

class LayeredRule:
    """A rule on a layered circuit: states to measure, and ghat (P,) V^2/S from them."""

    name = "rule"
    uses_nudge = False

    def __init__(self, nudge=None):
        if nudge is not None and not (np.isfinite(nudge) and nudge > 0):
            raise ValueError(f"rule {self.name}: nudge must be a positive finite number, got {nudge!r}")
        self.nudge = nudge

    def configure(self, circuit: LayeredCircuit) -> "LayeredRule":
        return self

    def describe(self) -> str:
        return self.name + (f" nudge={self.nudge:g} S" if self.uses_nudge else "")


def outer_product_update(c: LayeredCircuit, h, delta) -> np.ndarray:
    """ghat(g+-_ji) = +-R_j mean_b delta_(k+1),j h_k,i for every stage (V^2/S): each crosspoint's local update."""
    return ly.weight_gradient_to_g(c, [d.T @ hk / len(hk) for d, hk in zip(delta, h[:-1])])


class LayeredGD(LayeredRule):
    """Weight transport: the backward pass through the transposed weights; ghat = dC/dg exactly."""

    name = "gd"

    def states(self):
        return [Forward(), Backward("transpose")]

    def estimate(self, meas):
        return outer_product_update(meas.circuit, meas[Forward()], meas[Backward("transpose")])


class FeedbackAlignment(LayeredRule):
    """FA: the backward pass through the fixed random feedback crossbars B_k."""

    name = "fa"

    def states(self):
        return [Forward(), Backward("feedback")]

    def estimate(self, meas):
        return outer_product_update(meas.circuit, meas[Forward()], meas[Backward("feedback")])


class LayeredEPSym(LayeredRule):
    """Symmetric EP through the outputs: the last stage's gradient to O(beta^2), zero for every earlier stage."""

    name, uses_nudge = "ep-sym", True

    def configure(self, circuit):
        if self.nudge is None:  # 5 % of 1/R: the last stage's loop gain R beta = 0.05
            self.nudge = 0.05 / float(np.max(circuit.r_f[-1]))
        return self

    def states(self):
        return [Forward(), OutputNudge(self.nudge), OutputNudge(-self.nudge)]

    def estimate(self, meas):
        c, b = meas.circuit, self.nudge
        h, hp, hm = meas[Forward()], meas[OutputNudge(b)], meas[OutputNudge(-b)]
        # -h_k,i [h_(k+1),j(b) - h_(k+1),j(-b)] / (2b), mean over the batch, as the weight-shaped matrix per stage
        dW = [-(p - m).T @ x / (2 * b * len(x)) / r[:, None] for p, m, x, r in zip(hp[1:], hm[1:], h[:-1], c.r_f)]
        return ly.weight_gradient_to_g(c, dW)


LAYERED_RULES = {r.name: r for r in (LayeredGD, FeedbackAlignment, LayeredEPSym)}


def make_layered_rule(name: str, nudge=None) -> LayeredRule:
    if name not in LAYERED_RULES:
        raise ValueError(f"rule '{name}' does not run on layered circuits (known there: {', '.join(LAYERED_RULES)})")
    return LAYERED_RULES[name](nudge)


# -- the factorisation task ----------------------------------------------------------------

def factorize_task(c: LayeredCircuit, rank: int, seed: int = 0, scale: float = 1.0, inputs: str = "onehot",
                   examples: int | None = None) -> Task:
    """Y ~= Z W: a target map Y (d_L x d_0) of rank ``rank``, singular values scale * linspace(1, 0.5, rank) (V/V).

    Y = U diag(s) V^T with U, V random orthonormal (seeded). ``inputs``: 'onehot'
    (the d_0 unit vectors, 1 V: the targets are Y's columns; no test split) or
    'random' (``examples`` inputs N(0, 1) V, default 4 d_0, and a quarter more held
    out); targets y = Y x. meta holds Y and the rank.
    """
    m, n = c.sizes[0], c.sizes[-1]
    if not isinstance(rank, int) or rank < 1 or rank > min(m, n):
        raise TaskError(f"factorize: --rank {rank} must be between 1 and min(inputs, outputs) = {min(m, n)} "
                        f"for {c.name} (sizes {','.join(map(str, c.sizes))})")
    if not np.isfinite(scale) or scale <= 0:
        raise TaskError(f"factorize: --scale {scale} must be a positive number (volts per volt)")
    rng = np.random.default_rng([int(seed), 0xF0])
    U = np.linalg.qr(rng.standard_normal((n, rank)))[0]
    V = np.linalg.qr(rng.standard_normal((m, rank)))[0]
    Y = U @ np.diag(scale * np.linspace(1.0, 0.5, rank)) @ V.T
    if inputs == "onehot":
        X, Xt = np.eye(m), np.zeros((0, m))
    elif inputs == "random":
        N = 4 * m if examples is None else int(examples)
        if N < 1:
            raise TaskError(f"factorize: --examples {N} must be at least 1")
        Xall = rng.standard_normal((N + max(1, N // 4), m))
        X, Xt = Xall[:N], Xall[N:]
    else:
        raise TaskError(f"factorize: --inputs {inputs!r}: expected onehot or random")
    return Task(X, X @ Y.T, Xt, Xt @ Y.T,
                description=f"factorize rank={rank} scale={scale:g} inputs={inputs} seed={seed}",
                meta={"Y": Y.tolist(), "rank": rank, "scale": scale, "inputs": inputs, "seed": seed})


def eckart_young(X, Y, r: int) -> float:
    """The least loss mean 1/2 ||M x - y||^2 over maps M of rank <= r (V^2).

    With P the projector onto the column space of X (N x d_0): the part of the
    targets no linear map reaches, ||(I - P) Y||^2, plus the tail of P Y's
    singular values beyond r (Eckart-Young), over 2N.
    """
    X, Y = np.atleast_2d(X), np.atleast_2d(Y)
    Q = np.linalg.qr(X)[0][:, :np.linalg.matrix_rank(X)]
    PY = Q @ (Q.T @ Y)
    s = np.linalg.svd(PY, compute_uv=False)
    return float((np.sum((Y - PY) ** 2) + np.sum(s[r:] ** 2)) / (2 * len(X)))


def relative_excess(loss_value: float, X, Y, r: int) -> float:
    """(C - C*) / C_0: the loss above the rank-r optimum C* as a fraction of the zero map's loss C_0 (C* may be 0)."""
    c0 = float(np.sum(np.atleast_2d(Y) ** 2) / (2 * len(X)))
    return (loss_value - eckart_young(X, Y, r)) / c0


def alignment_angle(c: LayeredCircuit, g, B) -> float:
    """The angle (degrees) between the last stage's forward weights W_(L-1) and B_(L-1)^T (Frobenius inner product)."""
    Z = c.weights(g)[-1]
    Bt = np.asarray(B).T
    cos = float(np.sum(Z * Bt) / (np.linalg.norm(Z) * np.linalg.norm(Bt)))
    return float(np.degrees(np.arccos(np.clip(cos, -1, 1))))


# -- training --------------------------------------------------------------------------

@dataclass
class LayeredConfig:
    """A layered run's settings. lr in S^2/V^2 (g <- g - lr ghat); None: 0.25 / :func:`curvature`,
    re-estimated every 10 steps."""

    rule: str = "fa"
    nudge: float | None = None
    lr: float | None = None
    lr_every: int | None = None
    steps: int = 1000
    seed: int = 0
    checkpoint_every: int | None = None
    backend: str = "ideal"
    circuit_kind: str = "layered"
    opamp_gain: float | None = None   # ngspice: the op-amps' gain (V/V); None: ideal
    opamp_rin: float | None = None    # ngspice: their input resistance (ohms); None: infinite
    feedback_seed: int | None = None


def curvature(c: LayeredCircuit, g, X, Y) -> float:
    """An estimate of the loss's largest curvature in g (V^2/S^2): the Gauss-Newton part
    lambda_max(mean_b J_b^T J_b) (J = do/dg) plus the residual part's bound 2 R_max^2 ||E^T X|| / N.

    The residual part matters at a small start (the Gauss-Newton part vanishes with the weights,
    while the cross derivatives d^2C / dW_k dW_(k+1) are E^T X / N, of any size).
    """
    X = np.atleast_2d(X)
    J = ly.jacobian(c, X, g)
    E = ly.forward(c, X, g)[-1] - np.atleast_2d(Y)
    R = max(float(np.max(r)) for r in c.r_f)
    return float(np.linalg.norm(J, 2) ** 2 / len(X) + 2 * R * R * np.linalg.norm(E.T @ X, 2) / len(X))


def default_lr(c: LayeredCircuit, g, X, Y) -> float:
    """LR_FRACTION / :func:`curvature` (S^2/V^2)."""
    return LR_FRACTION / curvature(c, g, X, Y)


class LayeredTrainer:
    """The loop for one layered run directory (same files as :mod:`hil.train`, plus feedback.json)."""

    def __init__(self, run: Run, circuit: LayeredCircuit, task: Task, cfg: LayeredConfig, sub, feedback=None):
        self.run, self.c, self.task, self.cfg, self.sub = run, circuit, task, cfg, sub
        run.circuit = circuit  # each checkpoint leaves the trained circuit (trained.toml)
        self.rule = make_layered_rule(cfg.rule, cfg.nudge).configure(circuit)
        cfg.nudge = self.rule.nudge
        if cfg.feedback_seed is None:
            cfg.feedback_seed = cfg.seed
        self.feedback = feedback or draw_feedback(circuit, cfg.feedback_seed)
        sub.feedback = feedback_matrices(self.feedback) if circuit.n_layers > 1 else None
        if hasattr(sub, "feedback_pairs"):
            sub.feedback_pairs = self.feedback["crossbars"]
        if cfg.lr is None:
            cfg.lr = default_lr(circuit, sub.read(), task.X_train, task.Y_train)
            cfg.lr_every = LR_EVERY if cfg.lr_every is None else cfg.lr_every

    def _row(self, step, g, ghat_norm, t0, lr) -> dict:
        t = self.task
        tr = self.sub.measure(t.X_train, t.Y_train, [Forward()]).loss()
        te = self.sub.measure(t.X_test, t.Y_test, [Forward()]).loss() if len(t.X_test) else float("nan")
        ang = alignment_angle(self.c, g, self.sub.feedback[-1]) if self.sub.feedback else float("nan")
        return dict(step=step, train_loss=tr, test_loss=te, grad_norm=ghat_norm, seconds=time.perf_counter() - t0,
                    lr=lr, angle=ang)

    def train(self, start_step=0, lr=None, progress=None, plot=True) -> dict:
        from hil.train import sigint_flag
        cfg, t, c = self.cfg, self.task, self.c
        every = cfg.checkpoint_every or max(1, cfg.steps // 20)
        g = self.sub.read()
        alpha = cfg.lr if lr is None else lr
        t0 = time.perf_counter()
        pending = []
        if start_step == 0:
            pending.append(self._row(0, g, float("nan"), t0, alpha))
            self.run.save_checkpoint(0, g, {}, {"lr": alpha})
        step = start_step
        try:
            with sigint_flag() as stop, Progress(cfg.steps - start_step, f"train {cfg.rule}", enabled=progress) as bar:
                while step < cfg.steps:
                    if stop["hits"]:
                        raise KeyboardInterrupt  # Ctrl-C, taken here between steps (never inside ngspice)
                    if cfg.lr_every and step % cfg.lr_every == 0 and step > 0:
                        alpha = default_lr(c, g, t.X_train, t.Y_train)
                    meas = self.sub.measure(t.X_train, t.Y_train, self.rule.states())
                    ghat = self.rule.estimate(meas)
                    g = self.sub.write(np.clip(g - alpha * ghat, c.g_min, c.g_max))
                    step += 1
                    pending.append(self._row(step, g, float(np.linalg.norm(ghat)), t0, alpha))
                    if step % every == 0 or step == cfg.steps:
                        self.run.append_log(pending)
                        pending = []
                        self.run.save_checkpoint(step, g, {}, {"lr": alpha})
                    bar.update(step - start_step, loss=pending[-1]["train_loss"] if pending else None)
        except BaseException:
            if pending:
                self.run.append_log(pending)
            self.run.save_checkpoint(step, g, {}, {"lr": alpha})
            raise
        log = self.run.read_log()
        if plot:
            plot_losses(self.run)
        r = c.sizes[1] if c.n_layers == 2 else min(c.sizes[1:-1])
        final = float(log["train_loss"][-1])
        result = {"initial_loss": float(log["train_loss"][0]), "final_loss": final, "steps": int(step),
                  "run_dir": str(self.run.path), "eckart_young": eckart_young(t.X_train, t.Y_train, r),
                  "relative_excess": relative_excess(final, t.X_train, t.Y_train, r),
                  "angle_start": float(log["angle"][0]), "angle_end": float(log["angle"][-1])}
        write_json(self.run.path / "result.json", result)
        return result


def _opamp(cfg: LayeredConfig):
    return ly.OpAmp(cfg.opamp_gain or float("inf"), cfg.opamp_rin or float("inf"))


def check_layered_config(cfg: LayeredConfig, where: str = "") -> LayeredConfig:
    """Refuse meaningless options of a layered run (named as ``--option``, or ``where: key``)."""
    from hil.train import ConfigError, check_fields
    check_fields(cfg, where, whole=(("steps", 1), ("seed", 0), ("checkpoint_every", 1), ("lr_every", 1),
                                    ("feedback_seed", 0)),
                 optional=("checkpoint_every", "lr_every", "feedback_seed"),
                 positive=("lr", "nudge", "opamp_gain", "opamp_rin"))
    make_layered_rule(cfg.rule, cfg.nudge)  # an unknown rule names itself
    if cfg.backend not in ("ideal", "ngspice"):
        name = f"{where}: backend =" if where else "--backend"
        raise ConfigError(f"{name} {cfg.backend!r}: layered circuits run on ideal or ngspice")
    return cfg


def start_layered_run(circuit: LayeredCircuit, task: Task, cfg: LayeredConfig, out, progress=None,
                      plot: bool = True, force: bool = False) -> dict:
    """Train a layered circuit from scratch into the run directory ``out`` (``plot``: write loss.png).

    ``out`` must be new or empty (``force``: what it holds is moved into ``out/replaced-*/``);
    the run holds ``out/run.lock`` while it trains.
    """
    check_layered_config(cfg)
    run = Run(out).prepare(force)
    try:
        sub = open_layered_substrate(circuit, cfg.backend, opamp=_opamp(cfg))
        trainer = LayeredTrainer(run, circuit, task, cfg, sub)
        conf = asdict(cfg)
        conf.update(circuit_name=circuit.name, circuit_source=circuit.source, task=task.description,
                    rule_description=trainer.rule.describe(), feedback_file=FEEDBACK_FILE)
        run.create(conf, circuit.to_toml(), task.to_dict(), fields=LOG_FIELDS + ["angle"])
        write_json(run.path / FEEDBACK_FILE, trainer.feedback)
        return trainer.train(progress=progress, plot=plot)
    finally:
        run.unlock()
        run.discard_if_unused()


def _layered_circuit(run: Run):
    from hil.circuit import load_any
    c = run.read_circuit(load_any)
    if not isinstance(c, ly.LayeredCircuit):
        raise RunError(f"{run.path / 'circuit.toml'}: not a layered circuit, but config.json says the run is one")
    return c


def resume_layered_run(out, steps=None, progress=None, changes: dict | None = None) -> dict:
    """Continue a layered run from its last good checkpoint, with the feedback crossbars it stored.

    As :func:`hil.train.resume_run`: one writer (run.lock), the files validated, a damaged
    checkpoint.json replaced by the newest good .npz, only --steps and --checkpoint-every
    may change (recorded), what was recovered said and recorded in history.log.
    """
    from hil.train import _load_task, apply_changes, checkpoint_check, say_recovered

    run = Run(out)
    run.lock()
    try:
        raw = run.config
        try:
            cfg = LayeredConfig(**{k: v for k, v in raw.items() if k in LayeredConfig.__dataclass_fields__})
        except TypeError as exc:
            raise RunError(f"{run.path / 'config.json'}: {exc}") from None
        check_layered_config(cfg, str(run.path / "config.json"))
        circuit = _layered_circuit(run)
        task = _load_task(run)
        feedback = run.read_json_file(FEEDBACK_FILE)
        ck, notes = run.recover_checkpoint(checkpoint_check(circuit.n_params, circuit.g_min, circuit.g_max,
                                                            lambda e: f"parameter {e}", rng=False))
        notes += apply_changes(run, raw, cfg, int(ck["step"]), steps, changes, check_layered_config)
        notes += run.truncate_log(ck["step"], fields=LOG_FIELDS + ["angle"])
        say_recovered(run, int(ck["step"]), notes)
        sub = open_layered_substrate(circuit, cfg.backend, opamp=_opamp(cfg))
        sub.write(ck["g"])
        trainer = LayeredTrainer(run, circuit, task, cfg, sub, feedback=feedback)
        result = trainer.train(start_step=int(ck["step"]), lr=ck.get("lr"), progress=progress)
        if notes:
            result["recovered"] = notes
        return result
    finally:
        run.unlock()
