"""The factorisation experiment on layered circuits (docs/math.md, section 8; Garg & Vempala, AISTATS 2022).

Y (d_L x d_0) of rank K, one-hot inputs, two-stage circuits of hidden width r
below, at and above K, trained by ``gd`` (weight transport) and ``fa``
(feedback alignment) through :func:`hil.layered_train.start_layered_run` (the
training loop; run directories under ``out/runs/factorize``). Measured: the
relative excess (C - C*) / C_0 over the rank-r optimum C* (Eckart-Young; C_0
the zero map's loss), and the angle between the last stage's weights Z and B^T
over training.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from hil.layered import generate_layered
from hil.layered_train import LayeredConfig, factorize_task, start_layered_run
from hil.runs import Run

M, N, RANK = 8, 6, 3
WIDTHS = (2, 3, 4)
SEEDS = (0, 1, 2)
STEPS = 1200
#: the feedback resistance that bounds every weight to +-0.5 V/V (g in [1e-6, 1e-4] S)
TIGHT_R_F = 0.5 / (1e-4 - 1e-6)


def experiment(out: Path, widths=WIDTHS, seeds=SEEDS, steps=STEPS, rules=("gd", "fa"), r_f=1e5,
               scale=1.0, tag="") -> list:
    """Train every (rule, r, seed); rows with the relative excess, angles, pinned conductances, the log."""
    rows = []
    for r in widths:
        for seed in seeds:
            c = generate_layered((M, r, N), seed=seed, r_f=r_f)
            task = factorize_task(c, RANK, seed=seed, scale=scale)
            for rule in rules:
                d = Path(out) / "runs" / "factorize" / f"{rule}-r{r}-s{seed}{tag}"
                if d.exists():
                    shutil.rmtree(d)
                res = start_layered_run(c, task, LayeredConfig(rule=rule, steps=steps, seed=seed,
                                                               checkpoint_every=steps), d, progress=False, plot=False)
                g = Run(d).load_checkpoint()["g"]
                pinned = int(np.sum((g <= c.g_min * (1 + 1e-9)) | (g >= c.g_max * (1 - 1e-9))))
                rows.append({"rule": rule, "r": r, "seed": seed, "pinned": pinned, "log": Run(d).read_log(), **res})
    return rows


def _plot(rows, path_excess: Path, path_angle: Path) -> None:
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
            ax.plot(r["log"]["step"], r["log"]["angle"], color=colors[r["r"]], alpha=0.8,
                    label=f"r = {r['r']}" if r["seed"] == rows[0]["seed"] else None)
    ax.set_xlabel("step")
    ax.set_ylabel("angle(Z, B^T)  (degrees)")
    ax.set_title("fa: alignment of the last stage with the feedback crossbar")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path_angle, dpi=110)
    plt.close(fig)


def section(out: Path, number: int = 6) -> list:
    """The report's Markdown lines for the experiment (and its two figures in ``out``)."""
    out = Path(out)
    rows = experiment(out)
    tight = experiment(out, widths=(RANK,), rules=("gd", "fa"), r_f=TIGHT_R_F, scale=2.0, tag="-tight")
    _plot(rows, out / "factorize-excess.png", out / "factorize-angle.png")
    md = [f"## {number}. Layered circuits: feedback alignment on a factorisation", "",
          f"Two-stage layered circuits {M}-r-{N} (`hil generate layered --sizes {M},r,{N} --seed S`: crossbars of "
          "differential pairs in [1e-6, 1e-4] S, R_f = 100 kohm, so each weight lies within +-9.9 V/V), the task "
          f"`--task factorize --rank {RANK} --task-seed S` (Y of rank {RANK}, singular values 1, 0.75, 0.5; "
          f"one-hot inputs), {STEPS} steps at the default step, feedback crossbars drawn from seed S. "
          "Relative excess = (C - C*) / C_0 at the end, C* the rank-r optimum (Eckart-Young), C_0 the zero "
          "map's loss; angle = the angle between the last stage's weights Z and B^T at the start and end.", "",
          "| r | rule | excess (seeds " + ", ".join(map(str, SEEDS)) + ") | angle start -> end (deg) | "
          "pinned conductances |", "|---|---|---|---|---|"]
    for w in WIDTHS:
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
           f"Eckart-Young), fa's smallest {min(r['relative_excess'] for r in fa_below):.1e}"
           + (": feedback alignment settles on a rank-r map that is not the best one, because its first stage "
              "follows B e, not Z^T e. " if gap else ": no gap on these seeds. ") +
           f"The angle fell in {fell} of {n_fa} fa runs: Z turns towards B^T, which is what makes B e a descent "
           "direction for the first stage.", "",
           "Bounded positive pairs. Every update of gd and fa is antisymmetric in a pair (Delta g+ = -Delta g-), "
           "so g+ + g- keeps its start 2 g_c and a weight can reach +-R_f (g_max - g_min), no more. "
           + ("In the runs above no conductance reached a bound (the pinned column), so the bounds change none of "
              "these facts. " if n_pinned == 0 else f"In the runs above {n_pinned} conductances ended at a bound. ") +
           f"With R_f = {TIGHT_R_F:.0f} ohm (weights within +-0.5 V/V) and Y scaled by 2, the optimum needs "
           "larger weights than the box holds; then (r = rank Y):", "",
           "| rule | excess (seeds " + ", ".join(map(str, SEEDS)) + ") | pinned conductances |", "|---|---|---|"]
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
