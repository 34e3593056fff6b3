"""The emulated bench: each instrument a raw-SCPI socket server on loopback, backed by a simulated circuit.

Instruments (one TCP port each, ``TCPIP::127.0.0.1::PORT::SOCKET``, lines end in ``\\n``):

- the resistor board (protocol: ``drivers/resistor-board.md``);
- one Keithley 2400-class SMU per input node and per output node (the subset of
  the 2400 command set that sourcing and measuring use, short and long forms);
- one Keithley 2700-class scanner with a 7700 multiplexer card (channels 101..120)
  reading every other node.

The circuit's node voltages come from a substrate (ideal or ngspice) given what
the instruments hold: input SMUs source voltages; an output SMU that is off
leaves its node free, sourcing a current injects it (open-loop nudge, adjoint),
sourcing a voltage clamps it. Faults can be injected per instrument: a delayed
reply, a dropped connection, a garbage reply, an error pushed into the queue.
"""

from __future__ import annotations

import os
import select
import socket
import socketserver
import tty
from collections import deque
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hil.drivers.scpi import SETTINGS_CONFLICT, Interpreter, SCPIError, boolean, channel_list, number

SMU_V_MAX, SMU_I_MAX = 210.0, 1.05          # Keithley 2400 source ranges
SCANNER_CHANNELS = range(101, 121)          # 7700 card in slot 1


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

    def __init__(self, substrate, board_range=None):
        self.sub = substrate
        self.c = substrate.circuit
        self.lock = threading.RLock()
        self.g = substrate.read()
        lo, hi = board_range or (self.c.g_min, self.c.g_max)
        self.g_range = (float(lo), float(hi))
        self.smus = {}
        self._cache = None
        self.g_source = None  # a callable giving g (S) when the board is outside the emulator (firmware)

    def set_g(self, g):
        with self.lock:
            self.g = np.array(g, float)
            self._cache = None

    def changed(self):
        self._cache = None

    def solve(self) -> np.ndarray:
        """Node voltages (n,) for the instruments' present state (the first point of a list sweep)."""
        return self.sweep()[0]

    def points(self) -> int:
        """Trigger count of the sweep the SMUs are set up for (1 unless they hold source lists)."""
        counts = {s.trig_count for s in self.smus.values() if s.output and s.list_mode()}
        if len(counts) > 1:
            raise SCPIError(SETTINGS_CONFLICT, f"SMUs in list mode disagree on the trigger count {sorted(counts)}")
        return counts.pop() if counts else 1

    def sweep(self) -> np.ndarray:
        """Node voltages (N, n) at each point of the sweep: instruments stepped together, as by a trigger link."""
        from hil.substrate import Experiment
        with self.lock:
            if self.g_source is not None:
                g = np.asarray(self.g_source(), float)
                if not np.array_equal(g, self.g):
                    self.g, self._cache = g, None
            if self._cache is not None:
                return self._cache
            c = self.c
            N = self.points()
            X = np.zeros((N, len(c.inputs)))
            for k, i in enumerate(c.inputs):
                s = self.smus.get(c.nodes[i])
                if s is None or not s.output or s.func != "VOLT":
                    raise SCPIError(SETTINGS_CONFLICT, f"input '{c.nodes[i]}' is not sourcing a voltage")
                X[:, k] = s.levels(N)
            modes, vals = set(), np.zeros((N, len(c.outputs)))
            for k, o in enumerate(c.outputs):
                s = self.smus.get(c.nodes[o])
                if s is None or not s.output:
                    modes.add("current")
                else:
                    modes.add("current" if s.func == "CURR" else "clamp")
                    vals[:, k] = s.levels(N)
            if len(modes) > 1:
                raise SCPIError(SETTINGS_CONFLICT, "outputs partly clamped and partly free are not emulated")
            if not np.allclose(self.sub.read(), self.g, rtol=0, atol=0):
                self.sub.write(self.g)
            V = self.sub.run(X, [Experiment(True, modes.pop(), vals)])[0]
            self._cache = V
            return V

    def node_current(self, node: int, V) -> float:
        """Current (A) the instrument at ``node`` delivers into the network."""
        c = self.c
        I = self.g * c.drops(V)
        return float(np.sum(I[c.a == node]) - np.sum(I[c.b == node]))


