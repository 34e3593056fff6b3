"""Analyses: bias orders, coercivity and decay-rate predictions, noise-optimal nudges, sweeps."""

import json
import subprocess
import sys

import numpy as np
import pytest

from helpers import HIL
from hil.analysis import coercivity as co
from hil.analysis.bias import sweep
from hil.circuit import load_circuit
from hil.circuits import random_network
from hil.ideal import IdealSubstrate
from hil.runs import Run
from hil.tasks import teacher_task
from hil.train import TrainConfig, start_run


@pytest.mark.parametrize("seed", [31, 32])
def test_bias_slopes_on_fresh_circuits(seed):
    c = random_network(10, 3.0, seed=seed)
    r = np.random.default_rng(seed)
    X, Y = r.uniform(-1, 1, (6, 2)), r.uniform(-0.5, 0.5, (6, 2))
    sub = IdealSubstrate(c)
    kappa = np.linalg.eigvalsh(sub.output_green()).max()
    res = sweep(sub, X, Y, ["ep", "ep-sym", "ep-holo:4", "ep-holo:6", "ep-open", "cl", "al"],
                np.geomspace(1e-3 / kappa, 0.5 / kappa, 10))
    want = {"ep": 1, "ep-sym": 2, "ep-holo:4": 4, "ep-holo:6": 6, "cl": 1, "al": 1}
    for rule, order in want.items():
        assert abs(res["rules"][rule]["slope"] - order) < 0.2, (rule, res["rules"][rule])
    assert res["rules"]["ep-open"]["slope"] is None  # exact: no nudge dependence above rounding
    errs = [p["rel_error"] for p in res["points"] if p["rule"] == "ep-open"]
    assert max(errs) < 1e-10


def test_noise_optimal_nudge_grows_with_noise():
    c = random_network(10, 3.0, seed=77)
    r = np.random.default_rng(1)
    X, Y = r.uniform(-1, 1, (6, 2)), r.uniform(-0.5, 0.5, (6, 2))
    sub = IdealSubstrate(c)
    kappa = np.linalg.eigvalsh(sub.output_green()).max()
    grid = np.geomspace(1e-3 / kappa, 0.5 / kappa, 12)
    best = {}
    for noise in (1e-5, 1e-3):
        res = sweep(sub, X, Y, ["ep", "ep-sym"], grid, noise=noise, repeats=30, seed=4)
        best[noise] = {k: v["best_nudge"] for k, v in res["rules"].items()}
        pts = [p for p in res["points"] if p["rule"] == "ep-sym"]
        assert pts[0]["variance"] > pts[-1]["variance"]  # small nudges amplify the voltmeter's noise
    for rule in ("ep", "ep-sym"):
        assert best[1e-3][rule] > best[1e-5][rule], (rule, best)


def test_predicted_and_measured_decay_rates_agree(tmp_path):
    from hil.rules import make_rule
    from hil.train import LR_FRACTION, default_lr
    c = random_network(20, 4.0, seed=5)
    task = teacher_task(c, seed=1, examples=16)
    for rule in ("gd", "cl"):
        lr = default_lr(c, c.g, task.X_train, make_rule(rule)) / LR_FRACTION  # the full curvature step
        res = start_run(c, task, TrainConfig(rule=rule, steps=2000, lr=lr), tmp_path / rule, progress=False)
        assert abs(res["measured_rate"] / res["predicted_rate"] - 1) < 0.05, (rule, res)


def test_coercivity_report_and_dead_bridge_edge():
    c = load_circuit("bridge")
    task = teacher_task(c, seed=1, examples=4)
    r = co.report(c, task.X_train)
    assert r["coercive"] and r["rank"] == r["constraints"] == 2 and r["dead_edges"] == []
    balanced = c.with_g([1e-3] * 5)  # a balanced Wheatstone bridge: R5 carries no current
    r = co.report(balanced, task.X_train)
    assert [d["edge"] for d in r["dead_edges"]] == ["R5"] and "no current" in r["dead_edges"][0]["reason"]
    J = __import__("hil.exact", fromlist=["jacobian"]).jacobian(balanced, task.X_train)
    assert np.abs(J[:, 4]).max() < 1e-12 * np.abs(J).max()


def _outputs_fd(c, X, g, e, h=1e-4):
    """d V_O / d log g_e by central differences of the free state (V), (batch, |O|)."""
    from hil.exact import free_state
    up, dn = g.copy(), g.copy()
    up[e] *= np.exp(h)
    dn[e] *= np.exp(-h)
    O = list(c.outputs)
    return (free_state(c, X, up)[:, O] - free_state(c, X, dn)[:, O]) / (2 * h)


