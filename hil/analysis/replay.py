"""Replay a recorded bench run on a simulated twin: where does the hardware depart from the model?

A bench run's record (:mod:`hil.bench.record`) holds every conductance written
(read back from the board) and every experiment run: its inputs, each output's
mode and values, and the node voltages the bench measured. The replay writes the
same conductances to a twin (ideal or ngspice, optionally a calibrated circuit
from ``hil calibrate``), runs the same experiments on it and compares, per step k
and node i,

    d_ki = max over the step's experiments and examples of |V_twin - V_bench|   (V)

and the rule's gradient estimate: the bench's (its recorded measurements put
through the same measurement protocol and rule) against the twin's (the rule's
own states measured on the twin at the same conductances and batch), as the
cosine between them per step. Steps whose largest d_ki exceeds ``threshold`` are
where the twin and the bench part; a voltage that is not a number (NaN) on either side
is a mismatch, never within the threshold.

The record is checked against the run first: a session file that repeats another (the
same events at the same times: a copy) is refused, and steps of the run that no session
holds (an empty session file, a lost one) are listed as missing.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from hil.runs import step_ranges
from hil.substrate import Experiment, Substrate, SubstrateError


class ReplayError(ValueError):
    """A record that cannot be replayed; names the run directory and the step."""


class Playback(Substrate):
    """The bench as recorded: ``run`` returns the recorded voltages of the next recorded run, in order.

    Feeding a step's recorded runs through :meth:`Substrate.measure` rebuilds the
    bench's measurements exactly; an experiment that differs from the record is an error.
    """

    def __init__(self, circuit, runs: list, g, where: str):
        self.circuit, self._runs, self._g, self.where = circuit, list(runs), np.asarray(g, float), where

    def write(self, g):
        self._g = np.asarray(g, float)
        return self._g.copy()

    def read(self):
        return self._g.copy()

    def output_green(self) -> np.ndarray:
        """K as the bench measured it: its probe current is the recorded one (the bench file's, not in the run)."""
        if self._runs:
            vals = self._runs[0]["experiments"][0]["values"]
            self.probe_current = float(vals[0, 0]) if vals.size else self.probe_current
        return super().output_green()

    def run(self, inputs, experiments) -> list:
        if not self._runs:
            raise ReplayError(f"{self.where}: the record ends before the measurement does")
        rec = self._runs.pop(0)
        X = np.atleast_2d(np.asarray(inputs, float))
        ok = X.shape == rec["inputs"].shape and np.allclose(X, rec["inputs"], rtol=1e-12, atol=1e-15) and \
            len(experiments) == len(rec["experiments"])
        for e, r in zip(experiments, rec["experiments"]):
            ok = ok and e.mode == r["mode"] and bool(e.sources_on) == r["sources_on"] and \
                np.allclose(np.asarray(e.values, float), r["values"], rtol=1e-9, atol=1e-15)
        if not ok:
            raise ReplayError(f"{self.where}: the recorded experiments differ from what the rule's protocol asks")
        return [np.asarray(v, float) for v in rec["V"]]


def segments(events: list, where: str) -> list:
    """Per step k (0: before the first step), the runs in it with the conductances in effect, and the write.

    Returns [{"step": k, "runs": [(g, run event)], "g_before": g, "g_after": g, "measure": [run events],
    "session": whether a (re)connected substrate's session begins with it}].
    """
    g, out, session = None, [], False
    cur = {"step": 0, "runs": [], "g_before": None, "g_after": None, "measure": [], "session": True}
    for ev in events:
        kind = ev["kind"]
        if kind == "start":  # a session (the run's start, or a resume): the substrate measures anew
            g, session = ev["g"], True
            cur["g_before"] = cur["g_before"] if cur["g_before"] is not None else g
        elif kind == "mark":
            out.append(cur)
            cur = {"step": int(ev["step"]), "runs": [], "g_before": g, "g_after": None, "measure": [],
                   "session": session}
            session = False
        elif kind == "write":
            g = ev["read_back"]
            cur["g_after"] = g
        elif kind == "run":
            if g is None:
                raise ReplayError(f"{where}: a run recorded before the conductances")
            cur["runs"].append((g, ev))
            if cur["g_after"] is None and cur["step"] > 0:
                cur["measure"].append(ev)
    out.append(cur)
    return [s for s in out if s["runs"]]


def sessions(run_dir) -> list:
    """[(file name, its events)] of each session's ``bench/steps.NNN.jsonl.gz`` in order, events as
    :func:`hil.bench.record.read_steps` returns them (a session begins with its ``start`` event)."""
    from collections import Counter

    from hil.bench.record import _located, read_steps
    events = read_steps(run_dir)
    files = sorted((Path(run_dir) / "bench").glob("steps.*.jsonl.gz"))
    counts = Counter(f.name for f, _, _ in _located(run_dir, "steps"))
    out, i = [], 0
    for f in files:
        n = counts.get(f.name, 0)
        out.append((f.name, events[i:i + n]))
        i += n
    return out


def check_sessions(run_dir, found: list) -> list:
    """ReplayError naming both files when a session repeats another (the same events at the same times: a copy
    would be replayed twice); returns the names of the session files that hold no event."""
    seen = {}
    for name, evs in found:
        if not evs:
            continue
        key = tuple((ev.get("kind"), ev.get("t"), ev.get("step")) for ev in evs)
        if key in seen:
            raise ReplayError(f"{Path(run_dir) / 'bench' / name}: the same session as bench/{seen[key]} (its "
                              f"{len(evs)} events at the same times): a copy, which would be replayed twice; "
                              "move it out of bench/ to replay the run")
        seen[key] = name
    return [name for name, evs in found if not evs]


def missing_steps(run_dir, segs: list) -> list:
    """The steps 0..K of the run (K: its checkpoint's step, else its log's last) that no session of the record
    holds: step 0 without its first measurements, a step k >= 1 without a write."""
    from hil.runs import Run, RunError
    run = Run(run_dir)
    try:
        last = int(run.load_checkpoint()["step"])
    except (RunError, KeyError, TypeError, ValueError):
        try:
            steps = run.read_log()["step"]
            last = int(steps[-1]) if len(steps) else 0
        except (RunError, OSError, ValueError):
            return []
    held = {s["step"] for s in segs if s["step"] == 0 or s["g_after"] is not None}
    return [k for k in range(last + 1) if k not in held]


def _batch_targets(task, X) -> np.ndarray:
    """Y for the batch X: each row found among the task's training inputs."""
    d = np.abs(X[:, None, :] - task.X_train[None, :, :]).max(axis=2)
    idx = d.argmin(axis=1)
    if not np.all(d[np.arange(len(X)), idx] <= 1e-12):
        raise ReplayError("a recorded batch is not made of the task's training examples")
    return task.Y_train[idx]


def replay(run_dir, twin: Substrate, threshold: float = 1e-3) -> dict:
    """Replay the record of ``run_dir`` on ``twin``; see the module docstring. Voltages in V, gradients in V^2/S."""
    from hil.rules import make_rule
    from hil.runs import Run, read_json
    from hil.tasks import Task

    run = Run(run_dir)
    cfg = run.config
    c = twin.circuit
    try:
        found = sessions(run_dir)
    except FileNotFoundError as exc:
        raise ReplayError(str(exc)) from None
    empty = check_sessions(run_dir, found)
    events = [ev for _, evs in found for ev in evs]
    segs = segments(events, str(run_dir))
    if not segs:
        raise ReplayError(f"{run.path / 'bench'}: the record holds no measurement"
                          + (f" ({', '.join(empty)}: no event)" if empty else ""))
    missing = missing_steps(run_dir, segs)
    task = Task.from_dict(read_json(Path(run_dir) / "task.json"))
    kappa = cfg.get("kappa_max")
    if isinstance(kappa, bool) or not isinstance(kappa, (int, float)) or not (math.isfinite(kappa) and kappa > 0):
        raise ReplayError(f"{run.path / 'config.json'}: kappa_max = {kappa!r}: not a positive finite number (ohms); "
                          "the run's record cannot be replayed without it")
    try:
        rule = make_rule(cfg["rule"], cfg.get("nudge"), cfg.get("points")).configure(kappa)
    except (KeyError, TypeError, ValueError) as exc:
        raise ReplayError(f"{run.path / 'config.json'}: {type(exc).__name__}: {exc}") from None
    steps, div, rms, cos, rel, norms = [], [], [], [], [], []
    gain = None
    nans = []  # (step, node, which side read NaN)
    for seg in segs:
        d = np.zeros(c.n)
        sq, count = np.zeros(c.n), 0
        for g, ev in seg["runs"]:
            twin.write(g)
            exps = [Experiment(e["sources_on"], e["mode"], e["values"]) for e in ev["experiments"]]
            for Vt, Vb in zip(twin.run(ev["inputs"], exps), ev["V"]):
                Vt = np.asarray(Vt).real
                D = np.abs(Vt - Vb)
                d = np.maximum(d, D.max(axis=0))  # NaN stays NaN: a mismatch
                sq += (D ** 2).sum(axis=0)
                count += len(D)
                if np.isnan(D).any() and not (nans and nans[-1][0] == seg["step"]):
                    i = int(np.flatnonzero(np.isnan(D).any(axis=0))[0])
                    nans.append((seg["step"], c.nodes[i], "bench" if np.isnan(Vb[:, i]).any() else "twin"))
        steps.append(seg["step"])
        div.append(d)
        rms.append(np.sqrt(sq / max(count, 1)))
        read_nan = any(np.isnan(np.asarray(v, float)).any() for ev in seg["measure"] for v in ev["V"])
        if seg["step"] == 0 or not seg["measure"] or read_nan:  # a NaN reading: no estimate to compare (listed above)
            cos.append(np.nan), rel.append(np.nan), norms.append((np.nan, np.nan))
            continue
        X = seg["measure"][0]["inputs"]
        Y = _batch_targets(task, X)
        where = f"{run_dir}: step {seg['step']}"
        if seg["session"]:
            gain = None
        pb = Playback(c, seg["measure"], seg["g_before"], where)
        pb._adjoint_gain = gain  # measured once per run on the bench, as the substrate caches it
        gb = rule.estimate(pb.measure(X, Y, rule.states()))
        gain = getattr(pb, "_adjoint_gain", None)
        twin.write(seg["g_before"])
        gt = rule.estimate(twin.measure(X, Y, rule.states()))
        nb, nt = float(np.linalg.norm(gb)), float(np.linalg.norm(gt))
        cos.append(float(gb @ gt / (nb * nt)) if nb > 0 and nt > 0 else np.nan)
        rel.append(float(np.linalg.norm(gt - gb) / nb) if nb > 0 else np.nan)
        norms.append((nb, nt))
    div, rms = np.array(div), np.array(rms)
    worst = div.max(axis=1)  # NaN where any node read NaN
    parted = [s for s, w in zip(steps, worst) if not w <= threshold]
    return {"steps": np.array(steps), "nodes": list(c.nodes), "max_abs": div, "rms": rms, "worst": worst,
            "cosine": np.array(cos), "rel_error": np.array(rel), "norms": np.array(norms), "threshold": threshold,
            "parted": parted, "rule": rule.describe(), "ground": c.ground, "nan": nans,
            "missing": missing, "empty_sessions": empty}


def write_outputs(res: dict, out, title: str = "") -> list:
    """divergence.csv, gradients.csv and replay.png into ``out``; returns their paths."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "divergence.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["step", "node", "max_abs_V", "rms_V"])
        for k, s in enumerate(res["steps"]):
            for i, n in enumerate(res["nodes"]):
                w.writerow([int(s), n, repr(float(res["max_abs"][k, i])), repr(float(res["rms"][k, i]))])
    with open(out / "gradients.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["step", "cosine", "rel_error", "norm_bench", "norm_twin"])
        for k, s in enumerate(res["steps"]):
            w.writerow([int(s), res["cosine"][k], res["rel_error"][k], *res["norms"][k]])
    fig, ax = plt.subplots(3, 1, figsize=(7.5, 8.5), sharex=True, gridspec_kw={"height_ratios": [2, 1, 1]})
    steps = res["steps"]
    keep = [i for i in range(len(res["nodes"])) if i != res["ground"]]  # ground is 0 V on both sides
    im = ax[0].imshow(np.log10(np.maximum(res["max_abs"][:, keep].T, 1e-16)), aspect="auto", origin="lower",
                      extent=[steps[0] - 0.5, steps[-1] + 0.5, -0.5, len(keep) - 0.5], cmap="viridis")
    ax[0].set_yticks(range(len(keep)), [res["nodes"][i] for i in keep])
    ax[0].set_ylabel("node")
    fig.colorbar(im, ax=ax[0], label="log10 max |V_twin - V_bench| (V)")
    ax[1].semilogy(steps, np.maximum(res["worst"], 1e-16), "o-", ms=3, label="largest node divergence")
    ax[1].axhline(res["threshold"], color="r", ls="--", lw=0.8, label=f"threshold {res['threshold']:g} V")
    ax[1].set_ylabel("V")
    ax[1].legend(fontsize=8)
    ax[2].plot(steps, res["cosine"], "o-", ms=3)
    ax[2].set_ylabel("cosine(ghat bench, ghat twin)")
    ax[2].set_xlabel("step")
    for a in ax[1:]:
        a.grid(alpha=0.3)
    ax[0].set_title(title)
    fig.tight_layout()
    fig.savefig(out / "replay.png", dpi=110)
    plt.close(fig)
    return [out / "divergence.csv", out / "gradients.csv", out / "replay.png"]


def check_twin_circuit(run_circuit, twin_circuit) -> None:
    """The twin's circuit must be the run's (same nodes, edges, terminals), conductances aside."""
    a, b = run_circuit, twin_circuit
    if (a.nodes, a.edge_names, a.inputs, a.outputs, a.ground) != (b.nodes, b.edge_names, b.inputs, b.outputs, b.ground) \
            or not (np.array_equal(a.a, b.a) and np.array_equal(a.b, b.b)):
        raise ReplayError(f"{b.source}: not the run's circuit '{a.name}' (nodes, edges or terminals differ)")


def record_notes(res: dict) -> list:
    """What a replay says beside its numbers: the steps the record lacks, the voltages that were not numbers."""
    out = []
    if res["missing"]:
        empty = f" ({', '.join('bench/' + f for f in res['empty_sessions'])}: no event)" if res["empty_sessions"] else ""
        out.append(f"record incomplete: step{'s' if len(res['missing']) > 1 else ''} "
                   f"{step_ranges(res['missing'])} of the run not in it{empty}")
    if res["nan"]:
        out.append("not a number (NaN), counted beyond the threshold: " + "; ".join(
            f"step {k} node {node} ({side})" for k, node, side in res["nan"][:5]) + (" ..." if len(res["nan"]) > 5 else ""))
    return out


__all__ = ["replay", "write_outputs", "Playback", "segments", "sessions", "step_ranges", "ReplayError",
           "SubstrateError"]
