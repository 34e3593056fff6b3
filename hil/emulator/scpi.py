"""SCPI message exchange and status reporting for the emulated instruments (IEEE 488.2 and SCPI 1999).

Commands are declared as patterns in the manuals' notation: upper-case letters
are the short form, the whole word the long form, ``[...]`` an optional node,
e.g. ``[SENSe]:CURRent[:DC]:NPLCycles``. A received header matches if each of
its nodes is the short or the long form (any case; a node may carry the suffix
``1``).

One received line is one program message (:meth:`Interpreter.execute`):

- program message units are joined by ``;`` (outside quotes and parentheses);
  a unit without a leading ``:`` is looked up at the path of the previous unit
  (its header minus the leaf: ``:SOUR:VOLT 0.5;VOLT?``), then at the root, as
  the Keithley manuals' examples use it (``ROUT:CLOS (@102);READ?``); common
  commands (``*XXX``) leave the path alone;
- the replies of its queries come back as one response message, joined by ``;``;
- after an error the rest of the message is discarded (IEEE 488.2 6.1.6);
- whitespace (space, tab) separates a header from its parameters and may pad
  units and parameters.

The resistor board's contract (``resistor-board.md``) differs in two points: a
failing unit does not stop the next, and each reply is a line of its own
(``Interpreter(ieee488=False)``).

Errors go to a bounded error queue with the numbers and texts of the Keithley
2400/2700 manuals (Appendix B), and set the Standard Event Status Register's
bits; :class:`Status` computes the Status Byte from the registers.
"""

from __future__ import annotations

import re
from collections import deque

NO_ERROR = (0, "No error")
# error numbers and texts: SCPI standard (negative) and the Keithley 2400's own (Table B-1)
ERROR_TEXT = {
    -100: "Command error", -101: "Invalid character", -102: "Syntax error", -103: "Invalid separator",
    -104: "Data type error", -108: "Parameter not allowed", -109: "Missing parameter",
    -112: "Program mnemonic too long", -113: "Undefined header", -114: "Header suffix out of range",
    -120: "Numeric data error", -141: "Invalid character data", -144: "Character data too long",
    -150: "String data error", -151: "Invalid string data", -200: "Execution error",
    -211: "Trigger ignored", -213: "Init ignored", -220: "Parameter error", -221: "Settings conflict",
    -222: "Parameter data out of range", -223: "Too much data", -224: "Illegal parameter value",
    -230: "Data corrupt or stale", -300: "Device-specific error", -315: "Configuration memory lost",
    -350: "Queue overflow", -363: "Input buffer overrun", -410: "Query INTERRUPTED",
    -420: "Query UNTERMINATED", -440: "Query UNTERMINATED after indefinite response",
    +800: "Illegal with storage active", +801: "Insufficient vector data",
    +802: "OUTPUT blocked by output enable", +803: "Not permitted with OUTPUT off",
    +900: "Internal System Error",
}
UNDEFINED_HEADER, PARAMETER_NOT_ALLOWED, MISSING_PARAMETER, DATA_TYPE_ERROR = -113, -108, -109, -104
DATA_OUT_OF_RANGE, SETTINGS_CONFLICT, ILLEGAL_VALUE, TOO_MUCH_DATA = -222, -221, -224, -223
QUEUE_OVERFLOW, INPUT_OVERRUN, OUTPUT_OFF = -350, -363, +803
INVALID_CHARACTER, QUERY_INTERRUPTED = -101, -410

# Standard Event Status Register bits (IEEE 488.2 11.5.1)
OPC, QYE, DDE, EXE, CME, PON = 1, 4, 8, 16, 32, 128


def esr_bit(code: int) -> int:
    """The Standard Event bit an error sets: command, execution, device-specific or query error."""
    if -199 <= code <= -100:
        return CME
    if -299 <= code <= -200 or 800 <= code <= 899:
        return EXE
    if -499 <= code <= -400:
        return QYE
    return DDE


