"""Sphinx directives that generate reference pages from hil itself at build time.

- ``hil-cli``: every subcommand of ``hil``, its usage and options with their help texts and
  defaults, from :func:`hil.cli.build_parser` (what ``hil CMD --help`` prints).
- ``hil-scpi INSTRUMENT``: every command an emulated instrument answers (``2400``, ``2450``, ``2700``
  or ``board``), from the commands its interpreter declares, with each declared setting's
  type, range and *RST default (:mod:`hil.emulator.commands`).
- ``hil-modules``: an ``automodule`` for every module of the ``hil`` package (an .rst page).

Nothing is downloaded; the pages change when the parser or the command trees do.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import re

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles


def _table(headers, rows, widths=None) -> nodes.table:
    """A docutils table: ``rows`` of cells, each a string or a node."""
    table = nodes.table()
    group = nodes.tgroup(cols=len(headers))
    table += group
    for w in widths or [1] * len(headers):
        group += nodes.colspec(colwidth=w)
    head, body = nodes.thead(), nodes.tbody()
    group += head
    group += body

    def row(cells, parent):
        r = nodes.row()
        for c in cells:
            entry = nodes.entry()
            entry += c if isinstance(c, nodes.Node) else nodes.paragraph(text=str(c))
            r += entry
        parent += r

    row(headers, head)
    for cells in rows:
        row(cells, body)
    return table


def _lit(text: str) -> nodes.paragraph:
    p = nodes.paragraph()
    p += nodes.literal(text=text)
    return p


# -- the command line -------------------------------------------------------------------------

def _subparsers(parser: argparse.ArgumentParser) -> dict:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _option_rows(parser: argparse.ArgumentParser) -> list:
    fmt = parser._get_formatter()
    rows = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)) or action.help == argparse.SUPPRESS:
            continue
        if action.option_strings:
            metavar = "" if action.nargs == 0 else " " + fmt._format_args(action, action.dest.upper())
            name = ", ".join(action.option_strings) + metavar
        else:
            name = fmt._format_args(action, action.dest)
        text = fmt._expand_help(action) if action.help else ""
        if action.choices is not None and not isinstance(action, argparse._SubParsersAction) and "{" not in name:
            text += f" (one of: {', '.join(map(str, action.choices))})"
        rows.append((_lit(name), text))
    return rows


class CLIDirective(SphinxDirective):
    """Every ``hil`` subcommand: a section with its description, usage and options."""

    has_content = False

    def run(self):
        from hil.cli import build_parser

        parser = build_parser()
        out = [nodes.paragraph(text=parser.description or "")]
        out.append(nodes.literal_block(text=parser.format_usage().strip()))
        for name, sub in _subparsers(parser).items():
            section = nodes.section(ids=[nodes.make_id(f"hil-{name}")], names=[nodes.fully_normalize_name(f"hil {name}")])
            section += nodes.title(text=f"hil {name}")
            section += nodes.paragraph(text=sub.description or "")
            section += nodes.literal_block(text=sub.format_usage().strip())
            rows = _option_rows(sub)
            if rows:
                section += _table(("option", "meaning"), rows, widths=(2, 5))
            out.append(section)
            self.env.note_dependency(importlib.import_module("hil.cli").__file__)
        return out


# -- the emulated instruments -----------------------------------------------------------------

def _instrument(kind: str):
    """One emulated instrument of ``kind`` (2400, 2450, 2700 or board) on a bench of net16 on the ideal
    substrate (SMUs, the scanner, the board), or None for an unknown kind."""
    from hil.circuits import load
    from hil.emulator import bench as emulator
    from hil.ideal import IdealSubstrate

    bench = emulator.build(IdealSubstrate(load("net16")), smu_model="2450" if kind == "2450" else "2400")
    for inst in bench.instruments.values():
        name = type(inst).__name__
        if (kind, name) in (("2400", "SMU"), ("2450", "SMU2450"), ("2700", "Scanner"), ("board", "ResistorBoard")):
            return inst
    return None


def _setting_text(s) -> tuple:
    """(parameter, *RST default) of a declared setting, as its manual's summary gives them."""
    if s.kind in ("enum", "list"):
        what = " | ".join(s.choices) + (" (a list)" if s.kind == "list" else "")
    elif s.kind in ("real", "int"):
        lo = "" if s.lo == -float("inf") else f"{s.lo:g}"
        hi = "" if s.hi == float("inf") else f"{s.hi:g}"
        what = s.kind + (f" in [{lo}, {hi}]" if lo or hi else "")
        if s.ranges:
            what += "; ranges " + ", ".join(f"{r:g}" for r in s.ranges)
    elif s.kind == "string":
        what = "quoted string" + (f", at most {s.max_len} characters" if s.max_len else "")
    else:
        what = "ON | OFF | 1 | 0"
    default = s.default if not isinstance(s.default, tuple) else ",".join(s.default)
    if isinstance(default, bool):
        default = "ON" if default else "OFF"
    return what, (f"{default:g}" if isinstance(default, float) else str(default)) + ("" if s.reset else " (kept by *RST)")


