"""The ``hil`` command.

Units everywhere: conductances and EP's nudge beta in siemens (S), CL's and
AL's nudge eta dimensionless, voltages in volts, losses in V^2 (mean over the
examples of 1/2 ||V_O - y||^2), learning rates in S^2/V^2.

With ``--json`` a command prints one JSON object as the last line of standard output.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from pathlib import Path

import numpy as np

UNITS = ("units: conductances and EP's --nudge (beta) in siemens; CL's and AL's --nudge (eta) "
         "dimensionless; voltages in V; loss = mean over examples of 1/2 ||V_O - y||^2 in V^2; "
         "--lr in S^2/V^2.")

CIRCUIT_HELP = ("circuit file (TOML), shipped circuit name, or a run directory (its trained circuit, trained.toml) "
                "or one of its checkpoints (RUN/checkpoints/step_NNNNNN.npz)")
DEVICE_CHOICES = ["resistor", "digipot", "mosfet", "mosfet-mid", "mosfet-bsim", "mosfet-mid-bsim"]
NUDGE_HELP = ("nudge size: beta in siemens for ep, ep-sym, ep-holo, ep-open, ep-stencil; eta (dimensionless) for cl, al. "
              "Default: beta = 0.05 / kappa_max, 5%% of the convergence radius 1/kappa_max (kappa_max: the "
              "largest eigenvalue of the output Green's matrix K, ohms); eta = 0.05.")
LR_HELP = ("learning rate alpha in S^2/V^2 (update: g <- g - alpha * ghat), fixed. Default: 0.25 / lambda_max of "
           "the Gauss-Newton curvature mean_i J_i^T J_i of the loss (with K^-1 weighting for cl) at the "
           "conductances written, re-estimated every 10 steps (the curvature grows as small conductances "
           "shrink): a quarter of the largest stable step, whatever the circuit's conductance scale; the step "
           "in force is logged (log.csv column lr).")


def _add_task(p, required=True, split=False):
    """Task options; ``split``: the command trains, so a CSV task holds out --test-fraction of its rows."""
    g = p.add_mutually_exclusive_group(required=required)
    g.add_argument("--data", metavar="CSV", help="CSV task: header names the input and output nodes, one example a row "
                                                 "(V); with --label COLUMN a labelled CSV to classify; FILE.npz: arrays "
                                                 "X (examples x features) and y (labels) to classify")
    g.add_argument("--dataset", choices=["iris", "digits", "wine", "breast-cancer", "xor", "moons", "circles"],
                   help="classification: a data set shipped with scikit-learn, or generated (xor, moons, circles: "
                        "200 examples from --seed)")
    g.add_argument("--teacher", metavar="SEED", type=int,
                   help="teacher task: random teacher conductances (log-uniform in [g_min, g_max]) on the same topology")
    g.add_argument("--task", choices=["factorize"],
                   help="factorize: targets y = Y x for a random map Y (outputs x inputs, V/V) of rank --rank, the task of "
                        "layered circuits (docs/layered.md)")
    g.add_argument("--teacher-circuit", metavar="FILE",
                   help="teacher task: the teacher is this circuit file (same edges and terminals; shipped name or "
                        "path), inputs uniform in [-1, 1] V with seed 0; e.g. the symmetric kite")
    p.add_argument("--amplitude", type=float, default=None, metavar="VOLTS",
                   help="teacher tasks: inputs uniform in [-A, A] V (targets scale with them). Default 1 V; "
                        "0.1 V with --device mosfet*, where a channel is a conductance only in triode, at small "
                        "signals (net16: 4 of 256 channel-examples leave triode at 0.1 V, 55 at 1 V)")
    p.add_argument("--examples", type=int, default=None,
                   help="teacher task: training examples (default 16; test split: a quarter more); "
                        "factorize with --inputs random: default 4 x inputs")
    p.add_argument("--rank", type=int, default=None, help="factorize: rank of Y")
    p.add_argument("--scale", type=float, default=None, help="factorize: largest singular value of Y (V/V, default 1; "
                                                             "the others down to half of it)")
    p.add_argument("--inputs", dest="task_inputs", default=None, choices=["onehot", "random"],
                   help="factorize: one-hot inputs (Y's columns are the targets, the default) or random N(0,1) inputs")
    p.add_argument("--task-seed", type=int, default=None, help="factorize: seed of Y (and of random inputs; default 0)")
    p.add_argument("--label", metavar="COLUMN", help="classification: the CSV column holding each example's class "
                                                     "(strings or integers); every other column is a feature")
    p.add_argument("--input-volts", type=float, default=None, help="classification: volts per standard deviation "
                                                                   "of a standardised feature (default 1)")
    p.add_argument("--v-on", type=float, default=None, help="classification: target reading of the true class, V "
                                                            "(default 0.5)")
    p.add_argument("--v-off", type=float, default=None, help="classification: target reading of the other classes, "
                                                             "V (default -0.5)")
    p.add_argument("--cost", choices=["squared", "hinge"], default=None,
                   help="classification: squared (default): every output pulled to its target; hinge: an output "
                        "already past its target on the right side (the true class above --v-on, another below "
                        "--v-off) is not nudged (a squared hinge; docs/classification.md)")
    if split:
        p.add_argument("--test-fraction", type=float, default=None, help="CSV or classification task: held-out "
                                                                         "fraction of the rows (default 0.2)")


def _add_rule(p):
    p.add_argument("--rule", default="ep-sym", help="gd, ep, ep-sym, ep-holo, ep-open, ep-stencil, cl, al (default "
                                                     "ep-sym); ep-holo:N sets the points, ep-stencil:N the stencil's "
                                                     "half-width (2N real nudges, bias O(beta^2N)); fa: feedback "
                                                     "alignment on a circuit with weight matrices (hil generate layered)")
    p.add_argument("--nudge", type=float, default=None, help=NUDGE_HELP)
    p.add_argument("--points", type=int, default=None, help="ep-holo: number of points N on the circle (default 4); "
                                                                    "ep-stencil: half-width N (default 2)")


def _add_backend(p):
    p.add_argument("--backend", default="ideal", choices=["ideal", "ngspice", "bench"],
                   help="substrate: ideal (exact linear model, default), ngspice (libngspice through PySpice), "
                        "bench (instruments through pyvisa, --bench FILE)")
    p.add_argument("--bench", metavar="FILE", help="bench: the bench file (instruments, VISA resources, limits)")
    p.add_argument("--device", default="resistor", choices=DEVICE_CHOICES,
                   help="ngspice: the programmable resistor on each edge: resistor (ideal), digipot (N taps, "
                        "netlists/digipot.toml), mosfet (NMOS in triode, gate voltage against ground trained; "
                        "netlists/nmos_level1.lib; non-reciprocal), mosfet-mid (the same channel with its gate at "
                        "V_c + (V_d + V_s)/2, V_c trained: reciprocal); mosfet-bsim, mosfet-mid-bsim (the same with a "
                        "BSIM4 channel, PTM 65 nm: netlists/nmos_bsim4_ptm65.lib)")
    p.add_argument("--nonideal", metavar="FILE", help="ngspice: non-idealities (TOML; see netlists/nonideal-example.toml)")
    p.add_argument("--from-board", action="store_true",
                   help="bench: start from the conductances the board holds (checked against the limits) instead of "
                        "writing the circuit file's")


def _task(args, circuit):
    """The task the options name, or None. A CSV task is split only where the command trains
    (``--test-fraction``); analyses use every row."""
    from hil.tasks import circuit_teacher_task, load_csv_task, teacher_task
    _unused_task_options(args)
    if getattr(args, "task", None) == "factorize":
        from hil.tasks import factorize_task
        if args.rank is None:
            raise ValueError("--task factorize needs --rank K (the rank of Y)")
        return factorize_task(circuit, args.rank, args.task_seed or 0, 1.0 if args.scale is None else args.scale,
                              args.task_inputs or "onehot", args.examples)
    from hil.tasks import teacher_amplitude
    if args.examples is None:
        args.examples = 16
    amp = args.amplitude if args.amplitude is not None else teacher_amplitude(getattr(args, "device", None))
    if (getattr(args, "data", None) or getattr(args, "dataset", None)) and args.amplitude is not None:
        raise ValueError("--amplitude applies to teacher tasks (--teacher, --teacher-circuit): a CSV task's "
                         "voltages are its own (a classification's: --input-volts)")
    if getattr(args, "teacher_circuit", None):
        from hil.circuit import load_circuit
        return circuit_teacher_task(circuit, load_circuit(args.teacher_circuit), 0, args.examples, amplitude=amp)
    classify = _classification(args, circuit)
    if classify is not None:
        return classify
    if getattr(args, "data", None):
        return load_csv_task(circuit, args.data, _test_fraction(args), seed=getattr(args, "seed", 0) or 0)
    if getattr(args, "teacher", None) is not None:
        return teacher_task(circuit, args.teacher, args.examples, amplitude=amp)
    return None


def _test_fraction(args) -> float:
    """The held-out fraction of a CSV or classification task: --test-fraction where the command trains (default
    0.2), 0 where it analyses (every row used)."""
    if not hasattr(args, "test_fraction"):
        return 0.0
    return 0.2 if args.test_fraction is None else args.test_fraction


def _unused_task_options(args) -> None:
    """ValueError naming a task option given for a task that does not use it (it would be ignored)."""
    given = [(opt, getattr(args, key, None)) for opt, key in (("--teacher", "teacher"), ("--teacher-circuit",
             "teacher_circuit"), ("--dataset", "dataset"), ("--data", "data"), ("--task factorize", "task"))]
    task = next((opt for opt, v in given if v is not None), None)
    which = f"the {task} task, which would ignore it" if task else "no task here (nothing would use it)"
    if task != "--task factorize":
        for option, value in (("--rank", args.rank), ("--scale", args.scale), ("--inputs", args.task_inputs),
                              ("--task-seed", args.task_seed)):
            if value is not None:
                raise ValueError(f"{option} {value}: applies to --task factorize (its map Y), not to {which}")
    if getattr(args, "examples", None) is not None and (task in ("--data", "--dataset") or (
            task == "--task factorize" and args.task_inputs != "random")):
        raise ValueError(f"--examples {args.examples}: applies to teacher tasks and to --task factorize --inputs "
                         f"random, not to the {task}{' task with one-hot inputs' if task == '--task factorize' else ' task'}"
                         ", whose examples are " + ("the inputs' unit vectors" if task == "--task factorize"
                                                    else "its rows"))
    if getattr(args, "test_fraction", None) is not None and task not in ("--data", "--dataset"):
        raise ValueError(f"--test-fraction {args.test_fraction}: applies to a CSV or classification task (--data, "
                         "--dataset), whose rows are split, not to " + (
                             f"the {task} task, which sets its own held-out examples (teacher tasks: a quarter of "
                             "--examples; factorize: none with one-hot inputs)" if task else "no task"))


def _classification(args, circuit):
    """The classification task the options name (--dataset, --data FILE.npz, --data CSV --label COLUMN), or None."""
    from hil import classify as cl
    data, label = getattr(args, "data", None), getattr(args, "label", None)
    on_off = [getattr(args, k, None) for k in ("v_on", "v_off", "input_volts", "cost")]
    if not getattr(args, "dataset", None) and not label and not (data and str(data).endswith(".npz")):
        if any(v is not None for v in on_off):
            raise ValueError("--v-on, --v-off, --input-volts and --cost apply to a classification (--dataset, --data "
                             "FILE --label COLUMN or --data FILE.npz)")
        return None
    if label and not data:
        raise ValueError("--label COLUMN names the class column of a CSV given with --data")
    if on_off[3] is not None and getattr(args, "command", "train") != "train":
        raise ValueError(f"--cost {on_off[3]}: applies to hil train; hil {args.command} measures the squared error "
                         "to the targets")
    if getattr(args, "dataset", None):
        labelled = cl.load_dataset(args.dataset, getattr(args, "seed", 0) or 0)
    elif str(data).endswith(".npz"):
        if label:
            raise ValueError(f"--label {label}: a .npz data file holds its labels as the array y")
        labelled = cl.load_npz(data)
    else:
        labelled = cl.load_labelled_csv(data, label)
    v_on, v_off = (cl.V_ON if on_off[0] is None else on_off[0]), (cl.V_OFF if on_off[1] is None else on_off[1])
    return cl.classification_task(circuit, labelled, _test_fraction(args),
                                  getattr(args, "seed", 0) or 0, v_on, v_off,
                                  1.0 if on_off[2] is None else on_off[2], on_off[3] or "squared")


def _task_line(task, trains=False) -> str:
    """What a command says about the examples it used."""
    if trains:
        return (f"task {task.description}: {task.n_train} training examples, {len(task.X_test)} held out "
                "for the test loss")
    csv = " (every row of the file)" if task.description.startswith("csv:") else ""
    return f"task {task.description}: {task.n_train} examples used{csv}"


def _emit(args, obj, text=None):
    if text:
        print(text)
    if args.json:
        print(json.dumps(obj, default=lambda x: x.tolist() if isinstance(x, np.ndarray) else float(x)))


def cmd_train(args):
    from hil.circuit import load_any
    from hil.train import TrainConfig, resume_run, start_run

    if args.resume:
        given = {k: v for k, v in getattr(args, "explicit", {}).items() if k not in ("resume", "json")}
        if "circuit" in given:
            raise ValueError(f"CIRCUIT {given['circuit']}: a resume takes the run's own circuit.toml; "
                             "give only --resume DIR (and --steps to extend it)")
        if "bench" in given:
            from pathlib import Path
            given["bench"] = str(Path(given["bench"]).resolve())
        res = resume_run(args.resume, progress=None if not args.json else False, changes=given)
    else:
        if not args.circuit or not args.out:
            raise ValueError("CIRCUIT, a task (--data, --teacher or --teacher-circuit) and --out are needed "
                             "(or --resume DIR)")
        circuit = load_any(args.circuit)
        if True:  # every circuit, layered ones included, trains through the one loop
            cfg = TrainConfig(rule=args.rule, nudge=args.nudge, points=args.points, lr=args.lr,
                              steps=1000 if args.steps is None else args.steps, batch=args.batch, seed=args.seed,
                              checkpoint_every=args.checkpoint_every, log_every=args.log_every,
                              backend=args.backend, backend_options=_backend_options(args),
                              homeostasis=args.homeostasis, rounding=args.rounding)
            from hil.train import check_config
            check_config(cfg)  # before the task is built: a bad option is named first
            _unused_rule_options(args)
        task = _task(args, circuit)
        if task is None:
            raise ValueError("give a task: --data CSV, --dataset NAME, --teacher SEED or --teacher-circuit FILE")
        if args.epochs is not None:
            _by_epochs(args, cfg, task)
        res = start_run(circuit, task, cfg, args.out, progress=None if not args.json else False, force=args.force)
    text = (f"loss {res['initial_loss']:.4g} -> {res['final_loss']:.4g} V^2 in {res['steps']} steps; "
            f"run in {res['run_dir']} (loss.png, log.csv; the trained circuit: trained.toml, or name the run "
            "folder as the circuit)")
    if "test_accuracy" in res:
        text += (f"\naccuracy: train {res['train_accuracy']:.4f}, test {res['test_accuracy']:.4f} "
                 f"(classes {', '.join(res['classes'])}; confusion matrices in result.json, confusion.png)")
    for st in res.get("stalled", []):  # the message itself was printed when it happened
        text = f"stalled at step {st['step']}: no parameter changed for the 20 steps before (history.log)\n" + text
    if res.get("nudge_note"):
        text = res["nudge_note"] + " (config.json: nudge, nudge_refused)\n" + text
    from hil.analysis.factorize import factorize_note
    note = factorize_note(res["run_dir"])
    if note:
        res.update(note["result"])
        text = text + "\n" + note["text"]
    if not args.resume:
        text = _task_line(task, trains=True) + "\n" + text
        res.update(examples=task.n_train, test_examples=len(task.X_test))
    _emit(args, res, text)


def _unused_rule_options(args) -> None:
    """ValueError naming --nudge or --points given to a rule that has no use for it (it would be ignored)."""
    from hil.rules import make_rule
    rule = make_rule(args.rule)
    if args.nudge is not None and not rule.uses_nudge:
        raise ValueError(f"--nudge {args.nudge!r}: rule {rule.name} has no nudge (it "
                         + ("drives the output error backward through fixed feedback crossbars"
                            if rule.name == "fa" else "measures the adjoint experiment") +
                         "); the nudge is EP's beta or CL's and AL's eta")
    if args.points is not None and rule.name not in ("ep-holo", "ep-stencil"):
        raise ValueError(f"--points {args.points}: applies to ep-holo (points on the circle) and ep-stencil (the "
                         f"stencil's half-width), not to rule {rule.name}")


def _by_epochs(args, cfg, task) -> None:
    """--epochs E: E passes through the training split in shuffled minibatches (--batch, default 10)."""
    from hil.train import ConfigError, by_epochs
    if args.steps is not None:
        raise ConfigError(f"--steps {args.steps} and --epochs {args.epochs}: give one (an epoch is "
                          "ceil(training examples / --batch) steps)")
    by_epochs(cfg, task.n_train, args.epochs)


def _backend_options(args) -> dict:
    if getattr(args, "from_board", False) and args.backend != "bench":
        raise ValueError("--from-board needs --backend bench")
    if args.backend == "bench":
        if not getattr(args, "bench", None):
            raise ValueError("--backend bench needs --bench FILE (a bench file; `hil emulate` writes one)")
        from pathlib import Path
        opts = {"bench": str(Path(args.bench).resolve())}
        if getattr(args, "from_board", False):
            opts["from_board"] = True
        return opts
    if args.backend == "ngspice":
        opts = {"device": args.device}
        if args.nonideal:
            from pathlib import Path
            opts["nonideal"] = str(Path(args.nonideal).resolve())
        return opts
    if args.device in ("mosfet", "mosfet-mid") and not args.nonideal:
        return {"device": args.device}  # level-1 channels are ideal elements too
    if args.device != "resistor" or args.nonideal:
        raise ValueError("--device and --nonideal need --backend ngspice (the ideal backend has the level-1 "
                         "devices mosfet and mosfet-mid, with ideal parts)")
    return {}


def cmd_grad(args):
    from hil.circuit import load_any
    from hil.gradients import reference_gradient
    from hil.rules import make_rule
    from hil.train import nudge_note, open_substrate, settle_default_nudge

    circuit = load_any(args.circuit)
    task = _task(args, circuit)
    X, Y = task.X_train, task.Y_train
    from hil.gradients import decomposition, nudge_bias
    with open_substrate(circuit, args.backend, **_backend_options(args)) as sub:
        kappa = sub.kappa_max(X)
        rule = make_rule(args.rule, args.nudge, args.points, seed=args.seed).configure(kappa)
        refused = settle_default_nudge(sub, rule, X, Y) if args.nudge is None else []
        est = rule.estimate(sub.measure(X, Y, rule.states()))
        exact = reference_gradient(sub, X, Y, args.reference)
        dec = decomposition(sub, X, Y, reference=exact)
        regions = sub.channel_regions(X) if hasattr(sub, "channel_regions") else None
        auto_ref = "adjoint formula" if args.backend == "ideal" else \
            "ngspice sens analysis" if getattr(sub, "has_sens", True) else "central differences through the substrate"
    n_exact, n_est, err = np.linalg.norm(exact), np.linalg.norm(est), float(np.linalg.norm(est - exact))
    # at a zero of the reference gradient (e.g. at the teacher) only the absolute error means anything
    cos = float(est @ exact / (n_est * n_exact)) if n_exact > 0 and n_est > 0 else None
    rel = float(err / n_exact) if n_exact > 0 else None
    ep_family = rule.nudge_unit == "S"
    nb = nudge_bias(est, dec) if ep_family else None
    cml = [x for x in dec["cos_mu_lambda"] if x is not None]
    obj = {"edges": list(circuit.edge_names), "params": list(circuit.param_names), "exact": exact.tolist(),
           "estimate": est.tolist(), "limit": dec["limit"].tolist(),
           "cosine": cos, "rel_error": rel, "abs_error": err, "rule": rule.describe(), "nudge": rule.nudge,
           "nudge_bias": nb, "asymmetry_bias": dec["asymmetry_bias"], "local_signal_bias": dec["local_signal_bias"],
           "outside_linear": dec["outside_linear"], "true_limit": None if dec["true_limit"] is None else
           dec["true_limit"].tolist(), "cos_limit": dec["cos_limit"],
           "cos_mu_lambda": dec["cos_mu_lambda"], "symmetry_index": dec["symmetry_index"],
           "backend": args.backend, "examples": task.n_train, "nudge_refused": refused, "channel_regions": regions,
           "reference": {"auto": auto_ref,
                         "sens": "ngspice sens analysis", "fd": "central differences through the substrate"}[args.reference]}
    summary = (f"cosine {cos:.6f}" if cos is not None else "cosine undefined") + ", " + (
        f"relative error {rel:.3e}" if rel is not None else
        f"the reference gradient is zero; absolute error {err:.3e} V^2/S")
    f = lambda x, spec=".3e": "-" if x is None else format(x, spec)
    si = dec["symmetry_index"]
    lines = [_task_line(task)] + ([nudge_note(refused, rule.nudge, rule.nudge_unit)] if refused else []) + [
             f"{rule.describe()} on {circuit.name}: {summary}",
             "error split, relative to ||dC/dtheta||: "
             + (f"nudge bias ||ghat(beta) - ghat(0)|| = {f(nb)}, " if ep_family else "")
             + f"local-signal bias ||ghat(0) + mu^T dF/dtheta|| = {f(dec['local_signal_bias'])}, "
             + f"asymmetry bias ||(lambda - mu)^T dF/dtheta|| = {f(dec['asymmetry_bias'])}"
             + _outside_note(dec["outside_linear"]),
             f"cos(ghat(0), dC/dtheta) = {f(dec['cos_limit'], '.6f')}; error-vector alignment cos(mu, lambda) "
             + (f"{min(cml):.6f} to {max(cml):.6f} over {len(cml)} examples" if cml else "-")
             + f"; Jacobian symmetry index {f(si, '.6f') if si is not None else '- (nonlinear device: not measured)'}",
             f"{'param':>8} {'exact dC/dtheta (V^2/S)':>24} {'estimate':>14} {'ghat(0)':>14}"]
    if circuit.matrices:
        per = _per_matrix(circuit, est, exact)
        obj["cosine_per_matrix"] = per
        lines.insert(next(k for k, ln in enumerate(lines) if ln.startswith(rule.describe())) + 1,
                     "cosine per weight matrix: " + ", ".join(f"{nm} {'-' if v is None else f'{v:.6f}'}"
                                                             for nm, v in per.items()) + _unreached(rule, per))
    if regions:  # after the rule's line
        lines.insert(next(k for k, ln in enumerate(lines) if ln.startswith(rule.describe())) + 1, _regions_line(regions))
    lines += [f"{n:>8} {e:24.6g} {s:14.6g} {z:14.6g}"
              for n, e, s, z in zip(circuit.param_names, exact, est, dec["limit"])]
    _emit(args, obj, "\n".join(lines))


def _per_matrix(circuit, est, exact) -> dict:
    """cos(ghat, dC/dtheta) over each weight matrix's crosspoints; None where ghat is rounding only there."""
    per = {}
    for mat in circuit.matrices:
        idx = np.concatenate([mat.plus.ravel(), mat.minus.ravel()])
        a, b = est[idx], exact[idx]
        na, nb = np.linalg.norm(a), np.linalg.norm(b)
        per[mat.name] = float(a @ b / (na * nb)) if na > 1e-9 * nb and nb > 0 else None
    return per


