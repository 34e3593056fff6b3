"""Each edge's actual conductance from probe experiments: Kirchhoff's current law, linear in g.

With every node voltage V (P patterns x n nodes, volts) measured and the current
I_i (A) each instrument delivers into its node, KCL at every node i != ground and
every pattern p reads

    sum_e D_ei (V_pa(e) - V_pb(e)) g_e = I_pi        (D_ei = +1 at a(e), -1 at b(e))

with I_pi = 0 at nodes no instrument drives. That is A g = b, linear in the m
unknown conductances: the inner nodes fix their ratios, the SMU currents the scale.
The fit is weighted least squares, each node's rows weighted by the scatter of its
own residuals (its noise: voltmeter noise times the conductances around it, or the
SMU's current noise), estimated from a first unweighted pass. The covariance
(A^T W A)^-1, scaled by chi^2 per degree of freedom, gives each g_e's standard
uncertainty.
"""

from __future__ import annotations

import numpy as np

from hil.circuit import Circuit


class CalibrationError(ValueError):
    """Probe data that cannot determine every edge; names the edges."""


def kcl_system(circuit: Circuit, V, I) -> tuple:
    """(A, b, node) for KCL: A (P (n-1), m) in volts, b (P (n-1),) in amperes, node: each row's node index."""
    c = circuit
    V, I = np.atleast_2d(np.asarray(V, float)), np.atleast_2d(np.asarray(I, float))
    dV = V[:, c.a] - V[:, c.b]                     # (P, m) edge drops
    nodes = np.array([i for i in range(c.n) if i != c.ground])
    D = np.zeros((c.m, c.n))
    D[np.arange(c.m), c.a] = 1.0
    D[np.arange(c.m), c.b] = -1.0
    A = np.einsum("pe,ei->pie", dV, D[:, nodes]).reshape(-1, c.m)
    b = I[:, nodes].reshape(-1)
    return A, b, np.tile(nodes, len(V))


def fit_conductances(circuit: Circuit, V, I) -> dict:
    """Weighted least-squares conductances from KCL (see the module docstring).

    Returns g (S), sigma (S, standard uncertainty of each g_e), node_noise (A, each
    node's residual scatter), chi2_dof and the degrees of freedom.
    """
    c = circuit
    A, b, node = kcl_system(c, V, I)
    if np.linalg.matrix_rank(A) < c.m:
        drops = np.abs(A).max(axis=0)
        weak = [c.edge_names[e] for e in np.argsort(drops)[: max(1, c.m - np.linalg.matrix_rank(A))]]
        raise CalibrationError(f"circuit '{c.name}': the probes do not determine every edge (least excited: "
                               f"{', '.join(weak)}); use more patterns")
    g0 = np.linalg.lstsq(A, b, rcond=None)[0]
    res = A @ g0 - b
    sig = np.array([np.sqrt(np.mean(res[node == i] ** 2)) if i != c.ground else 0.0 for i in range(c.n)])
    floor = 1e-12 * max(float(np.abs(b).max()), float(np.abs(A).max() * np.abs(g0).max()), 1e-300)
    sig = np.maximum(sig, floor)                   # exact (noiseless) data: equal weights
    w = 1.0 / sig[node]
    Aw, bw = A * w[:, None], b * w
    g, *_ = np.linalg.lstsq(Aw, bw, rcond=None)
    r = Aw @ g - bw
    dof = max(len(bw) - c.m, 1)
    chi2 = float(r @ r) / dof
    cov = np.linalg.inv(Aw.T @ Aw) * chi2
    return {"g": g, "sigma": np.sqrt(np.diag(cov)), "node_noise": sig, "chi2_dof": chi2, "dof": dof}


def plot_deviations(names, scale, sigma, path, title="") -> None:
    """Per-edge deviation (actual / written - 1, percent) with 2-sigma error bars, to ``path`` (PNG)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(6.4, 0.35 * len(names)), 4))
    ax.errorbar(x, 100 * (np.asarray(scale) - 1), yerr=200 * np.asarray(sigma), fmt="o", capsize=3)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(x, names, rotation=90)
    ax.set_ylabel("actual / written - 1  (%, bars: 2 sigma)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def calibrate_bench(bench_path, out, circuit=None, patterns: int = 40, seed: int = 0, level: float | None = None,
                    force: bool = False) -> dict:
    """Probe the bench at the circuit's conductances, fit each edge, write the calibrated circuit file ``out``.

    The file is the circuit with g = what was written (read back from the board) and a
    ``[calibration]`` table: scale = fitted / written and its standard uncertainty
    sigma, per edge. Beside it: ``<out>.png`` (the deviations with error bars) and
    ``<out>.probes.npz`` (the probe patterns and every reading). Refuses to overwrite
    ``out`` unless ``force``.
    """
    import dataclasses
    from pathlib import Path

    from hil.circuit import load_circuit
    from hil.bench.substrate import BenchSubstrate, load_bench
    from hil.bench.probe import probe_patterns
    from hil.runs import atomic_write

    out = Path(out)
    if out.exists() and not force:
        raise ValueError(f"{out}: already exists; choose another -o or pass --force to overwrite it")
    cfg = load_bench(bench_path)
    if circuit is None:
        if "circuit" not in cfg:
            raise ValueError(f"{bench_path}: no 'circuit' key; name the circuit on the command line")
        circuit = Path(cfg["circuit"])
        if not circuit.is_absolute() and not circuit.exists():
            circuit = Path(bench_path).parent / circuit
    c = load_circuit(circuit)
    with BenchSubstrate(c, cfg) as sub:
        written = sub.write(c.g)
        data = probe_patterns(sub, patterns, seed, level)
    fit = fit_conductances(c, data["V"], data["I"])
    scale, sigma = fit["g"] / written, fit["sigma"] / written
    cal = dataclasses.replace(c.with_g(written), calibration={
        "bench": str(Path(bench_path).resolve()), "written": written, "scale": scale, "sigma": sigma})
    atomic_write(out, f"# calibrated by hil calibrate from {Path(bench_path).resolve()}: {patterns} probe patterns, "
                      f"seed {seed}, level {data['level']:g} V\n" + cal.to_toml())
    png = out.with_suffix(".png")
    plot_deviations(c.edge_names, scale, sigma, png, f"{c.name}: actual / written, {patterns} probes")
    npz = out.with_suffix(".probes.npz")
    np.savez(npz, inputs=data["inputs"], clamps=data["clamps"], V=data["V"], I=data["I"], written=written)
    return {"circuit": c, "written": written, "g": fit["g"], "scale": scale, "sigma": sigma,
            "chi2_dof": fit["chi2_dof"], "patterns": patterns, "out": str(out), "plot": str(png), "probes": str(npz)}
