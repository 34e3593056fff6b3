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
