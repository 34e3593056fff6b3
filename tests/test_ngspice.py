"""The ngspice substrate against the ideal substrate and against ngspice itself."""

import json
import os
import re
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


def test_complex_nudge_is_an_ac_analysis_and_a_complex_current_is_refused(pair):
    c = load_circuit("bridge")
    ide, ng = pair(c)
    X, Y = [[1.0]], [[0.1, 0.2]]
    for beta in (1e-4j, 3e-4 - 2e-4j, -2e-4 + 1e-4j):  # negative conductance and susceptance included
        want = ide.measure(X, Y, [Nudge(beta)])[Nudge(beta)]
        np.testing.assert_allclose(ng.measure(X, Y, [Nudge(beta)])[Nudge(beta)], want, rtol=1e-9, atol=1e-12)
    with pytest.raises(SubstrateError, match="complex injected currents"):
        ng.measure(X, Y, [Nudge(1e-4j, open_loop=True)])


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
    np.testing.assert_allclose(a, b, rtol=1e-7)  # at ngspice's tolerance


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
            # no per-example reference at -0.05 / kappa (ngspice's op does not converge on example 0's -beta
            # nudge, nor from its free state: 0.05 / kappa moves it by 0.12 V), and AL's clamp (outputs moved
            # by the adjoint's lambda, ~1e7 V here) takes minutes of source stepping; ep-sym at 0.01 / kappa
            states = [s for s in states if s not in (Nudge(-0.05 / kappa), AdjointClamp(0.3, kappa))]
            states += [Nudge(0.01 / kappa), Nudge(-0.01 / kappa)]
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


def _c10_round(s, beta=1e-9):
    """s.circuit (c10: hil generate random --nodes 10 --degree 3 --seed 2026) on its teacher task, full-size signals:
    free, -beta and +beta nudges as one round, and the -beta nudge linearised about the free state (AC)."""
    from hil.substrate import Experiment
    task = teacher_task(s.circuit, seed=1, examples=8)
    X, Y = task.X_train, task.Y_train
    B, n_out = len(X), len(s.circuit.outputs)
    with s.noiseless():
        return s.run(X, [Experiment.free(B, n_out), Experiment(True, "load", Y, beta=-beta),
                         Experiment(True, "load", Y, beta=beta), Experiment(True, "load", Y, beta=-beta, linearised=True)])


@pytest.mark.parametrize("batched", [True, False])
def test_a_far_equilibrium_of_a_negative_nudge_is_re_solved_from_the_free_state(ngspice, batched):
    """c10, mosfet, beta = -1e-9 S: ngspice lands example 4's nudged state on a second equilibrium (a node at
    ~1e4 V, sweep and op alike); the guard re-solves it from the free state, to the neighbour the AC analysis
    (the circuit linearised at the free state) predicts, and says so in the messages."""
    from hil.spice.substrate import NgSpiceSubstrate
    s = NgSpiceSubstrate(random_network(10, 3.0, seed=2026), device="mosfet", batched=batched)
    try:
        s.s.take_messages()  # the session's: only this round's from here
        F, Vm, Vp, L = _c10_round(s)
        msgs = [m for lvl, m in s.s.take_messages() if lvl == "fallback"]
    finally:
        s.close()
    assert s.fallbacks == 1 and len(msgs) == 1
    assert "example 4 load (beta = -1e-09 S) node" in msgs[0] and "far equilibrium" in msgs[0] and "free state" in msgs[0]
    far = float(re.findall(r" at (-?[0-9.e+-]+) V", msgs[0])[0])
    assert abs(far) > 100  # what ngspice found before the guard: far outside the sources' +-1 V
    dV = np.abs(Vm - F).max(axis=1)
    assert (dV > 1e-8).all() and (dV < 1e-5).all()  # a real nudge, of order beta
    # each -beta state is the linearised one to second order in beta, example 4 included
    np.testing.assert_array_less(np.abs(Vm - L).max(axis=1), 1e-4 * dV)
    np.testing.assert_allclose(Vm - F, -(Vp - F), rtol=0, atol=1e-4 * dV.max())


def test_the_sweep_and_the_guarded_per_example_path_agree_on_c10(ngspice):
    """The same round on c10's mosfet network both ways (each with its far point re-solved), to ngspice's
    tolerance (reltol 1e-9: the sweep starts each point from the last one's solution, op from its own guess)."""
    from hil.spice.substrate import NgSpiceSubstrate
    out = {}
    for batched in (True, False):
        s = NgSpiceSubstrate(random_network(10, 3.0, seed=2026), device="mosfet", batched=batched)
        try:
            out[batched] = _c10_round(s)
        finally:
            s.close()
    for a, b in zip(out[True], out[False]):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-10)


