"""The bench substrate: the learning loop on instruments, through pyvisa.

A bench file (TOML) says which instrument drives or reads which node::

    circuit = "circuits/net16.toml"
    settle = 0.0                  # seconds to wait after a change before reading
    timeout_ms = 2000
    retries = 2                   # a query that times out, drops or answers garbage is retried
    probe_current = 1e-5          # A, the test current that measures K
    average = 1                   # readings averaged per node and solve
    sweep_points = 100            # examples per source-list sweep (a 2400 holds 100 list points)
    [board]
    resource = "TCPIP::127.0.0.1::5025::SOCKET"   # or "ASRL/dev/ttyACM0::INSTR" (firmware/)
    g_min = 1e-5                  # never written below / above (S)
    g_max = 1e-2
    # serial resources only (ASRL...): baud_rate (115200 for the board, 9600 for the
    # others) and the board's reset_wait (s, default 2: opening the port resets an Arduino)
    [[smu]]                       # one per input node and per output node
    node = "n1"
    resource = "TCPIP::127.0.0.1::5026::SOCKET"
    voltage_limit = 2.0           # V, never sourced past; compliance when sourcing current
    current_limit = 0.02          # A, never sourced past; compliance when sourcing voltage
    [scanner]                     # reads every other node
    resource = "..."
    [scanner.channels]
    n3 = 101

Experiments (:mod:`hil.substrate`): input SMUs source the inputs (0 V for the
adjoint experiment); an output SMU sources 0 A (free), a current (open-loop
nudge, adjoint) or a voltage (CL and AL clamps). A closed-loop nudge needs a load
resistor the bench does not have: asking for one is an error, as is a complex nudge.
"""

from __future__ import annotations

import re
import time
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


def load_bench(path) -> dict:
    """Read and check a bench file; errors name the file and the key."""
    path = Path(path)
    if not path.exists():
        raise BenchError(f"{path}: no such bench file")
    try:
        b = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise BenchError(f"{path}: not valid TOML: {exc}") from None
    for key in ("board", "smu"):
        if key not in b:
            raise BenchError(f"{path}: missing [{key}]")
    resources = [b["board"].get("resource")] + [s.get("resource") for s in b["smu"]] + \
                ([b["scanner"].get("resource")] if "scanner" in b else [])
    for r in resources:
        if not isinstance(r, str) or not RESOURCE_RE.match(r):
            raise BenchError(f"{path}: {r!r} is not a VISA resource string this bench accepts "
                             "(TCPIP::host::port::SOCKET, ASRL...::INSTR, GPIB::n::INSTR, USB...::INSTR)")
    for where, sec in [("board", b["board"])] + [(f"smu {s.get('node')}", s) for s in b["smu"]] + \
            ([("scanner", b["scanner"])] if "scanner" in b else []):
        for key, lo, hi in (("baud_rate", 50, 4_000_000), ("reset_wait", 0.0, 60.0)):
            v = sec.get(key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi
                                  or (key == "baud_rate" and v != int(v))):
                raise BenchError(f"{path}: [{where}] {key} = {v!r} must be a number in [{lo}, {hi}]")
    b["_path"] = str(path)
    return b