def _unreached(rule, per: dict) -> str:
    """What grad says about the matrices a rule's update does not reach."""
    names = [nm for nm, v in per.items() if v is None]
    if not names:
        return ""
    return (f" ({rule.name} reaches no crosspoint of {', '.join(names)}: its nudge or clamp acts on the outputs, and "
            "one-way stages (op-amp buffers) hold each line downstream of them whatever is injected, so nothing moves "
            "a voltage upstream; gd (the adjoint: weight transport) and fa (the error through a fixed feedback "
            "crossbar) reach every matrix)")


def _regions_line(r: dict) -> str:
    """What grad and info say about the channels' regions at the free operating points."""
    out = r["channels"] - r["triode"]
    return (f"channels out of triode at the free operating points: {out} of {r['channels']} channel-examples "
            f"({r['saturation']} saturated, {r['cutoff']} cut off) in {r['examples_out']} examples"
            + ("; a smaller --amplitude keeps them in triode" if out else ""))
def _outside_note(counts) -> str:
    """'; elements outside their linear region: example 4: 3' (or nothing when none is)."""
    if not counts or not any(counts):
        return ""
    return "; elements outside their linear region (saturated or cut-off channels, conducting diodes): " + \
        ", ".join(f"example {i}: {k}" for i, k in enumerate(counts) if k)


