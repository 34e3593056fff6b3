"""An emulated instrument's settings, declared once as data.

A :class:`Setting` is one SCPI command as its manual's command summary lists it:
the path, the parameter type, the range, the *RST default and what MINimum,
MAXimum and DEFault mean. :func:`install` turns a table of them into the set
form and the query form (``PATH?``, ``PATH? MIN|MAX|DEF``) on an
:class:`~hil.emulator.scpi.Interpreter`, with validation, and :func:`reset`
restores the *RST defaults; so every declared command is settable, queryable,
validated and reset by construction. The server-side counterpart of
PyMeasure's ``Instrument.control``.

Kinds: ``real`` (NRf, optionally snapped to a list of ranges), ``int``,
``bool``, ``enum`` (mnemonics in the manual's notation, e.g. ``FIXed``; the
query answers the short form), ``string`` (quoted), ``list`` (a list of
mnemonics, e.g. the functions or the data elements).
"""

from __future__ import annotations

from dataclasses import dataclass

from hil.emulator.scpi import (DATA_OUT_OF_RANGE, DATA_TYPE_ERROR, ILLEGAL_VALUE, MISSING_PARAMETER, SCPIError,
                              boolean, number, split_params)


def fmt_real(v: float) -> str:
    """A real as the 2400 and 2700 answer queries: 7 significant digits, signed mantissa and exponent."""
    return f"{float(v):+.6E}"


@dataclass(frozen=True)
class Setting:
    """One SCPI setting: ``path`` in the manual's notation, its ``key`` in the instrument's state."""

    path: str
    key: str
    kind: str                       # real | int | bool | enum | string | list
    default: object
    lo: float = -float("inf")
    hi: float = float("inf")
    choices: tuple = ()             # enum / list mnemonics, manual notation ("FIXed")
    ranges: tuple = ()              # real: the instrument's ranges; a value selects the smallest that holds it
    minimum: object = None          # what "? MIN" answers (lo if None)
    maximum: object = None          # what "? MAX" answers (hi if None)
    reset: bool = True              # *RST restores the default (the 2400's TRACe settings keep theirs)
    settable: bool = True
    queryable: bool = True
    max_len: int = 0                # string: longest accepted

    # -- parsing ----------------------------------------------------------------------
    def parse(self, arg: str):
        """The value a parameter string sets (raises SCPIError naming the problem)."""
        a = arg.strip(" \t")
        if self.kind == "real":
            v = number(a, self.lo, self.hi, self.default)
            return self.snap(v) if self.ranges else v
        if self.kind == "int":
            v = number(a, self.lo, self.hi, self.default)
            if v != int(v):
                raise SCPIError(DATA_TYPE_ERROR, f"{a[:20]} is not an integer")
            return int(v)
        if self.kind == "bool":
            return boolean(a)
        if self.kind == "enum":
            return self.mnemonic(a)
        if self.kind == "string":
            if len(a) < 2 or a[0] not in "'\"" or a[-1] != a[0]:
                raise SCPIError(DATA_TYPE_ERROR, f"expected a quoted string, got {a[:20]!r}")
            s = a[1:-1]
            if self.max_len and len(s) > self.max_len:
                raise SCPIError(DATA_OUT_OF_RANGE, f"{len(s)} characters (at most {self.max_len})")
            if any(not (32 <= ord(ch) < 127) for ch in s):
                raise SCPIError(-151, "non-printable character")
            return s
        if self.kind == "list":
            if not a:
                raise SCPIError(MISSING_PARAMETER)
            return tuple(dict.fromkeys(self.mnemonic(x) for x in split_params(a)))
        raise AssertionError(self.kind)

    def mnemonic(self, text: str) -> str:
        """The canonical short form (upper case) of ``text`` among ``choices``, quotes allowed."""
        t = text.strip(" \t").strip("'\"").strip().upper()
        if not t:
            raise SCPIError(MISSING_PARAMETER)
        for c in self.choices:
            short = "".join(ch for ch in c if not ch.islower())
            long_ = c.upper()
            if t in (short.upper(), long_):
                return short.upper()
        raise SCPIError(ILLEGAL_VALUE, f"{text.strip()[:24]} for {self.path}")

    def snap(self, v: float) -> float:
        """The smallest range whose full scale holds |v| (the 2400 selects ranges this way)."""
        for r in self.ranges:
            if abs(v) <= r * (1 + 1e-12):
                return r
        return self.ranges[-1]

    # -- replies -----------------------------------------------------------------------
    def format(self, v) -> str:
        if self.kind == "real":
            return fmt_real(v)
        if self.kind == "int":
            return str(int(v))
        if self.kind == "bool":
            return "1" if v else "0"
        if self.kind == "enum":
            return str(v)
        if self.kind == "string":
            return f'"{v}"'
        if self.kind == "list":
            return ",".join(v)
        raise AssertionError(self.kind)

    def query(self, value, arg: str) -> str:
        a = arg.strip(" \t").upper()
        if a in ("MIN", "MINIMUM"):
            return self.format(self.lo if self.minimum is None else self.minimum)
        if a in ("MAX", "MAXIMUM"):
            return self.format(self.hi if self.maximum is None else self.maximum)
        if a in ("DEF", "DEFAULT"):
            return self.format(self.default)
        if a:
            raise SCPIError(-108, f"{arg[:20]}")
        return self.format(value)


def install(interp, table, state: dict, on_set=None) -> None:
    """Declare every setting of ``table`` on ``interp``: the set form and the query form.

    ``state`` holds the values by key; ``on_set(setting, value)`` runs after a
    value is stored (the instrument's reaction: a re-solve, a range turning
    auto off); it may raise SCPIError to refuse the value.
    """
    for s in table:
        if s.settable:
            def setter(arg, s=s):
                v = s.parse(arg)
                old = state.get(s.key)
                state[s.key] = v
                if on_set is not None:
                    try:
                        on_set(s, v)
                    except SCPIError:
                        state[s.key] = old
                        raise
            interp.add(s.path, setter)
        if s.queryable:
            interp.add(s.path + "?", lambda arg, s=s: s.query(state[s.key], arg))


def reset(table, state: dict, everything: bool = False) -> None:
    """*RST: every setting that *RST restores back to its default (all of them with ``everything``)."""
    for s in table:
        if s.reset or everything or s.key not in state:
            state[s.key] = s.default