def test_kite_loses_a_rank_at_its_symmetric_teacher_and_regains_it_when_perturbed():
    from hil.analysis.kite import asymmetric
    from hil.circuits import perturb
    from hil.tasks import circuit_teacher_task
    kite = load_circuit("kite")
    X = circuit_teacher_task(kite, kite).X_train
    r = co.report(kite, X)
    assert (r["rank"], r["constraints"]) == (1, 2) and not r["coercive"]
    assert abs(r["constant"]) < 1e-12 * r["lambda_max"]  # zero to rounding
    assert sorted(d["edge"] for d in r["dead_edges"]) == ["left_out1", "left_out2", "right_out1", "right_out2"]
    (u,) = r["unreachable"]
    assert co.unreachable(kite, X) == r["unreachable"]  # the standalone helper agrees with the report
    a = np.array([u["outputs"]["out1"], u["outputs"]["out2"]])
    assert abs(abs(a @ [2 ** -0.5, -(2 ** -0.5)]) - 1) < 1e-6  # the direction out1 - out2, up to sign
    assert a[0] > 0  # the documented sign: the first of the largest coefficients positive
    # the ground truth, without the adjoint Jacobian: no edge moves out1 - out2 to first order
    common = [_outputs_fd(kite, X, kite.g.copy(), e) for e in range(kite.m)]
    assert max(np.abs(d[:, 0] - d[:, 1]).max() for d in common) < 1e-7 * max(np.abs(d).max() for d in common)
    for near in (perturb(kite, 0.1, seed=7), asymmetric(kite, 0.1)):
        p = co.report(near, X)
        assert p["rank"] == 2 and p["coercive"] and p["unreachable"] == [] and p["dead_edges"] == []
        assert p["constant"] > 1e-5 * p["lambda_max"]
    with pytest.raises(ValueError, match="not a kite: no edge in_left, in_right"):
        asymmetric(load_circuit("bridge"), 0.1)
    # the restored constant grows like the asymmetry squared
    ratio = co.report(asymmetric(kite, 0.2), X)["constant"] / co.report(asymmetric(kite, 0.1), X)["constant"]
    assert 3.5 < ratio < 4.6, ratio


def test_kite_training_slows_at_the_symmetric_teacher():
    from hil.analysis.kite import experiment
    rows = experiment(asymmetries=(0.0, 0.2), rules=("ep-sym",), steps=2000, start_scales=(0.05, 0.1))["rows"]
    by = {(r["a"], r["start_scale"]): r for r in rows}
    for r in rows:  # the decay at the end is the one the local constant predicts
        assert abs(r["measured_rate"] / r["predicted_rate"] - 1) < 0.05, r
    sym, asym = by[(0.0, 0.1)], by[(0.2, 0.1)]
    assert sym["final_loss"] > 1e4 * asym["final_loss"]
    assert asym["measured_rate"] > 10 * sym["measured_rate"]
    # nearer the symmetric point, slower: the landing point's constant ~ (start distance)^2
    assert by[(0.0, 0.05)]["measured_rate"] < 0.5 * sym["measured_rate"]
    assert by[(0.2, 0.05)]["measured_rate"] > 0.9 * asym["measured_rate"]


def test_sweep_survives_a_failing_point(tmp_path):
    from hil.analysis.sweep import grid, run_sweep
    pts = grid(["ep-sym", "al"], [1e-5, -1.0], [0], None)
    rows = run_sweep(load_circuit("divider").source, pts, tmp_path, steps=20, workers=2)
    ok = [r for r in rows if r["status"] == "ok"]
    bad = [r for r in rows if r["status"] == "failed"]
    assert len(ok) == 2 and len(bad) == 2
    assert all("nudge must be a positive finite number" in r["error"] for r in bad)
    assert all(r["final_loss"] < r["initial_loss"] for r in ok)
    assert (tmp_path / "sweep.csv").read_text().count("\n") == 5


