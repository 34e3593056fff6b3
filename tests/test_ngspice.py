"""The ngspice substrate against the ideal substrate and against ngspice itself."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from helpers import HIL
from hil.circuit import Circuit, load_circuit
from hil.circuits import random_network
from hil.ideal import IdealSubstrate
from hil.substrate import Adjoint, AdjointClamp, Clamp, Free, Nudge, Substrate, SubstrateError
from hil.tasks import teacher_task
from hil.train import TrainConfig, start_run
from hil.runs import Run


@pytest.fixture
def pair(ngspice):
    from hil.spice.substrate import NgSpiceSubstrate
    made = []

    def make(c):
        ng = NgSpiceSubstrate(c)
        made.append(ng)
        return IdealSubstrate(c), ng

    yield make
    for ng in made:
        ng.close()


@pytest.mark.parametrize("seed", [11, 12])
def test_every_state_matches_the_ideal_substrate(pair, seed):
    c = random_network(12, 3.5, seed=seed)
    ideal, ng = pair(c)
    r = np.random.default_rng(seed)
    X, Y = r.uniform(-1, 1, (4, 2)), r.uniform(-0.5, 0.5, (4, 2))
    kappa = np.linalg.eigvalsh(ideal.output_green()).max()
    states = [Free(), Nudge(0.2 / kappa), Nudge(-0.2 / kappa), Nudge(0.2 / kappa, open_loop=True),
              Clamp(0.3), Adjoint(), AdjointClamp(0.3, kappa)]
    for g in (c.g, c.g * np.exp(r.normal(0, 0.5, c.m))):
        ideal.write(g)
        ng.write(g)
        mi, mn = ideal.measure(X, Y, states), ng.measure(X, Y, states)
        for s in states:
            np.testing.assert_allclose(mn[s], mi[s], rtol=1e-9, atol=1e-9 * np.abs(mi[s]).max(), err_msg=str(s))
    np.testing.assert_allclose(Substrate.output_green(ng), ideal.output_green(), rtol=1e-9)


def test_training_follows_the_ideal_run(tmp_path, ngspice):
    c = load_circuit("net16")
    task = teacher_task(c, seed=1, examples=6)
    cfg = dict(rule="ep-sym", steps=25, batch=4, seed=2)
    start_run(c, task, TrainConfig(**cfg), tmp_path / "ideal", progress=False)
    start_run(c, task, TrainConfig(**cfg, backend="ngspice"), tmp_path / "ng", progress=False)
    a, b = Run(tmp_path / "ideal").read_log()["train_loss"], Run(tmp_path / "ng").read_log()["train_loss"]
    assert b[-1] < 0.5 * b[0]
    np.testing.assert_allclose(b, a, rtol=1e-6)


def test_finite_difference_gradient_through_ngspice_matches_adjoint(pair):
    from hil.exact import gradient
    from hil.gradients import finite_difference_gradient, reference_gradient
    c = load_circuit("bridge")
    ideal, ng = pair(c)
    task = teacher_task(c, seed=3, examples=4)
    exact = gradient(c, task.X_train, task.Y_train)
    np.testing.assert_allclose(finite_difference_gradient(ng, task.X_train, task.Y_train), exact, rtol=1e-6)
    # ngspice's own sens analysis (its DC sensitivities are perturbative: ~1e-6)
    np.testing.assert_allclose(reference_gradient(ng, task.X_train, task.Y_train, "sens"), exact, rtol=1e-5)
    np.testing.assert_array_equal(ng.read(), c.g)  # restored


def test_memory_and_plots_stay_flat(pair):
    """10,000 solves: no plot left behind and no growth (ngspice's command history leaked ~1 KB a solve)."""
    c = random_network(16, 3.0, seed=3)
    _, ng = pair(c)
    X = np.random.default_rng(0).uniform(-1, 1, (500, 2))
    Y = np.zeros((500, 2))

    def rss_kib():
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024

    for _ in range(2):  # warm up allocators
        ng.measure(X, Y, [Free()])
    before = rss_kib()
    for _ in range(20):
        ng.measure(X, Y, [Free()])
    grown = rss_kib() - before
    assert ng.s.plot_count() == 1  # only ngspice's 'const' plot remains
    assert grown < 1024, f"resident memory grew by {grown} KiB over 10,000 solves"


def test_complex_nudge_is_refused(pair):
    c = load_circuit("bridge")
    _, ng = pair(c)
    with pytest.raises(SubstrateError, match="cannot realise a complex nudge"):
        ng.measure([[1.0]], [[0.1, 0.2]], [Nudge(1e-4j)])


def test_unvalidated_names_never_reach_a_deck(ngspice):
    from hil.spice.netlist import build
    c = load_circuit("divider")
    evil = Circuit(c.name, ("vin", "out\n.control\nshell rm -rf x", "gnd"), c.edge_names, c.a, c.b, c.g,
                   c.ground, c.inputs, c.outputs)
    with pytest.raises(ValueError, match="is not a plain identifier"):
        build(evil, evil.g, "open", "t")


def test_ngspice_failure_names_command_and_circuit(pair):
    from hil.spice.session import NgSpiceError
    c = load_circuit("divider")
    _, ng = pair(c)
    ng.s.use(ng.titles["open"])
    with pytest.raises(NgSpiceError, match="hil.*_open"):
        ng.s.command("alter rnothere = 5")


def test_standalone_deck_runs_in_ngspice_batch_mode(tmp_path, ngspice):
    if not shutil.which("ngspice"):
        pytest.fail("the ngspice program is missing (Debian package `ngspice`)")
    from hil.exact import free_state
    f = tmp_path / "net16.cir"
    subprocess.run(HIL + ["netlist", "net16", "--inputs", "0.5,-0.25", "-o", str(f)], check=True)
    run = subprocess.run(["ngspice", "-b", str(f)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr  # a script may chain on the deck
    out = run.stdout
    c = load_circuit("net16")
    V = free_state(c, [[0.5, -0.25]])[0]
    got = {ln.split("=")[0].strip(): float(ln.split("=")[1]) for ln in out.splitlines() if ln.startswith("v(nd_")}
    assert len(got) == c.n - 1
    for i, name in enumerate(c.nodes):
        if i != c.ground:
            assert abs(got[f"v(nd_{name})"] - V[i]) < 1e-6
    # a deck whose operating point fails (two sources fight over one node) exits non-zero
    deck = f.read_text()
    bad = tmp_path / "bad.cir"
    bad.write_text(deck.replace(".control", "Vfight nd_n1 0 3\n.control", 1))
    run = subprocess.run(["ngspice", "-b", str(bad)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and "hil: ngspice found no operating point" in run.stdout


def test_missing_library_says_how_to_install(tmp_path):
    code = ("import os; os.environ['NGSPICE_LIBRARY_PATH']='/nonexistent/libngspice.so'\n"
            "from hil.spice.session import session\n"
            "try:\n    session()\nexcept Exception as e:\n    print(type(e).__name__, e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path).stdout
    assert "SubstrateError" in out and "apt-get install ngspice libngspice0" in out


def test_failed_operating_point_names_the_analysis_and_circuit_and_keeps_ngspice_words(ngspice):
    from hil.spice.session import NgSpiceError
    ngspice.load("hilbad", ".title hilbad\nV1 a 0 dc 1\nV2 a 0 dc 2\nR1 a 0 1k\n.end\n")
    try:
        with pytest.raises(NgSpiceError) as err:
            ngspice.op("circuit 'bad'")
        msg = str(err.value)
        assert "op (DC operating point) of circuit 'bad'" in msg and "hilbad" in msg
        assert "op simulation(s) aborted" in msg  # ngspice's own message, kept
    finally:
        ngspice.destroy_plots()
        ngspice.remove("hilbad")


def test_ngspice_notes_reach_the_run_directory(tmp_path, ngspice):
    """ngspice's informational output is captured into substrate.log, not printed, and counted."""
    from hil.spice.substrate import NgSpiceSubstrate
    c = load_circuit("net16")
    task = teacher_task(c, seed=1, examples=3)
    s = NgSpiceSubstrate(c, device="mosfet")
    try:
        for t in s.titles.values():  # force ngspice's transient-op fallback, which it reports as notes
            s.s.use(t)
            s.s.command("option itl1=1 gminsteps=0 srcsteps=0")
        res = start_run(c, task, TrainConfig(rule="cl", steps=2), tmp_path / "r", progress=False, substrate=s)
    finally:
        s.close()
    log = (tmp_path / "r" / "substrate.log").read_text()
    assert "Transient op" in log and res["substrate_messages"]["info"] > 0