class SCPIError(Exception):
    def __init__(self, code: int, detail: str = ""):
        super().__init__(code, detail)
        self.code, self.detail = int(code), detail

    def entry(self, texts: dict | None = None) -> tuple:
        """(code, text): the manual's text, then '; ' and what went wrong (SCPI's device-dependent info)."""
        msg = (texts or {}).get(self.code) or ERROR_TEXT.get(self.code, "Device-specific error" if self.code < 0
                                                             else "Error")
        # no commas or double quotes in the text: clients split <code>,"<text>" on commas
        detail = self.detail.replace(",", " ").replace('"', "'")
        return self.code, f"{msg}; {detail}" if detail else msg


class Suspend(Exception):
    """Raised by ``*WAI``'s handler while an operation is pending: the rest of the message waits for it
    (IEEE 488.2 10.39: no later command executes until the No-Operation-Pending flag is true)."""


class Register:
    """A SCPI event register set: condition, latched event, enable (positive transitions latch)."""

    def __init__(self):
        self.condition = self.event = self.enable = 0

    def set(self, bits: int, on: bool = True) -> None:
        if on:
            self.event |= bits & ~self.condition
            self.condition |= bits
        else:
            self.condition &= ~bits

    def pulse(self, bits: int) -> None:
        """An event without a lasting condition (a reading taken, the buffer filled)."""
        self.event |= bits

    def read_event(self) -> int:
        e, self.event = self.event, 0
        return e

    @property
    def summary(self) -> bool:
        return bool(self.event & self.enable)


class Status:
    """The status model: error queue, Standard Event register, event registers, Status Byte."""

    def __init__(self, max_errors: int = 10, texts: dict | None = None):
        self.texts = texts or {}   # an instrument's own error texts, where its manual differs
        self.errors = deque()
        self.max_errors = max_errors
        self.esr = 0
        self.ese = 0
        self.sre = 0
        self.measurement, self.operation, self.questionable = Register(), Register(), Register()

    def push_error(self, code: int, detail: str = "") -> None:
        code = int(code)
        self.esr |= esr_bit(code)
        if len(self.errors) >= self.max_errors:  # the last slot reports the overflow
            self.errors[-1] = (QUEUE_OVERFLOW, ERROR_TEXT[QUEUE_OVERFLOW])
        else:
            self.errors.append(SCPIError(code, detail).entry(self.texts))

    def next_error(self) -> str:
        code, msg = self.errors.popleft() if self.errors else NO_ERROR
        return f'{code:+d},"{msg}"' if code else f'0,"{msg}"'

    def all_errors(self) -> str:
        out = []
        while self.errors:
            out.append(self.next_error())
        return ",".join(out) if out else self.next_error()

    def clear(self) -> None:
        """*CLS: the error queue and every event register."""
        self.errors.clear()
        self.esr = 0
        for r in (self.measurement, self.operation, self.questionable):
            r.event = 0

    def preset(self) -> None:
        """:STAT:PRES: enable registers to their preset (0)."""
        for r in (self.measurement, self.operation, self.questionable):
            r.enable = 0

    def stb(self) -> int:
        """Status Byte: MSB (0), EAV (2), QSB (3), ESB (5), MSS (6), OSB (7); MAV is 0 once a reply is read."""
        s = 0
        s |= 1 if self.measurement.summary else 0
        s |= 4 if self.errors else 0
        s |= 8 if self.questionable.summary else 0
        s |= 32 if self.esr & self.ese else 0
        s |= 128 if self.operation.summary else 0
        if s & self.sre & ~64:
            s |= 64
        return s


def _node_forms(node: str) -> tuple:
    short = "".join(ch for ch in node if ch.isupper() or ch.isdigit() or ch in "*?")
    return short.upper(), node.upper()


def compile_pattern(pattern: str) -> list:
    """'SOURce:VOLTage[:LEVel]' -> [((short, long), optional), ...]."""
    nodes = []
    for opt, req in re.findall(r"\[:?([^\]]+)\]|([^:\[\]]+)", pattern.lstrip(":")):
        nodes.append((_node_forms(opt or req), bool(opt)))
    return nodes