def test_bias_command_json(tmp_path):
    p = subprocess.run(HIL + ["bias", "net16", "--teacher", "1", "--rules", "ep,ep-sym", "--out", str(tmp_path),
                        "--json"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert abs(r["rules"]["ep"]["slope"] - 1) < 0.2 and abs(r["rules"]["ep-sym"]["slope"] - 2) < 0.2
    assert (tmp_path / "bias.png").exists() and (tmp_path / "bias.csv").read_text().startswith("rule,beta")
    bad = subprocess.run(HIL + ["bias", "net16", "--teacher", "1", "--nudges", "5:1:3", "--out", str(tmp_path)],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "expected LO:HI:COUNT" in bad.stderr


def test_coercivity_command_json():
    p = subprocess.run(HIL + ["coercivity", "bridge", "--teacher", "1", "--json"],
                       capture_output=True, text=True, timeout=120)
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert set(r) >= {"constant", "rank", "constraints", "dead_edges", "rate"} and r["constant"] > 0
    assert 0 < r["rate"]["ep"] < 1 and 0 < r["rate"]["cl"] < 1


@pytest.fixture(scope="module")
def report(tmp_path_factory, ngspice):
    """The validation report, regenerated from scratch as docs/validation.md's `hil report --out DIR --ngspice`."""
    from hil.analysis.report import generate
    out = tmp_path_factory.mktemp("report")
    generate(out, ngspice=True, progress=lambda m: None, quick=True, claims="off",  # section 6 on fewer runs; section 9: tests/test_seedclaims.py
             reproductions="quick")
    return out


def test_report_regenerates_with_its_tables_and_figures(report):
    tmp_path = report
    md = (report / "report.md").read_text()
    for needle in ("## 1. Bias order", "| ep-sym | 2 | 2.0", "| ep-holo:4 | 4 | 4.0", "## 2. The nudge",
                   "## 3. What each rule descends", "## 4. Coercivity", "![bias, ideal](bias-ideal.png)",
                   "## 5. The kite", "| 0 | 1/2 |", "| 0.2 | 2/2 |", "![kite loss curves](kite.png)",
                   "## 6. Layered circuits: feedback alignment", "(below 1e-3)", "![angle](factorize-angle.png)",
                   "## 8. Classification: Iris on a board-sized network", "| ngspice digipot | cl |",
                   "Phase diagram", "Similar error, different representations"):
        assert needle in md, needle
    for fig in ("bias-ideal.png", "rules.png", "kite.png", "factorize-excess.png", "factorize-angle.png",
                "factorize-phase.png"):
        assert (tmp_path / fig).read_bytes()[:4] == b"\x89PNG"


def test_the_reproductions_section_puts_each_measurement_beside_the_paper(report):
    """Section 10 (quick): its table's numbers are the run's own (reproductions.json), digits learn far above chance
    (1/10) with both rules, and XOR's transistor network classifies the four corners on the embedded substrate."""
    md = (report / "report.md").read_text()
    sec = md[md.index("## 10. The field's results, reproduced"):]
    r = json.loads((report / "reproductions.json").read_text())
    dig, iris = r["digits"], r["iris_drn"]
    for rule, paper in (("ep-sym", "96.54 %"), ("gd", "96.70 %")):
        acc = dig["runs"][rule]["test"]
        assert acc >= 0.5
        assert f"| ideal | {rule} | {100 * acc:.1f} % | {paper}" in sec
        # the test accuracy is the last logged row's, a fraction of the held-out images
        assert dig["runs"][rule]["log"]["test_accuracy"][-1] == acc and (acc * dig["n_test"]).is_integer()
    assert f"| ep-sym | {100 * iris['test']:.1f} % | > 95 %" in sec and iris["test"] >= 0.9
    assert "| (a) Iris, test accuracy | board, 30 edges (section 8) | ideal | cl |" in sec
    (x_ideal,) = [x for x in r["xor"] if x["backend"] == "ideal"]
    assert x_ideal["corners"] == 4 and f"| ideal | cl | 4 of 4 ({100 * x_ideal['test_accuracy']:.1f} %)" in sec
    assert "| ngspice | ep-sym |" in sec and r["epoch_time"]["ngspice"]["step"] > 0
    assert (report / "reproductions.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("v, sign", [([0.7071067811865476, -0.7071067811865475], 1),
                                     ([-0.7071067811865475, 0.7071067811865476], -1),
                                     ([0.1, -0.9, 0.3], -1), ([0.0, 0.0, 2.0], 1), ([-1e-300, 1e-300], -1)])
def test_direction_sign_convention_breaks_ties_by_order(v, sign):
    assert co.sign_convention(v) == sign
    assert co.sign_convention(-np.asarray(v)) == -sign


def test_docs_quote_the_numbers_the_report_regenerates(report):
    """Every table of docs/validation.md's validation section is the report's, cell for cell (numbers to 5 %)."""
    from docs_numbers import PAGE, compare
    problems = compare(PAGE.read_text(), (report / "report.md").read_text())
    assert not problems, "\n".join(problems) + "\n(python tests/docs_numbers.py DIR --update rewrites them)"


def test_docs_check_catches_a_changed_number():
    from docs_numbers import compare, update
    report = "# r\n\n| rule | error |\n|---|---|\n| al | 43 |\n| ep | 1.1e-3 |\n"
    readme = "x\n\n## Validation\n\n| rule | error |\n|---|---|\n| al | 1.9e8 |\n| ep | 1.1e-3 |\n\n## Next\n"
    (problem,) = compare(readme, report)
    assert "row 1 (al), column 'error': the page says '1.9e8', the report '43'" in problem
    assert compare(update(readme, report), report) == [] and update(readme, report).endswith("## Next\n")
    assert compare(readme.replace("1.9e8", "44"), report) == []  # within 5 %
    assert "no table with this header" in compare(readme.replace("| rule | error |", "| rule | err |"), report)[0]


def test_classification_page_quotes_the_numbers_the_report_regenerates(report):
    """docs/classification.md's table is the report's section 8 table, cell for cell (numbers to 5 %)."""
    from pathlib import Path

    from docs_numbers import compare
    page = (Path(__file__).resolve().parents[1] / "docs" / "classification.md").read_text()
    section = "## Validation\n" + page[page.index("## Reproductions"):].split("\n", 1)[1]  # compare()'s section
    problems = compare(section, (report / "report.md").read_text())
    assert "| ideal | cl |" in page and not problems, "\n".join(problems)
