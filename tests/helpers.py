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
    from hil.drivers.bench import load_bench
    cfg = load_bench(path)
    cfg.update(overrides)
    return cfg
