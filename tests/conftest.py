import numpy as np
import pytest

from hil.circuits import random_network


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(params=[101, 202])
def net(request):
    """A fresh random circuit (10 nodes, 15+ edges, 2 inputs, 2 outputs) and a random batch."""
    c = random_network(10, 3.2, seed=request.param)
    r = np.random.default_rng(request.param)
    X = r.uniform(-1, 1, (5, 2))
    Y = r.uniform(-0.5, 0.5, (5, 2))
    return c, X, Y


@pytest.fixture
def emulated(tmp_path):
    """make(substrate) -> (a running emulator of it, its bench file); every emulator stopped after the test."""
    from hil.emulator.bench import build
    made = []

    def make(sub):
        emu = build(sub).start()
        made.append(emu)
        path = tmp_path / f"bench{len(made)}.toml"
        path.write_text(emu.bench_toml(sub.circuit.source))
        return emu, path

    yield make
    for emu in made:
        emu.stop()


def _ngspice_problem():
    try:
        from hil.spice.session import session
        session()
        return None
    except Exception as exc:  # reported below
        return str(exc)


@pytest.fixture(scope="session")
def ngspice():
    """The ngspice session. In CI a missing libngspice fails the test; elsewhere it skips, saying why."""
    import os
    problem = _ngspice_problem()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"ngspice is required in CI: {problem}")
        pytest.skip(f"ngspice unavailable here: {problem}")
    from hil.spice.session import session
    return session()
