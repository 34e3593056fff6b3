"""The documentation's validation tables against a freshly generated report.

The section "Validation" of docs/validation.md quotes tables of ``hil report --out DIR
--ngspice`` whole: each table there has the header of one table of ``DIR/report.md`` and
the same rows in the same order. :func:`compare` lists every cell where they differ
(numbers beyond a relative tolerance; anything else as text); :func:`update` rewrites the
page's tables from a report, for after a change that moves the numbers on purpose.

    python tests/docs_numbers.py DIR            # compare, exit 1 on any difference
    python tests/docs_numbers.py DIR --update   # rewrite docs/validation.md's tables from DIR/report.md
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: the page that quotes the report
PAGE = ROOT / "docs" / "validation.md"
SECTION = "## Validation"
NUMBER = re.compile(r"^[+-]?(\d[\d,]*\.?\d*|\.\d+)(e[+-]?\d+)?$", re.I)
#: numbers below this in magnitude are rounding (errors at machine precision, a constant that is zero):
#: they differ from one BLAS to another, and only their smallness is compared
FLOOR = 1e-9


def tables(text: str) -> list:
    """Every Markdown table in ``text``: [(line index, header cells, rows of cells)]."""
    lines = text.splitlines()
    out, k = [], 0
    while k < len(lines):
        if lines[k].startswith("|") and k + 1 < len(lines) and re.match(r"^\|(\s*:?-+:?\s*\|)+\s*$", lines[k + 1]):
            start, header = k, _cells(lines[k])
            k += 2
            rows = []
            while k < len(lines) and lines[k].startswith("|"):
                rows.append(_cells(lines[k]))
                k += 1
            out.append((start, header, rows))
        else:
            k += 1
    return out


def _cells(line: str) -> tuple:
    return tuple(c.strip() for c in line.strip().strip("|").split("|"))


def _section(text: str) -> tuple:
    """(start, end) character offsets of the page's validation section."""
    start = text.index(SECTION)
    nxt = text.find("\n## ", start + len(SECTION))
    return start, len(text) if nxt < 0 else nxt


def _same(a: str, b: str, rtol: float) -> bool:
    if a == b:
        return True
    na, nb = (x.replace(",", "") for x in (a, b))
    if NUMBER.match(na) and NUMBER.match(nb):
        x, y = float(na), float(nb)
        if abs(x) < FLOOR and abs(y) < FLOOR:
            return True
        return abs(x - y) <= rtol * max(abs(x), abs(y))
    return False


def compare(page: str, report: str, rtol: float = 0.05) -> list:
    """Differences between the page's validation tables and the report's, as readable lines."""
    start, end = _section(page)
    theirs = {h: rows for _, h, rows in tables(report)}
    problems = []
    quoted = tables(page[start:end])
    if not quoted:
        problems.append("the validation section quotes no table")
    for _, header, rows in quoted:
        name = " | ".join(header[:3]) + " ..."
        if header not in theirs:
            problems.append(f"table [{name}]: the report has no table with this header")
            continue
        want = theirs[header]
        if len(rows) != len(want):
            problems.append(f"table [{name}]: {len(rows)} rows, the report's has {len(want)}")
        for i, (ours, rep) in enumerate(zip(rows, want)):
            for col, (a, b) in enumerate(zip(ours, rep)):
                if not _same(a, b, rtol):
                    problems.append(f"table [{name}] row {i + 1} ({ours[0]}), column '{header[col]}': "
                                    f"the page says {a!r}, the report {b!r}")
    return problems


def update(page: str, report: str) -> str:
    """``page`` (the text of the page) with each validation table replaced by the report's table of the same header."""
    start, end = _section(page)
    theirs = {h: rows for _, h, rows in tables(report)}
    section = page[start:end].splitlines()
    for line, header, rows in reversed(tables(page[start:end])):
        if header in theirs:
            new = ["| " + " | ".join(r) + " |" for r in theirs[header]]
            section[line + 2:line + 2 + len(rows)] = new
    return page[:start] + "\n".join(section) + page[end:]


def main(argv) -> int:
    report_dir = Path(argv[0])
    page = PAGE.read_text()
    report = (report_dir / "report.md").read_text()
    if "--update" in argv:
        PAGE.write_text(update(page, report))
        page = PAGE.read_text()
    problems = compare(page, report)
    print("\n".join(problems) or f"{PAGE.name}'s validation tables match the report")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