class SCPIDirective(SphinxDirective):
    """Every command an emulated instrument answers, with the declared settings' types and defaults."""

    required_arguments = 1
    has_content = False

    def run(self):
        inst = _instrument(self.arguments[0])
        if inst is None:
            raise self.error(f"hil-scpi: unknown instrument {self.arguments[0]!r} (2400, 2450, 2700 or board)")
        settings = {s.path: s for s in getattr(inst, "settings", ())}
        rows, seen = [], {}
        for pattern in inst.scpi.patterns:
            base = pattern.rstrip("?")
            if base in seen:
                seen[base][1].add("?" if pattern.endswith("?") else "set")
                continue
            forms = {"?" if pattern.endswith("?") else "set"}
            seen[base] = (len(rows), forms)
            rows.append(base)
        table = []
        for base in rows:
            forms = seen[base][1]
            name = base + ("(?)" if forms == {"set", "?"} else "?" if forms == {"?"} else "")
            s = settings.get(base)
            what, default = _setting_text(s) if s is not None else ("", "")
            table.append((_lit(name), what, default))
        intro = nodes.paragraph(text=f"{len(table)} commands ({inst.idn}); (?) marks a setting that is also a query, "
                                "which takes MIN, MAX or DEF where a range is given.")
        return [intro, _table(("command", "parameter", "*RST default"), table, widths=(3, 4, 2))]


# -- the API reference ------------------------------------------------------------------------

def hil_modules() -> list:
    """Every module of the installed ``hil`` package, in name order (the command's __main__ left out)."""
    import hil

    names = [m.name for m in pkgutil.walk_packages(hil.__path__, "hil.") if not m.name.endswith("__main__")]
    return sorted(names)


class ModulesDirective(SphinxDirective):
    """``automodule`` with its members for every module of ``hil`` (an .rst page: the text is reStructuredText)."""

    has_content = False
    option_spec = {"exclude": directives.unchanged}

    def run(self):
        skip = set((self.options.get("exclude") or "").split())
        lines = StringList()
        lines.append(".. automodule:: hil", "<hil-modules>")  # its names are the API page's (hil.api below)
        lines.append("", "<hil-modules>")
        for name in hil_modules():
            if name in skip:
                continue
            for text in (name, "-" * len(name), "", f".. automodule:: {name}", "   :members:", ""):
                lines.append(text, "<hil-modules>")
        node = nodes.section()
        node.document = self.state.document
        nested_parse_with_titles(self.state, lines, node)
        return node.children


# -- docstrings written as plain-text mathematics -----------------------------------------------

_LITERAL = re.compile(r"(``.*?``|`[^`]*`)")
_BORDER = re.compile(r"^\s*=+(\s+=+)+\s*$")


def _table_rows(lines: list) -> list:
    """For each line, whether it is part of a simple table (between its first and last border)."""
    flags, table = [], False
    for k, line in enumerate(lines):
        if _BORDER.match(line):
            after = lines[k + 1] if k + 1 < len(lines) else ""
            flags.append(True)
            table = not (table and (not after.strip()))  # a border followed by a blank line closes the table
        else:
            flags.append(table)
    return flags


def plain_math(lines: list) -> list:
    """``lines`` of a docstring with |, * and a word's trailing _ escaped outside literals and simple tables:
    in hil's docstrings ``|O|`` is a size, ``||r||`` a norm, ``K^-1 * r`` a product and ``w_`` a symbol,
    not reStructuredText substitutions, emphasis or references."""
    out = []
    for line, table in zip(lines, _table_rows(lines)):
        if table or line.lstrip().startswith((">>>", "...")):
            out.append(line)
            continue
        parts = _LITERAL.split(line)
        for i in range(0, len(parts), 2):
            t = re.sub(r"(?<!\\)\|", r"\\|", parts[i])
            t = re.sub(r"(?<![\\*])\*(?!\*)", r"\\*", t)
            parts[i] = re.sub(r"(?<=\w)_(?=[^\w`]|$)", r"\\_", t)
        out.append("".join(parts))
    return out


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def blocks_apart(lines: list) -> list:
    """``lines`` with a blank line where an indented block starts or ends without one.

    hil's docstrings write ``name : meaning`` lines with an indented continuation, one after
    another (``Experiment``'s fields, ``newton``'s arguments); reStructuredText reads each such
    pair as a definition list item and wants blank lines around it."""
    out = []
    for k, (line, table) in enumerate(zip(lines, _table_rows(lines))):
        prev = out[-1] if out else ""
        nxt = lines[k + 1] if k + 1 < len(lines) else ""
        if line.strip() and prev.strip() and not table:
            dedent = _indent(line) < _indent(prev)
            head = nxt.strip() and _indent(nxt) > _indent(line) and _indent(prev) == _indent(line)
            if (dedent or head) and not prev.rstrip().endswith("::"):
                out.append("")
        out.append(line)
    return out


def _process_docstring(app, what, name, obj, options, lines):
    lines[:] = blocks_apart(plain_math(lines))


def setup(app):
    app.connect("autodoc-process-docstring", _process_docstring)
    app.add_directive("hil-cli", CLIDirective)
    app.add_directive("hil-scpi", SCPIDirective)
    app.add_directive("hil-modules", ModulesDirective)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
