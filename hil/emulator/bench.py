"""The emulated bench: each instrument a raw-SCPI socket server on loopback, backed by a simulated circuit.

Instruments (one TCP port each, ``TCPIP::127.0.0.1::PORT::SOCKET``, lines end in ``\\n``;
open them from pyvisa with ``read_termination="\\n"``):

- the resistor board (protocol: ``drivers/resistor-board.md``);
- one Keithley 2400 SourceMeter per input node and per output node
  (:mod:`hil.emulator.keithley2400`);
- one Keithley 2700 with a 7700 multiplexer card (channels 101..120) reading
  every other node (:mod:`hil.emulator.keithley2700`).

The node voltages come from a substrate (ideal or ngspice) given what every SMU
is doing (:mod:`hil.emulator.circuitmodel`): sourcing a voltage or a current, in
compliance (a source at its limit), or off (the manual's output-off states:
HIMPedance is an open node, NORMal a 0 V source limited to 0.5 % of the current
range). One lock serialises every instrument's messages, so a reading reflects
every setting made before it by any client. Faults can be injected per
instrument: a delayed reply, a dropped connection, a garbage reply, an error
pushed into the queue.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import socket
import socketserver
import termios
import threading
import time
import tty
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from hil.emulator.circuitmodel import PortSolver
from hil.emulator.scpi import (INPUT_OVERRUN, QUERY_INTERRUPTED, SETTINGS_CONFLICT, Interpreter, SCPIError, Status,
                               Suspend, number)

SCANNER_CHANNELS = range(101, 121)          # 7700 card in slot 1
HELD = type("Held", (str,), {})("1")      # the reply of a *OPC? that waits for a pending operation
MAX_LINE = 65536                            # bytes an instrument's input buffer holds (a longer line is refused)
HISTORY = 5000                              # received messages kept per instrument (each cut to HISTORY_CHARS)
HISTORY_CHARS = 4096


def _fmt(v: float) -> str:
    return f"{v:+.15E}"


@dataclass
class Faults:
    delay: float = 0.0          # seconds before each reply while delay_count > 0
    delay_count: int = 0
    drop: int = 0               # close the connection at the next N queries
    garbage: int = 0            # answer the next N queries with garbage

    def take(self, name):
        n = getattr(self, name)
        if n > 0:
            setattr(self, name, n - 1)
            return True
        return False


class BenchModel:
    """The state of every instrument and the circuit behind them; one lock for all."""

    def __init__(self, substrate, board_range=None, noise=(0.0, 0.0), seed=0):
        self.sub = substrate
        self.c = substrate.circuit
        self.lock = threading.RLock()
        self.g = substrate.read()
        lo, hi = board_range or (self.c.g_min, self.c.g_max)
        self.g_range = (float(lo), float(hi))
        self.smus = {}
        self.instruments = []   # every emulated instrument, in the order made (the trigger link's)
        self.noise = (float(noise[0]), float(noise[1]))   # V rms, A rms of one reading at 1 PLC
        self.rng = np.random.default_rng(seed)
        self.solver = PortSolver(substrate)
        self.version = 0
        self._cache = None
        self.g_source = None  # a callable giving g (S) when the board is outside the emulator (firmware)

    def set_g(self, g):
        with self.lock:
            self.g = np.array(g, float)
            self.changed()

    def changed(self):
        with self.lock:
            self.version += 1
            self._cache = None

    def link_listeners(self, line: int) -> list:
        """The instruments waiting for a trigger on trigger-link line ``line`` (every instrument's
        link connectors are wired together, as a bench's trigger-link cables do)."""
        return [i for i in self.instruments if i.listening(line)]

    def solution(self, sweeping: dict | None = None):
        """(V (N, n), port volts (N, P), port amps (N, P), in compliance (N, P)).

        Every SMU at what it sources now (its bias level, or its output-off state); with
        ``sweeping`` ({smu: (held at a voltage?, levels (N,), limit)}), those SMUs at N points
        of their sweeps while every other stays where it is. Each instrument has its own
        trigger model: a sweep moves no other instrument unless the trigger link steps it.
        """
        with self.lock:
            if self.g_source is not None:
                g = np.asarray(self.g_source(), float)
                if not np.array_equal(g, self.g):
                    self.set_g(g)
            if not sweeping and self._cache is not None and self._cache[0] == self.version:
                return self._cache[1]
            N = max([len(np.atleast_1d(v[1])) for v in (sweeping or {}).values()] + [1])
            P = self.solver.P
            isV, val, lim = np.zeros((N, P), bool), np.zeros((N, P)), np.full((N, P), np.inf)
            for k, node in enumerate(self.solver.ports):
                s = self.smus.get(self.c.nodes[node])
                if s is None:
                    continue  # no instrument: an open node
                isV[:, k], val[:, k], lim[:, k] = (sweeping or {}).get(s) or s.port()
            if not np.array_equal(self.sub.read(), self.g):
                self.sub.write(self.g)
            V, Vp, Ip, comp = self.solver.solve(isV, val, lim)
            voltmeter = getattr(self.sub, "voltmeter", None)
            if voltmeter is not None:  # a non-ideal simulation: its voltmeters' noise on the readings only
                V = voltmeter(V)
                Vp = V[:, self.solver.ports]
            sol = (V, Vp, Ip, comp)
            if not sweeping:
                self._cache = (self.version, sol)
            return sol

    def port_index(self, node: int) -> int:
        return self.solver.ports.index(node)


class Instrument:
    """An emulated instrument: an interpreter, the status model, IEEE 488.2 common commands, faults."""

    idn = "hil,EmulatedInstrument,0,1.0"
    max_line = MAX_LINE
    ieee488 = True        # IEEE 488.2 message exchange (the Keithleys); the board has its own contract
    error_texts = None    # texts where the instrument's manual differs from the Keithleys'

    def __init__(self, model: BenchModel):
        self.model = model
        model.instruments.append(self)
        self.clock = 0.0          # the instrument's timer (s): virtual, advanced by what each operation takes
        self._held = []           # (reply lines, write) of messages whose *OPC? waits for a pending operation
        self._waiting = []        # (replies so far, units left, write) of messages a *WAI holds back, in order
        self._busy = False        # a message is executing (a completion releases the waiting ones after it)
        self._opc_armed = False
        self.faults = Faults()
        self.received = deque(maxlen=HISTORY)  # recent messages (cut to HISTORY_CHARS), for tests and post-mortems
        self.state_log = deque(maxlen=20000)  # (time, command, applied()) after each command: every state applied
        self.status = Status(texts=self.error_texts)
        self.scpi = Interpreter(self.status, ieee488=self.ieee488)
        self.scpi.after_unit = self._log_applied
        s, st = self.scpi, self.status
        bare = lambda fn: lambda a: _no_args(fn)(a)   # a common command that takes no parameter: -108
        s.add("*IDN?", bare(lambda: self.idn))
        s.add("*RST", bare(lambda: self._opc_idle() or self.reset()))
        s.add("*CLS", bare(lambda: self._opc_idle() or st.clear()))
        s.add("*OPC", bare(lambda: self._opc()))
        s.add("*OPC?", bare(lambda: HELD if self.pending() else "1"))
        s.add("*WAI", bare(lambda: self._wai()))
        s.add("*TST?", bare(lambda: "0"))
        s.add("*ESE", lambda a: setattr(st, "ese", int(number(a, 0, 255))))
        s.add("*ESE?", lambda a: str(st.ese))
        s.add("*ESR?", bare(lambda: str(self._read_esr())))
        s.add("*SRE", lambda a: setattr(st, "sre", int(number(a, 0, 255)) & ~64))
        s.add("*SRE?", lambda a: str(st.sre))
        s.add("*STB?", bare(lambda: str(st.stb())))
        s.add("SYSTem:ERRor[:NEXT]?", lambda a: st.next_error())
        s.add("SYSTem:ERRor:ALL?", lambda a: st.all_errors())
        s.add("SYSTem:ERRor:COUNt?", lambda a: str(len(st.errors)))
        s.add("SYSTem:CLEar", lambda a: st.errors.clear())
        s.add("SYSTem:VERSion?", lambda a: "1996.0")
        for name, reg in (("MEASurement", st.measurement), ("OPERation", st.operation),
                          ("QUEStionable", st.questionable)):
            s.add(f"STATus:{name}[:EVENt]?", lambda a, r=reg: str(r.read_event()))
            s.add(f"STATus:{name}:ENABle", lambda a, r=reg: setattr(r, "enable", int(number(a, 0, 65535))))
            s.add(f"STATus:{name}:ENABle?", lambda a, r=reg: str(r.enable))
            s.add(f"STATus:{name}:CONDition?", lambda a, r=reg: str(r.condition))
        s.add("STATus:PRESet", lambda a: st.preset())
        s.add("STATus:QUEue[:NEXT]?", lambda a: st.next_error())
        s.add("STATus:QUEue:CLEar", lambda a: st.errors.clear())
        self.declare()
        self.reset()

    def _read_esr(self) -> int:
        e, self.status.esr = self.status.esr, 0
        return e

    def declare(self):
        pass

    def reset(self):
        pass

    def push_error(self, code, message):
        with self.model.lock:
            self.status.push_error(int(code), message)

    def execute(self, message: str):
        """One program message, atomically with respect to every other instrument's (one bench, one lock).

        Returns the reply line (queries' replies joined by ';', IEEE 488.2) or None; the
        board, whose replies go out a line each, joins them with newlines.
        """
        lines = self.respond(message)
        return "\n".join(lines) if lines else None

    def respond(self, message: str, write=None) -> list:
        """The reply lines of one program message.

        A message with a ``*OPC?`` while an operation is pending (a sweep armed, waiting for
        ``*TRG`` or the trigger link) answers nothing now: its reply line goes out through
        ``write`` (a callable taking one line) when the operation completes (IEEE 488.2 12.5.3).
        After a ``*WAI`` while an operation is pending, the rest of that message and every later
        one wait until it completes (IEEE 488.2 10.39), their replies then going out through
        ``write``; a message that is only ``*TRG`` still runs, as the bus trigger (GPIB's GET)
        that a controller sends outside the message stream, or nothing could end the wait.
        """
        with self.model.lock:
            if self._waiting and message.strip(" \t").upper() != "*TRG":
                self._waiting.append(([], (message, None), write))
                return []
            self._busy = True
            try:
                replies = self.scpi.execute(message)
            finally:
                self._busy = False
            if self.scpi.rest is not None:
                self._waiting.append((replies, self.scpi.rest, write))
                lines = []
            else:
                lines = self._lines(replies, write)
            self._release()
            return lines

    def _lines(self, replies: list, write) -> list:
        """The lines a message's replies go out as now; none while its *OPC? waits (held until completion)."""
        lines = ([";".join(replies)] if replies else []) if self.ieee488 else replies
        if any(r is HELD for r in replies):
            self._held.append((lines, write))
            return []
        return lines

    def _wai(self):
        """*WAI: while an operation is pending, no later command executes (:meth:`respond`)."""
        if self.pending():
            raise Suspend()

    def _release(self):
        """Run the messages a *WAI held back, in order, while no operation is pending; their replies go out."""
        while self._waiting and not self.pending() and not self._busy:
            done, (units, path), write = self._waiting.pop(0)
            self._busy = True
            try:
                replies = done + (self.scpi.execute(units) if path is None else self.scpi.resume((units, path)))
            finally:
                self._busy = False
            if self.scpi.rest is not None:   # another *WAI: first in line again
                self._waiting.insert(0, (replies, self.scpi.rest, write))
                continue
            for line in self._lines(replies, write):
                if write is not None:
                    write(line)

    def interrupted(self, what: str) -> None:
        """-410 Query INTERRUPTED: a new message came while a reply was unread; that reply is discarded
        (IEEE 488.2 6.3.2.3)."""
        self.push_error(QUERY_INTERRUPTED, f"the reply {what} was not read before the next message: discarded")

    # -- pending operations (the no-operation-pending flag of IEEE 488.2) ------------------
    def pending(self) -> bool:
        """An operation is under way: the instrument was initiated and waits for a trigger."""
        return False

    def listening(self, line: int) -> bool:
        """Waiting for a trigger on trigger-link line ``line``."""
        return False

    def _opc(self):
        """*OPC: the Operation Complete bit, set once no operation is pending."""
        if self.pending():
            self._opc_armed = True
        else:
            self.status.esr |= 1

    def _opc_idle(self):
        """*RST and *CLS: no *OPC waits and no *OPC? reply is held any longer (IEEE 488.2 10.3, 10.32): a
        reply an earlier client's *OPC? left can never answer a later client's query."""
        self._opc_armed = False
        self._held = []

    def forget(self, write) -> None:
        """A client gone (its connection closed): what it left held or waiting is dropped with it."""
        with self.model.lock:
            self._held = [h for h in self._held if h[1] != write]   # bound methods: equal, not identical
            self._waiting = [w for w in self._waiting if w[2] != write]
            self._release()

    def completed(self):
        """The pending operation is done: *OPC sets its bit, held *OPC? replies go out."""
        if self._opc_armed:
            self._opc_armed = False
            self.status.esr |= 1
        held, self._held = self._held, []
        for lines, write in held:
            for line in lines:
                if write is not None:
                    write(line)
        self._release()

    def _log_applied(self, unit: str) -> None:
        """After each command of a message: what the instrument applies then, into ``state_log``."""
        st = self.applied()
        if st is not None:
            self.state_log.append((time.monotonic(), unit[:HISTORY_CHARS], st))

    def applied(self):
        """What the instrument applies to the circuit now (a dict), or None when it applies nothing."""
        return None


class ResistorBoard(Instrument):
    """The board of ``resistor-board.md``: holds any conductance in its range, or (``device``, a
    :class:`hil.spice.devices.Digipot`) the nearest tap, R = R_W + code R_AB / N, as the firmware does."""

    idn = "hil,EmulatedResistorBoard,0,1.0"
    ieee488 = False                              # its contract: a failing command does not stop the next,
    error_texts = {-222: "Data out of range"}    # each query's reply a line of its own

    def __init__(self, model: BenchModel, device=None):
        self.device = device
        if device is not None:
            model.g_range = (float(device.g_from_param(device.taps)), float(device.g_from_param(0)))
        # a line holds every edge's conductance (EDGE:ALL): the input buffer grows with the board
        self.max_line = max(MAX_LINE, 40 * model.c.m + 1024)
        super().__init__(model)

    def held(self, g) -> np.ndarray:
        """The conductances (S) the board holds when asked for g: g itself, or each edge's nearest tap."""
        g = np.asarray(g, float)
        return g.copy() if self.device is None else self.device.g_from_param(self.device.param_from_g(g))

    def declare(self):
        s, m = self.scpi, self.model
        s.add("EDGE:COUNt?", _no_args(lambda: str(m.c.m)))
        s.add("EDGE:RANGe?", _no_args(lambda: f"{_fmt(m.g_range[0])},{_fmt(m.g_range[1])}"))
        s.add("EDGE:CONDuctance", self._set_one)
        s.add("EDGE:CONDuctance?", lambda a: _fmt(m.g[self._edge(_fields(a, 1)[0]) - 1]))
        s.add("EDGE:ALL", lambda a: m.set_g(self._values(a)))
        s.add("EDGE:ALL?", _no_args(lambda: ",".join(_fmt(v) for v in m.g)))
        s.add("EDGE:NEARest?", lambda a: ",".join(_fmt(v) for v in self._values(a)))

    def _edge(self, a) -> int:
        k = number(a, 1, self.model.c.m)
        if k != int(k):
            raise SCPIError(-104, f"edge index {k:g} is not a whole number")
        return int(k)

    def _value(self, a, k) -> float:
        try:
            return number(a, *self.model.g_range)
        except SCPIError as exc:
            raise SCPIError(exc.code, f"edge {k} conductance {exc.detail}".strip()) from None

    def _set_one(self, a):
        k, v = _fields(a, 2)
        k = self._edge(k)
        g = self.model.g.copy()
        g[k - 1] = self.held([self._value(v, k)])[0]
        self.model.set_g(g)

    def _values(self, a) -> np.ndarray:
        """EDGE:ALL's values, the count checked first, then every value, before any is used."""
        fields = _fields(a, self.model.c.m, "one value per edge")
        return self.held([self._value(x, k + 1) for k, x in enumerate(fields)])

    def reset(self):
        lo, hi = self.model.g_range
        self.model.set_g(self.held(np.full(self.model.c.m, np.sqrt(lo * hi))))

    def applied(self):
        return {"g": self.model.g.copy()}


def _fields(a: str, want: int, what: str = "") -> list:
    """The comma-separated parameters, exactly ``want`` of them (-109 for fewer, -108 for more)."""
    fields = a.split(",") if a.strip() else []
    if len(fields) < want:
        raise SCPIError(-109, f"{what} {len(fields)} of {want}".strip())
    if len(fields) > want:
        raise SCPIError(-108, f"{what} {len(fields)} of {want}".strip())
    return fields


def _no_args(fn):
    """A handler for a command that takes no parameters (-108 otherwise)."""
    def handler(a):
        if a.strip():
            raise SCPIError(-108, a[:40])
        return fn()
    return handler


# -- serving ----------------------------------------------------------------------


def _faulted(inst: Instrument, reply: str):
    """The reply as the injected faults leave it: delayed, garbled, or None (the link drops)."""
    f = inst.faults
    if f.take("drop"):
        return None
    if f.delay_count > 0:
        f.delay_count -= 1
        time.sleep(f.delay)
    return "\x07#?garbage?#" if f.take("garbage") else reply


def _received(inst: Instrument, line: bytes):
    """The message text of a received line, or None if it overran the input buffer (-363, discarded whole)."""
    if len(line) > inst.max_line:
        inst.push_error(INPUT_OVERRUN, f"message longer than {inst.max_line} bytes discarded")
        return None
    text = line.decode("ascii", "replace").rstrip("\r")
    if text.strip(" \t"):   # a control character is no white space here: the parser names it (-101)
        inst.received.append(text[:HISTORY_CHARS])
        return text
    return None


class _Lines:
    """The complete lines (without their newline) of a byte stream, as they arrive.

    A line longer than ``max_line`` comes out once as what arrived of it (its length over the
    limit: :func:`_received` refuses it, -363) and the rest of it is dropped as it arrives.
    ``tail`` is what arrived of the next line so far (a message not yet terminated).
    """

    def __init__(self, max_line: int):
        self.max_line, self.tail, self._overrun = max_line, b"", False

    def feed(self, data: bytes) -> list:
        *lines, self.tail = (self.tail + data).split(b"\n")
        if self._overrun and lines:   # the end of an over-long line
            lines, self._overrun = lines[1:], False
        if len(self.tail) > self.max_line:
            if not self._overrun:
                lines.append(self.tail)
            self.tail, self._overrun = b"", True
        return lines


def _blank(data: bytes) -> bool:
    return not data.strip(b" \t\r\n")


class _Pty:
    """An instrument on a pseudo-terminal: a client opens ``path`` as ``ASRL<path>::INSTR`` (pyserial).

    The emulator holds the terminal side open too, so a client closing and reopening the
    port (as a driver's reconnect does) finds the instrument still there. A dropped link
    (fault) loses that reply, as a serial glitch would.
    """

    def __init__(self, inst: Instrument):
        self.inst = inst
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # no echo, no CR/LF translation: bytes pass as on a UART
        self.path = os.ttyname(self.slave)
        self._stop = threading.Event()

    def start(self) -> "_Pty":
        threading.Thread(target=self._serve, daemon=True, name=f"emulator-pty-{self.path}").start()
        return self

    def _serve(self):
        lines = _Lines(self.inst.max_line)
        while not self._stop.is_set():
            if not select.select([self.master], [], [], 0.1)[0]:
                continue
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            for line in lines.feed(data):
                text = _received(self.inst, line)
                if text is None:
                    continue
                self._unread()
                for r in self.inst.respond(text, self._write):
                    self._write(r)

    def _unread(self) -> None:
        """A new message while the client has not read a reply: the reply is discarded, -410 (IEEE 488.2
        6.3.2.3). The emulator holds the terminal open too, so what the client left unread is still
        there to count (FIONREAD); a client that closed the port without reading leaves nothing to
        the next one but this error."""
        if not self.inst.ieee488:
            return
        left = int.from_bytes(fcntl.ioctl(self.slave, termios.FIONREAD, b"\0\0\0\0"), "little")
        if left:
            termios.tcflush(self.slave, termios.TCIFLUSH)
            self.inst.interrupted(f"of {left} bytes")

    def _write(self, r: str) -> None:
        r = _faulted(self.inst, r)
        if r is not None:
            os.write(self.master, (r + "\n").encode("ascii", "replace"))

    def stop(self, wait: bool = True):
        self._stop.set()
        if wait:  # the server thread notices within its 0.1 s poll
            time.sleep(0.15)
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass


class _Handler(socketserver.StreamRequestHandler):
    def setup(self):
        super().setup()
        # small replies must leave at once (Nagle's algorithm would hold them ~40 ms)
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._wlock = threading.Lock()   # a held *OPC? reply may be sent from another client's thread

    def handle(self):
        """Each line a message; at the end of the stream a message cut before its terminator is
        discarded, as an instrument does."""
        inst: Instrument = self.server.instrument
        lines = _Lines(inst.max_line)
        while True:
            try:
                data = self.connection.recv(65536)
            except OSError:  # the client reset the link (a bench reconnecting): nothing to answer
                return
            if not data:
                return
            got = lines.feed(data)
            for k, line in enumerate(got):
                text = _received(inst, line)
                if text is None:
                    continue
                out = inst.respond(text, self._write)
                if out and inst.ieee488 and self._next_message(got[k + 1:], lines.tail):
                    inst.interrupted(f"to {text[:40]!r}")
                    continue
                for r in out:
                    if not self._write(r):
                        return

    def _next_message(self, later: list, tail: bytes) -> bool:
        """Whether the next message has begun to arrive: the client sent it before this reply existed, so
        cannot have read it (-410). Over a socket that is all the emulator can see: a reply sent is read
        or not in the client, out of its sight (docs/emulator.md)."""
        if not all(map(_blank, later)) or not _blank(tail):
            return True
        try:
            return not _blank(self.connection.recv(256, socket.MSG_PEEK | socket.MSG_DONTWAIT) or b" ")
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return False

    def finish(self):
        self.server.instrument.forget(self._write)
        super().finish()

    def _write(self, r: str) -> bool:
        """Send one reply line (as the injected faults leave it); False when the link is gone."""
        r = _faulted(self.server.instrument, r)
        if r is None:
            return False
        try:
            with self._wlock:
                self.wfile.write((r + "\n").encode("ascii", "replace"))
                self.wfile.flush()
        except (OSError, ValueError):
            return False
        return True


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@dataclass
class EmulatedBench:
    """All instruments of a bench, served on loopback. Use as a context manager."""

    model: BenchModel
    instruments: dict = field(default_factory=dict)   # name -> Instrument
    host: str = "127.0.0.1"
    servers: dict = field(default_factory=dict)       # name -> (server, port)
    ptys: dict = field(default_factory=dict)          # name -> _Pty, after serve_serial()
    external: dict = field(default_factory=dict)      # name -> resource of an instrument served elsewhere

    def start(self, ports: dict | None = None) -> "EmulatedBench":
        for name, inst in self.instruments.items():
            srv = _Server((self.host, (ports or {}).get(name, 0)), _Handler)
            srv.instrument = inst
            threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True,
                             name=f"emulator-{name}").start()
            self.servers[name] = (srv, srv.server_address[1])
        return self

    def serve_serial(self) -> "EmulatedBench":
        """Serve every instrument on a pseudo-terminal too (``ASRL/dev/pts/K::INSTR``)."""
        for name, inst in self.instruments.items():
            self.ptys[name] = _Pty(inst).start()
        return self

    def resource(self, name: str, serial: bool = False) -> str:
        if name in self.external:
            return self.external[name]
        if serial:
            return f"ASRL{self.ptys[name].path}::INSTR"
        return f"TCPIP::{self.host}::{self.servers[name][1]}::SOCKET"

    def stop(self):
        for srv, _ in self.servers.values():
            srv.shutdown()
            srv.server_close()
        self.servers.clear()
        for p in self.ptys.values():
            p._stop.set()
        for k, p in enumerate(self.ptys.values()):
            p.stop(wait=k == 0)
        self.ptys.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def bench_toml(self, circuit_path: str, settle: float = 0.0, serial: bool = False, device: str | None = None) -> str:
        """The bench file a :class:`hil.bench.substrate.BenchSubstrate` reads to drive this bench.

        ``serial``: the instruments' pseudo-terminals (``serve_serial``) instead of their TCP ports;
        ``device``: the parts the board holds ([board] device: what the wiring check models).
        """
        from hil.emulator.keithley2400 import SMU
        c = self.model.c

        def where(name):
            r = self.resource(name, serial)
            # an emulated or host-built board does not reset when its port opens
            return [f'resource = "{r}"'] + (["reset_wait = 0.0"] if name == "board" and r.startswith("ASRL") else [])

        lo, hi = self.model.g_range
        lines = ["# written by hil emulate: the emulated bench's instruments and limits",
                 f"circuit = {json.dumps(str(circuit_path))}", f"settle = {settle!r}", "",
                 "[board]", *where("board"), f"g_min = {max(lo, c.g_min)!r}", f"g_max = {min(hi, c.g_max)!r}",
                 *([f'device = "{device}"'] if device else []), ""]
        for name, inst in self.instruments.items():
            if isinstance(inst, SMU):
                model = inst.idn.split(",")[1].split()[-1]
                lines += ["[[smu]]", f'node = "{inst.node_name}"', *where(name),
                          "voltage_limit = 2.0", "current_limit = 0.02"] + \
                    ([f'model = "{model}"'] if model != "2400" else []) + [""]
        scan = self.instruments.get("scanner")
        if scan is not None:
            lines += ["[scanner]", *where("scanner"), "voltage_limit = 2.0", "",
                      "[scanner.channels]"]
            lines += [f'{c.nodes[n]} = {ch}' for ch, n in sorted(scan.channels.items())]
        return "\n".join(lines) + "\n"