class Instrument:
    """An emulated instrument: an interpreter, an error queue, faults."""

    idn = "hil,EmulatedInstrument,0,1.0"

    def __init__(self, model: BenchModel):
        self.model = model
        self.faults = Faults()
        self.received = deque(maxlen=5000)  # every line received, for tests and post-mortems
        self.state_log = deque(maxlen=20000)  # (time, line, state) after each line: every state ever applied
        self.scpi = Interpreter()
        s = self.scpi
        s.add("*IDN?", lambda a: self.idn)
        s.add("*RST", lambda a: self.reset())
        s.add("*CLS", lambda a: self.scpi.errors.clear())
        s.add("*OPC?", lambda a: "1")
        s.add("SYSTem:ERRor[:NEXT]?", lambda a: self.scpi.next_error())
        self.declare()
        self.reset()

    def declare(self):
        pass

    def reset(self):
        pass

    def push_error(self, code, message):
        self.scpi.errors.append((int(code), message))

    def state(self):
        """What the instrument applies now (a dict), or None when it applies nothing worth logging."""
        return None

    def log_state(self, line: str) -> None:
        st = self.state()
        if st is not None:
            self.state_log.append((time.monotonic(), line, st))


class ResistorBoard(Instrument):
    """The board of ``resistor-board.md``: holds any conductance in its range, or (``device``, a
    :class:`hil.spice.devices.Digipot`) the nearest tap, R = R_W + code R_AB / N, as the firmware does."""

    idn = "hil,EmulatedResistorBoard,0,1.0"

    def __init__(self, model: BenchModel, device=None):
        self.device = device
        if device is not None:
            model.g_range = (float(device.g_from_param(device.taps)), float(device.g_from_param(0)))
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

    def state(self):
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