def cmd_info(args):
    from hil.circuit import load_any
    from hil.exact import (coercivity, homeostasis, jacobian, kappa_max, operating_jacobian, output_green,
                           residual_basis, symmetry_index)

    c = load_any(args.circuit)
    K = output_green(c)
    kmax = kappa_max(K)
    ev = np.linalg.eigvalsh(K) if c.reciprocal else np.linalg.eigvals(K)
    from hil.exact import homeostasis_stochastic
    A = operating_jacobian(c)  # at the 0 V inputs' operating point when the circuit is nonlinear
    si = symmetry_index(A)
    Hs, Hse = homeostasis_stochastic(lambda E: A @ E, lambda E: A.T @ E, A.shape[0], 400, 0)
    obj = {"name": c.name, "source": c.source, "nodes": list(c.nodes), "edges": list(c.edge_names),
           "vccs": list(c.vccs_names), "n_nodes": c.n, "n_edges": c.m, "n_vccs": c.k, "n_params": c.n_params,
           "ground": c.nodes[c.ground], "inputs": c.input_names,
           "outputs": c.output_names, "g_min": c.g_min, "g_max": c.g_max,
           "K_eigenvalues": ev.tolist() if c.reciprocal else [[float(x.real), float(x.imag)] for x in ev],
           "kappa_max": kmax, "nudge_radius": 1 / kmax if kmax > 0 else None, "symmetry_index": si, "homeostasis_H": homeostasis(c),
           "homeostasis_H_stochastic": [Hs, Hse], "biases": {c.nodes[i]: float(v) for i, v in zip(c.biases, c.bias_v)},
           "elements": {grp.table: list(grp.names) for grp in c.elements}}
    fmt = (lambda x: f"{x:.4g}") if c.reciprocal else (lambda x: f"{x.real:.4g}{x.imag:+.3g}j")
    lines = [f"{c.name} ({c.source}): {c.n} nodes, {c.m} edges" + (f", {c.k} VCCS" if c.k else "") +
             "".join(f", {len(grp)} {grp.table}" for grp in c.elements) +
             (f", {len(c.biases)} bias" if c.biases else "") +
             f"; ground {obj['ground']}; "
             f"inputs {', '.join(c.input_names) or '-'}; outputs {', '.join(c.output_names)}",
             f"conductance bounds [{c.g_min:g}, {c.g_max:g}] S",
             f"eigenvalues of K (ohms){' about the operating point at 0 V inputs' if c.elements else ''}: "
             f"{', '.join(fmt(x) for x in ev)}",
             (f"EP nudge radius 1/kappa_max = {1 / kmax:.4g} S" + ("" if c.reciprocal else " (kappa_max: spectral radius of K)")
              if kmax > 0 else "K = 0: every output is driven by an ideal source (a buffer), no nudge or clamp moves "
              "it, so EP and CL reach no parameter through the outputs"),
             f"Jacobian symmetry index ||A_sym|| / (||A_sym|| + ||A_anti||) = {si:.6g} "
             f"({'reciprocal' if si == 1 else 'non-reciprocal'}); H = 1/2 ||A - A^T||_F^2 = {obj['homeostasis_H']:.4g} S^2 "
             f"(stochastic estimate, 400 probes: {Hs:.4g} +- {Hse:.2g})"]
    if c.matrices:
        from hil.matrices import weights
        obj["matrices"] = {mat.name: W.tolist() for mat, W in zip(c.matrices, weights(c))}
        for mat, W in zip(c.matrices, weights(c)):
            R = 1.0 / c.g[mat.feedback]
            lines.append(f"matrix {mat.name} = diag(R) (G+ - G-), {W.shape[0]} x {W.shape[1]} V/V, R {R.min():g}.."
                         f"{R.max():g} ohm, each weight within +-{R.max() * (c.g_max - c.g_min):.4g} V/V:")
            lines += ["  " + " ".join(f"{v:+.4f}" for v in row) for row in W]
    task = _task(args, c)
    if args.device != "resistor" and task is None:
        raise ValueError(f"--device {args.device}: counts the channels' regions at a task's operating points; "
                         "give a task (--teacher SEED, --data CSV)")
    if task is not None and args.device != "resistor":
        from hil.train import open_substrate
        with open_substrate(c, "ngspice", device=args.device) as sub:
            regions = sub.channel_regions(task.X_train)
        obj["channel_regions"] = regions
    if task is not None:
        X = task.X_train
        J = jacobian(c, X)
        cc = coercivity(c, X)
        raw = coercivity(c, X, restrict=False)
        rank = int(np.linalg.matrix_rank(J))
        constraints = residual_basis(c, X).shape[1]
        obj.update(coercivity=cc, coercivity_raw=raw, rank=rank, constraints=constraints,
                   rows=int(J.shape[0]), examples=task.n_train)
        lines.append(_task_line(task))
        lines.append(f"task {task.description}: rank J = {rank} of {constraints} independent output constraints "
                     f"(|O| x rank X; {J.shape[0]} rows)")
        lines.append(f"coercivity c = lambda_min(J J^T on the residual space)/N = {cc:.4g} V^2/S^2 "
                     f"({'coercive' if cc > 0 and rank == constraints else 'NOT coercive'}); "
                     f"raw lambda_min(J J^T)/N = {raw:.3g}")
        if obj.get("channel_regions"):
            lines.append(_regions_line(obj["channel_regions"]))
    _emit(args, obj, "\n".join(lines))


def cmd_netlist(args):
    from hil.circuit import load_any
    from hil.spice.netlist import standalone_deck

    from hil.spice.devices import make_device
    from hil.spice.nonideal import NonIdeal, load_nonideal

    from hil.runs import atomic_write, check_output

    c = load_any(args.circuit)
    inputs = [_volts(x, "--inputs") for x in args.inputs.split(",")] if args.inputs else [1.0] * len(c.inputs)
    if len(inputs) != len(c.inputs):
        raise ValueError(f"--inputs: {len(inputs)} values for the {len(c.inputs)} inputs of {c.name}")
    check_output(args.o, [c.source, args.nonideal] if args.nonideal else [c.source], args.force, "-o", ours="* hil: ")
    device = make_device(args.device, c, load_nonideal(args.nonideal) if args.nonideal else NonIdeal())
    atomic_write(args.o, standalone_deck(c, device.param_from_g(c.g), inputs, device))
    _emit(args, {"path": args.o}, f"wrote {args.o}: run it with `ngspice -b {args.o}`")


def _volts(text: str, option: str) -> float:
    """A finite voltage from the command line; ValueError naming the option otherwise."""
    from hil.tasks import plain_number
    v = plain_number(text)
    if v is None:
        raise ValueError(f"{option}: {text.strip()!r} is not a finite number of volts")
    return v