class BenchSubstrate(Substrate):
    """A circuit on a bench: a resistor board, SMUs on the inputs and outputs, a scanner for the rest."""

    supports_complex = False

    def __init__(self, circuit: Circuit, bench, visa_library: str = "@py"):
        self.circuit = c = circuit
        self.cfg = bench if isinstance(bench, dict) else load_bench(bench)
        self.settle = float(self.cfg.get("settle", 0.0))
        self.probe_current = float(self.cfg.get("probe_current", 1e-5))  # A, measures K gently
        self.average = int(self.cfg.get("average", 1))  # readings averaged per node
        self.chunk = int(self.cfg.get("sweep_points", 100))  # examples per source-list sweep (2400: <= 100)
        if not 1 <= self.chunk <= 100:
            raise BenchError(f"{self.cfg.get('_path', 'bench')}: sweep_points = {self.chunk} must be 1 to 100")
        if self.average < 1:
            raise BenchError(f"{self.cfg.get('_path', 'bench')}: average = {self.average} must be at least 1")
        self.retries = int(self.cfg.get("retries", 2))
        self.timeout = int(self.cfg.get("timeout_ms", 2000))
        self.visa_library = visa_library
        where = self.cfg.get("_path", "bench")
        smu_nodes = {s["node"]: s for s in self.cfg["smu"]}
        for i in list(c.inputs) + list(c.outputs):
            if c.nodes[i] not in smu_nodes:
                raise BenchError(f"{where}: no [[smu]] for {'input' if i in c.inputs else 'output'} node '{c.nodes[i]}'")
        for name in smu_nodes:
            idx = c.node(name)
            if idx not in c.inputs and idx not in c.outputs:
                raise BenchError(f"{where}: [[smu]] on node '{name}', which is neither an input nor an output")
        chans = {n: int(ch) for n, ch in self.cfg.get("scanner", {}).get("channels", {}).items()}
        for i in range(c.n):
            if i != c.ground and i not in c.inputs and i not in c.outputs and c.nodes[i] not in chans:
                raise BenchError(f"{where}: node '{c.nodes[i]}' is read by no instrument (add it to [scanner.channels])")
        self._chan_nodes = [(c.node(n), ch) for n, ch in chans.items()]
        self.recorder = None  # a BenchRecorder once record_to is called
        self._open()
        self._g = np.asarray(self._query(self.board, lambda: self.board.conductances), float)

    # -- connections ----------------------------------------------------------------
    def _adapter_kwargs(self, resource: str | None = None):
        kw = dict(visa_library=self.visa_library, read_termination="\n", write_termination="\n",
                  timeout=self.timeout)
        if resource is not None and resource.upper().startswith("ASRL"):
            kw["baud_rate"] = self._bauds[resource]
        return kw

    def _open(self):
        from hil.drivers.instruments import ResistorBoard, Scanner, SMU
        b = self.cfg["board"]
        self._bauds = {b["resource"]: int(b.get("baud_rate", 115200))}  # resistor-board.md: 115200 baud
        for sec in self.cfg["smu"] + ([self.cfg["scanner"]] if "scanner" in self.cfg else []):
            self._bauds[sec["resource"]] = int(sec.get("baud_rate", 9600))  # the Keithleys' factory setting
        serial = b["resource"].upper().startswith("ASRL")
        self.board = ResistorBoard(b["resource"], b.get("g_min", self.circuit.g_min), b.get("g_max", self.circuit.g_max),
                                   reset_wait=float(b.get("reset_wait", 2.0 if serial else 0.0)),
                                   **self._adapter_kwargs(b["resource"]))
        self._nodelay(self.board)
        if self.board.edge_count != self.circuit.m:
            raise BenchError(f"resistor board at {b['resource']} has {self.board.edge_count} edges; "
                             f"circuit '{self.circuit.name}' has {self.circuit.m}")
        self.smus = {}
        for s in self.cfg["smu"]:
            smu = SMU(s["resource"], s.get("voltage_limit", 2.0), s.get("current_limit", 0.02),
                      name=f"SMU on node {s['node']}", **self._adapter_kwargs(s["resource"]))
            self._nodelay(smu)
            smu.configure()
            self._check_errors(smu)
            self.smus[self.circuit.node(s["node"])] = smu
        self.scanner = None
        if self._chan_nodes:
            self.scanner = Scanner(self.cfg["scanner"]["resource"], **self._adapter_kwargs(self.cfg["scanner"]["resource"]))
            self._nodelay(self.scanner)
            self.scanner.write("FORM:ELEM READ")
        self._check_errors(self.board)

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
        try:
            inst.adapter.close()
        except Exception:
            pass
        inst.adapter.connection = inst.adapter.manager.open_resource(
            inst.adapter.resource_name,
            **{k: v for k, v in self._adapter_kwargs(inst.adapter.resource_name).items() if k != "visa_library"})
        self._nodelay(inst)
        if hasattr(inst, "after_open"):  # a serial board reset by the reopened port
            inst.after_open()

    def _query(self, inst, fn, what="query"):
        """Run ``fn`` (a query of ``inst``), retrying a timeout, a dropped link or garbage after a reconnect."""
        last = None
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except Exception as exc:  # pyvisa errors, socket errors, parse errors of garbage
                last = exc
                self._reconnect(inst)
        raise BenchError(f"{inst.name} at {inst.adapter.resource_name}: {what} failed after "
                         f"{self.retries + 1} tries: {type(last).__name__}: {last}")

    def _check_errors(self, inst):
        errs = self._query(inst, inst.check_errors, "error queue") if hasattr(inst, "check_errors") else []
        if errs:
            raise BenchError(f"{inst.name} at {inst.adapter.resource_name} reports: "
                             + "; ".join(f"{int(float(e[0]))} {','.join(map(str, e[1:])).strip()}" for e in errs))

    # -- the substrate interface --------------------------------------------------------
    def write(self, g) -> np.ndarray:
        g = np.asarray(g, float)
        if g.shape != (self.circuit.m,):
            raise BenchError(f"expected {self.circuit.m} conductances, got shape {g.shape}")
        self.board.checked(g)  # LimitError before anything is sent
        # what the board will hold (a digipot's nearest taps)
        want = np.asarray(self._query(self.board, lambda: self.board.nearest(g), "nearest values"), float)
        self.board.set_all(g)
        for attempt in range(self.retries + 1):  # write-verify
            got = np.asarray(self._query(self.board, lambda: self.board.conductances, "read-back"), float)
            if np.allclose(got, want, rtol=1e-12, atol=0):
                self._g = got
                if self.recorder:
                    self.recorder.event("write", requested=g, read_back=got)
                # once a step: an error any instrument queued since the last write stops the run cleanly
                for inst in [self.board, *self.smus.values()] + ([self.scanner] if self.scanner else []):
                    self._check_errors(inst)
                return got.copy()
            self.board.set_all(g)
        raise BenchError(f"{self.board.name}: wrote {g.tolist()} (held as {want.tolist()}) but reads back {got.tolist()}")

    def read(self) -> np.ndarray:
        return self._g.copy()

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
                n = rows.stop - rows.start
                for k, node in enumerate(c.inputs):
                    self.smus[node].source_list("voltage", X[rows, k] if e.sources_on else np.zeros(n))
                for k, node in enumerate(c.outputs):
                    self.smus[node].source_list("voltage" if e.mode == "clamp" else "current", vals[rows, k])
                if self.settle:
                    time.sleep(self.settle)
                V[rows] = np.mean([self._read_nodes(n) for _ in range(self.average)], axis=0)
            out.append(V)
        if self.recorder:
            self.recorder.event("run", inputs=X, V=out, experiments=[
                {"sources_on": e.sources_on, "mode": e.mode, "values": np.asarray(e.values)} for e in experiments])
        return out

    # -- the record of a run (drivers/record.py) ---------------------------------------
    def record_to(self, path, max_bytes: int | None = None) -> None:
        """Record every instrument exchange and every write and run into ``path`` from now on."""
        from hil.drivers.record import BenchRecorder
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

        Fast path: ask every instrument, then collect every reply (the round trips
        overlap). On any fault: reconnect, then one instrument at a time with retries.
        """
        c = self.circuit
        V = np.zeros((points, c.n))
        chans = [ch for _, ch in self._chan_nodes]
        cols = [node for node, _ in self._chan_nodes]
        insts = list(self.smus.values()) + ([self.scanner] if self.scanner else [])
        try:
            for smu in self.smus.values():
                smu.write("*OPC?")
            for smu in self.smus.values():
                if smu.read().strip() != "1":
                    raise ValueError(f"{smu.name}: *OPC? did not answer 1")
            for smu in self.smus.values():
                smu.request_sweep()
            if self.scanner is not None:
                self.scanner.request_scan(chans, points)
            for node, smu in self.smus.items():
                V[:, node] = smu.collect_sweep(points)
            if self.scanner is not None:
                V[:, cols] = self.scanner.collect_scan(chans, points)
            return V
        except Exception:
            for inst in insts:
                self._reconnect(inst)
        for smu in self.smus.values():
            self._query(smu, lambda smu=smu: smu.ask("*OPC?"), "operation complete")
        for node, smu in self.smus.items():
            V[:, node] = self._query(smu, lambda smu=smu: (smu.request_sweep(), smu.collect_sweep(points))[1],
                                     "voltage reading")
        if self.scanner is not None:
            V[:, cols] = self._query(self.scanner, lambda: self.scanner.read_scan(chans, points), "scan")
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
        self.stop_recording()
        for inst in [self.board, self.scanner, *self.smus.values()]:
            if inst is None:
                continue
            try:
                if inst in self.smus.values():  # leave every output at a fixed 0 A
                    inst.write(":SOUR:VOLT:MODE FIX;:SOUR:CURR:MODE FIX;:TRIG:COUN 1")
                    inst.source_amps(0.0)
                inst.adapter.close()
            except Exception:
                pass
