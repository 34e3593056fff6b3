"""Non-reciprocal circuits (docs/math.md, section 7): the asymmetry bias against asymmetry, and what removes it.

Two experiments, for the report:

- :func:`asymmetry_sweep`: a resistor network with VCCS pairs a->b, b->a whose
  asymmetry runs from reciprocal (0) to one-way (1). At each asymmetry, at ghat(0)
  (so the nudge plays no part): the asymmetry bias ||ghat(0) - dC/dtheta|| /
  ||dC/dtheta||, cos(ghat(0), dC/dtheta), the symmetry index and H; then the loss
  after a fixed budget of steps for gd, ep-sym, and ep-sym with homeostasis at two
  weights.
- :func:`transistor_comparison`: the mosfet network with ground-referenced gates
  against midpoint-referenced gates on ngspice: both bias components against the
  nudge, and the training curves.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hil.circuits import add_vccs
from hil.gradients import decomposition
from hil.ideal import IdealSubstrate
from hil.rules import make_rule
from hil.runs import Run
from hil.tasks import Task, teacher_task
from hil.train import TrainConfig, default_lr, start_run

ASYMMETRIES = (0.0, 0.5, 1.0)
#: homeostasis weights as w alpha (dimensionless): w = HOMEOSTASIS / alpha, alpha the default learning rate
HOMEOSTASIS = (0.01, 0.1)


def _fresh(path: Path) -> Path:
    if path.exists():
        import shutil
        shutil.rmtree(path)
    return path


def asymmetry_sweep(base, out: Path, pairs: int = 3, seed: int = 0, steps: int = 200, examples: int = 16,
                    asymmetries=ASYMMETRIES) -> dict:
    """Rows (one per asymmetry) of the bias quantities at the start and the loss after ``steps`` per rule."""
    rows, curves = [], {}
    for a in asymmetries:
        c = add_vccs(base, pairs=pairs, seed=seed, asymmetry=a)
        task = teacher_task(c, seed=1, examples=examples)
        sub = IdealSubstrate(c)
        dec = decomposition(sub, task.X_train, task.Y_train)
        H = sub.homeostasis()[0]
        lr = default_lr(c, c.theta, task.X_train, make_rule("ep-sym"))
        row = {"asymmetry": a, "asymmetry_bias": dec["asymmetry_bias"], "cos_limit": dec["cos_limit"],
               "cos_mu_lambda_min": min(dec["cos_mu_lambda"]), "symmetry_index": dec["symmetry_index"], "H": H,
               "lr": lr, "loss": {}}
        runs = [("gd", "gd", 0.0), ("ep-sym", "ep-sym", 0.0)] + \
               [(f"ep-sym + homeostasis {w:g}/alpha", "ep-sym", w / lr) for w in HOMEOSTASIS]
        for label, rule, w in runs:
            d = _fresh(out / "runs" / f"asym{a:g}-{label.replace(' ', '_').replace('/', '')}")
            res = start_run(c, task, TrainConfig(rule=rule, steps=steps, lr=lr, homeostasis=w), d, progress=False)
            row["loss"][label] = (res["initial_loss"], res["final_loss"], res.get("final_H"))
            curves[(a, label)] = Run(d).read_log()
        rows.append(row)
    return {"rows": rows, "curves": curves, "steps": steps, "pairs": pairs, "base": base.name}


def plot_asymmetry_sweep(res: dict, path: Path) -> Path:
    """Two panels against asymmetry: the biases at ghat(0), and the loss after the budget per rule."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = res["rows"]
    a = [r["asymmetry"] for r in rows]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10.5, 4.0))
    a1.plot(a, [r["asymmetry_bias"] for r in rows], "o-", label="asymmetry bias ||ghat(0) - dC/dtheta|| / ||dC/dtheta||")
    a1.plot(a, [1 - r["cos_limit"] for r in rows], "s--", label="1 - cos(ghat(0), dC/dtheta)")
    a1.plot(a, [1 - r["symmetry_index"] for r in rows], "^:", label="1 - symmetry index")
    a1.set_yscale("symlog", linthresh=1e-6)
    a1.set_xlabel("asymmetry of each VCCS pair (0 reciprocal, 1 one-way)")
    a1.set_title("at ghat(0): the nudge plays no part", fontsize=10)
    a1.grid(True, alpha=0.3)
    a1.legend(fontsize=7)
    for label in rows[0]["loss"]:
        a2.semilogy(a, [max(r["loss"][label][1], 1e-32) for r in rows], "o-", label=label)
    a2.set_xlabel("asymmetry of each VCCS pair")
    a2.set_ylabel(f"loss after {res['steps']} steps (V^2)")
    a2.grid(True, which="both", alpha=0.3)
    a2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


