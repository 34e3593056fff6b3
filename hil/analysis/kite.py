"""The kite: a mirror symmetry that makes the coercivity constant vanish (circuits/kite.toml).

The shipped kite is mirror-symmetric (left <-> right, inputs, ground and both
outputs on the axis). At a symmetric teacher rank J = 1 of 2: only the common
mode out1 + out2 moves to first order, and the loss along out1 - out2 is quartic.
An antisymmetric perturbation of size ``a``, g_e -> g_e exp(a s_e) with s_e = +-1
of :data:`ASYMMETRY`, restores rank 2 with a constant that grows like a^2.

:func:`experiment` trains from a start near each teacher and measures how the
loss decays: a straight line on a log scale where the teacher is asymmetric, a
stall (algebraic decay, the local rate falling as training goes on) at the
symmetric teacher.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from hil.analysis import coercivity as co
from hil.circuit import Circuit, load_circuit
from hil.circuits import perturb
from hil.runs import Run
from hil.tasks import circuit_teacher_task
from hil.train import TrainConfig, start_run

# +1: raises V_left over V_right and pulls out1 towards left, out2 towards right; -1 its mirror image.
ASYMMETRY = {"in_left": +1, "in_right": -1, "left_gnd": -1, "right_gnd": +1,
             "left_out1": +1, "right_out1": -1, "left_out2": -1, "right_out2": +1}


def asymmetric(c: Circuit, a: float) -> Circuit:
    """The kite with g_e -> g_e exp(a s_e), s_e = ASYMMETRY[edge] (a dimensionless; a = 0: unchanged)."""
    missing = [e for e in ASYMMETRY if e not in c.edge_names]
    if missing:
        raise ValueError(f"{c.source}: not a kite: no edge {', '.join(missing)}")
    s = np.array([ASYMMETRY.get(name, 0) for name in c.edge_names], float)
    return c.with_g(c.g * np.exp(a * s))


def experiment(asymmetries=(0.0, 0.1, 0.2, 0.4), rules=("gd", "ep-sym", "cl"), steps: int = 3000,
               start_scales=(0.1,), seed: int = 7, examples: int = 16, kite: Circuit | None = None,
               out=None) -> dict:
    """Train the kite towards teachers of growing asymmetry from a start near each.

    For each asymmetry a and start scale s: teacher g* = the kite with
    :func:`asymmetric` (a); start = :func:`hil.circuits.perturb` (teacher, s, seed);
    inputs uniform in [-1, 1] V (seed 0). Returns {'rows': [{a, start_scale, rule,
    rank, constraints, constant (V^2/S^2, at the teacher), constant_end (at the
    final conductances), initial_loss, final_loss (V^2), loss_at (step -> loss),
    measured_rate, predicted_rate (per step, the trainer's, at the end)}],
    'curves': {(a, s, rule): loss per step}, 'teachers': {a: :func:`coercivity.report`
    at the teacher}}.

    At a = 0 the solutions near the start form two branches that cross at the
    symmetric point (wings balanced, V_left = V_right, or bridles balanced); the
    run lands on one at a distance ~ s from the crossing, where the constant is ~ s^2:
    the closer the start, the slower the decay.
    """
    kite = kite or load_circuit("kite")
    rows, curves, teachers = [], {}, {}
    for a in asymmetries:
        teacher = asymmetric(kite, a)
        task = circuit_teacher_task(teacher, teacher, 0, examples)
        at = teachers[a] = co.report(teacher, task.X_train)
        for s, rule in ((s, r) for s in start_scales for r in rules):
            start = perturb(teacher, s, seed)
            with tempfile.TemporaryDirectory() as tmp:
                run_dir = Path(out) / f"kite-a{a:g}-s{s:g}-{rule}" if out else Path(tmp) / "run"
                res = start_run(start, task, TrainConfig(rule=rule, steps=steps), run_dir, progress=False)
                L = np.asarray(Run(run_dir).read_log()["train_loss"], float)
            curves[(a, s, rule)] = L
            rows.append({"a": a, "start_scale": s, "rule": rule, "rank": at["rank"],
                         "constraints": at["constraints"], "constant": at["constant"],
                         "constant_end": res.get("coercivity"), "initial_loss": float(L[0]),
                         "final_loss": float(L[-1]),
                         "loss_at": {k: float(L[min(k, len(L) - 1)]) for k in (steps // 10, steps // 3, steps)},
                         "measured_rate": res.get("measured_rate"), "predicted_rate": res.get("predicted_rate")})
    return {"rows": rows, "curves": curves, "teachers": teachers}


def plot(curves: dict, path, rule: str = "ep-sym") -> Path:
    """Loss against step for each (asymmetry, start scale), one rule, log scale (PNG)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.6, 4.2))
    for (a, s, r), L in sorted(curves.items()):
        if r == rule:
            ax.semilogy(np.arange(len(L)), np.maximum(L, 1e-32), ls="-" if a else "--",
                        label=f"a = {a:g}, start {s:g}" + (" (symmetric teacher)" if a == 0 else ""))
    ax.set_xlabel("step")
    ax.set_ylabel("train loss C (V$^2$)")
    ax.set_title(f"kite, {rule}: teachers exp(+-a) away from the mirror symmetry")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