SMU_MODELS = ("2400", "2450")


def build(substrate, board_range=None, board_device=None, board=True, noise=(0.0, 0.0), seed=0,
          smu_model="2400", interlock=False) -> EmulatedBench:
    """An emulated bench for ``substrate``'s circuit: a board, an SMU per input and output, a scanner.

    ``board_device``: a :class:`hil.spice.devices.Digipot` whose taps the board holds (default:
    any conductance in its range). ``board=False``: no emulated board; the circuit's
    conductances then come from ``model.g_source`` (a firmware board, :mod:`hil.emulator.firmware`).
    ``noise``: (V rms, A rms) of one SMU or scanner reading at 1 PLC; integrating over
    NPLC line cycles (and the filter's count) averages it down by the square root.
    ``smu_model``: "2400" or "2450" for every SMU, or {node name: model}; ``interlock``: the
    2450s' interlock asserted (without it they source at most 21 V).
    """
    from hil.bench.substrate import refuse_vccs
    from hil.emulator.keithley2400 import SMU
    from hil.emulator.keithley2450 import SMU2450
    from hil.emulator.keithley2700 import Scanner
    models = smu_model if isinstance(smu_model, dict) else {}
    for m in [smu_model] if not isinstance(smu_model, dict) else list(smu_model.values()):
        if m not in SMU_MODELS:
            raise ValueError(f"SMU model {m!r}: the emulator has the Keithley {' and '.join(SMU_MODELS)}")
    if len(noise) != 2 or not all(np.isfinite(x) and x >= 0 for x in noise):
        raise ValueError(f"emulated reading noise (--noise VOLTS, --noise-current AMPS) = {tuple(noise)}: "
                         "each must be a finite rms value >= 0")
    refuse_vccs(substrate.circuit)
    model = BenchModel(substrate, board_range, noise, seed)
    c = model.c
    inst = {"board": ResistorBoard(model, board_device)} if board else {}
    for i in list(c.inputs) + list(c.outputs):
        kind = models.get(c.nodes[i], "2400") if models else smu_model
        inst[f"smu_{c.nodes[i]}"] = SMU2450(model, c.nodes[i]) if kind == "2450" else SMU(model, c.nodes[i])
        if kind == "2450":
            inst[f"smu_{c.nodes[i]}"].interlock = bool(interlock)
    others = [i for i in range(c.n) if i != c.ground and i not in c.inputs and i not in c.outputs]
    if len(others) > len(SCANNER_CHANNELS):
        raise ValueError(f"circuit '{c.name}' has {len(others)} inner nodes; one 7700 card reads {len(SCANNER_CHANNELS)}")
    if others:
        inst["scanner"] = Scanner(model, {101 + k: c.nodes[i] for k, i in enumerate(others)})
    model.set_g(inst["board"].held(substrate.read()) if board else substrate.read())
    return EmulatedBench(model, inst)

