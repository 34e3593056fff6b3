"""The bench substrate: the learning loop on instruments, through pyvisa.

A bench file (TOML) says which instrument drives or reads which node::

    circuit = "circuits/net16.toml"
    settle = 0.0                  # seconds to wait after a change before reading
    timeout_ms = 2000             # per read
    retries = 2                   # a query that times out, drops or answers garbage is retried ...
    retry_seconds = 30.0          # ... at most this long (s), whatever `retries` says
    probe_current = 1e-5          # A, the test current that measures K
    average = 1                   # readings averaged per node and solve
    sweep_points = 100            # examples per source-list sweep (a 2400 holds 100 list points)
    wiring_check = true           # at the start, every node read against the circuit at the board's g ...
    wiring_tolerance = 0.05       # ... to within this many volts (swapped channels or SMUs stop the run)
    record_max_bytes = 100000000  # a run's record of exchanges (RUN/bench/) stops growing here
    [board]
    resource = "TCPIP::127.0.0.1::5025::SOCKET"   # or "ASRL/dev/ttyACM0::INSTR" (firmware/)
    g_min = 1e-5                  # never written below / above (S)
    g_max = 1e-2
    device = "resistor"           # the parts on the board: resistor (default), digipot, mosfet, mosfet-mid, ...
                                  # (the model the wiring check compares the readings with)
    # serial resources only (ASRL...): baud_rate (115200 for the board, 9600 for the
    # others) and the board's reset_wait (s, default 2: opening the port resets an Arduino)
    [[smu]]                       # one per input node and per output node
    node = "n1"
    resource = "TCPIP::127.0.0.1::5026::SOCKET"
    voltage_limit = 2.0           # V, never sourced past; compliance when sourcing current
    current_limit = 0.02          # A, never sourced past; compliance when sourcing voltage
    model = "2400"                # or "2450" (its SCPI command set; stepped point by point)
    [scanner]                     # reads every other node
    resource = "..."
    voltage_limit = 2.0           # V, the DC range it measures on
    [scanner.channels]
    n3 = 101

An unknown key is an error naming the key and the closest known one.

The lifecycle, the same at the start and after every reconnect: connect ->
make safe (SMU outputs off then *RST, scanner channels open, every error queue
read and cleared; what was queued goes to the run's ``substrate.log``) ->
configure (limits and compliances set before an output is switched on) -> the
board's conductances written and verified by read-back (at the start: the
circuit file's, unless ``from_board``; after a reconnect: the last ones written)
-> run. A fault (timeout, dropped link, garbage) is retried after reconnecting,
at most ``retries`` times and ``retry_seconds`` in all; then the run stops with
a message naming the instrument.

Experiments (:mod:`hil.substrate`): input SMUs source the inputs (0 V for the
adjoint experiment); an output SMU sources 0 A (free), a current (open-loop
nudge, adjoint) or a voltage (CL and AL clamps). A closed-loop nudge needs a load
resistor the bench does not have: asking for one is an error, as is a complex nudge.
"""

from __future__ import annotations

import difflib
import math
import re
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from hil.circuit import Circuit
from hil.substrate import Substrate, SubstrateError

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover
    import tomli as tomllib

RESOURCE_RE = re.compile(r"^(TCPIP\d*::[A-Za-z0-9.\-]+::\d{1,5}::SOCKET|ASRL[\w/.\-]+::INSTR|GPIB\d*::\d{1,2}::INSTR"
                         r"|USB\d*::[\w:]+::INSTR)$")


class BenchError(SubstrateError):
    """The bench could not do what was asked; names the instrument and what it said."""


def refuse_vccs(c: Circuit) -> None:
    """BenchError when ``c`` has VCCS elements: a bench realises the edges on a resistor board only."""
    if c.k:
        raise BenchError(f"{c.source}: circuit '{c.name}' has {c.k} voltage-controlled current source(s) "
                         f"({', '.join(c.vccs_names[:4])}{' ...' if c.k > 4 else ''}); the bench realises "
                         "resistor networks only (a programmable-resistor board): use --backend ideal or ngspice")


# -- the bench file ---------------------------------------------------------------------