TRANSISTOR_DEVICES = ("mosfet", "mosfet-mid", "mosfet-bsim", "mosfet-mid-bsim")


def transistor_comparison(circuit, out: Path, scale: float = 0.1, steps: int = 100, examples: int = 8,
                          nudges=None, devices=TRANSISTOR_DEVICES) -> dict:
    """mosfet (gate against ground) against mosfet-mid (gate at V_c + (V_d + V_s)/2) on ngspice, each with
    the level-1 channel and the BSIM4 one (``devices``).

    The task is the teacher task with inputs and targets times ``scale`` (a linear teacher:
    the same task, smaller signals) so that the channels stay in triode. Returns per device:
    the decomposition at the start, at full-size signals too, the bias sweep and the training run.
    """
    from hil.analysis.bias import sweep, write_outputs
    from hil.gradients import reference_gradient
    from hil.spice.substrate import NgSpiceSubstrate

    base = teacher_task(circuit, seed=1, examples=examples)
    task = Task(scale * base.X_train, scale * base.Y_train, scale * base.X_test, scale * base.Y_test,
                f"{base.description}, signals x {scale:g}", dict(base.meta, scale=scale))
    X, Y = task.X_train, task.Y_train
    res = {}
    for dev in devices:
        with NgSpiceSubstrate(circuit, device=dev) as sub:
            kappa = sub.kappa_max(X)
            grid = np.geomspace(1e-3 / kappa, 0.5 / kappa, 8) if nudges is None else nudges
            b = sweep(sub, X, Y, ["ep", "ep-sym", "al"], grid)
            write_outputs(b, out / f"nonreciprocal-{dev}", f"{circuit.name}: ngspice {dev}, signals x {scale:g}")
            (out / f"nonreciprocal-{dev}" / "bias.png").replace(out / f"nonreciprocal-{dev}.png")
            full = decomposition(sub, base.X_train, base.Y_train, reference_gradient(sub, base.X_train, base.Y_train))
            split = {"ngspice": (b, full)}
            if dev in ("mosfet", "mosfet-mid"):  # the same level-1 channels as ideal elements (embedded substrate)
                from hil.ideal import IdealChannelSubstrate
                ideal = IdealChannelSubstrate(circuit, dev, g=sub.read())
                split["ideal"] = tuple(decomposition(ideal, x, y) for x, y in
                                       ((X, Y), (base.X_train, base.Y_train)))
            d = _fresh(out / "runs" / f"transistor-{dev}")
            run = start_run(circuit, task, TrainConfig(rule="ep-sym", steps=steps, backend="ngspice",
                                                       backend_options={"device": dev}), d, progress=False,
                            substrate=sub)
        res[dev] = {"bias": b, "radius": 1 / kappa, "full": full, "run": run, "curve": Run(d).read_log()["train_loss"],
                    "split": split}
    return {"devices": res, "scale": scale, "steps": steps, "examples": examples, "circuit": circuit.name}