def _nudge_grid(spec: str | None, kappa: float, g_scale: float = 1.0) -> np.ndarray:
    if not spec and not kappa > 0:  # K = 0: no radius; the grid on the circuit's conductance scale (S)
        return np.geomspace(1e-3 * g_scale, 0.5 * g_scale, 10)
    if not spec:
        return np.geomspace(1e-3 / kappa, 0.5 / kappa, 10)  # up to half the radius: at 1/kappa, ep-holo hits the pole
    parts = spec.split(":")
    try:
        lo, hi, n = float(parts[0]), float(parts[1]), int(parts[2])
        assert len(parts) == 3 and 0 < lo < hi and n >= 2
    except (ValueError, IndexError, AssertionError):
        raise ValueError(f"--nudges {spec!r}: expected LO:HI:COUNT with 0 < LO < HI (siemens) and COUNT >= 2") from None
    return np.geomspace(lo, hi, n)


def cmd_bias(args):
    from hil.analysis.bias import sweep, write_outputs
    from hil.circuit import load_circuit
    from hil.progress import Progress
    from hil.train import open_substrate

    c = load_circuit(args.circuit)
    task = _task(args, c)
    rules = _names(args.rules, "--rules")
    for r in rules:
        from hil.rules import make_rule
        make_rule(r)  # a clear error before any work
    if not (math.isfinite(args.noise) and args.noise >= 0):
        raise ValueError(f"--noise {args.noise}: must be a finite voltage >= 0")
    if args.repeats < 1:
        raise ValueError(f"--repeats {args.repeats}: must be a whole number >= 1")
    with open_substrate(c, args.backend, **_backend_options(args)) as sub:
        kappa = sub.kappa_max(task.X_train)
        grid = _nudge_grid(args.nudges, kappa, float(np.median(c.g)))
        with Progress(len(rules) * len(grid), "bias", enabled=None if not args.json else False) as bar:
            res = sweep(sub, task.X_train, task.Y_train, rules, grid, noise=args.noise, repeats=args.repeats,
                        seed=args.seed, progress=lambda d, t: bar.update(d))
    paths = write_outputs(res, args.out, f"{c.name}: {args.backend}" + (f", noise {args.noise:g} V" if args.noise else ""))
    si = res["symmetry_index"]
    cml = [x for x in res["cos_mu_lambda"] if x is not None]
    lines = [_task_line(task), f"{c.name} ({args.backend}): convergence radius 1/kappa_max = {res['radius']:.4g} S; "
             f"reference |dC/dtheta| = {res['ref_norm']:.4g} V^2/S",
             f"local-signal bias ||ghat(0) + mu^T dF/dtheta|| / ||dC/dtheta|| = "
             f"{'-' if res['local_signal_bias'] is None else format(res['local_signal_bias'], '.3e')}, "
             f"asymmetry bias ||(lambda - mu)^T dF/dtheta|| / ||dC/dtheta|| = {res['asymmetry_bias']:.3e} (every EP rule, "
             f"any nudge){_outside_note(res['outside_linear'])}; cos(ghat(0), dC/dtheta) = {res['cos_limit']:.6f}; "
             "cos(mu, lambda) "
             + (f"{min(cml):.6f}..{max(cml):.6f}" if cml else "-")
             + f"; Jacobian symmetry index {'-' if si is None else format(si, '.6f')}",
             f"{'rule':<12} {'order':>7} {'best nudge':>12} {'rel. MSE':>10} {'nudge bias at smallest':>23}"]
    for name, r in res["rules"].items():
        order = f"{r['slope']:.2f}" if r["slope"] is not None else "exact"
        nb = r["nudge_bias"][0]
        lines.append(f"{name:<12} {order:>7} {r['best_nudge']:12.4g} {r['best_mse']:10.3g} "
                     f"{'-' if nb is None else format(nb, '.3e'):>23}"
                     + (f"  (no operating point at beta = {', '.join(f'{b:.3g}' for b in r['failed'])} S: "
                        "left out)" if r["failed"] else "")
                     + (f"  (beta = {', '.join(f'{b:.3g}' for b in r['skipped'])} S left out: the stencil's outer "
                        f"nudges would pass {max(0.5 * res['radius'], float(np.max(grid))):.3g} S, the grid's reach: "
                        "the series of the nudged states diverges at the radius)"
                        if r.get("skipped") else ""))
    lines.append("wrote " + ", ".join(map(str, paths)))
    _emit(args, {"rules": res["rules"], "radius": res["radius"] if np.isfinite(res["radius"]) else None,
                 "kappa_max": res["kappa_max"],
                 "nudge_bias": {n: r["nudge_bias"] for n, r in res["rules"].items()},
                 "asymmetry_bias": res["asymmetry_bias"], "local_signal_bias": res["local_signal_bias"],
                 "outside_linear": res["outside_linear"], "symmetry_index": si, "cos_limit": res["cos_limit"],
                 "cos_mu_lambda": res["cos_mu_lambda"], "nudges": [float(x) for x in grid],
                 "out": str(args.out), "examples": task.n_train}, "\n".join(lines))


def cmd_coercivity(args):
    from hil.analysis import coercivity as co
    from hil.circuit import load_circuit

    c = load_circuit(args.circuit)
    task = _task(args, c)
    from hil.exact import loss
    r = co.report(c, task.X_train, Y=task.Y_train)
    r["examples"] = task.n_train
    r["loss"] = loss(c, task.X_train, task.Y_train)
    scale = 0.5 * float(np.mean(np.sum(task.Y_train ** 2, axis=1)))
    r["reachable"] = r["floor"] is None or r["floor"] <= 1e-9 * max(scale, 1e-300)
    lines = [_task_line(task) + ":",
             f"  coercivity constant c = {r['constant']:.4g} V^2/S^2 ({'coercive' if r['coercive'] else 'NOT coercive'}; "
             f"largest eigenvalue {r['lambda_max']:.4g}, ratio {r['constant'] / (r['lambda_max'] or 1):.3g})",
             f"  rank J = {r['rank']} of {r['constraints']} independent output constraints (|O| x rank X)"]
    for u in r["unreachable"]:
        lines.append(f"  unreachable residual (sigma = {u['sigma']:.3g} V/S): output combination "
                     f"{co.combination(u['outputs'])} driven by input combination {co.combination(u['inputs'])}; "
                     "no first-order change of any conductance moves the outputs this way")
    for d in r["dead_edges"]:
        lines.append(f"  dead edge {d['edge']}: {d['reason']}")
    if r["pinned_edges"]:
        lines.append(f"  at a conductance bound (left out): {', '.join(r['pinned_edges'])}")
    if not r["reachable"]:
        lines.append(f"  targets OUT OF REACH: no passive network gets below {r['floor']:.4g} V^2 on them (loss now "
                     f"{r['loss']:.4g} V^2): each output is a weighted mean of the inputs and 0 V, weights >= 0; "
                     "least squares over such weights gives that floor. Training converges to a point above it, "
                     "where the coercivity below describes the approach, not a decay to zero")
    lines.append(f"  predicted loss decay per step at the default learning rate: gd/EP/AL {r['rate']['ep']:.4g}, "
                 f"CL {r['rate']['cl']:.4g} (c_CL = {r['constant_cl']:.4g})"
                 + ("" if r["reachable"] else "; toward zero loss, which these targets do not allow"))
    _emit(args, r, "\n".join(lines))


def cmd_perturb(args):
    from hil.circuit import load_circuit
    from hil.circuits import perturb

    from hil.runs import check_output

    c = load_circuit(args.circuit)
    check_output(args.o, [c.source], args.force, "-o", ours="# written by hil")
    p = perturb(c, args.scale, args.seed)
    p.save(args.o, header=f"written by hil perturb {Path(c.source).name} --scale {args.scale:g} --seed {args.seed}")
    ratio = p.g / c.g
    _emit(args, {"path": args.o, "ratio_min": float(ratio.min()), "ratio_max": float(ratio.max())},
          f"wrote {args.o}: {c.m} conductances times exp({args.scale:g} N(0,1)) (seed {args.seed}), "
          f"ratios {ratio.min():.3f} to {ratio.max():.3f}, clipped to [g_min, g_max]")


def cmd_sweep(args):
    from hil.analysis.sweep import grid, run_sweep, summarize
    from hil.circuit import load_circuit
    from hil.progress import Progress

    c = load_circuit(args.circuit)  # a clear error before any worker starts
    rules = _names(args.rules, "--rules")
    nudges = number_list(args.nudges, "--nudges") if args.nudges else None
    seeds = number_list(args.seeds, "--seeds", int, lo=0) if args.seeds else [0]
    nonideals = [x or None for x in args.nonideal_files.split(",")] if args.nonideal_files else None
    weights = number_list(args.homeostasis, "--homeostasis", lo=0) if args.homeostasis else None
    scales = number_list(args.vccs_scale, "--vccs-scale") if args.vccs_scale else None
    asyms = number_list(args.asymmetry, "--asymmetry") if args.asymmetry else None
    points = grid(rules, nudges, seeds, nonideals, weights, scales, asyms)
    _check_sweep(args, points, c)
    with Progress(len(points), "sweep", enabled=None if not args.json else False) as bar:
        rows = run_sweep(c.source, points, args.out, args.teacher, args.examples, args.steps, args.backend,
                         args.device, args.workers, progress=lambda d, t: bar.update(d), batch=args.batch,
                         scheduler=args.scheduler, data=args.data, amplitude=args.amplitude, dataset=args.dataset,
                         worker_wait=args.worker_wait)
    failed = [r for r in rows if r["status"] != "ok"]
    lines = [f"{len(rows)} points, {len(failed)} failed; tables: {args.out}/sweep.csv (each point), "
             f"{args.out}/summary.csv (over seeds); plot: {args.out}/sweep.png"]
    lines += [f"  point {r['point']} ({r['rule']}, nudge {r['nudge']}, seed {r['seed']}): {r['error']}" for r in failed]
    summary = summarize(rows)
    from hil.analysis.sweep import _label
    f = lambda v: "-" if v is None else f"{v:.4g}"
    lines.append(f"{'point (median over ' + str(len(seeds)) + ' seed' + ('s' if len(seeds) > 1 else '') + ')':<44} "
                 f"{'final loss':>11} {'min':>11} {'max':>11} {'final H':>11}")
    lines += [f"{_label(s):<44} {f(s['final_loss_median']):>11} {f(s['final_loss_min']):>11} "
              f"{f(s['final_loss_max']):>11} {f(s['final_H_median']):>11}" for s in summary]
    _emit(args, {"points": len(rows), "failed": len(failed), "table": f"{args.out}/sweep.csv",
                 "summary": summary, "rows": rows}, "\n".join(lines))
    if failed:  # the finished points are kept; the exit status says the sweep is incomplete
        print(f"hil sweep: {len(failed)} of {len(rows)} points failed (see {args.out}/sweep.csv)", file=sys.stderr)
        return 1
    return 0