class SMU(Instrument):
    """Keithley 2400 subset: source voltage or current, compliance, output, :READ? and :MEAS?."""

    idn = "KEITHLEY INSTRUMENTS INC.,MODEL 2400,0000000,C30 EMULATED (hil)"
    ELEMENTS = ("VOLT", "CURR", "RES", "TIME", "STAT")

    def __init__(self, model, node: str):
        self.node_name = node
        self.node = model.c.node(node)
        super().__init__(model)
        model.smus[node] = self
        self.t0 = time.monotonic()

    def reset(self):
        self.func, self.volt, self.curr = "VOLT", 0.0, 0.0
        self.mode = {"VOLT": "FIX", "CURR": "FIX"}
        self.lists = {"VOLT": [], "CURR": []}
        self.trig_count = 1
        self.i_prot, self.v_prot = 1.05e-4, 21.0
        self.output = False
        self.elements = list(self.ELEMENTS)
        self.model.changed()

    def declare(self):
        s = self.scpi

        def setter(attr, lo, hi):
            def f(a):
                setattr(self, attr, number(a, lo, hi))
                self.model.changed()
            return f

        def func(a):
            v = a.strip().strip("'\"").upper()
            if v in ("VOLT", "VOLTAGE"):
                self.func = "VOLT"
            elif v in ("CURR", "CURRENT"):
                self.func = "CURR"
            else:
                raise SCPIError(-224, f"illegal source function {a[:20]!r}")
            self.model.changed()

        def elements(a):
            names = []
            for x in a.replace("'", "").split(","):
                x = x.strip().upper()
                hit = [e for e in self.ELEMENTS if x.startswith(e)]
                if not hit:
                    raise SCPIError(-224, f"illegal element {x[:20]}")
                names.append(hit[0])
            if not names:
                raise SCPIError(-109, "no elements")
            self.elements = names

        def output(a):
            self.output = boolean(a)
            self.model.changed()

        s.add("SOURce:FUNCtion[:MODE]", func)
        s.add("SOURce:FUNCtion[:MODE]?", lambda a: self.func)
        s.add("SOURce:VOLTage[:LEVel][:IMMediate][:AMPLitude]", setter("volt", -SMU_V_MAX, SMU_V_MAX))
        s.add("SOURce:VOLTage[:LEVel][:IMMediate][:AMPLitude]?", lambda a: _fmt(self.volt))
        s.add("SOURce:CURRent[:LEVel][:IMMediate][:AMPLitude]", setter("curr", -SMU_I_MAX, SMU_I_MAX))
        s.add("SOURce:CURRent[:LEVel][:IMMediate][:AMPLitude]?", lambda a: _fmt(self.curr))
        s.add("SENSe:CURRent[:DC]:PROTection[:LEVel]", setter("i_prot", 1e-9, SMU_I_MAX))
        s.add("SENSe:CURRent[:DC]:PROTection[:LEVel]?", lambda a: _fmt(self.i_prot))
        s.add("SENSe:VOLTage[:DC]:PROTection[:LEVel]", setter("v_prot", 0.2, SMU_V_MAX))
        s.add("SENSe:VOLTage[:DC]:PROTection[:LEVel]?", lambda a: _fmt(self.v_prot))
        def mode(kind):
            def f(a):
                v = a.strip().upper()
                if v not in ("FIX", "FIXED", "LIST", "SWE", "SWEEP"):
                    raise SCPIError(-224, f"illegal source mode {a[:20]}")
                if v.startswith("SWE"):
                    raise SCPIError(-221, "staircase sweeps are not emulated")
                self.mode[kind] = v[:4].replace("FIXE", "FIX")
                self.model.changed()
            return f

        def source_list(kind, lo, hi):
            def f(a):
                vals = [number(x, lo, hi) for x in a.split(",")]
                if not 1 <= len(vals) <= 100:  # the 2400 holds up to 100 list points
                    raise SCPIError(-223, f"{len(vals)} list points (1 to 100)")
                self.lists[kind] = vals
                self.model.changed()
            return f

        def trig_count(a):
            self.trig_count = int(number(a, 1, 2500))
            self.model.changed()

        s.add("SOURce:VOLTage:MODE", mode("VOLT"))
        s.add("SOURce:CURRent:MODE", mode("CURR"))
        s.add("SOURce:LIST:VOLTage", source_list("VOLT", -SMU_V_MAX, SMU_V_MAX))
        s.add("SOURce:LIST:CURRent", source_list("CURR", -SMU_I_MAX, SMU_I_MAX))
        s.add("TRIGger:COUNt", trig_count)
        s.add("TRIGger:COUNt?", lambda a: str(self.trig_count))
        s.add("OUTPut[:STATe]", output)
        s.add("OUTPut[:STATe]?", lambda a: "1" if self.output else "0")
        s.add("FORMat:ELEMents[:SENSe1]", elements)
        s.add("FORMat:ELEMents[:SENSe1]?", lambda a: ",".join(self.elements))
        for node in ("SENSe:FUNCtion", "SENSe:FUNCtion:CONCurrent", "SOURce:VOLTage:RANGe", "SOURce:CURRent:RANGe",
                     "SOURce:VOLTage:RANGe:AUTO", "SOURce:CURRent:RANGe:AUTO", "SENSe:VOLTage:NPLCycles",
                     "SENSe:CURRent:NPLCycles", "SENSe:VOLTage:RANGe", "SENSe:CURRent:RANGe",
                     "SENSe:VOLTage:RANGe:AUTO", "SENSe:CURRent:RANGe:AUTO", "SOURce:DELay", "SOURce:DELay:AUTO",
                     "SYSTem:RSENse", "SENSe:AVERage", "SENSe:AVERage:COUNt", "ARM:COUNt"):
            s.add(node, lambda a: None)  # accepted: ranges and timing do not change an emulated reading
        for q in ("READ?", "MEASure?", "MEASure:VOLTage[:DC]?", "MEASure:CURRent[:DC]?", "MEASure:RESistance?"):
            s.add(q, lambda a: self.reading())

    def state(self):
        return {"output": self.output, "func": self.func, "mode": dict(self.mode), "volt": self.volt,
                "curr": self.curr, "lists": {k: list(v) for k, v in self.lists.items()},
                "i_prot": self.i_prot, "v_prot": self.v_prot, "trig_count": self.trig_count}

    def list_mode(self) -> bool:
        return self.mode[self.func] == "LIST"

    def levels(self, n: int) -> np.ndarray:
        """The source level at each of n sweep points (the fixed level, or the list)."""
        if not self.list_mode():
            return np.full(n, self.volt if self.func == "VOLT" else self.curr)
        lst = self.lists[self.func]
        if len(lst) != n:
            raise SCPIError(SETTINGS_CONFLICT, f"source list of {len(lst)} points for a trigger count of {n}")
        return np.asarray(lst)

    def reading(self) -> str:
        m = self.model
        with m.lock:
            if not self.output:
                raise SCPIError(-221, "output off: no reading")
            Vs = m.sweep() if self.list_mode() else m.sweep()[:1]
            out = []
            for V in Vs:
                v = float(V[self.node])
                i = m.node_current(self.node, V)
                status = 0
                if (self.func == "VOLT" and abs(i) > self.i_prot) or (self.func == "CURR" and abs(v) > self.v_prot):
                    status |= 1 << 3  # in compliance
                vals = {"VOLT": v, "CURR": i, "RES": 9.91e37, "TIME": time.monotonic() - self.t0,
                        "STAT": float(status)}
                out.append(",".join(_fmt(vals[e]) for e in self.elements))
        return ",".join(out)