def _number(lo, hi, integer=False, lo_open=False):
    """A check that a value is a (whole) number in [lo, hi] ((lo, hi] when lo_open); returns an error text or None."""
    def check(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or \
                (integer and v != int(v)) or v < lo or v > hi or (lo_open and v == lo):
            kind = "a whole number" if integer else "a number"
            return f"must be {kind} {'>' if lo_open else '>='} {lo:g}" + (f" and <= {hi:g}" if hi < math.inf else "")
        return None
    return check


def _flag(v):
    return None if isinstance(v, bool) else "must be true or false"


def _within(lo, hi, integer=False):
    """A number in [lo, hi] (the serial settings' wording)."""
    def check(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi or (integer and v != int(v)):
            return f"must be a number in [{lo}, {hi}]"
        return None
    return check


def _text(v):
    return None if isinstance(v, str) else "must be a string"


def _device(v):
    from hil.spice.devices import DEVICES
    return None if v in DEVICES else f"is not a part hil models (known: {', '.join(DEVICES)})"


def _resource(v):
    if isinstance(v, str) and RESOURCE_RE.match(v):
        return None
    return ("is not a VISA resource string this bench accepts "
            "(TCPIP::host::port::SOCKET, ASRL...::INSTR, GPIB::n::INSTR, USB...::INSTR)")


INF = math.inf
#: every key a bench file may hold, per table, with its check; the defaults are BenchSubstrate's
SCHEMA = {
    "": {"circuit": _text, "settle": _number(0, 3600), "timeout_ms": _number(1, 3.6e6, True),
         "retries": _number(0, INF, True), "retry_seconds": _number(0, 86400, lo_open=True),
         "probe_current": _number(0, 1.05, lo_open=True), "average": _number(1, 10000, True),
         "sweep_points": _number(1, 100, True), "wiring_check": _flag, "wiring_tolerance": _number(0, 10, lo_open=True),
         "record_max_bytes": _number(0, INF, True), "board": None, "smu": None, "scanner": None},
    "board": {"resource": _resource, "g_min": _number(0, INF, lo_open=True), "g_max": _number(0, INF, lo_open=True),
              "baud_rate": _within(50, 4_000_000, True), "reset_wait": _within(0.0, 60.0), "device": _device},
    "smu": {"node": _text, "resource": _resource, "voltage_limit": _number(0, 210, lo_open=True),
            "current_limit": _number(0, 1.05, lo_open=True), "baud_rate": _within(50, 4_000_000, True),
            "model": lambda v: None if v in ("2400", "2450") else 'must be "2400" or "2450" (the SMU\'s model)'},
    "scanner": {"resource": _resource, "voltage_limit": _number(0, 1010, lo_open=True), "channels": None,
                "baud_rate": _within(50, 4_000_000, True)},
}
REQUIRED = {"board": ("resource",), "smu": ("node", "resource"), "scanner": ("resource",)}


def _unknown(where, key, known):
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'? " if close else ""
    if not close:  # a key of another table, misplaced or misspelt there
        for table, keys in SCHEMA.items():
            near = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
            if table and near:
                hint = f"did you mean '{near[0]}' in [{'[smu]' if table == 'smu' else table}]? "
                break
    return BenchError(f"{where}: unknown key '{key}' ({hint}known: {', '.join(sorted(known))})")


def _check_table(path, where, table, kind):
    if not isinstance(table, dict):
        raise BenchError(f"{path}: {where} must be a table")
    for key, value in table.items():
        if key not in SCHEMA[kind]:
            raise _unknown(f"{path}: {where}", key, SCHEMA[kind])
        check = SCHEMA[kind][key]
        problem = check(value) if check else None
        if problem:
            raise BenchError(f"{path}: {where} {key} = {value!r} {problem}")
    for key in REQUIRED.get(kind, ()):
        if key not in table:
            raise BenchError(f"{path}: {where}: missing '{key}'")


def check_bench(b: dict, path="bench") -> dict:
    """Check a parsed bench file: every key known, every value in range; BenchError naming file, table and key."""
    top = {k: v for k, v in b.items() if k != "_path"}
    _check_table(path, "(top level)", {k: v for k, v in top.items() if k not in ("board", "smu", "scanner")}, "")
    for key in ("board", "smu"):
        if key not in b:
            raise BenchError(f"{path}: missing [{key}]" if key == "board" else f"{path}: missing [[smu]]")
    _check_table(path, "[board]", b["board"], "board")
    if not isinstance(b["smu"], list):
        raise BenchError(f"{path}: smu must be an array of [[smu]] tables")
    for k, s in enumerate(b["smu"]):
        _check_table(path, f"[[smu]] #{k + 1}", s, "smu")
    if "scanner" in b:
        _check_table(path, "[scanner]", b["scanner"], "scanner")
        chans = b["scanner"].get("channels", {})
        if not isinstance(chans, dict):
            raise BenchError(f"{path}: [scanner.channels] must be a table of node = channel")
        for node, ch in chans.items():
            if isinstance(ch, bool) or not isinstance(ch, int) or not 101 <= ch <= 120:
                raise BenchError(f"{path}: [scanner.channels] {node} = {ch!r}: a 7700 channel is a whole number 101 to 120")
        dup = [ch for ch in set(chans.values()) if list(chans.values()).count(ch) > 1]
        if dup:
            raise BenchError(f"{path}: [scanner.channels]: channel {dup[0]} is given to "
                             f"{' and '.join(n for n, c in chans.items() if c == dup[0])}")
    nodes = [s["node"] for s in b["smu"]]
    for n in nodes:
        if nodes.count(n) > 1:
            raise BenchError(f"{path}: two [[smu]] tables on node '{n}'")
    res = [b["board"]["resource"]] + [s["resource"] for s in b["smu"]] + \
          ([b["scanner"]["resource"]] if "scanner" in b else [])
    for r in res:
        if res.count(r) > 1:
            raise BenchError(f"{path}: resource {r} is given to two instruments")
    board = b["board"]
    if "g_min" in board and "g_max" in board and not board["g_min"] < board["g_max"]:
        raise BenchError(f"{path}: [board] g_min = {board['g_min']!r} must be below g_max = {board['g_max']!r}")
    return b


def load_bench(path) -> dict:
    """Read and check a bench file; errors name the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"{path}: no such bench file" if not path.exists() else f"{path}: not a file")
    try:
        b = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BenchError(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:  # arrays or tables nested thousands deep
        raise BenchError(f"{path}: not valid TOML: nested too deeply to read") from None
    check_bench(b, path)
    b["_path"] = str(path)
    return b


def lock_dir() -> Path:
    """Where bench locks live: $HIL_LOCK_DIR, or hil-locks/ in the system's temporary folder
    (shared by every user of this machine, as the instruments are)."""
    import os
    import tempfile
    d = Path(os.environ.get("HIL_LOCK_DIR") or Path(tempfile.gettempdir()) / "hil-locks")
    if not d.is_dir():
        d.mkdir(parents=True, exist_ok=True)
        try:
            d.chmod(0o1777)  # every user may lock, none may remove another's lock
        except OSError:
            pass
    return d


def _resource_key(resource: str) -> str:
    """One spelling per instrument: VISA's interface names are case-insensitive and TCPIP means TCPIP0."""
    r = resource.strip()
    if r.upper().startswith("ASRL"):
        return "ASRL" + r[4:]  # a serial port's path keeps its case
    r = r.upper()
    return "TCPIP0::" + r[len("TCPIP::"):] if r.startswith("TCPIP::") else r


def bench_locks(cfg: dict) -> list:
    """(lock file, what it locks) for a bench: its bench file, then each instrument resource."""
    import hashlib
    d = lock_dir()
    keys = [("bench file", str(Path(cfg["_path"]).resolve()))] if cfg.get("_path") else []
    sections = [cfg["board"], *cfg["smu"]] + ([cfg["scanner"]] if "scanner" in cfg else [])
    keys += [("instrument", _resource_key(sec["resource"])) for sec in sections]
    out = []
    for kind, key in dict.fromkeys(keys):
        digest = hashlib.sha256(key.encode()).hexdigest()[:20]
        out.append((d / f"{kind.replace(' ', '-')}-{digest}.lock", f"{kind} {key}"))
    return out


class _Fault(Exception):
    """An instrument did not answer as it should: which one, doing what, and why."""

    def __init__(self, inst, what, exc):
        super().__init__(inst, what, exc)
        self.inst, self.what, self.exc = inst, what, exc


class BenchSubstrate(Substrate):
    """A circuit on a bench: a resistor board, SMUs on the inputs and outputs, a scanner for the rest.

    ``from_board``: start from the conductances the board holds (checked against the
    limits) instead of writing the circuit's (the default).
    """

    supports_complex = False

    @property
    def device(self) -> str:
        """The parts on the board, as the bench file's [board] device declares them (default resistor)."""
        return self.cfg["board"].get("device", "resistor")

    @property
    def small_signal(self) -> bool:
        """Transistor channels are nonlinear: K and the adjoint are measured as small signals (see Substrate)."""
        return self.device.startswith("mosfet")

    def __init__(self, circuit: Circuit, bench, visa_library: str = "@py", from_board: bool = False):
        self.circuit = c = circuit
        refuse_vccs(c)
        self.cfg = check_bench(bench, bench.get("_path", "bench")) if isinstance(bench, dict) else load_bench(bench)
        get = self.cfg.get
        self.settle = float(get("settle", 0.0))
        self.probe_current = float(get("probe_current", 1e-5))  # A, measures K gently
        self.average = int(get("average", 1))  # readings averaged per node
        self.chunk = int(get("sweep_points", 100))  # examples per source-list sweep (2400: <= 100)
        self.retries = int(get("retries", 2))
        self.retry_seconds = float(get("retry_seconds", 30.0))
        self.timeout = int(get("timeout_ms", 2000))
        self.visa_library = visa_library
        self.from_board = bool(from_board)
        self.notes = []  # (level, line) for the run's substrate.log
        where = get("_path", "bench")
        smu_nodes = {s["node"]: s for s in self.cfg["smu"]}
        for i in list(c.inputs) + list(c.outputs):
            if c.nodes[i] not in smu_nodes:
                raise BenchError(f"{where}: no [[smu]] for {'input' if i in c.inputs else 'output'} node '{c.nodes[i]}'")
        for name in smu_nodes:
            if name not in c.nodes:
                raise BenchError(f"{where}: [[smu]] on node '{name}', which circuit '{c.name}' does not have")
            idx = c.node(name)
            if idx not in c.inputs and idx not in c.outputs:
                raise BenchError(f"{where}: [[smu]] on node '{name}', which is neither an input nor an output")
        chans = dict(self.cfg.get("scanner", {}).get("channels", {}))
        for n in chans:
            if n not in c.nodes:
                raise BenchError(f"{where}: [scanner.channels] names node '{n}', which circuit '{c.name}' does not have")
        for i in range(c.n):
            if i != c.ground and i not in c.inputs and i not in c.outputs and c.nodes[i] not in chans:
                raise BenchError(f"{where}: node '{c.nodes[i]}' is read by no instrument (add it to [scanner.channels])")
        if chans and "scanner" not in self.cfg:
            raise BenchError(f"{where}: [scanner.channels] without a [scanner] resource")
        self._chan_nodes = [(c.node(n), ch) for n, ch in chans.items()]
        self.compliance = []  # (SMU, its first reading at its compliance) of the last sweep read
        self.recorder = None  # a BenchRecorder once record_to is called
        self.board, self.smus, self.scanner = None, {}, None
        self._target = None  # the conductances last sent to the board (S), restored after a reconnect
        self._locks = []
        try:
            self._lock()
            self._open()
            self._start(from_board)
        except BaseException:
            self.close()
            raise

    # -- one user ---------------------------------------------------------------------
    def _lock(self) -> None:
        """Take the bench's locks: its bench file's and each instrument resource's (:func:`bench_locks`).

        BenchError naming the holder (process, host, its bench file) when a live process has one.
        """
        from hil.runs import RunError, take_lock
        where = self.cfg.get("_path")
        me = {"what": f"bench file {Path(where).resolve()}" if where else "a bench given as a table"}
        for path, what in bench_locks(self.cfg):
            try:
                take_lock(path, what, "one process drives a bench at a time",
                          lambda text: self.notes.append(("info", f"{what}: {text}")), extra=me)
            except RunError as exc:
                raise BenchError(str(exc)) from None
            except OSError as exc:
                raise BenchError(f"{what}: cannot take its lock {path}: {exc.strerror}") from None
            self._locks.append(path)

    def _unlock(self) -> None:
        for path in self._locks:
            path.unlink(missing_ok=True)
        self._locks = []

    # -- connections ----------------------------------------------------------------
    def _adapter_kwargs(self, resource: str | None = None):
        kw = dict(visa_library=self.visa_library, read_termination="\n", write_termination="\n",
                  timeout=self.timeout)
        if resource is not None and resource.upper().startswith("ASRL"):
            kw["baud_rate"] = self._bauds[resource]
        return kw

    def _adapter(self, resource: str):
        """A new connection to ``resource``. A serial port keeps what an earlier client left unread (a
        reply it never read): that is discarded first, so the instrument's first reply is to this one's
        first query. A socket starts empty."""
        from pymeasure.adapters import VISAAdapter
        adapter = VISAAdapter(resource, **self._adapter_kwargs(resource))
        if resource.upper().startswith("ASRL"):
            adapter.flush_read_buffer()
        return adapter

    def _instruments(self) -> list:
        return [i for i in [self.board, *self.smus.values(), self.scanner] if i is not None]

    def _open(self):
        """Connect every instrument, make it safe, configure it (board first: it sources nothing)."""
        from hil.drivers.instruments import SMU_MODELS, ResistorBoard, Scanner
        b = self.cfg["board"]
        self._bauds = {b["resource"]: int(b.get("baud_rate", 115200))}  # resistor-board.md: 115200 baud
        for sec in self.cfg["smu"] + ([self.cfg["scanner"]] if "scanner" in self.cfg else []):
            self._bauds[sec["resource"]] = int(sec.get("baud_rate", 9600))  # the Keithleys' factory setting
        serial = b["resource"].upper().startswith("ASRL")
        self.board = self._connect("resistor board", b["resource"], lambda adapter: ResistorBoard(
            adapter, b.get("g_min", self.circuit.g_min), b.get("g_max", self.circuit.g_max),
            reset_wait=float(b.get("reset_wait", 2.0 if serial else 0.0))))
        if self.board.edges != self.circuit.m:
            raise BenchError(f"resistor board at {b['resource']} has {self.board.edges} edges; "
                             f"circuit '{self.circuit.name}' has {self.circuit.m}")
        for s in self.cfg["smu"]:
            name = f"SMU on node {s['node']}"
            self.smus[self.circuit.node(s["node"])] = self._connect(name, s["resource"], lambda adapter, name=name, s=s: SMU_MODELS[s.get("model", "2400")](
                adapter, s.get("voltage_limit", 2.0), s.get("current_limit", 0.02), name=name))
        if self._chan_nodes:
            sc = self.cfg["scanner"]
            self.scanner = self._connect("scanner", sc["resource"], lambda adapter: Scanner(
                adapter, sc.get("voltage_limit", 10.0)))
        for inst in self._instruments():
            self._check_errors(inst)

    def _connect(self, name, resource, make):
        """Open one instrument (retried like any fault), then make it safe and configure it."""
        def attempt():
            inst = make(self._adapter(resource))
            self._nodelay(inst)
            self._prepare(inst)
            return inst
        t0, last = time.monotonic(), None
        for k in range(self.retries + 1):
            try:
                return attempt()
            except Exception as exc:  # pyvisa, socket and reply errors: retried, then named
                last = exc
            if not self._pause(k, t0):
                break
        raise BenchError(f"{name} at {resource}: cannot connect ({k + 1} tries, {time.monotonic() - t0:.1f} s): "
                         f"{type(last).__name__}: {last}")

    def _prepare(self, inst):
        """Make ``inst`` safe, note what its error queue held, configure it; the board gets its conductances back."""
        for code, msg in inst.make_safe():
            self.notes.append(("info", f"{inst.name}: error queued before connecting, cleared: {code} {msg}"))
        inst.configure()
        if inst is self.board and self._target is not None:
            self.board.set_all(self._target)

    @staticmethod
    def _nodelay(inst):
        """Small SCPI writes must leave at once: Nagle's algorithm holds a query behind an unacknowledged write."""
        import socket

        from pyvisa import constants
        res = inst.adapter.connection
        if not inst.adapter.resource_name.upper().endswith("::SOCKET"):
            return
        try:
            res.set_visa_attribute(constants.VI_ATTR_TCPIP_NODELAY, constants.VI_TRUE)
            return
        except Exception:
            pass
        # pyvisa-py (0.8) does not implement VI_ATTR_TCPIP_NODELAY: a write followed by a query
        # then costs ~40 ms (Nagle + delayed ACK, measured). Set it on its socket directly.
        sock = getattr(getattr(res.visalib, "sessions", {}).get(res.session), "interface", None)
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _reconnect(self, inst):
        """A fresh connection, then the whole lifecycle again: an instrument may have restarted with defaults."""
        try:
            inst.adapter.close()
        except Exception:
            pass
        kw = {k: v for k, v in self._adapter_kwargs(inst.adapter.resource_name).items() if k != "visa_library"}
        inst.adapter.connection = inst.adapter.manager.open_resource(inst.adapter.resource_name,
                                                                      open_timeout=self.timeout, **kw)
        if inst.adapter.resource_name.upper().startswith("ASRL"):
            inst.adapter.flush_read_buffer()   # what the link left unread (see _adapter)
        self._nodelay(inst)
        if hasattr(inst, "after_open"):  # a serial board reset by the reopened port
            inst.after_open()
        self._prepare(inst)

    def _pause(self, attempt: int, t0: float) -> bool:
        """Wait before retry ``attempt + 1`` (50 ms, doubling, at most 1 s); False when retries or time are spent."""
        left = self.retry_seconds - (time.monotonic() - t0)
        if attempt >= self.retries or left <= 0:
            return False
        time.sleep(min(0.05 * 2 ** min(attempt, 5), 1.0, left))
        return True

    @contextmanager
    def _talk(self, inst, what):
        """Any failure talking to ``inst`` becomes a fault naming it; refused values pass through."""
        from hil.drivers.instruments import LimitError
        try:
            yield
        except (LimitError, BenchError, _Fault):
            raise
        except Exception as exc:
            raise _Fault(inst, what, exc) from exc

    def _retry(self, fn, insts):
        """``fn()``, retried after reconnecting ``insts`` on a fault, at most ``retries`` times and ``retry_seconds``.

        A try starts by reconnecting every instrument still due (one that failed to come
        back is tried again), so no instrument is used half-restored.
        """
        t0, due, cause, last = time.monotonic(), [], None, None
        for k in range(self.retries + 1):
            try:
                while due:
                    with self._talk(due[0], "reconnect"):
                        self._reconnect(due[0])
                    due.pop(0)
                return fn()
            except _Fault as f:
                last = f
                cause = f if due == [] else cause  # what the operation itself ran into
            if not self._pause(k, t0):
                break
            due = due or list(insts)
        f = cause or last
        tail = "" if last is f else f"; then {last.inst.name}: {last.what}: {type(last.exc).__name__}: {last.exc}"
        raise BenchError(f"{f.inst.name} at {f.inst.adapter.resource_name}: {f.what} failed after {k + 1} tries "
                         f"({time.monotonic() - t0:.1f} s): {type(f.exc).__name__}: {f.exc}{tail}") from None

    def _call(self, inst, fn, what):
        """``fn()``, a conversation with ``inst`` alone, retried after reconnecting it."""
        def once():
            with self._talk(inst, what):
                return fn()
        return self._retry(once, [inst])

    def _check_errors(self, inst):
        from hil.drivers.instruments import drain_errors
        errs = self._call(inst, lambda: drain_errors(inst), "error queue")
        if errs:
            raise BenchError(f"{inst.name} at {inst.adapter.resource_name} reports: "
                             + "; ".join(f"{code} {msg}" for code, msg in errs))

    def _start(self, from_board: bool) -> None:
        """The starting conductances: the circuit's, written and verified, or (``from_board``) the board's, checked."""
        from hil.drivers.instruments import LimitError
        if from_board:
            g = self._call(self.board, self.board.read_conductances, "read")
            try:
                self.board.checked(g)
            except LimitError as exc:
                raise BenchError(f"--from-board: the board holds a value outside the limits: {exc}") from None
            self._g = self._target = g
        else:
            try:
                self.write(self.circuit.g)
            except LimitError as exc:
                raise BenchError(f"the starting conductances of {self.circuit.source}: {exc}") from None
        if self.cfg.get("wiring_check", True):
            self._wiring_check(float(self.cfg.get("wiring_tolerance", 0.05)))

    def _wiring_check(self, tol: float) -> None:
        """Every node read at two input patterns against the model of the board's parts at its g (V).

        Swapped scanner channels or SMU resources read the right voltages at the wrong
        nodes: the run would train on nonsense. The model is the one the bench file's
        [board] device declares (resistors and digipot taps: Kirchhoff's laws at the
        read-back conductances; transistor channels: ngspice with their model). Input
        levels stay within half the smallest voltage limit (at most 1 V). A mismatch is
        blamed on the wiring only where it looks like wiring: every wrong reading is
        another node's expected voltage.
        """
        from hil.substrate import Experiment
        c = self.circuit
        n_in = len(c.inputs)
        if not n_in:
            return
        lim = min(float(self.smus[i].voltage_limit) for i in c.inputs)
        k = np.arange(n_in)
        X = min(1.0, 0.5 * lim) * np.array([(k + 1) / (n_in + 1), (-1.0) ** k * (n_in - k) / (n_in + 1)])
        got = self.run(X, [Experiment.free(2, len(c.outputs))])[0]
        want = self._model_free_state(X)
        chan = {node: ch for node, ch in self._chan_nodes}
        bad = [i for i in range(c.n) if i != c.ground and np.max(np.abs(got[:, i] - want[:, i])) > tol]
        if not bad:
            return
        self._refuse_compliance(X)
        where = lambda i: f"scanner channel {chan[i]}" if i in chan else self.smus[i].name
        swapped = self._looks_swapped(X, got, want, bad, tol)
        model = f"the {self.device} model" if self.device != "resistor" else "the circuit"
        head = ("wiring check failed (swapped channels or SMU resources?): " if swapped else
                f"the readings differ from {model} at the board's conductances, and not as swapped wiring would "
                f"(no wrong reading is another node's voltage, nor the state with two inputs exchanged): the board's parts may not be what [board] device "
                f"= \"{self.device}\" declares (bench file {self.cfg.get('_path', '')}), or the model is off; "
                "wiring_check = false skips the check: ")
        raise BenchError(head + "; ".join(
            f"node {c.nodes[i]} ({where(i)}) reads {', '.join(f'{v:.4g}' for v in got[:, i])} V where {model} "
            f"at the board's conductances gives {', '.join(f'{v:.4g}' for v in want[:, i])} V"
            for i in bad[:4]) + (f"; {len(bad) - 4} more nodes" if len(bad) > 4 else "")
            + f" (tolerance {tol:g} V, bench file key wiring_tolerance)")

    def _refuse_compliance(self, X) -> None:
        """An SMU that read at its compliance during the wiring check held its limit, not the level asked:
        BenchError naming it, its limit and the reading (the wiring is not to blame)."""
        if not self.compliance:
            return
        lines = []
        for smu, (v, i, *_) in self.compliance:
            if getattr(smu, "_mode", None) == "voltage":
                lines.append(f"{smu.name} at {smu.adapter.resource_name} sourcing up to {np.max(np.abs(X)):.4g} V "
                             f"read {v:.4g} V, {i:.4g} A at its current limit current_limit = {smu.current_limit!r} A")
            else:
                lines.append(f"{smu.name} at {smu.adapter.resource_name} read {v:.4g} V, {i:.4g} A at its voltage "
                             f"limit voltage_limit = {smu.voltage_limit!r} V")
        raise BenchError("wiring check: SMUs in compliance, so the nodes are not at the levels asked (the wiring "
                         "is not what failed): " + "; ".join(lines) + f" (raise the limit in the bench file "
                         f"{self.cfg.get('_path', '')})")

    def _looks_swapped(self, X, got, want, bad, tol) -> bool:
        """Whether wiring explains the readings: every wrong one is another node's expected voltage (swapped
        scanner channels or output SMUs), or the model with two inputs exchanged gives them (input SMUs)."""
        c = self.circuit
        others = [j for j in range(c.n) if j != c.ground]
        if all(any(np.max(np.abs(got[:, i] - want[:, j])) <= tol for j in others if j != i) for i in bad):
            return True
        rest = [i for i in others if i not in c.inputs]
        n_in = len(c.inputs)
        for a in range(min(n_in, 8)):
            for b in range(a + 1, min(n_in, 8)):
                Xs = X.copy()
                Xs[:, [a, b]] = X[:, [b, a]]
                if np.max(np.abs(got[:, rest] - self._model_free_state(Xs)[:, rest])) <= tol:
                    return True
        return False

    def _model_free_state(self, X) -> np.ndarray:
        """The free state (B, n) V the declared parts give at the board's conductances: Kirchhoff's laws for
        resistors and digipot taps (their read-back is the tap's conductance), ngspice for transistor channels."""
        from hil.exact import free_state
        if not self.small_signal:
            return free_state(self.circuit, X, self._g)
        from hil.spice.substrate import NgSpiceSubstrate
        from hil.substrate import Free
        try:
            with NgSpiceSubstrate(self.circuit.with_g(self._g), device=self.device) as model:
                return model.measure(X, np.zeros((len(X), len(self.circuit.outputs))), [Free()])[Free()]
        except SubstrateError as exc:
            raise BenchError(f"the wiring check needs the {self.device} model of the board's parts (ngspice): {exc}; "
                             "wiring_check = false skips it") from None

    # -- the substrate interface --------------------------------------------------------
    def write(self, g) -> np.ndarray:
        g = np.asarray(g, float)
        if g.shape != (self.circuit.m,):
            raise BenchError(f"expected {self.circuit.m} conductances, got shape {g.shape}")
        g = self.board.checked(g)  # LimitError before anything is sent
        self._target = g
        # what the board will hold (a digipot's nearest taps)
        want = self._call(self.board, lambda: self._counted(self.board.nearest(g)), "nearest values")
        for attempt in range(self.retries + 1):  # write-verify
            self._call(self.board, lambda: self.board.set_all(g), "write")
            got = self._call(self.board, self.board.read_conductances, "read-back")
            if np.allclose(got, want, rtol=1e-12, atol=0):
                self._g = got
                if self.recorder:
                    self.recorder.event("write", requested=g, read_back=got)
                # once a step: an error any instrument queued since the last write stops the run cleanly
                for inst in self._instruments():
                    self._check_errors(inst)
                return got.copy()
        raise BenchError(f"{self.board.name}: wrote {g.tolist()} (held as {want.tolist()}) but reads back {got.tolist()}")

    def homeostasis(self) -> tuple:
        """(0, 0): a resistor board is reciprocal (VCCS circuits are refused), so A is symmetric."""
        return 0.0, np.zeros(self.circuit.n_params)

    def _counted(self, g) -> np.ndarray:
        """A reply of one conductance per edge; ReplyError otherwise (retried like garbage)."""
        from hil.drivers.instruments import ReplyError
        if len(g) != self.circuit.m:
            raise ReplyError(f"{self.board.name}: {len(g)} values for {self.circuit.m} edges")
        return g

    def read(self) -> np.ndarray:
        return self._g.copy()

    def diagnostics(self) -> list:
        """(level, line) notes since the last call: what the instruments' error queues held on (re)connect."""
        out, self.notes = self.notes, []
        return out

    def run(self, inputs, experiments) -> list:
        c = self.circuit
        X = np.atleast_2d(np.asarray(inputs, float))
        out = []
        for e in experiments:
            if e.mode == "load":
                raise BenchError("the bench realises open-loop current nudges (ep-open) and clamps (cl, al), not the "
                                 "closed-loop nudge of ep/ep-sym/ep-holo: that needs a load resistor per output")
            vals = np.asarray(e.values)
            if np.iscomplexobj(vals):
                raise BenchError("a bench cannot realise a complex nudge")
            V = np.zeros((len(X), c.n))
            # a source-list sweep per chunk of examples: one trigger steps every instrument together
            for start in range(0, len(X), self.chunk):
                rows = slice(start, min(start + self.chunk, len(X)))
                V[rows] = self._retry(lambda rows=rows: self._sweep(e, X[rows], vals[rows]), self._instruments())
            out.append(V)
        if self.recorder:
            self.recorder.event("run", inputs=X, V=out, experiments=[
                {"sources_on": e.sources_on, "mode": e.mode, "values": np.asarray(e.values)} for e in experiments])
        return out

    def _sweep(self, e, X, vals) -> np.ndarray:
        """Set every SMU's source list for one chunk of examples, then read every node (points, n)."""
        c, n = self.circuit, len(X)
        for k, node in enumerate(c.inputs):
            with self._talk(self.smus[node], "source list"):
                self.smus[node].source_list("voltage", X[:, k] if e.sources_on else np.zeros(n))
        for k, node in enumerate(c.outputs):
            with self._talk(self.smus[node], "source list"):
                self.smus[node].source_list("voltage" if e.mode == "clamp" else "current", vals[:, k])
        if self.settle:
            time.sleep(self.settle)
        return np.mean([self._read_nodes(n) for _ in range(self.average)], axis=0)

    # -- the record of a run (hil/bench/record.py) ---------------------------------------
    def record_to(self, path, max_bytes: int | None = None) -> None:
        """Record every instrument exchange and every write and run into ``path`` from now on."""
        from hil.bench.record import BenchRecorder
        self.recorder = BenchRecorder(path, max_bytes or int(self.cfg.get("record_max_bytes", 100_000_000)))
        for node, smu in self.smus.items():
            self.recorder.wrap(f"smu_{self.circuit.nodes[node]}", smu)
        self.recorder.wrap("board", self.board)
        if self.scanner is not None:
            self.recorder.wrap("scanner", self.scanner)
        self.recorder.event("start", g=self._g)

    def mark(self, step: int) -> None:
        """The training loop begins step ``step`` (a boundary in the record)."""
        if self.recorder:
            self.recorder.event("mark", step=step)

    def _read_nodes(self, points: int) -> np.ndarray:
        """Every node's voltage at each sweep point (points, n), ground at 0 V, after every setting is processed.

        Every instrument is asked first, then every reply collected (the round trips overlap).
        """
        c = self.circuit
        V = np.zeros((points, c.n))
        chans = [ch for _, ch in self._chan_nodes]
        cols = [node for node, _ in self._chan_nodes]
        for smu in self.smus.values():
            with self._talk(smu, "operation complete"):
                smu.write("*OPC?")
        for smu in self.smus.values():
            with self._talk(smu, "operation complete"):
                reply = smu.read().strip()
                if reply != "1":
                    raise ValueError(f"*OPC? answered {reply[:40]!r}, not 1")
        from hil.drivers.instruments import in_compliance, linked_sweep, sweep_rows
        # one sweep: the first SMU triggers the others and the scanner over the trigger link at each point
        replies, volts = linked_sweep(list(self.smus.values()), self.scanner, chans, points, self._talk)
        self.compliance = []
        for (node, smu), reply in zip(self.smus.items(), replies):
            with self._talk(smu, "reading"):
                rows = sweep_rows(smu.name, reply, points)
            V[:, node] = rows[:, 0]
            hit = in_compliance(rows)
            if hit.any():
                self.compliance.append((smu, rows[hit][0]))
        if self.scanner is not None:
            V[:, cols] = volts
        return V

    def stop_recording(self) -> None:
        """Close the record (its files complete, ``record.json`` written); exchanges are no longer logged."""
        if self.recorder:
            self.recorder.close()
            self.recorder = None
            for inst in [self.board, self.scanner, *self.smus.values()]:
                if inst is not None:  # the adapters' own methods again
                    inst.adapter.__dict__.pop("write", None)
                    inst.adapter.__dict__.pop("read", None)

    def close(self) -> None:
        """Every SMU made safe (output off, level 0), every connection closed."""
        self.stop_recording()
        for inst in self._instruments():
            try:
                if inst in self.smus.values():
                    inst.write(":OUTP OFF")
                    inst.write("*RST")
                    inst.ask("*OPC?")  # applied before the link closes
                inst.adapter.close()
            except Exception:
                pass
        self.board, self.smus, self.scanner = None, {}, None
        self._unlock()