def _names(text: str, option: str) -> list:
    """A comma-separated list of names, at least one; ValueError naming ``option`` otherwise."""
    names = [r.strip() for r in text.split(",") if r.strip()]
    if not names:
        raise ValueError(f"{option} {text!r}: give at least one name (comma-separated)")
    return names


def number_list(text: str, option: str, kind=float, lo=None, lo_open: bool = False) -> list:
    """A comma-separated list of finite numbers (``kind``: float, or int for whole numbers), each
    >= ``lo`` (> with ``lo_open``); ValueError naming ``option`` and the item otherwise."""
    what = "whole number" if kind is int else "finite number"
    out = []
    for item in text.split(","):
        item = item.strip()
        if kind is int:
            v = int(item) if re.fullmatch(r"[+-]?\d+", item) else None
        else:
            try:
                v = float(item)
            except ValueError:
                v = None
        if v is None or not math.isfinite(v):
            raise ValueError(f"{option} {text!r}: {item!r} is not a {what}")
        if lo is not None and (v < lo or (lo_open and v == lo)):
            raise ValueError(f"{option} {text!r}: {item} must be {'>' if lo_open else '>='} {lo:g}")
        out.append(v)
    return out


def _check_sweep(args, points, circuit) -> None:
    """Every point's options checked before any worker starts (a bad --steps fails the sweep, not each point):
    the options, the teacher task, each non-ideality file (read and checked here, as the points will)."""
    from hil.tasks import teacher_task
    from hil.train import TrainConfig, check_config
    for name in ("examples", "workers"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise ValueError(f"--{name} {v}: must be a whole number >= 1")
    if getattr(args, "data", None) and getattr(args, "amplitude", None) is not None:
        raise ValueError("--amplitude applies to the teacher task: a CSV task's voltages are its own")
    for p in points:
        check_config(TrainConfig(rule=p["rule"], nudge=p["nudge"], steps=args.steps, seed=p["seed"], batch=args.batch,
                                 backend=args.backend))
        w = p.get("homeostasis") or 0.0
        if w < 0:
            raise ValueError(f"--homeostasis {w!r}: a weight must be >= 0 (V^2/S^2)")
        if p.get("vccs_scale") is not None or p.get("asymmetry") is not None:
            from hil.circuits import couplings
            couplings(circuit, p.get("vccs_scale"), p.get("asymmetry"))
    if not getattr(args, "data", None) and not getattr(args, "dataset", None):
        if args.teacher < 0:
            raise ValueError(f"--teacher {args.teacher}: the teacher's seed must be a whole number >= 0")
        teacher_task(circuit, args.teacher, args.examples)
    files = sorted({p["nonideal"] for p in points if p["nonideal"]})
    if files and args.backend != "ngspice":
        raise ValueError(f"--nonideal-files: non-idealities are simulated by --backend ngspice, not {args.backend}")
    for f in files:
        from hil.spice.nonideal import load_nonideal
        load_nonideal(f)


def cmd_calibrate(args):
    from hil.analysis.calibration import calibrate_bench

    r = calibrate_bench(args.bench, args.o, args.circuit, args.patterns, args.seed, args.level, args.force)
    c = r["circuit"]
    lines = [f"{c.name}: {r['patterns']} probe patterns, KCL fit chi^2/dof = {r['chi2_dof']:.3g}",
             f"{'edge':>8} {'written (S)':>13} {'actual (S)':>13} {'deviation':>10} {'+-1 sigma':>10}"]
    lines += [f"{n:>8} {w:13.6g} {g:13.6g} {100 * (s - 1):9.3f}% {100 * e:9.3f}%"
              for n, w, g, s, e in zip(c.edge_names, r["written"], r["g"], r["scale"], r["sigma"])]
    lines.append(f"wrote {r['out']} (the twin: hil train {r['out']} ...), {r['plot']}, {r['probes']}")
    _emit(args, {k: r[k] for k in ("written", "g", "scale", "sigma", "chi2_dof", "out", "plot", "probes")}
          | {"edges": list(c.edge_names)}, "\n".join(lines))


def cmd_replay(args):
    from pathlib import Path

    from hil.analysis.replay import ReplayError, check_twin_circuit, replay, step_ranges, write_outputs
    from hil.circuit import load_circuit
    from hil.train import open_substrate

    run = Path(args.run)
    if not (run / "config.json").exists():
        raise ReplayError(f"{run}: not a run directory (no config.json)")
    out = Path(args.out or f"{run}-replay-{args.backend}")
    if out.exists() and any(out.iterdir()) and not args.force:
        raise ReplayError(f"{out}: already exists; choose another --out or pass --force")
    c = load_circuit(run / "circuit.toml")
    twin_c = c
    if args.circuit:
        twin_c = load_circuit(args.circuit)
        check_twin_circuit(c, twin_c)
    if not (math.isfinite(args.threshold) and args.threshold > 0):
        raise ValueError(f"--threshold {args.threshold}: must be a positive finite voltage")
    with open_substrate(twin_c, args.backend, **_backend_options(args)) as twin:
        res = replay(run, twin, args.threshold)
    what = f"{args.backend}" + (f", {args.device}" if args.backend == "ngspice" else "") + \
        (f", calibrated by {args.circuit}" if twin_c.calibration is not None else "")
    paths = write_outputs(res, out, f"{run.name} replayed on {what}")
    from hil.analysis.replay import record_notes
    worst = res["worst"]
    ok = np.isfinite(worst)  # a step with a NaN voltage is listed beyond the threshold, not in these numbers
    k = int(np.flatnonzero(ok)[np.argmax(worst[ok])]) if ok.any() else 0
    node = res["nodes"][int(np.nanargmax(res["max_abs"][k]))] if ok.any() else "-"
    cos = res["cosine"][np.isfinite(res["cosine"])]
    notes = record_notes(res)
    for n in notes:
        print(f"hil replay: {run}: {n}", file=sys.stderr)
    lines = [f"{run} ({res['rule']}) replayed on {what}: {len(res['steps'])} steps"] + [f"  {n}" for n in notes] + [
             f"  node divergence max |V_twin - V_bench|: median over steps {np.median(worst[ok]) if ok.any() else np.nan:.3g} V, "
             f"largest {worst[k]:.3g} V (step {res['steps'][k]}, node {node})",
             f"  steps beyond {args.threshold:g} V: " + (step_ranges(res["parted"]) or "none") +
             (f" (first: {res['parted'][0]})" if res["parted"] else ""),
             f"  gradient estimates: cosine bench vs twin median {np.median(cos):.6f}, lowest {cos.min():.6f}"
             if len(cos) else "  gradient estimates: no training steps recorded",
             "wrote " + ", ".join(map(str, paths))]
    _emit(args, {"steps": res["steps"], "worst": res["worst"],
                 "median_divergence": float(np.median(worst[ok])) if ok.any() else None,
                 "parted": res["parted"], "cosine": res["cosine"], "rel_error": res["rel_error"],
                 "nodes": res["nodes"], "out": str(out), "missing_steps": res["missing"],
                 "empty_sessions": res["empty_sessions"], "nan": [list(x) for x in res["nan"]]}, "\n".join(lines))


def cmd_report(args):
    from hil.analysis.report import generate

    say = (lambda m: None) if args.json else (lambda m: print(f"report: {m} ...", file=sys.stderr, flush=True))
    path = generate(args.out, ngspice=args.ngspice, seed=args.seed, progress=say, quick=args.quick,
                    claims=args.seed_claims, reproductions=args.reproductions)
    _emit(args, {"report": str(path)}, f"wrote {path}")


FAULT_HELP = ("inject a fault, INSTRUMENT:KIND=VALUE (repeatable; INSTRUMENT as listed at start: board, smu_NODE, "
              "scanner): garbage=N (the next N replies are garbage), drop=N (the connection closes at the next N "
              "queries), delay=S or delay=SxN (the next N replies, default 1, wait S seconds), error=CODE (an error "
              "queued now, e.g. error=-315)")


def _fault(spec: str, names) -> tuple:
    """'smu_n6:delay=0.8x2' -> ('smu_n6', 'delay', (0.8, 2)); ValueError naming the option otherwise."""
    import math
    m = re.fullmatch(r"([A-Za-z][A-Za-z0-9_]*):(garbage|drop|delay|error)=([^\s]+)", spec)
    if not m:
        raise ValueError(f"--fault {spec!r}: expected INSTRUMENT:KIND=VALUE, KIND one of garbage, drop, delay, error")
    name, kind, value = m.groups()
    if name not in names:
        raise ValueError(f"--fault {spec!r}: no instrument '{name}' (instruments: {', '.join(names)})")
    try:
        if kind == "delay":
            sec, _, count = value.partition("x")
            val = (float(sec), int(count or 1))
            ok = math.isfinite(val[0]) and 0 < val[0] <= 3600 and val[1] >= 1
        else:
            val = int(value)
            ok = val >= 1 if kind != "error" else -999 <= val <= -100 or 100 <= val <= 999
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"--fault {spec!r}: {kind} takes " + {
            "garbage": "a count >= 1", "drop": "a count >= 1", "delay": "seconds in (0, 3600], optionally xCOUNT",
            "error": "a SCPI error code (e.g. -315)"}[kind])
    return name, kind, val


def _port(port: int, count: int) -> None:
    if port and not 1024 <= port <= 65536 - count:
        raise ValueError(f"--port {port}: the {count} instruments need ports {port}..{port + count - 1}, "
                         f"within 1024..65535")