def transistor_split_table(tr: dict) -> list:
    """Markdown lines: per device and substrate, the local-signal and asymmetry biases (relative to ||dC/dtheta||)
    at the comparison's small signals and at full-size ones, and the channels outside triode."""
    f = lambda x: "-" if x is None else format(x, ".3g")
    out = lambda d: ", ".join(f"ex. {i}: {k}" for i, k in enumerate(d["outside_linear"] or []) if k) or \
        ("none" if d["outside_linear"] is not None else "-")
    lines = [f"| device | substrate | local-signal bias | asymmetry bias | channels out of triode | "
             "local-signal bias, full-size | asymmetry bias, full-size | channels out of triode, full-size |",
             "|---|---|---|---|---|---|---|---|"]
    for dev, r in tr["devices"].items():
        for sub, (small, full) in r["split"].items():
            lines.append(f"| {dev} | {sub} | {f(small['local_signal_bias'])} | {f(small['asymmetry_bias'])} | "
                         f"{out(small)} | {f(full['local_signal_bias'])} | {f(full['asymmetry_bias'])} | {out(full)} |")
    return lines + [""]


def plot_transistor_curves(res: dict, path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for dev, r in res["devices"].items():
        ax.semilogy(np.arange(len(r["curve"])), np.maximum(r["curve"], 1e-32),
                    label=f"{dev} (asymmetry bias {r['bias']['asymmetry_bias']:.2g})")
    ax.set_xlabel("step")
    ax.set_ylabel("C (V^2)")
    ax.set_title(f"{res['circuit']}, ngspice, ep-sym, signals x {res['scale']:g}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def section(out: Path, ngspice: bool = False, progress=print, number: int = 7) -> list:
    """Report section ``number`` (Markdown lines): the asymmetry sweep, and with ``ngspice`` the transistor comparison."""
    from hil.circuits import load

    progress("non-reciprocal circuits: asymmetry sweep")
    res = asymmetry_sweep(load("net16"), out)
    plot_asymmetry_sweep(res, out / "nonreciprocal.png")
    labels = list(res["rows"][0]["loss"])
    md = [f"## {number}. Non-reciprocal circuits: the asymmetry bias and homeostasis", "",
          f"`net16` plus {res['pairs']} VCCS pairs a->b, b->a between free nodes (`hil.circuits.add_vccs`, seed 0: "
          "gm_ab = s, gm_ba = s (1 - asymmetry), s about a quarter of the median edge conductance, every gm "
          "trained), teacher task (seed 1, 16 examples; the teacher has the same transconductances). At the "
          "start, at ghat(0) = -mu^T dF/dtheta (exact: no nudge), relative to ||dC/dtheta||; then the loss "
          f"after {res['steps']} steps at the default learning rate alpha (held fixed) for gd, ep-sym (default nudge), and "
          "ep-sym with homeostasis at w = 0.01/alpha and 0.1/alpha (H = 1/2 ||A - A^T||_F^2).", "",
          "| asymmetry | asymmetry bias | cos(ghat(0), dC/dtheta) | min cos(mu, lambda) | symmetry index | H start (S^2) | "
          + " | ".join(f"C end: {lb}" for lb in labels) + " | H end, w = 0.1/alpha |",
          "|" + "---|" * (7 + len(labels))]
    for r in res["rows"]:
        h_end = r["loss"][labels[-1]][2]
        md.append(f"| {r['asymmetry']:g} | {r['asymmetry_bias']:.3g} | {r['cos_limit']:.6f} | "
                  f"{r['cos_mu_lambda_min']:.6f} | {r['symmetry_index']:.5f} | {r['H']:.3g} | "
                  + " | ".join(f"{r['loss'][lb][1]:.3g}" for lb in labels) + f" | {h_end:.3g} |")
    md += ["", "![asymmetry sweep](nonreciprocal.png)", "",
           "At asymmetry 0 the pairs are reciprocal: A is symmetric, mu = lambda, and ghat(0) is the gradient "
           "to rounding. The asymmetry bias grows with the asymmetry and does not depend on the nudge. gd "
           "descends C itself; ep-sym descends along ghat, which is not a gradient of C. Homeostasis pulls each "
           "pair's gm_ab and gm_ba together (H falls) and so removes the bias it causes, at the price of "
           "moving the transconductances away from where the task alone would put them.", ""]
    if not ngspice:
        return md
    progress("non-reciprocal circuits: mosfet against mosfet-mid, level 1 and BSIM4 (ngspice)")
    tr = transistor_comparison(load("net16"), out)
    plot_transistor_curves(tr, out / "transistor-curves.png")
    md += [f"Transistor networks on ngspice: `net16` with each edge an NMOS channel (level 1, "
           "`netlists/nmos_level1.lib`), gate against ground (`--device mosfet`) or driven at V_c + (V_d + V_s)/2 "
           "by two VCVS of gain 1/2 (`--device mosfet-mid`; on a bench, a follower network). Teacher task "
           f"(seed 1, {tr['examples']} examples) with every signal times {tr['scale']:g} so the channels stay in "
           "triode; the radius is measured as a small signal about the free operating points (AC analyses), "
           "ghat(0) from one AC analysis per example. The `-bsim` devices replace the level-1 channel by a "
           "BSIM4 one (ngspice level 54, the PTM 65 nm NMOS card, `netlists/nmos_bsim4_ptm65.lib`; W/L = 20, "
           "gate 0..4 V). The symmetry index is the mean over the examples of that of A_FF, measured with "
           "|F| AC probes per example. Reference: ngspice's `sens` (level 1), central differences through ngspice (BSIM4, "
           "where ngspice's sens fails). Full-size signals (+-1 V inputs) drive channels into saturation and "
           "near pinch-off, shown for contrast.", "",
           "| device | radius 1/kappa_max (S) | asymmetry bias | cos(ghat(0), dC/dtheta) | symmetry index | "
           f"ep-sym order | C start | C after {tr['steps']} ep-sym steps | asymmetry bias, full-size signals |",
           "|---|---|---|---|---|---|---|---|---|"]
    for dev, r in tr["devices"].items():
        b = r["bias"]
        o = b["rules"]["ep-sym"]["slope"]
        md.append(f"| {dev} | {r['radius']:.3g} | {b['limit_bias']:.2g} | {b['cos_limit']:.6f} | "
                  f"{b['symmetry_index']:.6f} | "
                  f"{'exact' if o is None else format(o, '.2f')} | {r['run']['initial_loss']:.3g} | "
                  f"{r['run']['final_loss']:.3g} | {r['full']['limit_bias']:.3g} |")
    md += ["", "The table's 'asymmetry bias' columns are ||ghat(0) - dC/dtheta|| / ||dC/dtheta||, the whole error of "
           "the rules' limit. It is two terms where a channel leaves triode: the rules read 1/2 dV^2 across each "
           "edge, which is not the channel's dI/dg outside triode (the local-signal bias), and (lambda - mu)^T "
           "dF/dtheta (the asymmetry bias proper). Split, on ngspice and on the embedded substrate (level-1 "
           "channels as ideal elements, `--backend ideal --device mosfet`), with the number of channels "
           "saturated or cut off per example:", ""] + transistor_split_table(tr)
    md += ["", "![mosfet, gate against ground](nonreciprocal-mosfet.png)", "",
           "![mosfet, midpoint gate](nonreciprocal-mosfet-mid.png)", "",
           "![mosfet, BSIM4, gate against ground](nonreciprocal-mosfet-bsim.png)", "",
           "![mosfet, BSIM4, midpoint gate](nonreciprocal-mosfet-mid-bsim.png)", "",
           "![training curves](transistor-curves.png)", "",
           "With the gate against ground the channel's current depends on V_d and V_s separately, A is "
           "non-symmetric, and every EP estimate keeps the asymmetry bias however small the nudge; the nudge "
           "bias (dotted) still falls at the estimator's order. The midpoint gate makes the square-law channel "
           "I = k (V_c - V_T)(V_d - V_s): reciprocal and linear in triode, so its asymmetry bias falls to "
           "ngspice's and the calibration's precision. The BSIM4 channel is not a square law (body effect: "
           "the threshold follows V_s; mobility falls with the gate field; series resistance; DIBL), so the "
           "midpoint gate leaves it the asymmetry bias in the table: what a realistic channel keeps. With "
           "full-size signals channels leave triode and the "
           "midpoint device's bias returns (saturation makes the current a nonlinear function of the drop, "
           "whose co-content derivative is no longer 1/2 dV^2).", ""]
    return md
