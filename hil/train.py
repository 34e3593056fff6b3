"""The training loop: measure -> rule -> update -> write, recorded in a run directory.

Each step draws a batch (seeded), asks the substrate for the rule's states,
turns the measurements into ghat and writes g <- clip(g - alpha ghat, g_min,
g_max). Row k of the log is the state after k steps (row 0: the start).

Defaults (when ``lr`` or ``nudge`` is None), derived from the circuit so that a
user need not guess S^2/V^2:

- nudge: EP's beta = 0.05 / kappa_max (siemens), 5 % of the convergence radius
  1/kappa_max of the nudged state's series (kappa_max = largest eigenvalue of
  K, ohms); CL's and AL's eta = 0.05.
- lr: alpha = 0.25 / lambda_max(H), H = mean over the training set of J^T W J,
  the Gauss-Newton curvature of the loss at the initial conductances (W = I;
  W = K^-1 for CL, whose update descends L_K). 1 / lambda_max is the largest
  stable step at the start; the curvature grows as small conductances shrink
  (J ~ dV / g), and on the shipped net16 a full step oscillates, so the default
  keeps a factor of 4 in hand (measured: every shipped circuit trains without
  oscillation at 0.25, net16 does not at 0.5).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from hil.circuit import Circuit
from hil.progress import Progress
from hil.rules import Rule, make_rule
from hil.runs import Run, plot_losses
from hil.substrate import Free, Substrate
from hil.tasks import Task

LR_FRACTION = 0.25


@dataclass
class TrainConfig:
    """What a run needs besides its circuit and task. Units: lr in S^2/V^2, nudge in S (EP) or 1 (CL, AL)."""

    rule: str = "ep-sym"
    nudge: float | None = None
    points: int | None = None
    lr: float | None = None
    steps: int = 1000
    batch: int | None = None          # None: the whole training set every step
    seed: int = 0
    checkpoint_every: int | None = None   # None: about 20 checkpoints a run
    backend: str = "ideal"
    backend_options: dict = field(default_factory=dict)
    kappa_max: float | None = None    # ohms; measured on the substrate at the start, then fixed


def curvature(circuit: Circuit, g, X, weight=None) -> float:
    """lambda_max of H = mean_i J_i^T W J_i (V^2/S^2), the Gauss-Newton curvature of the loss in g."""
    from hil.exact import jacobian

    J = jacobian(circuit, X, g)
    M = J @ J.T
    if weight is not None:
        M = M @ np.kron(np.eye(len(np.atleast_2d(X))), weight)
    return float(np.max(np.linalg.eigvals(M).real)) / len(np.atleast_2d(X))


def default_lr(circuit: Circuit, g, X, rule: Rule) -> float:
    """alpha = LR_FRACTION / lambda_max(H) (S^2/V^2); see the module docstring."""
    from hil.exact import output_green

    W = np.linalg.inv(output_green(circuit, g)) if rule.descends == "L_K" else None
    return LR_FRACTION / curvature(circuit, g, X, W)


def open_substrate(circuit: Circuit, backend: str = "ideal", **options) -> Substrate:
    """The substrate called ``backend`` holding ``circuit``."""
    if backend == "ideal":
        from hil.ideal import IdealSubstrate
        return IdealSubstrate(circuit, **options)
    if backend == "ngspice":
        from hil.spice.substrate import NgSpiceSubstrate
        return NgSpiceSubstrate(circuit, **options)
    if backend == "bench":
        from hil.drivers.bench import BenchSubstrate
        if "bench" not in options:
            raise ValueError("backend bench needs a bench file (--bench FILE; `hil emulate` writes one)")
        return BenchSubstrate(circuit, options["bench"], from_board=bool(options.get("from_board")))
    raise ValueError(f"unknown backend '{backend}' (known: ideal, ngspice, bench)")


class Trainer:
    """Runs (or resumes) the loop for one run directory."""

    def __init__(self, run: Run, circuit: Circuit, task: Task, config: TrainConfig, substrate: Substrate):
        self.run, self.circuit, self.task, self.cfg, self.sub = run, circuit, task, config, substrate
        self.message_counts = {}
        self.rule = make_rule(config.rule, config.nudge, config.points)
        if config.kappa_max is None:
            config.kappa_max = float(np.linalg.eigvalsh(substrate.output_green()).max())
        self.rule.configure(config.kappa_max)
        if config.nudge is None:
            config.nudge = self.rule.nudge
        if config.lr is None:
            config.lr = default_lr(circuit, substrate.read(), task.X_train, self.rule)

    def losses(self) -> tuple:
        """(train, test) loss at the conductances now written, V^2."""
        t = self.task
        train = self.sub.measure(t.X_train, t.Y_train, [Free()]).loss()
        test = self.sub.measure(t.X_test, t.Y_test, [Free()]).loss() if len(t.X_test) else float("nan")
        return train, test

    def _rates(self, loss, g) -> dict:
        """Measured loss decay rate per step (last quarter of the run) beside the coercivity prediction at g."""
        from hil.analysis.coercivity import measured_rate, pinned
        from hil.exact import coercivity, output_green

        c, X = self.circuit, self.task.X_train
        if len(loss) < 20 or len(X) * len(c.outputs) * c.m > 5e6:
            return {}
        meas = measured_rate(loss)
        try:
            W = np.linalg.inv(output_green(c, g)) if self.rule.descends == "L_K" else None
            cc = coercivity(c, X, g, weight=W, active=~pinned(c, g))
        except Exception:  # a prediction is a courtesy; never lose a run over it
            return {"measured_rate": meas}
        pred = float(1 - (1 - self.cfg.lr * cc) ** 2)
        out = {"measured_rate": meas, "predicted_rate": pred, "coercivity": cc}
        k0 = int(len(loss) * 0.75)
        if np.isfinite(meas) and loss[k0] > 0:
            k = np.arange(k0, len(loss))
            out["_lines"] = {f"predicted decay ({pred:.3g}/step)": (k, loss[k0] * (1 - pred) ** (k - k0)),
                             f"measured ({meas:.3g}/step)": (k, loss[k0] * (1 - meas) ** (k - k0))}
        return out

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

    def train(self, start_step: int = 0, rng=None, progress: bool | None = None) -> dict:
        cfg, t, c = self.cfg, self.task, self.circuit
        rng = rng or np.random.default_rng(cfg.seed)
        every = cfg.checkpoint_every or max(1, cfg.steps // 20)
        g = self.sub.read()
        lo, hi = c.g_min, c.g_max
        n = t.n_train
        batch = n if not cfg.batch or cfg.batch >= n else cfg.batch
        t0 = time.perf_counter()
        pending = []
        if start_step == 0:
            tr, te = self.losses()
            pending.append(dict(step=0, train_loss=tr, test_loss=te, grad_norm=float("nan"), seconds=0.0))
            self.run.save_checkpoint(0, g, rng.bit_generator.state)
        else:
            logged = self.run.read_log()["step"]
            if not len(logged) or logged[-1] < start_step:
                # the run stopped after this step's write but before its losses were logged:
                # they follow from the checkpoint's conductances (the gradient norm is gone)
                tr, te = self.losses()
                pending.append(dict(step=start_step, train_loss=tr, test_loss=te, grad_norm=float("nan"),
                                    seconds=0.0))
        step = start_step
        rng_before = rng.bit_generator.state
        try:
            with Progress(cfg.steps - start_step, f"train {cfg.rule}", enabled=progress) as bar:
                while step < cfg.steps:
                    rng_before = rng.bit_generator.state  # an unfinished step is redone from here
                    idx = np.arange(n) if batch == n else rng.choice(n, batch, replace=False)
                    meas = self.sub.measure(t.X_train[idx], t.Y_train[idx], self.rule.states())
                    ghat = self.rule.estimate(meas)
                    g = self.sub.write(np.clip(g - cfg.lr * ghat, lo, hi))
                    step += 1
                    rng_before = rng.bit_generator.state
                    tr, te = self.losses()
                    pending.append(dict(step=step, train_loss=tr, test_loss=te,
                                        grad_norm=float(np.linalg.norm(ghat)), seconds=time.perf_counter() - t0))
                    if step % every == 0 or step == cfg.steps:
                        self._diagnostics(step)
                        self.run.append_log(pending)
                        pending = []
                        self.run.save_checkpoint(step, g, rng.bit_generator.state)
                    bar.update(step - start_step, loss=tr)
        except BaseException:
            # keep every step that completed: log and checkpoint agree on `step`, and the
            # random state is the one the unfinished step started from
            if pending:
                self.run.append_log(pending)
            self.run.save_checkpoint(step, g, rng_before)
            raise
        log = self.run.read_log()
        rates = self._rates(log["train_loss"], g)
        plot_losses(self.run, rates.pop("_lines", None))
        result = {"initial_loss": float(log["train_loss"][0]), "final_loss": float(log["train_loss"][-1]),
                  "steps": int(step), "run_dir": str(self.run.path)}
        if self.message_counts:
            result["substrate_messages"] = self.message_counts
        result.update(rates)
        from hil.runs import write_json
        write_json(self.run.path / "result.json", result)
        return result


def start_run(circuit: Circuit, task: Task, config: TrainConfig, out, progress: bool | None = None,
              substrate: Substrate | None = None) -> dict:
    """Train ``circuit`` on ``task`` from scratch, recording into the run directory ``out``."""
    sub = substrate or open_substrate(circuit, config.backend, **config.backend_options)
    try:
        if getattr(sub, "from_board", False):  # the run records where it really started
            circuit = circuit.with_g(sub.read())
        trainer = Trainer(Run(out), circuit, task, config, sub)
        cfg = asdict(config)
        cfg.update(circuit_name=circuit.name, circuit_source=circuit.source, task=task.description,
                   rule_description=trainer.rule.describe())
        trainer.run.create(cfg, circuit.to_toml(), task.to_dict())
        return trainer.train(progress=progress)
    finally:
        if substrate is None:
            sub.close()


def resume_run(out, steps: int | None = None, progress: bool | None = None,
               substrate: Substrate | None = None) -> dict:
    """Continue the run in ``out`` from its last checkpoint, exactly as if it had not stopped.

    ``steps`` raises the run's total step count.
    """
    from hil.circuit import load_circuit
    from hil.runs import read_json, write_json

    run = Run(out)
    ck = run.load_checkpoint()
    raw = run.config
    known = TrainConfig.__dataclass_fields__
    config = TrainConfig(**{k: v for k, v in raw.items() if k in known})
    if steps is not None:
        config.steps = steps
        raw["steps"] = steps
        write_json(run.path / "config.json", raw)
    circuit = load_circuit(run.path / "circuit.toml")
    task = Task.from_dict(read_json(run.path / "task.json"))
    sub = substrate or open_substrate(circuit, config.backend, **config.backend_options)
    try:
        sub.write(ck["g"])
        trainer = Trainer(run, circuit, task, config, sub)
        run.truncate_log(ck["step"])
        rng = np.random.default_rng()
        rng.bit_generator.state = ck["rng"]
        return trainer.train(start_step=ck["step"], rng=rng, progress=progress)
    finally:
        if substrate is None:
            sub.close()