def test_a_far_equilibrium_that_persists_is_a_clear_error(ngspice, monkeypatch):
    """Re-solved without the free state's nodeset, example 4 lands far again: a SubstrateError names it."""
    from hil.spice.substrate import NgSpiceSubstrate
    s = NgSpiceSubstrate(random_network(10, 3.0, seed=2026), device="mosfet")
    real = s._solve_one
    monkeypatch.setattr(s, "_solve_one", lambda X, e, i, v0, clamp: real(X, e, i, None, clamp))
    try:
        with pytest.raises(SubstrateError, match=r"example 4, load \(beta = -1e-09 S\) state: node n\d+ at .* V, far outside"):
            _c10_round(s)
    finally:
        s.close()


def test_net16_mosfet_sweep_at_minus_1e_9_siemens_reproduces_the_free_state_neighbour(ngspice):
    """net16, mosfet, beta = -1e-9 S: the sweep lands examples on the far equilibrium (a node at ~1e6 V,
    I_sat / beta); re-solved from their free states they equal the per-example path and the linearised nudge."""
    from hil.spice.substrate import NgSpiceSubstrate
    out, msgs = {}, {}
    for batched in (True, False):
        s = NgSpiceSubstrate(load_circuit("net16"), device="mosfet", batched=batched)
        try:
            s.s.take_messages()  # the session's: only this round's from here
            out[batched] = _c10_round(s)
            msgs[batched] = [m for lvl, m in s.s.take_messages() if lvl == "fallback"]
        finally:
            s.close()
    assert len(msgs[True]) == 1 and "far equilibrium" in msgs[True][0] and "from the example's free state" in msgs[True][0]
    far = [float(x) for x in re.findall(r" at (-?[0-9.e+-]+) V", msgs[True][0])]
    assert max(map(abs, far)) > 1e5
    for a, b in zip(out[True], out[False]):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)
    F, Vm, Vp, L = out[True]
    dV = np.abs(Vm - F).max(axis=1)
    assert (dV > 1e-8).all() and (np.abs(Vm).max() < 1.0)
    np.testing.assert_array_less(np.abs(Vm - L).max(axis=1), 1e-2 * dV)  # second order in beta


def test_a_minus_beta_state_inside_the_span_but_not_the_neighbour_is_re_solved(ngspice):
    """c10 (the report's bias circuit), mosfet, ep-sym at 0.0522 of the radius: the sweep lands a -beta point on
    an equilibrium inside the sources' span but far from the free state (ep-sym's error 58 instead of 0.56);
    the +-beta symmetry check re-solves it, and the round equals the per-example path's."""
    from hil.spice.substrate import NgSpiceSubstrate
    from hil.substrate import Experiment
    c = random_network(10, 3.0, seed=2026)
    task = teacher_task(c, seed=2026, examples=6)
    X, Y = task.X_train, task.Y_train
    out, msgs = {}, {}
    for batched in (True, False):
        s = NgSpiceSubstrate(c, device="mosfet", batched=batched)
        try:
            beta = 0.0522 / s.kappa_max(X)
            s.s.take_messages()
            with s.noiseless():
                out[batched] = s.run(X, [Experiment.free(len(X), 2), Experiment(True, "load", Y, beta=beta),
                                         Experiment(True, "load", Y, beta=-beta)])
            msgs[batched] = [m for lvl, m in s.s.take_messages() if lvl == "fallback"]
        finally:
            s.close()
    assert any("far equilibrium" in m for m in msgs[True])
    for a, b in zip(out[True], out[False]):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)
    F, Vp, Vm = out[True]
    dp, dm = np.abs(Vp - F).max(axis=1), np.abs(Vm - F).max(axis=1)
    assert (dp > 1e-4).all()
    np.testing.assert_array_less(dm, 2 * dp)  # opposite moves of nearly one size: the neighbours


