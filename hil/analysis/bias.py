"""Nudge-size bias of every estimator, on any substrate (docs/math.md, sections 3 to 5 and 11).

For each rule and each nudge on a log grid: the estimate ghat against the
reference gradient (exact on the ideal substrate, the circuit's own on ngspice):
relative error ||ghat - g*|| / ||g*|| and cosine. The order p of the nudge
dependence is fitted on log ||ghat(nu_k) - ghat(nu_{k+1})|| against log nu_k
(successive differences: this needs no knowledge of the rule's limit, so it
holds for CL, whose limit is grad L_K, not grad C), over the points below the
convergence radius and above rounding.

With voltmeter noise sigma (V rms on every reading), R repeats give the squared
bias ||E ghat - g*||^2 and the variance E ||ghat - E ghat||^2, both relative to
||g*||^2; the nudge minimising their sum is the one a bench user wants.

The error of an EP estimate splits in three: the nudge bias ||ghat(beta) -
ghat(0)||, which vanishes with beta; the local-signal bias ||ghat(0) - (-mu^T dF/dtheta)||,
where the rule's local signal is not dF/dtheta (a transistor edge read as 1/2 dV^2 out of
triode); and the asymmetry bias ||(lambda - mu)^T dF/dtheta||, which does not vanish either and
is zero on a reciprocal circuit. Both are reported per point
(relative to ||dC/dtheta||) for the EP rules, with ghat(0) from
:func:`hil.gradients.ep_limit`, beside cos(mu, lambda) and the Jacobian symmetry index.

Nudges: one grid in siemens (EP's beta); CL and AL use eta = beta kappa_max, the
same displacement of the outputs (AL's clamped state equals the open-loop nudged
state at beta = eta / kappa_max).
"""

from __future__ import annotations

import numpy as np

from hil.gradients import decomposition, nudge_bias, reference_gradient
from hil.rules import make_rule
from hil.substrate import Substrate, SubstrateError


class NoisyReadings(Substrate):
    """A substrate whose voltmeter adds Gaussian noise of ``sigma`` volts rms to every reading."""

    def __init__(self, inner: Substrate, sigma: float, seed: int = 0):
        self.inner, self.sigma, self.circuit = inner, float(sigma), inner.circuit
        self.supports_complex = inner.supports_complex
        self.small_signal = inner.small_signal
        self.rng = np.random.default_rng(seed)

    def write(self, g):
        return self.inner.write(g)

    def read(self):
        return self.inner.read()

    def output_green(self, inputs=None):
        return self.inner.output_green(inputs) if self.small_signal else self.inner.output_green()

    def homeostasis(self):
        return self.inner.homeostasis()

    def run(self, inputs, experiments):
        out = self.inner.run(inputs, experiments)
        return [V + self.sigma * self.rng.standard_normal(V.shape) for V in out]


def rule_nudge(name: str, beta: float, kappa: float) -> float:
    """The nudge for ``name`` at grid value beta (S): beta itself for EP rules, eta = beta kappa for CL/AL."""
    return beta * kappa if name.split(":")[0] in ("cl", "al") else beta


