"""The factorisation experiment on layered circuits (docs/layered.md; Garg & Vempala, AISTATS 2022).

Y (|O| x |inputs|) of rank K, one-hot inputs, two-matrix circuits of hidden width r written by
:func:`hil.circuits.layered` (the generator of ``hil generate layered``) and trained by ``gd`` (the
adjoint experiment: weight transport) and ``fa`` (feedback alignment) through the one training loop,
:func:`hil.train.start_run` (run directories under ``out/runs/factorize``). Measured: the relative
excess (C - C*) / C_0 over the rank-r optimum C* (Eckart-Young; C_0 the zero map's loss), the angle
between the last matrix Z and B^T over training, a phase diagram of the excess over (r, rank Y), and
the similarity of the hidden representations gd and fa reach (linear CKA and principal angles).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from hil.circuits import layered
from hil.matrices import weights
from hil.rules import draw_feedback
from hil.runs import Run
from hil.tasks import eckart_young, factorize_task, relative_excess
from hil.train import TrainConfig, start_run

M, N, RANK = 8, 6, 3
WIDTHS = (2, 3, 4)
SEEDS = (0, 1, 2)
STEPS = 400
#: the feedback resistance that bounds every weight to +-0.5 V/V (g in [1e-6, 1e-4] S)
TIGHT_R_F = 0.5 / (1e-4 - 1e-6)
#: the phase diagram: circuits 6-r-5, ranks and widths 1..3, two seeds
PHASE = dict(m=6, n=5, ranks=(1, 2, 3), widths=(1, 2, 3), seeds=(0, 1), steps=300)
#: ``hil report --quick`` (and the test suite): the same facts on fewer runs
QUICK = dict(widths=(2, 3), seeds=(0,), steps=300, phase=dict(m=6, n=5, ranks=(1, 2), widths=(1, 2), seeds=(0,),
                                                                 steps=300))


def hidden_width(circuit) -> int:
    """r: the narrowest line count between the matrices (the rank a product of them can have)."""
    return min(mat.shape[0] for mat in circuit.matrices[:-1]) if len(circuit.matrices) > 1 else \
        min(circuit.matrices[0].shape)


def alignment_angle(circuit, g, B) -> float:
    """The angle (degrees) between the last matrix W_(L-1) and B_(L-1)^T (Frobenius inner product)."""
    Z = weights(circuit, g)[-1]
    Bt = np.asarray(B).T
    cos = float(np.sum(Z * Bt) / (np.linalg.norm(Z) * np.linalg.norm(Bt)))
    return float(np.degrees(np.arccos(np.clip(cos, -1, 1))))


def _checkpoints(run: Run) -> list:
    """(step, theta) of every checkpoint a run kept, in step order."""
    out = []
    for f in sorted((run.path / "checkpoints").glob("step_*.npz")):
        with np.load(f) as z:
            out.append((int(z["step"]), np.array(z["g"])))
    return out


def factorize_note(run_dir) -> dict | None:
    """What a trained factorisation says beside its loss (None unless the run's task is factorize on a circuit
    with weight matrices): the rank-r optimum, the relative excess, fa's alignment angle at the start and end,
    and the matrices whose weights never moved (a rule that does not reach them)."""
    from hil.circuit import load_any
    run = Run(run_dir)
    cfg = run.config
    if not str(cfg.get("task", "")).startswith("factorize"):
        return None
    c = run.read_circuit(load_any)
    if not c.matrices:
        return None
    from hil.tasks import Task
    task = Task.from_dict(run.read_json_file("task.json"))
    g0, g1 = c.theta, run.load_checkpoint()["g"]
    final = float(run.read_log()["train_loss"][-1])
    r = hidden_width(c)
    res = {"eckart_young": eckart_young(task.X_train, task.Y_train, r),
           "relative_excess": relative_excess(final, task.X_train, task.Y_train, r), "hidden_width": r}
    text = (f"rank-{r} optimum (Eckart-Young) {res['eckart_young']:.4g} V^2, relative excess "
            f"{res['relative_excess']:.3g}")
    if cfg.get("rule") == "fa" and len(c.matrices) > 1:
        B = draw_feedback(c, cfg.get("seed", 0))[-1]
        res.update(angle_start=alignment_angle(c, g0, B), angle_end=alignment_angle(c, g1, B))
        text += f"; angle(Z, B^T) {res['angle_start']:.1f} -> {res['angle_end']:.1f} deg"
    still = [mat.name for mat in c.matrices if np.array_equal(g0[mat.plus], g1[mat.plus])]
    if still:
        res["unmoved_matrices"] = still
        text += (f"; matrix {', '.join(still)} never moved: rule {cfg.get('rule')} does not reach it through "
                 "one-way stages (gd and fa do)")
    return {"result": res, "text": text}


def train_one(out: Path, sizes, seed: int, rank: int, rule: str, steps: int, r_f: float = 1e5, scale: float = 1.0,
              tag: str = "", every: int | None = None) -> dict:
    """One circuit of the generator trained on one factorisation by the one loop; a row of results."""
    c = layered(sizes, seed=seed, r_f=r_f)
    task = factorize_task(c, rank, seed=seed, scale=scale)
    d = Path(out) / "runs" / "factorize" / f"{rule}-{'x'.join(map(str, sizes))}-k{rank}-s{seed}{tag}"
    if d.exists():
        shutil.rmtree(d)
    res = start_run(c, task, TrainConfig(rule=rule, steps=steps, seed=seed, checkpoint_every=every or steps), d,
                    progress=False, plot=False)
    run = Run(d)
    g = run.load_checkpoint()["g"]
    lo, hi = c.bounds()
    moving = hi > lo
    pinned = int(np.sum(moving & ((g <= c.g_min * (1 + 1e-9)) | (g >= c.g_max * (1 - 1e-9)))))
    r = hidden_width(c)
    B = draw_feedback(c, seed)[-1]
    angles = [(s, alignment_angle(c, th, B)) for s, th in _checkpoints(run)]
    hidden = task.X_train @ weights(c, g)[0].T  # the hidden lines' voltages h = W x, (examples, r)
    return {"rule": rule, "r": r, "rank": rank, "seed": seed, "pinned": pinned, "angles": angles, "hidden": hidden,
            "final_loss": res["final_loss"], "initial_loss": res["initial_loss"],
            "relative_excess": relative_excess(res["final_loss"], task.X_train, task.Y_train, r),
            "angle_start": angles[0][1], "angle_end": angles[-1][1]}


def experiment(out: Path, widths=WIDTHS, seeds=SEEDS, steps=STEPS, rules=("gd", "fa"), r_f=1e5, scale=1.0,
               tag="", m=M, n=N, rank=RANK) -> list:
    """Train every (rule, r, seed) on Y of rank ``rank``: rows of :func:`train_one`."""
    return [train_one(out, (m, r, n), seed, rank, rule, steps, r_f, scale, tag, every=max(1, steps // 20))
            for r in widths for seed in seeds for rule in rules]


def phase_diagram(out: Path, m=PHASE["m"], n=PHASE["n"], ranks=PHASE["ranks"], widths=PHASE["widths"],
                  seeds=PHASE["seeds"], steps=PHASE["steps"]) -> dict:
    """{(rule, r, rank): [relative excess per seed]}: the excess over Eckart-Young across widths and ranks."""
    grid = {}
    for k in ranks:
        for r in widths:
            for rule in ("gd", "fa"):
                grid[(rule, r, k)] = [train_one(out, (m, r, n), s, k, rule, steps, tag="-phase")["relative_excess"]
                                      for s in seeds]
    return grid


def linear_cka(A, B) -> float:
    """Linear CKA between representations A (N x p) and B (N x q) of the same N examples (Kornblith et al., 2019):
    ||B_c^T A_c||_F^2 / (||A_c^T A_c||_F ||B_c^T B_c||_F), columns centred; 1 for the same map up to rotation
    and scale."""
    A = A - A.mean(0)
    B = B - B.mean(0)
    return float(np.linalg.norm(B.T @ A) ** 2 / (np.linalg.norm(A.T @ A) * np.linalg.norm(B.T @ B)))


def principal_angles(A, B) -> np.ndarray:
    """The principal angles (degrees, ascending) between the column spaces of A and B (N x p, N x q)."""
    qa, qb = np.linalg.qr(A)[0], np.linalg.qr(B)[0]
    s = np.clip(np.linalg.svd(qa.T @ qb, compute_uv=False), -1, 1)
    return np.sort(np.degrees(np.arccos(s)))


def representations(rows) -> list:
    """Per (r, seed): gd's and fa's excess, CKA of their hidden representations h = W x and the largest principal
    angle between the spans of their rows (the hidden units' tuning over the inputs), and the CKA of one of them
    with a plain rotation of itself (1: what CKA says of the same representation)."""
    out = []
    for (r, s) in sorted({(x["r"], x["seed"]) for x in rows}):
        gd = next(x for x in rows if x["rule"] == "gd" and x["r"] == r and x["seed"] == s)
        fa = next(x for x in rows if x["rule"] == "fa" and x["r"] == r and x["seed"] == s)
        out.append({"r": r, "seed": s, "gd_excess": gd["relative_excess"], "fa_excess": fa["relative_excess"],
                    "cka": linear_cka(gd["hidden"], fa["hidden"]),
                    "max_angle": float(np.max(principal_angles(gd["hidden"], fa["hidden"]))),
                    "unit_cos": _unit_match(gd["hidden"], fa["hidden"])})
    return out


def _unit_match(A, B) -> float:
    """The mean over gd's hidden units of the best |cos| with any fa unit (tuning over the inputs): 1 when the
    same units (up to order and sign) are found."""
    na = A / np.maximum(np.linalg.norm(A, axis=0), 1e-300)
    nb = B / np.maximum(np.linalg.norm(B, axis=0), 1e-300)
    return float(np.mean(np.max(np.abs(na.T @ nb), axis=1)))


def _plot(rows, grid, path_excess: Path, path_angle: Path, path_phase: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for k, rule in enumerate(("gd", "fa")):
        pts = [(r["r"] + (k - 0.5) * 0.12, max(r["relative_excess"], 1e-16)) for r in rows if r["rule"] == rule]
        ax.semilogy(*zip(*pts), "o" if rule == "gd" else "s", label=rule, alpha=0.8)
    ax.axvline(RANK, color="k", lw=0.8, ls=":")
    ax.axhline(1e-3, color="r", lw=0.8, ls="--", label="1e-3")
    ax.set_xlabel(f"hidden width r (rank Y = {RANK})")
    ax.set_ylabel("(C - C*) / C_0 at the end (floor 1e-16)")
    ax.set_title("factorisation: excess over Eckart-Young")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path_excess, dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    colors = {w: f"C{i}" for i, w in enumerate(sorted({r["r"] for r in rows}))}
    for r in rows:
        if r["rule"] == "fa":
            ax.plot(*zip(*r["angles"]), color=colors[r["r"]], alpha=0.8,
                    label=f"r = {r['r']}" if r["seed"] == rows[0]["seed"] else None)
    ax.set_xlabel("step")
    ax.set_ylabel("angle(Z, B^T)  (degrees)")
    ax.set_title("fa: alignment of the last matrix with the feedback crossbar")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path_angle, dpi=110)
    plt.close(fig)

    widths = sorted({w for _, w, _ in grid})
    ranks = sorted({k for _, _, k in grid})
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.8), sharey=True)
    for ax, rule in zip(axes, ("gd", "fa")):
        Zc = np.array([[np.log10(max(np.median(grid[(rule, w, k)]), 1e-12)) for w in widths] for k in ranks])
        im = ax.imshow(Zc, origin="lower", vmin=-12, vmax=0, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(widths)), widths)
        ax.set_yticks(range(len(ranks)), ranks)
        ax.set_xlabel("hidden width r")
        ax.set_title(f"{rule}: log10 median excess")
    axes[0].set_ylabel("rank Y")
    fig.colorbar(im, ax=axes)
    fig.savefig(path_phase, dpi=110)
    plt.close(fig)


def section(out: Path, number: int = 6, quick: bool = False) -> list:
    """The report's Markdown lines for the experiment (and its three figures in ``out``); ``quick``: fewer runs."""
    out = Path(out)
    widths, seeds, steps = (QUICK["widths"], QUICK["seeds"], QUICK["steps"]) if quick else (WIDTHS, SEEDS, STEPS)
    phase = QUICK["phase"] if quick else PHASE
    rows = experiment(out, widths, seeds, steps)
    tight = experiment(out, widths=(RANK,), seeds=seeds, steps=steps, r_f=TIGHT_R_F, scale=2.0, tag="-tight")
    grid = phase_diagram(out, **phase)
    _plot(rows, grid, out / "factorize-excess.png", out / "factorize-angle.png", out / "factorize-phase.png")
    md = [f"## {number}. Layered circuits: feedback alignment on a factorisation", "",
          f"Two-matrix layered circuits {M}-r-{N} written by `hil generate layered --sizes {M},r,{N} --seed S` "
          "(ordinary circuits: crossbars of trainable edge pairs in [1e-6, 1e-4] S, ideal op-amps as VCVS "
          "elements, fixed feedback edges of R_f = 100 kohm, so each weight lies within +-9.9 V/V), the task "
          f"`--task factorize --rank {RANK} --task-seed S` (Y of rank {RANK}, singular values 1, 0.75, 0.5; "
          f"one-hot inputs), {steps} steps of `hil train` at the default step, fa's feedback crossbar drawn from "
          "seed S. Relative excess = (C - C*) / C_0 at the end, C* the rank-r optimum (Eckart-Young), C_0 the "
          "zero map's loss; angle = the angle between the last matrix Z and B^T at the start and end.", "",
          "| r | rule | excess (seeds " + ", ".join(map(str, seeds)) + ") | angle start -> end (deg) | "
          "pinned conductances |", "|---|---|---|---|---|"]
    for w in widths:
        for rule in ("gd", "fa"):
            sel = [r for r in rows if r["r"] == w and r["rule"] == rule]
            ex = ", ".join(f"{r['relative_excess']:.1e}" for r in sel)
            ang = ", ".join(f"{r['angle_start']:.0f} -> {r['angle_end']:.0f}" for r in sel)
            md.append(f"| {w} | {rule} | {ex} | {ang} | {sum(r['pinned'] for r in sel)} |")
    fa_at = [r for r in rows if r["rule"] == "fa" and r["r"] >= RANK]
    fa_below = [r for r in rows if r["rule"] == "fa" and r["r"] < RANK]
    gd_below = [r for r in rows if r["rule"] == "gd" and r["r"] < RANK]
    gap = min(r["relative_excess"] for r in fa_below) > 10 * max(r["relative_excess"] for r in gd_below)
    n_pinned = sum(r["pinned"] for r in rows)
    fell = sum(r["angle_end"] < r["angle_start"] for r in rows if r["rule"] == "fa")
    n_fa = sum(r["rule"] == "fa" for r in rows)
    md += ["", "![excess](factorize-excess.png)", "", "![angle](factorize-angle.png)", "",
           f"r >= rank Y: fa's largest excess {max(r['relative_excess'] for r in fa_at):.1e} "
           f"({'below' if max(r['relative_excess'] for r in fa_at) < 1e-3 else 'NOT below'} 1e-3). "
           f"r < rank Y: gd's largest excess {max(r['relative_excess'] for r in gd_below):.1e} (it reaches "
           f"Eckart-Young), fa's {min(r['relative_excess'] for r in fa_below):.1e} to "
           f"{max(r['relative_excess'] for r in fa_below):.1e}"
           + (": feedback alignment settles on a rank-r map that is not the best one, because its first matrix "
              "follows B e, not Z^T e. " if gap else ": no gap on these seeds. ") +
           f"The angle fell in {fell} of {n_fa} fa runs: Z turns towards B^T, which is what makes B e a descent "
           "direction for the first matrix.", ""]
    # the phase diagram
    pw, ranks = phase["widths"], phase["ranks"]
    md += [f"Phase diagram: circuits {phase['m']}-r-{phase['n']}, Y of rank 1..{max(ranks)}, seeds "
           f"{', '.join(map(str, phase['seeds']))}, {phase['steps']} steps; the cell is the largest relative "
           "excess over the seeds, gd / fa.", "",
           "| rank Y \\ r | " + " | ".join(map(str, pw)) + " |", "|---|" + "---|" * len(pw)]
    for k in ranks:
        md.append(f"| {k} | " + " | ".join(f"{max(grid[('gd', w, k)]):.0e} / {max(grid[('fa', w, k)]):.0e}"
                                            for w in pw) + " |")
    worst_fa_at = max(max(grid[("fa", w, k)]) for w in pw for k in ranks if w >= k)
    worst_gd = max(max(v) for (rule, _, _), v in grid.items() if rule == "gd")
    below = [max(grid[("fa", w, k)]) for w in pw for k in ranks if w < k]
    md += ["", "![phase](factorize-phase.png)", "",
           f"gd reaches Eckart-Young in every cell (largest excess {worst_gd:.0e}); fa does wherever r >= rank Y "
           f"(largest {worst_fa_at:.0e}) and stops above it below the diagonal ({min(below):.0e} to "
           f"{max(below):.0e}).", ""]
    # representations
    reps = representations([r for r in rows if r["r"] >= RANK])
    md += ["Hidden representations (r >= rank Y, where both rules reach the optimum): linear CKA between the "
           "hidden lines' voltages h = W x that gd and fa reach on the same circuit and task (1: the same up to "
           "rotation and scale), the largest principal angle between the spans of their units' tunings over "
           "the inputs, and the mean best |cos| of each gd unit with an fa unit.", "",
           "| r | seed | excess gd | excess fa | CKA | largest principal angle (deg) | unit match |",
           "|---|---|---|---|---|---|---|"]
    for x in reps:
        md.append(f"| {x['r']} | {x['seed']} | {x['gd_excess']:.1e} | {x['fa_excess']:.1e} | {x['cka']:.3f} | "
                  f"{x['max_angle']:.0f} | {x['unit_cos']:.3f} |")
    md += ["", f"Similar error, different representations: CKA {min(x['cka'] for x in reps):.2f} to "
           f"{max(x['cka'] for x in reps):.2f} and unit match {min(x['unit_cos'] for x in reps):.2f} to "
           f"{max(x['unit_cos'] for x in reps):.2f}, while both excesses are below 1e-3 (the product Z W is "
           "the same map; the factor W is not).", ""]
    md += ["Bounded positive pairs. Every update of gd and fa is antisymmetric in a pair (Delta g+ = -Delta g-), "
           "so g+ + g- keeps its start 2 g_c and a weight can reach +-R_f (g_max - g_min), no more. "
           + ("In the runs above no conductance reached a bound (the pinned column), so the bounds change none of "
              "these facts. " if n_pinned == 0 else f"In the runs above {n_pinned} conductances ended at a bound. ") +
           f"With R_f = {TIGHT_R_F:.0f} ohm (weights within +-0.5 V/V) and Y scaled by 2, the optimum needs "
           "larger weights than the box holds; then (r = rank Y):", "",
           "| rule | excess (seeds " + ", ".join(map(str, seeds)) + ") | pinned conductances |", "|---|---|---|"]
    for rule in ("gd", "fa"):
        sel = [r for r in tight if r["rule"] == rule]
        ex = ", ".join(f"{r['relative_excess']:.1e}" for r in sel)
        md.append(f"| {rule} | {ex} | {sum(r['pinned'] for r in sel)} |")
    short = all(r["relative_excess"] > 1e-3 for r in tight)
    md += ["", "Clipped at the box, both rules stop short of the optimum: the excess then measures the box, not "
           "the rule, and r >= rank Y no longer guarantees fa (or gd) the optimum. The remedy is the circuit's "
           "scale: R_f (g_max - g_min) above the largest weight the factorisation needs." if short else
           "Not every run with the tight box stops short of the optimum (table above): where the factors fit "
           "inside the box the bounds change nothing."]
    return md