def cmd_emulate(args):
    import time as _time
    from pathlib import Path

    from hil.circuit import load_circuit
    from hil.emulator.bench import build
    from hil.train import open_substrate

    c = load_circuit(args.circuit)
    # named after the argument, never after the file's contents; written in the working folder by default
    out = Path(args.bench_file or f"{Path(args.circuit).stem}-bench.toml")
    from hil.runs import check_output
    check_output(out, [c.source], args.force, "--bench-file",
                 ours="# written by hil emulate: the emulated bench's instruments and limits")
    opts = _backend_options(args) if args.backend == "ngspice" else {}
    sub = open_substrate(c, args.backend, **opts)
    fw = _firmware_board(args.firmware, c) if args.firmware else None
    # a digipot board holds (and reads back) its taps' conductances, as the simulated parts do
    taps = sub.device if args.backend == "ngspice" and args.device == "digipot" else None
    bench = build(sub, board=fw is None, noise=(args.noise, args.noise_current), board_device=taps,
                  smu_model=args.smu_model)
    if fw is not None:  # the firmware is the board; the emulated instruments measure what its pots hold
        bench.external["board"] = fw.resource
        fw.attach(bench.model)
    bench.host = args.host
    names = list(bench.external) + list(bench.instruments)
    _port(args.port, len(bench.instruments))
    faults = [_fault(f, list(bench.instruments)) for f in args.fault or []]  # emulated instruments only
    ports = {n: args.port + k for k, n in enumerate(bench.instruments)} if args.port else None
    try:
        bench.start(ports)
    except OSError as exc:
        bench.stop()
        raise ValueError(f"--host {args.host} --port {args.port or 'auto'}: cannot listen: {exc.strerror or exc}") from None
    if args.serial:
        bench.serve_serial()
    for name, kind, val in faults:
        inst = bench.instruments[name]
        if kind == "delay":
            inst.faults.delay, inst.faults.delay_count = val
        elif kind == "error":
            inst.push_error(val, "injected by hil emulate --fault")
        else:
            setattr(inst.faults, kind, val)
    from hil.runs import atomic_write
    atomic_write(out, bench.bench_toml(Path(c.source).resolve() if Path(c.source).exists() else c.source,
                                       serial=args.serial, device=args.device if args.backend == "ngspice" else None))
    lines = [f"emulating {c.name} ({args.backend}{', ' + args.device if args.backend == 'ngspice' else ''}) "
             f"on {args.host}" + (" and on pseudo-terminals" if args.serial else "") + ":"] + \
            [f"  {n:<12} {bench.resource(n)}" + (f"  {bench.resource(n, serial=True)}" if args.serial else "")
             for n in names] + \
            [f"faults: {', '.join(args.fault)}" for _ in [0] if args.fault] + \
            [f"bench file{' (the pseudo-terminals)' if args.serial else ''}: {out}",
             f"train on it: hil train {args.circuit} --teacher 1 --rule cl --backend bench "
             + ("--amplitude 0.1 " if args.backend == "ngspice" and args.device.startswith("mosfet") else "")
             + f"--bench {out} --out runs/bench", "Ctrl-C stops."]
    obj = {"bench_file": str(out), "resources": {n: bench.resource(n) for n in names}, "faults": args.fault or []}
    if args.serial:
        obj["serial"] = {n: bench.resource(n, serial=True) for n in names}
    _emit(args, obj, "\n".join(lines))
    sys.stdout.flush()
    try:
        while True:
            _time.sleep(3600)
    except KeyboardInterrupt:
        bench.stop()
        sub.close()
        if fw is not None:
            fw.close()


def _firmware_board(executable, circuit):
    """The board's firmware built for this machine (``make -C firmware host``) on a pty, with the digipot's taps."""
    from pathlib import Path

    from hil.emulator.firmware import FirmwareBoard, FirmwareError
    from hil.spice.devices import Digipot
    from hil.spice.nonideal import NonIdeal

    if not Path(executable).is_file() or not os.access(executable, os.X_OK):
        raise ValueError(f"--firmware {executable}: not an executable file (build it: make -C firmware host)")
    try:
        return FirmwareBoard.host(Path(executable).resolve(), Digipot(circuit, NonIdeal()), circuit.m)
    except FirmwareError as exc:
        raise ValueError(f"--firmware {executable}: {exc}") from None


def cmd_circuits(args):
    from hil.circuit import load_circuit
    from hil.circuits import shipped

    rows = []
    for name, path in shipped().items():
        c = load_circuit(path)
        rows.append({"name": name, "path": str(path), "nodes": c.n, "edges": c.m,
                     "inputs": c.input_names, "outputs": c.output_names})
    text = "\n".join(f"{r['name']:<12} {r['nodes']:>4} nodes {r['edges']:>4} edges  "
                     f"inputs {','.join(r['inputs'])}  outputs {','.join(r['outputs'])}  {r['path']}" for r in rows)
    _emit(args, {"circuits": rows}, text)


#: each generator's --sizes when none is given
GENERATE_SIZES = {"layered": "8,3,6", "board": "4,3", "transistor": "2,2", "drn": "4,8,3"}

#: the generators each option of `hil generate` applies to (the others would ignore it)
GENERATE_OPTIONS = {"nodes": ("random",), "degree": ("random",), "rows": ("lattice",), "cols": ("lattice",),
                    "layers": ("crossbar",), "sizes": ("layered", "board", "transistor", "drn"),
                    "opamp_gain": ("layered",), "hidden": ("transistor",), "diode": ("drn",),
                    "inputs": ("random", "lattice"), "outputs": ("random", "lattice"),
                    **{k: ("random", "lattice", "crossbar", "board")
                       for k in ("vccs_pairs", "vccs_singles", "asymmetry", "vccs_scale")}}


def _unused_generate_options(args) -> None:
    """ValueError naming an option the generator does not use, and why (it would be ignored)."""
    given = getattr(args, "explicit", {})
    for key, kinds in GENERATE_OPTIONS.items():
        if key in given and args.kind not in kinds:
            why = (": a layered circuit's stages are one-way (op-amp buffers); a VCCS between them would undo its "
                   "weight matrices" if args.kind == "layered" and key.startswith(("vccs", "asym")) else "")
            raise ValueError(f"--{key.replace('_', '-')} {given[key]}: applies to hil generate "
                             f"{', '.join(kinds)}, not {args.kind}{why}")
    if ("asymmetry" in given or "vccs_scale" in given) and not (args.vccs_pairs or args.vccs_singles):
        key = "asymmetry" if "asymmetry" in given else "vccs_scale"
        raise ValueError(f"--{key.replace('_', '-')} {given[key]}: applies to the VCCS that --vccs-pairs or "
                         "--vccs-singles add, and none is asked for")


def cmd_generate(args):
    from hil import circuits as gen

    if args.sizes is None:
        args.sizes = GENERATE_SIZES.get(args.kind)

    _unused_generate_options(args)
    if args.kind == "layered":
        sizes = tuple(number_list(args.sizes, "--sizes", int, lo=1))
        gain = math.inf if args.opamp_gain is None else args.opamp_gain
        if not (gain > 0):
            raise ValueError(f"--opamp-gain {args.opamp_gain}: must be a positive number of V/V (default: ideal)")
        c = gen.layered(sizes, args.seed, gain=gain)
        from hil.runs import check_output
        check_output(args.o, [], args.force, "-o", ours="# written by hil")
        c.save(args.o, header="written by hil generate layered")
        n_w = int(sum(mat.plus.size for mat in c.matrices))
        return _emit(args, {"path": args.o, "sizes": list(sizes), "nodes": c.n, "edges": c.m, "weights": n_w,
                            "matrices": [mat.name for mat in c.matrices]},
                     f"wrote {args.o}: layered circuit {'-'.join(map(str, sizes))}: {c.n} nodes, {c.m} edges "
                     f"({2 * n_w} trainable in pairs), {sum(len(g) for g in c.elements)} VCVS (op-amps "
                     f"{'ideal' if math.isinf(gain) else f'of gain {gain:g}'}); matrices "
                     + ", ".join(f"{mat.name} {mat.shape[0]}x{mat.shape[1]}" for mat in c.matrices))
    if args.kind == "drn":
        return _generate_drn(args)
    for name in ("inputs", "outputs"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} {getattr(args, name)}: a generated circuit needs at least 1")
    if args.kind == "board":
        sizes = _sizes(args.sizes, 2, "4,3 (features, classes)")
        c = gen.board_classifier(sizes[0], sizes[1], args.seed)
    elif args.kind == "transistor":
        sizes = _sizes(args.sizes, 2, "2,2 (features, classes)")
        if args.hidden < 1:
            raise ValueError(f"--hidden {args.hidden}: the transistor network needs at least 1 hidden node")
        c = gen.transistor_network(sizes[0], sizes[1], args.hidden, args.seed)
    elif args.kind == "random":
        if not (math.isfinite(args.degree) and args.degree >= 1):
            raise ValueError(f"--degree {args.degree}: the mean node degree must be a finite number >= 1 "
                             "(a connected network)")
        c = gen.random_network(args.nodes, args.degree, args.seed, args.inputs, args.outputs)
    elif args.kind == "lattice":
        c = gen.lattice(args.rows, args.cols, args.seed, args.inputs, args.outputs)
    else:
        c = gen.crossbar(tuple(number_list(args.layers, "--layers", int, lo=1)), args.seed)
    if args.vccs_pairs or args.vccs_singles:
        if args.vccs_pairs < 0 or args.vccs_singles < 0:
            raise ValueError("--vccs-pairs and --vccs-singles must be >= 0")
        if args.vccs_scale is not None and not (np.isfinite(args.vccs_scale) and args.vccs_scale > 0):
            raise ValueError(f"--vccs-scale {args.vccs_scale}: must be a positive number of siemens")
        c = gen.add_vccs(c, args.vccs_pairs, args.seed, args.vccs_scale, args.asymmetry, args.vccs_singles)
    from hil.runs import check_output
    check_output(args.o, [], args.force, "-o", ours="# written by hil")
    c.save(args.o, header=f"written by hil generate {args.kind}")
    from hil.exact import conductance_matrix, symmetry_index
    si = symmetry_index(conductance_matrix(c)[c.free][:, c.free])
    _emit(args, {"path": args.o, "nodes": c.n, "edges": c.m, "vccs": c.k, "symmetry_index": si},
          f"wrote {args.o}: {c.n} nodes, {c.m} edges" + (f", {c.k} VCCS (symmetry index {si:.4f})" if c.k else "")
          + "".join(f", {len(grp)} {grp.table}" for grp in c.elements if len(grp)))


def _generate_drn(args):
    """hil generate drn: a deep resistive network, its header citing the papers it follows."""
    from hil import circuits as gen
    from hil.runs import check_output

    text = args.sizes
    sizes = tuple(number_list(text, "--sizes", int, lo=1))
    if len(sizes) < 3 or sizes[-1] < 2:
        raise ValueError(f"--sizes {text!r}: a deep resistive network needs N_in,H1[,H2...],N_classes: at least "
                         "one hidden layer and at least 2 classes (e.g. 4,8,3 for Iris)")
    c = gen.deep_resistive_network(sizes, args.seed, diode=args.diode)
    check_output(args.o, [], args.force, "-o", ours="# written by hil")
    c.save(args.o, header=f"written by hil generate drn --sizes {','.join(map(str, sizes))} --seed {args.seed} "
                          f"--diode {args.diode}\n" + "\n".join("# " + line for line in gen.DRN_CITATION))
    hidden = sizes[1:-1]
    return _emit(args, {"path": args.o, "sizes": list(sizes), "nodes": c.n, "edges": c.m,
                        "diodes": sum(len(grp) for grp in c.elements), "inputs": len(c.inputs),
                        "outputs": len(c.outputs), "diode": args.diode},
                 f"wrote {args.o}: deep resistive network {'-'.join(map(str, sizes))}: {len(c.inputs)} inputs "
                 f"({sizes[0]} +-x pairs, bias +1 V and -1 V), {sum(hidden)} hidden nodes with {args.diode} diodes "
                 f"to ground, {len(c.outputs)} outputs ({sizes[-1]} differential pairs), {c.m} edges")