class Scanner(Instrument):
    """Keithley 2700 with a 7700 card: DC volts on channels 101..120, a scan list, :READ?."""

    idn = "KEITHLEY INSTRUMENTS INC.,MODEL 2700,0000000,B06 EMULATED (hil)"

    def __init__(self, model, channels: dict):
        self.channels = {int(ch): model.c.node(n) for ch, n in channels.items()}
        super().__init__(model)

    def reset(self):
        self.scan, self.closed, self.count = [], None, 1

    def declare(self):
        s = self.scpi

        def scan(a):
            chans = channel_list(a)
            bad = [ch for ch in chans if ch not in SCANNER_CHANNELS]
            if bad:
                raise SCPIError(-222, f"channel {bad[0]} is not on the 7700 card")
            self.scan = chans

        def close(a):
            chans = channel_list(a)
            if len(chans) != 1 or chans[0] not in SCANNER_CHANNELS:
                raise SCPIError(-222, "close exactly one channel of the card")
            self.closed = chans[0]

        def count(a):
            self.count = int(number(a, 1, 55000))

        s.add("*OPT?", lambda a: "7700,NONE")
        s.add("ROUTe:SCAN[:INTernal]", scan)
        s.add("ROUTe:SCAN[:INTernal]?", lambda a: "(@" + ",".join(map(str, self.scan)) + ")")
        s.add("ROUTe:CLOSe", close)
        s.add("ROUTe:OPEN:ALL", lambda a: setattr(self, "closed", None))
        s.add("SAMPle:COUNt", count)
        for node in ("ROUTe:SCAN:LSELect", "ROUTe:SCAN:TSOurce", "FORMat:ELEMents", "SENSe:FUNCtion",
                     "SENSe:VOLTage[:DC]:NPLCycles", "SENSe:VOLTage[:DC]:RANGe", "TRIGger:COUNt", "INITiate"):
            s.add(node, lambda a: None)
        s.add("READ?", lambda a: self._read_scan())
        s.add("MEASure[:VOLTage][:DC]?", lambda a: self._read_closed())

    def _value(self, ch):
        if ch not in self.channels:
            return 0.0  # an unwired channel reads its open input as 0 V
        return float(self.model.solve()[self.channels[ch]])

    def _read_scan(self):
        """One scan of the list per sweep point (SAMPle:COUNt = points x channels), triggered with the SMUs."""
        if not self.scan:
            raise SCPIError(-221, "no scan list")
        with self.model.lock:
            Vs = self.model.sweep()
            per = len(self.scan)
            n = max(1, self.count // per)
            if n > len(Vs):
                raise SCPIError(-221, f"sample count {self.count} exceeds the sweep's {len(Vs)} points")
            return ",".join(_fmt(float(V[self.channels[ch]]) if ch in self.channels else 0.0)
                            for V in Vs[:n] for ch in self.scan)

    def _read_closed(self):
        if self.closed is None:
            raise SCPIError(-221, "no channel closed")
        with self.model.lock:
            return _fmt(self._value(self.closed))


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
        buf = b""
        while not self._stop.is_set():
            if not select.select([self.master], [], [], 0.1)[0]:
                continue
            try:
                buf += os.read(self.master, 65536)
            except OSError:
                return
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                text = line.decode("ascii", "replace").strip("\r")
                self.inst.received.append(text)
                for r in (self.inst.scpi.execute(text) if text else []):
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

    def handle(self):
        inst: Instrument = self.server.instrument
        while True:
            try:
                line = self.rfile.readline(65536)
            except OSError:  # the client reset the link (a bench reconnecting): nothing to answer
                return
            if not line:
                return
            text = line.decode("ascii", "replace").strip("\r\n")
            inst.received.append(text)
            replies = inst.scpi.execute(text) if text else []
            inst.log_state(text)
            for r in replies:
                r = _faulted(inst, r)
                if r is None:
                    return
                try:
                    self.wfile.write((r + "\n").encode("ascii", "replace"))
                    self.wfile.flush()
                except OSError:
                    return


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
            threading.Thread(target=srv.serve_forever, daemon=True, name=f"emulator-{name}").start()
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

    def bench_toml(self, circuit_path: str, settle: float = 0.0, serial: bool = False) -> str:
        """The bench file a :class:`hil.drivers.bench.BenchSubstrate` reads to drive this bench.

        ``serial``: the instruments' pseudo-terminals (``serve_serial``) instead of their TCP ports.
        """
        c = self.model.c

        def where(name):
            r = self.resource(name, serial)
            # an emulated or host-built board does not reset when its port opens
            return [f'resource = "{r}"'] + (["reset_wait = 0.0"] if name == "board" and r.startswith("ASRL") else [])

        lo, hi = self.model.g_range
        lines = ["# written by hil emulate: the emulated bench's instruments and limits",
                 f"circuit = {str(circuit_path)!r}".replace("'", '"'), f"settle = {settle!r}", "",
                 "[board]", *where("board"), f"g_min = {max(lo, c.g_min)!r}", f"g_max = {min(hi, c.g_max)!r}", ""]
        for name, inst in self.instruments.items():
            if isinstance(inst, SMU):
                lines += ["[[smu]]", f'node = "{inst.node_name}"', *where(name),
                          "voltage_limit = 2.0", "current_limit = 0.02", ""]
        scan = self.instruments.get("scanner")
        if scan is not None:
            lines += ["[scanner]", *where("scanner"), "voltage_limit = 2.0", "",
                      "[scanner.channels]"]
            lines += [f'{c.nodes[n]} = {ch}' for ch, n in sorted(scan.channels.items())]
        return "\n".join(lines) + "\n"


def build(substrate, board_range=None, board_device=None, board=True) -> EmulatedBench:
    """An emulated bench for ``substrate``'s circuit: a board, an SMU per input and output, a scanner.

    ``board_device``: a :class:`hil.spice.devices.Digipot` whose taps the board holds (default:
    any conductance in its range). ``board=False``: no emulated board; the circuit's
    conductances then come from ``model.g_source`` (a firmware board, :mod:`hil.drivers.firmware`).
    """
    model = BenchModel(substrate, board_range)
    c = model.c
    inst = {"board": ResistorBoard(model, board_device)} if board else {}
    for i in list(c.inputs) + list(c.outputs):
        inst[f"smu_{c.nodes[i]}"] = SMU(model, c.nodes[i])
    others = [i for i in range(c.n) if i != c.ground and i not in c.inputs and i not in c.outputs]
    if len(others) > len(SCANNER_CHANNELS):
        raise ValueError(f"circuit '{c.name}' has {len(others)} inner nodes; one 7700 card reads {len(SCANNER_CHANNELS)}")
    if others:
        inst["scanner"] = Scanner(model, {101 + k: c.nodes[i] for k, i in enumerate(others)})
    model.set_g(inst["board"].held(substrate.read()) if board else substrate.read())
    return EmulatedBench(model, inst)