def test_a_negative_nudge_without_an_operating_point_says_what_to_change(ngspice, tmp_path):
    """net16 with mosfet channels, ep-sym at a nudge the user gives (the former default, 0.05/kappa_max):
    example 4's -beta state has no operating point near the free state (a negative load is active).
    The run stops with exit 2 and a message naming the example, the nudge and the options that help;
    a smaller nudge trains."""
    base = ["train", "net16", "--teacher", "1", "--amplitude", "1", "--backend", "ngspice", "--device", "mosfet",
            "--rule", "ep-sym"]
    r = subprocess.run(HIL + base + ["--nudge", "9.24e-7", "--steps", "2", "--out", str(tmp_path / "a")],
                       capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    msg = r.stderr.strip().splitlines()[-1]
    assert re.search(r"Example \d+: the nudged state at beta = -\d[.\d]*e-0\d S", msg), msg
    assert "smaller --nudge" in msg and "ep-holo" in msg
    r = subprocess.run(HIL + base + ["--nudge", "1e-7", "--steps", "3", "--out", str(tmp_path / "b")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    L = Run(tmp_path / "b").read_log()["train_loss"]
    L = L[np.isfinite(L)]
    assert len(L) >= 2 and L[-1] < L[0]


def test_the_default_nudge_runs_on_transistors(ngspice, tmp_path):
    """At the default nudge the default rule runs on net16's mosfet channels with 1 V signals: 0.05/kappa_max
    is refused (no operating point at -beta), the nudge kept is a power of NUDGE_BACKOFF below it, and
    config.json records both; `hil grad` settles on the same nudge."""
    from hil.train import NUDGE_BACKOFF
    base = ["net16", "--teacher", "1", "--amplitude", "1", "--backend", "ngspice", "--device", "mosfet"]
    r = subprocess.run(HIL + ["train"] + base + ["--steps", "4", "--out", str(tmp_path / "d")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "default nudge" in r.stdout and "using" in r.stdout
    cfg = json.loads((tmp_path / "d" / "config.json").read_text())
    refused = [x["nudge"] for x in cfg["nudge_refused"]]
    assert refused[0] == pytest.approx(0.05 / cfg["kappa_max"], rel=1e-12)
    assert "no operating point" in cfg["nudge_refused"][0]["reason"]
    k = np.log(refused[0] / cfg["nudge"]) / np.log(NUDGE_BACKOFF)
    assert k == pytest.approx(round(k)) and round(k) == len(refused)
    L = Run(tmp_path / "d").read_log()["train_loss"]
    L = L[np.isfinite(L)]
    assert L[-1] < L[0]
    r = subprocess.run(HIL + ["grad"] + base + ["--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    g = json.loads(r.stdout.splitlines()[-1])
    assert g["nudge"] == pytest.approx(cfg["nudge"], rel=1e-9)
    assert [x["nudge"] for x in g["nudge_refused"]] == pytest.approx(refused, rel=1e-9)



def test_channel_regions_satisfy_kirchhoff(ngspice):
    """The region count of the mosfet channels is the one in which the square law holds: at ngspice's free
    states (net16, 1 V teacher signals) each channel's level-1 current in its counted region sums to zero at
    every free node (KCL), where taking every channel as triode does not; at 0.1 V every channel but a few is
    in triode."""
    from hil.spice.substrate import NgSpiceSubstrate
    from hil.substrate import Free
    c = load_circuit("net16")
    X = teacher_task(c, 1, 16).X_train
    with NgSpiceSubstrate(c, device="mosfet") as sub:
        V = sub.measure(X, np.zeros((len(X), 2)), [Free()])[Free()]
        p, dev = sub.read_params(), sub.device
        r = dev.regions(V, p)
        counts = sub.channel_regions(X)
        small = sub.channel_regions(0.1 * X)
    assert counts["triode"] == np.sum(r == 0) and counts["channels"] == r.size
    assert counts["saturation"] > 0 and counts["cutoff"] > 0
    assert small["channels"] - small["triode"] < (counts["channels"] - counts["triode"]) / 5
    k = 200e-6 * dev.W / dev.L  # netlists/nmos_level1.lib: kp = 200u, vto = 0.5
    va, vb = V[:, c.a], V[:, c.b]
    lo, hi = np.minimum(va, vb), np.maximum(va, vb)
    ov, vds = p - 0.5 - lo, hi - lo
    i_triode = k * (ov * vds - vds ** 2 / 2)
    i_region = np.where(r == 0, i_triode, np.where(r == 1, k * ov ** 2 / 2, 0.0))
    free = [i for i in range(c.n) if i != c.ground and i not in c.inputs]

    def kcl(i_ch):  # current into each free node, A; channel current flows from the higher terminal
        into = np.zeros_like(V)
        sgn = np.sign(va - vb)
        np.add.at(into.T, c.b, (sgn * i_ch).T)
        np.add.at(into.T, c.a, (-sgn * i_ch).T)
        return np.abs(into[:, free]).max()

    scale = np.abs(i_region).max()
    assert kcl(i_region) < 1e-6 * scale
    assert kcl(i_triode) > 1e-3 * scale
