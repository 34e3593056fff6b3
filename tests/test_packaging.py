"""What `pip install .` ships: every subpackage, the data folders, the drivers."""

from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_declared():
    declared = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "hil").rglob("__init__.py")}
    assert found <= declared, f"add to pyproject.toml [tool.setuptools] packages: {sorted(found - declared)}"


def test_installed_package_finds_its_data():
    import hil.drivers  # noqa: F401  (installed from drivers/)
    from hil.circuits import shipped
    from hil.data import folder
    assert (folder("netlists") / "README.md").exists()
    assert {"divider", "net16", "kite"} <= set(shipped())


def test_tests_run_the_installed_hil_not_a_stray_one():
    """The `hil` the tests run is this interpreter's: its console script, or `python -m hil`.

    In CI the console script must exist beside the interpreter (pip installs it there): a
    missing entry point is a failed install, not something a PATH may paper over.
    """
    import os
    import subprocess
    import sys

    from helpers import ENTRY_POINT, HIL

    if os.environ.get("CI"):
        assert ENTRY_POINT.is_file(), f"no `hil` console script beside {sys.executable}"
        assert HIL == [str(ENTRY_POINT)]
    for cmd in (HIL, [sys.executable, "-m", "hil"]):
        p = subprocess.run(cmd + ["circuits", "--json"], capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        assert '"net16"' in p.stdout.splitlines()[-1]
