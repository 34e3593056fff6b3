"""The documentation: it builds with Sphinx with no warning, its generated references are whole,
and nothing in the project cites a file outside the repository."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


@pytest.fixture(scope="module")
def html(tmp_path_factory):
    """docs/ built as CI builds it: sphinx-build -W (every warning an error), from scratch."""
    out = tmp_path_factory.mktemp("html")
    p = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-E", "-q", "-b", "html",
                        str(DOCS), str(out)], capture_output=True, text=True, timeout=600, cwd=out)  # not the checkout's hil/
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stderr.strip() == "", p.stderr
    return out


def _text(path: Path) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", path.read_text()).replace("&amp;", "&"))


def test_every_page_is_built_and_in_the_table_of_contents(html):
    pages = sorted(p.stem for p in DOCS.glob("*.md"))
    assert {"tutorial", "math", "api", "circuits", "tasks", "backends", "rules", "bench", "analyses", "papers",
            "validation", "cli"} <= set(pages)
    index = (html / "index.html").read_text()
    for page in pages:
        assert (html / f"{page}.html").exists(), page
        assert page == "index" or f'href="{page}.html"' in index, f"{page} is not in the index's table of contents"


def test_each_page_starts_with_one_title():
    for page in DOCS.glob("*.md"):
        lines, fenced, titles = page.read_text().splitlines(), False, 0
        for line in lines:
            fenced ^= line.startswith(("```", "~~~"))
            titles += not fenced and line.startswith("# ")
        assert lines[0].startswith("# ") and titles == 1, page.name


def test_the_command_reference_has_every_command_and_option(html):
    from hil.cli import build_parser

    parser = build_parser()
    subs = next(a for a in parser._actions if hasattr(a, "choices") and isinstance(a.choices, dict)).choices
    text = _text(html / "cli.html")
    for name, sub in subs.items():
        assert f'id="hil-{name}"' in (html / "cli.html").read_text(), name
        for action in sub._actions:
            for opt in action.option_strings:
                assert opt in text, f"hil {name} {opt}"
    assert "--test-fraction" in text and "default 0.2" in text


def test_the_emulator_page_lists_every_command_the_instruments_answer(html):
    """Each emulated instrument's commands as its interpreter declares them (a changed tree changes the page)."""
    from hil.circuits import load
    from hil.emulator.bench import build
    from hil.ideal import IdealSubstrate

    text = _text(html / "emulator.html")
    kinds = {type(i).__name__: i for model in ("2400", "2450")
             for i in build(IdealSubstrate(load("net16")), smu_model=model).instruments.values()}
    assert set(kinds) == {"ResistorBoard", "SMU", "SMU2450", "Scanner"}
    for inst in kinds.values():
        bases = list(dict.fromkeys(p.rstrip("?") for p in inst.scpi.patterns))
        assert f"{len(bases)} commands ({inst.idn}" in text, inst.idn
        for b in bases:
            assert b in text, b
    # a declared setting shows its mnemonics and *RST default as the 2400's manual gives them
    mode = next(s for s in kinds["SMU"].settings if s.path == "SOURce:VOLTage:MODE")
    assert {"FIXed", "LIST"} <= set(mode.choices) and mode.default == "FIX"
    assert f"SOURce:VOLTage:MODE(?) {' | '.join(mode.choices)} FIX" in text


def test_the_api_reference_documents_every_module(html):
    text = (html / "reference.html").read_text()
    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        from hil_docs import hil_modules
    finally:
        sys.path.remove(str(DOCS / "_ext"))
    modules = hil_modules()
    assert "hil.train" in modules and "hil.emulator.bench" in modules
    for name in modules:
        if name != "hil.api":  # on the API page
            assert f'id="module-{name}"' in text, name
    assert 'id="hil.api.train"' in (html / "api.html").read_text()


def test_plain_math_in_docstrings_is_escaped_for_restructuredtext():
    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        from hil_docs import blocks_apart, plain_math
    finally:
        sys.path.remove(str(DOCS / "_ext"))
    # "name : meaning" lines with indented continuations, one after another, become separate items
    assert blocks_apart(["Fields.", "a : one", "    more", "b : two", "Back.", "=== ===", "x   y", "    z", "=== ==="]) == \
        ["Fields.", "", "a : one", "    more", "", "b : two", "Back.", "=== ===", "x   y", "    z", "=== ==="]
    got = plain_math(["K^-1 * r, ||r|| over |O| and w_", "``a|b*c``", "", "=== ===", "a   1 | V", "=== ===", ""])
    assert got == ["K^-1 \\* r, \\|\\|r\\|\\| over \\|O\\| and w\\_", "``a|b*c``", "", "=== ===", "a   1 | V",
                   "=== ===", ""]


def test_nothing_cites_a_file_outside_the_repository():
    """The mathematics lives in docs/math.md; no code, help text, test or page cites an outside spec."""
    outside = re.compile("shared/" + "spec|learning-" + "rules|spec " + r"[0-9]|\bthe spec\b|spec's", re.I)
    found = []
    for folder in ("hil", "drivers", "tests", "benchmarks", "examples", "docs", "firmware"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in (".py", ".md", ".rst", ".toml", ".c", ".h", ".txt") and path != Path(__file__).resolve():
                for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                    if outside.search(line):
                        found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    readme = (ROOT / "README.md").read_text()
    found += [f"README.md: {m.group(0)}" for m in outside.finditer(readme)]
    assert not found, "\n".join(found)
