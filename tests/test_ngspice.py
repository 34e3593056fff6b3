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
    # a sweep deck is loaded and removed every round: 1,500 rounds leave no circuit and no memory behind
    decks = ng.s.loaded()
    before = rss_kib()
    for _ in range(1500):
        ng.measure(X[:4], Y[:4], [Free(), Nudge(1e-4)])
    grown = rss_kib() - before
    assert ng.s.loaded() == decks and ng.s.plot_count() == 1
    assert grown < 1024, f"resident memory grew by {grown} KiB over 1,500 sweep rounds"


def test_complex_nudge_is_refused(pair):
    c = load_circuit("bridge")
    _, ng = pair(c)
    with pytest.raises(SubstrateError, match="cannot realise a complex nudge"):
        ng.measure([[1.0]], [[0.1, 0.2]], [Nudge(1e-4j)])


def test_non_finite_values_never_reach_a_deck(pair):
    c = load_circuit("bridge")
    _, ng = pair(c)
    with pytest.raises(SubstrateError, match="input voltages must be finite numbers \\(example 1\\)"):
        ng.measure([[0.5], [np.nan]], [[0.1, 0.2], [0.1, 0.2]], [Free()])
    with pytest.raises(SubstrateError, match="load values must be finite"):
        ng.measure([[0.5]], [[np.inf, 0.2]], [Nudge(1e-4)])


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
    s = NgSpiceSubstrate(c, device="mosfet", batched=False)  # the per-example path's decks take the options
    try:
        for t in s.titles.values():  # force ngspice's transient-op fallback, which it reports as notes
            s.s.use(t)
            s.s.command("option itl1=1 gminsteps=0 srcsteps=0")
        res = start_run(c, task, TrainConfig(rule="cl", steps=2), tmp_path / "r", progress=False, substrate=s)
    finally:
        s.close()
    log = (tmp_path / "r" / "substrate.log").read_text()
    assert "Transient op" in log and res["substrate_messages"]["info"] > 0


def test_a_failed_sweep_falls_back_to_per_example_solves_and_says_so(tmp_path, ngspice, monkeypatch):
    """A sweep that ngspice aborts (here: made to fail) is redone one example at a time, and logged."""
    from hil.spice.session import NgSpiceError
    from hil.spice.substrate import NgSpiceSubstrate
    c = load_circuit("net16")
    task = teacher_task(c, seed=1, examples=4)
    s, ref = NgSpiceSubstrate(c, device="mosfet"), NgSpiceSubstrate(c, device="mosfet", batched=False)
    try:
        calls = []

        def failing(title, deck, command, *args):
            calls.append(command)
            if len(calls) == 1:
                raise NgSpiceError(f"ngspice {command!r} failed: iteration limit reached (injected)")
            return real(title, deck, command, *args)

        real = s.s.sweep
        monkeypatch.setattr(s.s, "sweep", failing)
        res = start_run(c, task, TrainConfig(rule="cl", steps=3), tmp_path / "r", progress=False, substrate=s)
        start_run(c, task, TrainConfig(rule="cl", steps=3), tmp_path / "ref", progress=False, substrate=ref)
    finally:
        s.close()
        ref.close()
    assert s.fallbacks == 1 and len(calls) > 3  # one round fell back, the others swept
    log = (tmp_path / "r" / "substrate.log").read_text()
    assert "fallback" in log and "iteration limit reached (injected)" in log and "one example at a time" in log
    assert res["substrate_messages"]["fallback"] == 1
    a, b = Run(tmp_path / "r").read_log()["train_loss"], Run(tmp_path / "ref").read_log()["train_loss"]
    np.testing.assert_allclose(a, b, rtol=1e-7)  # the transistor circuit at ngspice's tolerance


@pytest.mark.parametrize("rule, batch", [("ep-sym", None), ("cl", 4)])
def test_sweep_training_reproduces_the_per_example_loss_curve(tmp_path, ngspice, rule, batch):
    """Ideal resistors: a round as one DC sweep gives the per-example path's run to 1e-9."""
    from hil.spice.substrate import NgSpiceSubstrate
    c = load_circuit("net16")
    task = teacher_task(c, seed=1, examples=6)
    cfg = dict(rule=rule, steps=25, batch=batch, seed=2, log_every=1)
    logs = {}
    for name, batched in (("sweep", True), ("per-example", False)):
        s = NgSpiceSubstrate(c, batched=batched)
        try:
            start_run(c, task, TrainConfig(**cfg), tmp_path / name, progress=False, substrate=s)
        finally:
            s.close()
        logs[name] = Run(tmp_path / name).read_log()
    a, b = logs["sweep"], logs["per-example"]
    assert b["train_loss"][-1] < 0.7 * b["train_loss"][0]
    for col in ("train_loss", "test_loss", "grad_norm"):
        np.testing.assert_allclose(a[col], b[col], rtol=1e-9, err_msg=col)
    np.testing.assert_allclose(Run(tmp_path / "sweep").load_checkpoint()["g"],
                               Run(tmp_path / "per-example").load_checkpoint()["g"], rtol=1e-9)


@pytest.mark.parametrize("device", ["mosfet", "digipot"])
def test_sweep_matches_the_per_example_path_on_devices_and_nonidealities(tmp_path, ngspice, device):
    """Every state, every non-ideality, both ways; then a short training run, to the simulator's tolerance."""
    from hil.spice.nonideal import NonIdeal
    from hil.spice.substrate import NgSpiceSubstrate
    c = load_circuit("net16")
    ni = NonIdeal(seed=4, tolerance=0.05, vth_sigma=0.02, wire_resistance=3.0, source_resistance=25.0, noise=1e-4)
    a, b = NgSpiceSubstrate(c, device=device, nonideal=ni), NgSpiceSubstrate(c, device=device, nonideal=ni, batched=False)
    try:
        r = np.random.default_rng(5)
        X, Y = r.uniform(-1, 1, (5, 2)), r.uniform(-0.5, 0.5, (5, 2))
        kappa = np.linalg.eigvalsh(IdealSubstrate(c).output_green()).max()
        states = [Free(), Nudge(0.05 / kappa), Nudge(-0.05 / kappa), Nudge(0.05 / kappa, open_loop=True),
                  Clamp(0.3), Adjoint(), AdjointClamp(0.3, kappa)]
        if device == "mosfet":
            # no per-example reference: ngspice's op does not converge on this circuit's -beta nudge, and
            # AL's clamp (outputs moved by the adjoint's lambda, ~1e7 V here) takes minutes of source stepping
            states = [s for s in states if s not in (Nudge(-0.05 / kappa), AdjointClamp(0.3, kappa))]
        ma, mb = a.measure(X, Y, states), b.measure(X, Y, states)  # the same noise draws, in the same order
        for s in states:
            np.testing.assert_allclose(ma[s], mb[s], rtol=1e-9, atol=1e-9 * np.abs(mb[s]).max(), err_msg=str(s))
        assert a.fallbacks == 0 and a.solves == b.solves
        task = teacher_task(c, seed=1, examples=5)
        res = {}
        for name, s in (("sweep", a), ("per-example", b)):
            res[name] = start_run(c, task, TrainConfig(rule="cl", steps=8, seed=1), tmp_path / name, progress=False,
                                  substrate=s)
    finally:
        a.close()
        b.close()
    la, lb = Run(tmp_path / "sweep").read_log(), Run(tmp_path / "per-example").read_log()
    np.testing.assert_allclose(la["train_loss"], lb["train_loss"], rtol=1e-6)
    assert res["sweep"]["final_loss"] < res["sweep"]["initial_loss"]