def fit_order(nudges, estimates, ref_norm, radius) -> float | None:
    """The order p in ||ghat(nu_k) - ghat(nu_{k+1})|| ~ nu^p, fitted on the smallest nudges; None if flat."""
    nudges = np.asarray(nudges)
    d = np.array([np.linalg.norm(estimates[k] - estimates[k + 1]) for k in range(len(nudges) - 1)]) / ref_norm
    x = nudges[:-1]
    ok = (d > 1e-9) & (x < 0.5 * radius)
    if ok.sum() < 2:
        return None
    x, d = np.log(x[ok]), np.log(d[ok])
    half = max(2, (len(x) + 1) // 2)
    return float(np.polyfit(x[:half], d[:half], 1)[0])


def largest_nudge(rule) -> float:
    """The largest |beta| (S) among the nudged states ``rule`` measures (ep-stencil:N: N beta); 0 for clamps."""
    from hil.substrate import Nudge
    return max([abs(complex(st.beta)) for st in rule.states() if isinstance(st, Nudge)], default=0.0)


def sweep(sub: Substrate, X, Y, rules, nudges, noise: float = 0.0, repeats: int = 1, seed: int = 0,
          progress=None) -> dict:
    """Run the bias sweep; returns {'points': [...], 'rules': {name: {...}}, 'radius': S, 'kappa_max': ohm}."""
    kappa = sub.kappa_max(X)
    radius = 1.0 / kappa
    ref = reference_gradient(sub, X, Y)
    ref_norm = float(np.linalg.norm(ref))
    dec = decomposition(sub, X, Y, reference=ref)
    meas_sub = NoisyReadings(sub, noise, seed) if noise > 0 else sub
    reps = repeats if noise > 0 else 1
    points, summary = [], {}
    total, done = len(rules) * len(nudges), 0
    # a stencil's outer points sit at N beta: none past where the grid stops (half the radius by default)
    reach = max(0.5 * radius, float(np.max(nudges)))
    for name in rules:
        means = []
        for beta in nudges:
            nu = rule_nudge(name, beta, kappa)
            rule = make_rule(name, nu).configure(kappa)
            far = largest_nudge(rule)
            if far > reach * (1 + 1e-9):
                means.append(np.full_like(ref, np.nan))
                points.append({"rule": name, "beta": float(beta), "nudge": float(nu), "rel_error": float("nan"),
                               "cosine": float("nan"), "bias2": float("nan"), "variance": float("nan"),
                               "mse": float("nan"), "nudge_bias": None, "asymmetry_bias": None,
                               "skipped": f"its largest nudge {far:.3g} S is past {reach:.3g} S, "
                                          f"{reach / radius:.2g} of the radius 1/kappa_max (the nudged states' "
                                          "series diverges at the radius; -1/kappa_max is a pole)"})
                done += 1
                if progress:
                    progress(done, total)
                continue
            try:
                ests = np.array([rule.estimate(meas_sub.measure(X, Y, rule.states())) for _ in range(reps)])
            except SubstrateError as exc:
                # a nonlinear circuit may have no operating point at a large (negative) nudge: keep the sweep
                means.append(np.full_like(ref, np.nan))
                points.append({"rule": name, "beta": float(beta), "nudge": float(nu), "rel_error": float("nan"),
                               "cosine": float("nan"), "bias2": float("nan"), "variance": float("nan"),
                               "mse": float("nan"), "nudge_bias": None, "asymmetry_bias": None,
                               "local_signal_bias": None, "failed": str(exc).split("|")[0][:200]})
                done += 1
                if progress:
                    progress(done, total)
                continue
            mean = ests.mean(axis=0)
            means.append(mean)
            err = np.linalg.norm(ests - ref, axis=1) / ref_norm
            cos = [float(e @ ref / (np.linalg.norm(e) * ref_norm)) for e in ests]
            bias2 = float(np.sum((mean - ref) ** 2)) / ref_norm ** 2
            var = float(np.mean(np.sum((ests - mean) ** 2, axis=1))) / ref_norm ** 2 if reps > 1 else 0.0
            nb = nudge_bias(mean, dec) if rule.nudge_unit == "S" else None
            points.append({"rule": name, "beta": float(beta), "nudge": float(nu), "rel_error": float(np.median(err)),
                           "cosine": float(np.median(cos)), "bias2": bias2, "variance": var, "mse": bias2 + var,
                           "nudge_bias": nb,
                           "asymmetry_bias": dec["asymmetry_bias"] if rule.nudge_unit == "S" else None,
                           "local_signal_bias": dec["local_signal_bias"] if rule.nudge_unit == "S" else None})
            done += 1
            if progress:
                progress(done, total)
        mine = [p for p in points if p["rule"] == name]
        best = min(mine, key=lambda p: p["mse"] if np.isfinite(p["mse"]) else np.inf)
        summary[name] = {"slope": fit_order(nudges, means, ref_norm, radius) if noise == 0 else
                         _noiseless_order(sub, X, Y, name, nudges, kappa, ref_norm, radius),
                         "best_nudge": best["nudge"], "best_beta": best["beta"], "best_mse": best["mse"],
                         "asymmetry_bias": dec["asymmetry_bias"] if make_rule(name).nudge_unit == "S" else None,
                         "failed": [p["beta"] for p in mine if p.get("failed")],
                         "skipped": [p["beta"] for p in mine if p.get("skipped")],
                         "nudge_bias": [p["nudge_bias"] for p in mine]}
    return {"points": points, "rules": summary, "radius": radius, "kappa_max": kappa, "ref_norm": ref_norm,
            "asymmetry_bias": dec["asymmetry_bias"], "local_signal_bias": dec["local_signal_bias"],
            "limit_bias": dec["limit_bias"], "outside_linear": dec["outside_linear"], "cos_limit": dec["cos_limit"],
            "cos_mu_lambda": dec["cos_mu_lambda"], "symmetry_index": dec["symmetry_index"]}


def _noiseless_order(sub, X, Y, name, nudges, kappa, ref_norm, radius):
    means = []
    reach = max(0.5 * radius, float(np.max(nudges)))
    for beta in nudges:
        rule = make_rule(name, rule_nudge(name, beta, kappa)).configure(kappa)
        if largest_nudge(rule) > reach * (1 + 1e-9):
            means.append(np.full(len(sub.read()), np.nan))
            continue
        try:
            means.append(rule.estimate(sub.measure(X, Y, rule.states())))
        except SubstrateError:
            means.append(np.full(len(sub.read()), np.nan))
    return fit_order(nudges, means, ref_norm, radius)


def write_outputs(result: dict, out_dir, title: str = "") -> list:
    """bias.csv (every point) and bias.png (error against nudge per rule, radius marked); returns the paths."""
    import csv
    from pathlib import Path

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fields = ["rule", "beta", "nudge", "rel_error", "cosine", "bias2", "variance", "mse", "nudge_bias",
              "local_signal_bias", "asymmetry_bias"]
    with open(out / "bias.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for p in result["points"]:
            w.writerow({k: ("" if p.get(k) is None else p[k]) for k in fields})
    fig, ax = plt.subplots(figsize=(6.6, 4.4))
    for name in result["rules"]:
        pts = [p for p in result["points"] if p["rule"] == name]
        s = result["rules"][name]["slope"]
        label = f"{name} (order {s:.2f})" if s is not None else f"{name} (exact)"
        clip = lambda v: float("nan") if v is None or not np.isfinite(v) else min(max(v, 1e-17), 1e3)
        line, = ax.loglog([p["beta"] for p in pts], [clip(p["rel_error"]) for p in pts], "o-", ms=3, label=label)
        if any(p.get("nudge_bias") is not None for p in pts) and (result.get("asymmetry_bias") or 0) > 1e-12:
            ax.loglog([p["beta"] for p in pts], [clip(p["nudge_bias"]) for p in pts], ":", color=line.get_color(),
                      lw=1.2, label=f"{name}: nudge bias")
    asym = result.get("asymmetry_bias")
    if asym is not None and asym > 1e-12:  # zero to rounding on a reciprocal circuit: nothing to draw
        ax.axhline(asym, color="0.3", ls="-.", lw=1.2, label=f"asymmetry bias {asym:.3g} (EP rules; any nudge)")
    ax.axvline(result["radius"], color="k", ls="--", lw=1)
    ax.text(result["radius"], ax.get_ylim()[0] * 10, " radius 1/kappa_max", rotation=90, va="bottom", fontsize=8)
    ax.set_xlabel("nudge beta (S)   [CL, AL: eta = beta kappa_max]")
    ax.set_ylabel("||ghat - dC/dtheta|| / ||dC/dtheta||")
    si = result.get("symmetry_index")
    ax.set_title((title or "estimator error against nudge size") + (f"; symmetry index {si:.4f}" if si is not None else ""),
                 fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7 if len(ax.get_lines()) > 8 else 8, ncol=2 if len(ax.get_lines()) > 10 else 1)
    fig.tight_layout()
    fig.savefig(out / "bias.png", dpi=110)
    plt.close(fig)
    return [out / "bias.csv", out / "bias.png"]