def _node_match(forms, part: str) -> bool:
    if part in forms:
        return True
    # a numeric suffix 1 is the default one: SENS1 = SENS, OUTP1 = OUTP
    return part.endswith("1") and part[:-1] in forms and not part[:-1][-1:].isdigit()


def _match(nodes, parts, i=0, j=0) -> bool:
    if i == len(nodes):
        return j == len(parts)
    forms, optional = nodes[i]
    if j < len(parts) and _node_match(forms, parts[j]) and _match(nodes, parts, i + 1, j + 1):
        return True
    return optional and _match(nodes, parts, i + 1, j)


_MNEMONIC = re.compile(r"\*?[A-Z][A-Z0-9]*")
# a control character (tab is white space) or, decoded with "replace", a byte outside ASCII
_INVALID_CHAR = re.compile("[\x00-\x08\x0a-\x1f\x7f\ufffd]")


def _split_outside(text: str, sep: str) -> list:
    """``text`` split on the character ``sep`` where it stands outside quotes and parentheses."""
    out, cur, depth, quote = [], [], 0, None
    for ch in text:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = None
            continue
        if ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)  # an unmatched ')' must not hide every later separator
        elif ch == sep and depth == 0:
            out.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    out.append("".join(cur))
    return out


def _split_units(message: str) -> list:
    """Split a program message on ';' outside quotes and parentheses."""
    return _split_outside(message, ";")


class Interpreter:
    """Commands: ``add(pattern, handler)``; a handler gets the parameter string and returns a reply or None."""

    def __init__(self, status: Status | None = None, ieee488: bool = True):
        self.ieee488 = ieee488   # False: a failing unit does not stop the next (the resistor board's contract)
        self.after_unit = None   # called with each unit (command or query) once it has run, failed or not
        self.table = []
        self.patterns = []       # every command as declared, in the manual's notation (the docs list them)
        self._resolved = {}
        self.status = status or Status()
        self.rest = None         # (units, path) a *WAI left waiting in the last message executed

    @property
    def errors(self):
        return self.status.errors

    def add(self, pattern: str, handler) -> None:
        query = pattern.endswith("?")
        self.patterns.append(pattern)
        self.table.append((compile_pattern(pattern.rstrip("?")), query, handler))
        self._resolved.clear()

    def push_error(self, code: int, detail: str = "") -> None:
        self.status.push_error(code, detail)

    def next_error(self) -> str:
        return self.status.next_error()

    def execute(self, message: str) -> list:
        """Execute one program message; returns its queries' replies, in order.

        An IEEE 488.2 instrument sends them as one response message joined by ';'
        (:meth:`response`); the resistor board a line each. A ``*WAI`` that must wait
        leaves the units after it in :attr:`rest` (else None), to :meth:`resume` later.
        """
        return self.resume((_split_units(message), []))

    def resume(self, rest: tuple) -> list:
        """Execute the units ``rest`` = (units, path) that a ``*WAI`` left waiting; returns their replies."""
        units, path = rest
        replies, self.rest = [], None
        for k, unit in enumerate(units):
            unit = unit.strip(" \t\r\n")
            if not unit:
                continue
            try:
                bad = _INVALID_CHAR.search(unit)
                if bad:
                    raise SCPIError(INVALID_CHARACTER, f"byte 0x{ord(bad.group()):02x} in {unit[:40]!r}"
                                    if ord(bad.group()) < 256 else f"a byte that is not ASCII in {unit[:40]!r}")
                r, path = self._unit(unit, path)
            except Suspend:
                self.rest = (units[k + 1:], path)
                break
            except SCPIError as exc:
                self.push_error(exc.code, exc.detail)
                if self.ieee488:
                    break  # IEEE 488.2: the rest of the message is discarded
                continue
            except Exception as exc:  # a handler's bug must not crash the server
                self.push_error(-300, f"{type(exc).__name__}")
                break
            finally:
                if self.after_unit is not None:
                    self.after_unit(unit)
            if r is not None:
                replies.append(r)
        return replies

    def response(self, message: str) -> list:
        """The lines a message's replies go out as: one joined by ';' (IEEE 488.2), or one per reply."""
        replies = self.execute(message)
        if self.ieee488:
            return [";".join(replies)] if replies else []
        return replies

    def _unit(self, unit: str, path: list):
        m = re.match(r"([^ \t]+)(?:[ \t]+(.*))?$", unit, re.S)
        header, args = m.group(1), (m.group(2) or "").strip(" \t")
        query = header.endswith("?")
        bare = header[:-1] if query else header
        absolute = bare.startswith(":")
        parts = bare.lstrip(":").upper().split(":") if bare.lstrip(":") else []
        if not parts or any(not _MNEMONIC.fullmatch(p) for p in parts) or \
                any(p.startswith("*") for p in parts[1:]):
            raise SCPIError(UNDEFINED_HEADER, header[:40])
        common = parts[0].startswith("*")
        tries = [parts] if (common or absolute or not path) else [path + parts, parts]
        for full in tries:
            handler = self._lookup(tuple(full), query)
            if handler is not None:
                return handler(args), (path if common else full[:-1])
        raise SCPIError(UNDEFINED_HEADER, header[:40])

    def _lookup(self, parts: tuple, query: bool):
        """The handler of a header (cached: the table is fixed once declared; bounded, as headers are)."""
        key = (parts, query)
        if key not in self._resolved:
            hit = next((h for nodes, q, h in self.table if q == query and _match(nodes, list(parts))), None)
            if len(self._resolved) < 4096:
                self._resolved[key] = hit
            return hit
        return self._resolved[key]


