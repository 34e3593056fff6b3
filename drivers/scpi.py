"""A small SCPI command interpreter for the emulated instruments.

Commands are declared once as patterns in the instrument manuals' notation:
upper-case letters are the short form, the whole word the long form, ``[...]``
an optional node, e.g. ``SOURce:VOLTage[:LEVel]``. A received header matches if
each of its nodes is the short or the long form (any case), as SCPI requires.
A line may hold several commands joined by ``;`` (a leading ``:`` restarts at
the root). Errors go to the instrument's queue with the standard SCPI codes;
nothing a client sends can crash the server.
"""

from __future__ import annotations

import re
from collections import deque

NO_ERROR = (0, "No error")
UNDEFINED_HEADER = -113
PARAMETER_NOT_ALLOWED = -108
MISSING_PARAMETER = -109
DATA_TYPE_ERROR = -104
DATA_OUT_OF_RANGE = -222
SETTINGS_CONFLICT = -221
QUEUE_OVERFLOW = -350
MESSAGES = {UNDEFINED_HEADER: "Undefined header", PARAMETER_NOT_ALLOWED: "Parameter not allowed",
            MISSING_PARAMETER: "Missing parameter", DATA_TYPE_ERROR: "Data type error",
            DATA_OUT_OF_RANGE: "Data out of range", SETTINGS_CONFLICT: "Settings conflict",
            QUEUE_OVERFLOW: "Queue overflow"}


class SCPIError(Exception):
    def __init__(self, code: int, detail: str = ""):
        super().__init__(code, detail)
        self.code, self.detail = code, detail

    def entry(self) -> tuple:
        msg = MESSAGES.get(self.code, "Error")
        # no commas or quotes inside the message: clients split the reply <code>,"<message>" on commas
        detail = self.detail.replace(",", " ").replace('"', "'")
        return self.code, f"{msg}; {detail}" if detail else msg


def _node_forms(node: str) -> tuple:
    short = "".join(ch for ch in node if ch.isupper() or ch.isdigit() or ch in "*?")
    return short.upper(), node.upper()


def compile_pattern(pattern: str) -> list:
    """'SOURce:VOLTage[:LEVel]' -> [(forms, optional), ...]."""
    nodes = []
    for opt, req in re.findall(r"\[:?([^\]]+)\]|([^:\[\]]+)", pattern.lstrip(":")):
        text = opt or req
        nodes.append((_node_forms(text), bool(opt)))
    return nodes


def _match(nodes, parts) -> bool:
    i = 0
    for forms, optional in nodes:
        if i < len(parts) and parts[i] in forms:
            i += 1
        elif not optional:
            return False
    return i == len(parts)


class Interpreter:
    """Commands: ``add(pattern, handler)``; a handler gets the argument string and returns a reply or None."""

    def __init__(self, max_errors: int = 10):
        self.table = []
        self.errors = deque()
        self.max_errors = max_errors

    def add(self, pattern: str, handler) -> None:
        query = pattern.endswith("?")
        self.table.append((compile_pattern(pattern.rstrip("?")), query, handler))

    def push_error(self, code: int, detail: str = "") -> None:
        if len(self.errors) >= self.max_errors:
            self.errors[-1] = (QUEUE_OVERFLOW, MESSAGES[QUEUE_OVERFLOW])
        else:
            self.errors.append(SCPIError(code, detail).entry())

    def next_error(self) -> str:
        code, msg = self.errors.popleft() if self.errors else NO_ERROR
        return f'{code},"{msg}"'

    def execute(self, line: str) -> list:
        """Execute one received line; returns the replies of its queries, in order."""
        replies = []
        for cmd in _split(line):
            try:
                r = self._one(cmd)
                if r is not None:
                    replies.append(r)
            except SCPIError as exc:
                self.push_error(exc.code, exc.detail)
            except Exception as exc:  # a handler's bug must not crash the server
                self.push_error(-300, f"device-specific error: {type(exc).__name__}")
        return replies

    def _one(self, cmd: str):
        cmd = cmd.strip()
        if not cmd:
            return None
        header, _, args = cmd.partition(" ")
        query = header.endswith("?")
        parts = [p.upper() for p in header.rstrip("?").lstrip(":").split(":")]
        if not header.rstrip("?") or any(not re.fullmatch(r"[A-Z0-9*]+", p) for p in parts):
            raise SCPIError(UNDEFINED_HEADER, header[:40])
        for nodes, q, handler in self.table:
            if q == query and _match(nodes, parts):
                return handler(args.strip())
        raise SCPIError(UNDEFINED_HEADER, header[:40])


def _split(line: str) -> list:
    """Split on ';' outside quotes and parentheses."""
    out, cur, depth, quote = [], [], 0, None
    for ch in line:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
            cur.append(ch)
        elif ch == "(":
            depth += 1
            cur.append(ch)
        elif ch == ")":
            depth -= 1
            cur.append(ch)
        elif ch == ";" and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return out


_DECIMAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)(E[+-]?\d+)?")  # SCPI NR1/NR2/NR3 (upper-cased)


def number(arg: str, lo: float = -float("inf"), hi: float = float("inf")) -> float:
    """A numeric parameter (SCPI NR1/NR2/NR3, MIN, MAX, DEF), range-checked."""
    a = arg.strip().upper()
    if not a:
        raise SCPIError(MISSING_PARAMETER)
    if a in ("MIN", "MINIMUM"):
        return lo
    if a in ("MAX", "MAXIMUM"):
        return hi
    if not _DECIMAL.fullmatch(a):  # float() would also take 'inf', '1_0', ' 0x1p3'-like forms
        raise SCPIError(DATA_TYPE_ERROR, arg[:40])
    v = float(a)
    if not (lo <= v <= hi) or v != v:
        raise SCPIError(DATA_OUT_OF_RANGE, f"{v:g} not in [{lo:g}, {hi:g}]")
    return v


def boolean(arg: str) -> bool:
    a = arg.strip().upper()
    if a in ("1", "ON"):
        return True
    if a in ("0", "OFF"):
        return False
    raise SCPIError(DATA_TYPE_ERROR, arg[:40])


def channel_list(arg: str) -> list:
    """'(@101,103:105)' -> [101, 103, 104, 105]."""
    m = re.fullmatch(r"\s*\(@([0-9,:\s]+)\)\s*", arg)
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