def _sizes(text: str, count: int, example: str) -> tuple:
    """--sizes as ``count`` whole numbers >= 1 (each checked by :func:`number_list`), or a ValueError naming
    the option."""
    sizes = tuple(number_list(text, "--sizes", int, lo=1))
    if len(sizes) != count:
        raise ValueError(f"--sizes {text!r}: expected {count} comma-separated whole numbers >= 1, e.g. {example}")
    return sizes


def _positive_int(option: str):
    """An argparse type: a whole number >= 1, or an error naming ``option``."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < 1:
            raise argparse.ArgumentTypeError(f"{option} {text!r}: give a whole number of steps >= 1")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    from hil.losslog import LOG_FRACTION
    p = argparse.ArgumentParser(prog="hil", description="Physical learning in electrical circuits. " + UNITS)
    sub = p.add_subparsers(dest="command", required=True)

    def add(name, func, help_):
        sp = sub.add_parser(name, help=help_, description=help_ + " " + UNITS)
        sp.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")
        sp.set_defaults(func=func)
        return sp

    t = add("train", cmd_train, "Train a circuit on a task; records a run directory.")
    t.add_argument("circuit", nargs="?", help=CIRCUIT_HELP)
    _add_task(t, required=False, split=True)
    _add_rule(t)
    t.add_argument("--lr", type=float, default=None, help=LR_HELP)
    t.add_argument("--steps", type=int, default=None, help="training steps (default 1000; with --resume: the new total)")
    t.add_argument("--batch", type=int, default=None, help="examples per step (default: the whole training set; "
                                                           "with --epochs, 10)")
    t.add_argument("--epochs", type=int, default=None, help="train by epochs: passes through the training split in "
                                                            "minibatches shuffled with --seed (instead of --steps); "
                                                            "log.csv gets a row per epoch")
    t.add_argument("--seed", type=int, default=0, help="seed for batch sampling and the CSV split")
    t.add_argument("--checkpoint-every", type=int, default=None, help="steps between checkpoints (default steps/20)")
    t.add_argument("--log-every", type=_positive_int("--log-every"), default=None,
                   help=f"steps between logged losses (default: logging under {100 * LOG_FRACTION:.0f}%% of a step's "
                        "measurements; a full batch logs its train loss every step at no cost)")
    _add_backend(t)
    t.add_argument("--homeostasis", type=float, default=0.0, metavar="W",
                   help="homeostasis weight w in V^2/S^2 (docs/math.md, section 7.3): the update becomes -alpha (ghat + w dH/dtheta), "
                        "H = 1/2 ||A - A^T||_F^2 the Jacobian's asymmetry (S^2), logged per step (log.csv, "
                        "homeostasis.png). Acts on trainable VCCS only; stable below w = 0.5 / alpha for a pair")
    t.add_argument("--rounding", default="nearest", choices=["nearest", "stochastic"],
                   help="onto a digipot's taps: nearest (default), or stochastic: the tap above or below with "
                        "probability in proportion, so updates below half a tap still move it on average (Gupta "
                        "et al., ICML 2015). A run whose parameters stop changing for 20 steps says so (history.log, "
                        "result.json 'stalled', the screen)")
    t.add_argument("--out", help="run directory to create (new or empty)")
    t.add_argument("--force", action="store_true",
                   help="--out may hold files: they are moved into OUT/replaced-TIME/ (nothing is deleted)")
    t.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last good checkpoint; only "
                                                   "--steps (the new total), --checkpoint-every and --bench may "
                                                   "change, each recorded in the run")

    g = add("grad", cmd_grad, "A rule's gradient estimate at the file's conductances beside the exact gradient.")
    g.add_argument("circuit", help=CIRCUIT_HELP)
    _add_task(g)
    _add_rule(g)
    _add_backend(g)
    g.add_argument("--seed", type=int, default=0, help="fa: seed of the fixed random feedback crossbars (train: --seed)")
    g.add_argument("--reference", default="auto", choices=["auto", "sens", "fd"],
                   help="the circuit's own gradient: auto (adjoint formula on ideal, ngspice sens otherwise), "
                        "sens, or fd (central differences through the substrate)")

    i = add("info", cmd_info, "Nodes, edges, eigenvalues of K, the nudge radius, and the coercivity for a task.")
    i.add_argument("circuit", help=CIRCUIT_HELP)
    _add_task(i, required=False)
    i.add_argument("--device", default="resistor", choices=DEVICE_CHOICES,
                   help="with a task: also count, on ngspice, the channels of this device out of triode at the "
                        "task's free operating points (mosfet, mosfet-mid); the teacher's default amplitude follows it")

    add("circuits", cmd_circuits, "List the shipped circuits.")

    b = add("bias", cmd_bias, "Each estimator's error against the reference gradient over a log grid of nudges.")
    b.add_argument("circuit", help=CIRCUIT_HELP)
    _add_task(b)
    _add_backend(b)
    b.add_argument("--rules", default="ep,ep-sym,ep-holo:4,ep-stencil:2,ep-open,cl,al", help="comma-separated rules")
    b.add_argument("--nudges", metavar="LO:HI:COUNT", help="log grid of beta in siemens (CL, AL: eta = beta kappa_max); "
                                                            "default 1e-3/kappa_max : 0.5/kappa_max : 10")
    b.add_argument("--noise", type=float, default=0.0, help="voltmeter noise, volts rms on every reading")
    b.add_argument("--repeats", type=int, default=20, help="repeats per point with --noise (default 20)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--out", required=True, help="directory for bias.csv and bias.png")

    em = add("emulate", cmd_emulate, "Serve an emulated bench (SCPI over loopback TCP) backed by a simulated circuit.")
    em.add_argument("circuit", help=CIRCUIT_HELP)
    em.add_argument("--backend", default="ideal", choices=["ideal", "ngspice"])
    em.add_argument("--device", default="resistor", choices=DEVICE_CHOICES)
    em.add_argument("--nonideal", metavar="FILE")
    em.add_argument("--bench-file", metavar="FILE", help="where to write the bench file (default CIRCUIT-bench.toml)")
    em.add_argument("--port", type=int, default=0, help="first port (default: free ports chosen by the system)")
    em.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback only)")
    em.add_argument("--firmware", metavar="EXE",
                    help="the board is this build of firmware/ for this machine (make -C firmware host: "
                         "build/board-host) on a pseudo-terminal, with the digipot's taps; the emulated SMUs "
                         "and scanner measure the circuit its pots make")
    em.add_argument("--noise", type=float, default=0.0, metavar="VOLTS",
                    help="rms noise of one voltage reading at 1 PLC (averages down as 1/sqrt(NPLC))")
    em.add_argument("--noise-current", type=float, default=0.0, metavar="AMPS",
                    help="rms noise of one SMU current reading at 1 PLC")
    em.add_argument("--serial", action="store_true",
                    help="also serve every instrument on a pseudo-terminal; the bench file names those "
                         "(ASRL/dev/pts/K::INSTR, through pyserial) instead of the TCP ports")
    em.add_argument("--fault", action="append", metavar="INSTRUMENT:KIND=VALUE", help=FAULT_HELP)
    em.add_argument("--smu-model", default="2400", choices=["2400", "2450"],
                    help="the SMUs' model: Keithley 2400 (default) or 2450 (its SCPI command set)")
    em.add_argument("--force", action="store_true", help="overwrite --bench-file even if hil did not write it")

    sw = add("sweep", cmd_sweep, "A grid of training runs (rule x nudge x seed x non-ideality) on every core or a Dask cluster.")
    sw.add_argument("circuit", help=CIRCUIT_HELP)
    sw.add_argument("--teacher", type=int, default=1, help="teacher task seed (default 1)")
    sw.add_argument("--data", metavar="CSV", help="a CSV task for every point instead of the teacher (rows split "
                                                   "80/20 into train and test by each point's seed)")
    sw.add_argument("--amplitude", type=float, default=None, metavar="VOLTS",
                    help="teacher inputs uniform in [-A, A] V (default 1 V; 0.1 V with --device mosfet*)")
    sw.add_argument("--examples", type=int, default=16, help="teacher task: training examples (default 16)")
    sw.add_argument("--dataset", choices=["iris", "digits", "wine", "breast-cancer", "xor", "moons", "circles"],
                    help="classify this data set instead of the teacher task (one split, seed 0); sweep.csv adds "
                         "train_accuracy and test_accuracy")
    sw.add_argument("--rules", default="ep-sym,cl,al")
    sw.add_argument("--nudges", help="comma-separated nudges (default: each rule's default)")
    sw.add_argument("--seeds", default="0", help="comma-separated seeds of batch sampling")
    sw.add_argument("--nonideal-files", help="comma-separated non-ideality files (ngspice)")
    sw.add_argument("--homeostasis", metavar="W,...",
                    help="comma-separated homeostasis weights w (V^2/S^2; 0: none), as hil train's --homeostasis; "
                         "each row of sweep.csv carries its weight (column homeostasis) and final H")
    sw.add_argument("--vccs-scale", metavar="S,...",
                    help="comma-separated coupling strengths (S): every VCCS's gm scaled so the strongest is S")
    sw.add_argument("--asymmetry", metavar="A,...",
                    help="comma-separated asymmetries in [0, 1] of the circuit's VCCS pairs: the reverse gm set to "
                         "the forward gm x (1 - A) (0 reciprocal, 1 one-way)")
    sw.add_argument("--steps", type=int, default=200, help="training steps per point (default 200)")
    sw.add_argument("--batch", type=int, default=None, help="examples per step (default: all; seeds matter below that)")
    sw.add_argument("--workers", type=int, default=None,
                    help="processes (default: every core); with --scheduler local, the cluster's worker processes")
    sw.add_argument("--scheduler", metavar="tcp://HOST:PORT|local", default=None,
                    help="run each point as a task on a Dask cluster: a running scheduler's address, or 'local' "
                         "for a LocalCluster of worker processes (one thread each). Runs come back to this "
                         "machine and are written here: workers need hil, not a shared filesystem")
    sw.add_argument("--worker-wait", type=float, default=60.0, metavar="SECONDS",
                    help="with --scheduler: how long to wait with no Dask worker (at the start, or after losing "
                         "every one) before the points left fail (default 60)")
    sw.add_argument("--backend", default="ideal", choices=["ideal", "ngspice"])
    sw.add_argument("--device", default="resistor", choices=DEVICE_CHOICES)
    sw.add_argument("--out", required=True)

    pt = add("perturb", cmd_perturb, "Write a copy of a circuit with every conductance scaled by a random "
                                     "log-normal factor (a starting point near a teacher).")
    pt.add_argument("circuit", help=CIRCUIT_HELP)
    pt.add_argument("--scale", type=float, default=0.1, help="sigma of log g (default 0.1: about 10 %% per edge)")
    pt.add_argument("--seed", type=int, default=0)
    pt.add_argument("-o", required=True, metavar="FILE", help="circuit file to write")
    pt.add_argument("--force", action="store_true", help="overwrite FILE even if hil did not write it, or it is the input")

    ca = add("calibrate", cmd_calibrate, "Fit each edge's actual conductance on a bench from probe experiments "
                                         "(KCL with every node voltage and SMU current read); write a calibrated "
                                         "circuit file its simulated twin uses.")
    ca.add_argument("circuit", nargs="?", help="circuit file (default: the bench file's 'circuit')")
    ca.add_argument("--bench", required=True, metavar="FILE", help="the bench file (`hil emulate` writes one)")
    ca.add_argument("-o", required=True, metavar="FILE", help="calibrated circuit file to write (TOML)")
    ca.add_argument("--patterns", type=int, default=40, help="probe patterns (default 40)")
    ca.add_argument("--level", type=float, default=None,
                    help="probe voltages uniform in [-LEVEL, LEVEL] V (default: half the SMUs' limit, at most 1 V)")
    ca.add_argument("--seed", type=int, default=0, help="seed of the probe patterns")
    ca.add_argument("--force", action="store_true", help="overwrite -o if it exists")

    rl = add("replay", cmd_replay, "Re-apply a recorded bench run's conductances and experiments to a simulated "
                                   "twin: per step and node divergence, the steps where they part, gradient "
                                   "estimates compared (cosine per step).")
    rl.add_argument("run", help="a bench run directory (with bench/steps.*.jsonl.gz)")
    rl.add_argument("--backend", default="ideal", choices=["ideal", "ngspice"])
    rl.add_argument("--device", default="resistor", choices=["resistor", "digipot", "mosfet"])
    rl.add_argument("--nonideal", metavar="FILE", help="ngspice: non-idealities of the twin")
    rl.add_argument("--circuit", metavar="FILE", help="the twin's circuit, e.g. a calibrated one from `hil calibrate` "
                                                      "(default: the run's circuit.toml)")
    rl.add_argument("--threshold", type=float, default=1e-3,
                    help="volts: a step whose largest node divergence exceeds it is where twin and bench part "
                         "(default 1e-3)")
    rl.add_argument("--out", help="directory for divergence.csv, gradients.csv, replay.png (default RUN-replay-BACKEND)")
    rl.add_argument("--force", action="store_true", help="write into --out even if it holds files")

    rp = add("report", cmd_report, "Regenerate the validation report (Markdown and figures) from scratch.")
    rp.add_argument("--out", required=True)
    rp.add_argument("--quick", action="store_true",
                    help="section 6 (layered circuits) on fewer runs: widths 2, 3, one seed, 300 steps")
    rp.add_argument("--ngspice", action="store_true", help="add the ngspice sections (resistor and mosfet devices)")
    rp.add_argument("--seed", type=int, default=2026)
    rp.add_argument("--seed-claims", choices=("full", "quick", "off"), default="full",
                    help="the section on the seed papers' task-level claims (accuracy against asymmetry, "
                         "homeostasis, voltmeter noise): full (default, a few minutes), quick (about a minute), off")
    rp.add_argument("--reproductions", choices=("full", "quick", "off"), default="quick",
                    help="the section on the field's results reproduced beside the papers' numbers (Iris on a board "
                         "and on a deep resistive network, digits on a 64x2-100-10x2 DRN with EP and gd, the epoch "
                         "time embedded and on ngspice): quick (default, a smaller network on 300 images, about a "
                         "minute), full (the papers' network on all of digits: hours on two cores), off")

    co = add("coercivity", cmd_coercivity, "Coercivity constant, rank of J, dead edges, predicted decay rates.")
    co.add_argument("circuit", help=CIRCUIT_HELP)
    _add_task(co)

    n = add("netlist", cmd_netlist, "Write a standalone SPICE deck: `ngspice -b FILE` prints the free-state node voltages.")
    n.add_argument("circuit", help=CIRCUIT_HELP)
    n.add_argument("--device", default="resistor", choices=DEVICE_CHOICES)
    n.add_argument("--nonideal", metavar="FILE", help="non-idealities (TOML): tolerance, wire and source resistance")
    n.add_argument("--inputs", help="input voltages, comma-separated (default 1 V each)")
    n.add_argument("-o", required=True, metavar="FILE.cir")
    n.add_argument("--force", action="store_true", help="overwrite FILE even if hil did not write it, or it is an input")

    ge = add("generate", cmd_generate, "Write a generated circuit (random network, lattice, crossbar, layered, board, "
                                      "transistor network, deep resistive network) as TOML.")
    ge.add_argument("kind", choices=["random", "lattice", "crossbar", "layered", "board", "transistor", "drn"],
                    help="board: a board-sized linear classifier, --sizes FEATURES,CLASSES (default 4,3: 30 edges, "
                         "Iris on a resistor board as in Dillavou et al. 2022); transistor: MOSFET edges, gate "
                         "voltages trained, sources -> --hidden nodes -> one output per class, --sizes "
                         "FEATURES,CLASSES (default 2,2: XOR, as in Dillavou et al. 2024); drn: a deep resistive "
                         "network, --sizes N_IN,H1[,H2...],N_CLASSES (default 4,8,3; Kendall et al. 2020, Scellier 2024)")
    ge.add_argument("-o", required=True, metavar="FILE")
    ge.add_argument("--force", action="store_true", help="overwrite FILE even if hil did not write it")
    ge.add_argument("--nodes", type=int, default=16, help="random: nodes, ground included (default 16)")
    ge.add_argument("--degree", type=float, default=3.0, help="random: mean degree, edges per node (default 3; about "
                                                                 "nodes x degree / 2 edges)")
    ge.add_argument("--rows", type=int, default=8, help="lattice: rows of nodes (default 8)")
    ge.add_argument("--cols", type=int, default=8, help="lattice: columns of nodes (default 8)")
    ge.add_argument("--layers", default="2,4,2", help="crossbar: nodes per layer, comma-separated (inputs first, "
                                                       "outputs last); every node joined to every node of the next "
                                                       "layer, every non-input node to ground (default 2,4,2)")
    ge.add_argument("--sizes", default=None, help="layered: widths m,r,n (inputs, hidden, outputs; more for "
                                                     "deeper circuits; default 8,3,6); board and transistor: "
                                                     "FEATURES,CLASSES (4,3 and 2,2); drn: N_IN,H1[,H2...],N_CLASSES "
                                                     "(4,8,3)")
    ge.add_argument("--hidden", type=int, default=6, help="transistor: hidden nodes (default 6)")
    ge.add_argument("--diode", choices=("ideal", "shockley"), default="ideal",
                    help="drn: the hidden nodes' diodes: ideal (a short or an open, as Scellier 2024; the embedded "
                         "substrate only) or shockley (I_s = 1 pA, n = 1; what ngspice simulates)")
    ge.add_argument("--opamp-gain", type=float, default=None, metavar="A",
                    help="layered: the op-amps' open-loop gain, V/V (VCVS of finite gain; default: ideal, gain = inf)")
    ge.add_argument("--inputs", type=int, default=2, help="random, lattice: input nodes (default 2)")
    ge.add_argument("--outputs", type=int, default=2, help="random, lattice: output nodes (default 2)")
    ge.add_argument("--seed", type=int, default=0, help="seed of the topology and conductances (default 0)")
    ge.add_argument("--vccs-pairs", type=int, default=0, metavar="P",
                    help="add P random VCCS pairs a->b, b->a between free nodes (docs/math.md, section 7.1), trainable")
    ge.add_argument("--vccs-singles", type=int, default=0, metavar="S", help="add S one-way VCCS couplings")
    ge.add_argument("--asymmetry", type=float, default=1.0,
                    help="of each pair: gm_ba = gm_ab (1 - asymmetry); 0 reciprocal, 1 one-way (default 1)")
    ge.add_argument("--vccs-scale", type=float, default=None, metavar="S",
                    help="transconductance scale, siemens (default: a quarter of the median edge conductance)")
    return p


def _explicit(argv, command: str = "train") -> dict:
    """The options of ``command`` given on the command line (defaults left out): what a resume is asked to
    change, what a generator was given."""
    p = build_parser()
    train = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    for action in train._actions:
        action.default = argparse.SUPPRESS
    ns = vars(p.parse_args(argv))
    return {k: v for k, v in ns.items() if k not in ("command", "func")}


def main(argv=None) -> int:
    from hil.circuit import CircuitError
    from hil.runs import RunError
    from hil.spice.nonideal import NonIdealError
    from hil.substrate import SubstrateError
    from hil.tasks import TaskError
    from hil.analysis.replay import ReplayError  # noqa: F401 (a ValueError: reported like the others)

    args = build_parser().parse_args(argv)
    if args.command in ("train", "generate"):
        args.explicit = _explicit(argv, args.command)
    try:
        rc = args.func(args)
    except (CircuitError, TaskError, RunError, SubstrateError, NonIdealError, ValueError) as exc:
        print(f"hil {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into head and closed (an OSError: caught first)
        sys.stderr.close()
        return 0
    except OSError as exc:  # a folder that cannot be written, a full disk, a device instead of a file
        out = getattr(args, "out", None) or getattr(args, "o", None) or getattr(args, "resume", None)
        where = f"{exc.filename}: " if exc.filename else (f"writing {out}: " if out else "")
        print(f"hil {args.command}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nhil {args.command}: interrupted; the last checkpoint was written"
              + (f" (resume: hil train --resume {args.out or args.resume})" if args.command == "train" else ""),
              file=sys.stderr)
        return 130
    return rc if type(rc) is int else 0  # a command that finished with failures says so (hil sweep: 1)


if __name__ == "__main__":
    sys.exit(main())