def split_params(arg: str) -> list:
    """A parameter list split on commas outside quotes and parentheses, each stripped."""
    return [x.strip(" \t") for x in _split_outside(arg, ",")]


_DECIMAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)(E[+-]?\d+)?")  # SCPI NR1/NR2/NR3 (upper-cased)
_INCOMPLETE = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)E[+-]?|[+-]\.?")   # a number cut short: '1E', '1E+', '-'
SYNTAX_ERROR = -102


def number(arg: str, lo: float = -float("inf"), hi: float = float("inf"), default: float | None = None) -> float:
    """A numeric parameter (SCPI NRf, MINimum, MAXimum, DEFault), range-checked."""
    a = arg.strip(" \t").upper()
    if not a:
        raise SCPIError(MISSING_PARAMETER)
    if a in ("MIN", "MINIMUM"):
        return lo
    if a in ("MAX", "MAXIMUM"):
        return hi
    if a in ("DEF", "DEFAULT") and default is not None:
        return default
    if not _DECIMAL.fullmatch(a):  # float() would also take 'inf', 'nan', '1_0'
        if len(split_params(a)) > 1:            # '1,2': one parameter too many
            raise SCPIError(PARAMETER_NOT_ALLOWED, f"{arg[:40]}: one number expected")
        if re.search(r"\s", a) or _INCOMPLETE.fullmatch(a):   # '1 2', '1e': a malformed number
            raise SCPIError(SYNTAX_ERROR, arg[:40])
        raise SCPIError(DATA_TYPE_ERROR, arg[:40])
    v = float(a)
    if not (lo <= v <= hi) or v != v:
        raise SCPIError(DATA_OUT_OF_RANGE, f"{v:g} not in [{lo:g} {hi:g}]")
    return v


def boolean(arg: str) -> bool:
    a = arg.strip(" \t").upper()
    if a in ("1", "ON"):
        return True
    if a in ("0", "OFF"):
        return False
    raise SCPIError(DATA_TYPE_ERROR, arg[:40])


def channel_list(arg: str) -> list:
    """'(@101,103:105)' -> [101, 103, 104, 105]."""
    m = re.fullmatch(r"[ \t]*\(@([0-9,:\s]+)\)[ \t]*", arg)
    if not m:
        raise SCPIError(DATA_TYPE_ERROR, f"channel list {arg[:40]!r}")
    out = []
    for part in m.group(1).split(","):
        if ":" in part:
            a, b = (int(x) for x in part.split(":"))
            out.extend(range(a, b + 1))
        elif part.strip():
            out.append(int(part))
    return out
