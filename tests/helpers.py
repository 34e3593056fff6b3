"""How tests run the ``hil`` command: the entry point of the interpreter running them, never PATH's.

The console script pip installs beside ``sys.executable`` (``.venv/bin/hil``) is what a
user runs; where it is absent (hil imported from a checkout), ``python -m hil``. A ``hil``
elsewhere on PATH (another install, another version) is never used.
"""

import subprocess
import sys
from pathlib import Path

ENTRY_POINT = Path(sys.executable).with_name("hil")
HIL = [str(ENTRY_POINT)] if ENTRY_POINT.is_file() else [sys.executable, "-m", "hil"]


def run_hil(*args, timeout=300, **kw):
    """Run ``hil ARGS`` (each argument str()-ed) and return the CompletedProcess (text, captured)."""
    return subprocess.run(HIL + [str(a) for a in args], capture_output=True, text=True, timeout=timeout, **kw)


def bench_of(path, **overrides):
    """The bench file at ``path`` as hil loads it, with ``overrides`` applied."""
    from hil.bench.substrate import load_bench
    cfg = load_bench(path)
    cfg.update(overrides)
    return cfg


def ep_sym_richardson(sub, X, Y, kappa, fracs=(0.01, 0.005)):
    """ep-sym's estimates on ``sub`` at beta = f / kappa_max for f in ``fracs`` (S), {f: estimate},
    and their Richardson extrapolation (4 ghat(beta/2) - ghat(beta)) / 3, which removes the O(beta^2) term."""
    from hil.rules import make_rule
    est = {}
    for f in fracs:
        r = make_rule("ep-sym", f / kappa).configure(kappa)
        est[f] = r.estimate(sub.measure(X, Y, r.states()))
    big, small = fracs
    return est, (4 * est[small] - est[big]) / 3
