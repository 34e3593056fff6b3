"""The resistor board's firmware (``firmware/`` in the repository) as a process on this machine.

Two builds serve the protocol of ``resistor-board.md`` on a pseudo-terminal, which a
driver opens as ``ASRL/dev/pts/K::INSTR`` (pyvisa-py, pyserial) exactly as it opens a
board's ``/dev/ttyACM0``:

- ``host``: the portable protocol core compiled for this machine (``make -C firmware host``),
  ``board-host --pty --trace``;
- ``sim``: the AVR image itself on simavr (``make -C firmware avr sim``),
  ``board-sim board.elf``.

Both also report the SPI frames the pots receive. :class:`FirmwareBoard` decodes them
into tap codes, so an emulated bench (:mod:`hil.emulator.bench`) can put the
firmware's conductances, g = 1 / (R_W + code R_AB / N), into its circuit
(:meth:`FirmwareBoard.attach`): the SMUs and the scanner then measure what the
firmware set.
"""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
import threading
import time
from pathlib import Path

import numpy as np


class FirmwareError(RuntimeError):
    """The firmware process could not be started or said something that is not its protocol."""


def pin_map(pins_h) -> list:
    """[(chip-select Arduino pin, wiper)] per edge, from ``firmware/avr/pins.h``."""
    text = Path(pins_h).read_text()

    def values(name):
        m = re.search(rf"#define {name}\s+((?:[\d\s,]|\\\n)+)", text)
        if not m:
            raise FirmwareError(f"{pins_h}: no #define {name}")
        return [int(v) for v in re.findall(r"\d+", m.group(1))]

    return list(zip(values("EDGE_PINS_CS"), values("EDGE_PINS_WIPER")))


def _arduino_pin_low(pin: int, portb: int, portc: int, portd: int) -> bool:
    port, bit = (portd, pin) if pin < 8 else (portb, pin - 8) if pin < 14 else (portc, pin - 14)
    return not (port >> bit) & 1


class FirmwareBoard:
    """A firmware process serving the board on a pseudo-terminal; its pots' tap codes followed from its SPI.

    ``device``: the tap model (:class:`hil.spice.devices.Digipot`) the firmware was built or
    started with; ``kind``: ``"host"`` or ``"sim"`` (then ``pins_h``, the image's pin map).
    """

    def __init__(self, command: list, device, edges: int, kind: str = "host", pins_h=None, timeout: float = 10.0):
        self.device, self.m, self.kind = device, int(edges), kind
        self.codes = np.full(self.m, -1)
        self._pins = pin_map(pins_h)[: self.m] if kind == "sim" else None
        self._frame = []  # sim: the bytes of the frame being clocked out
        self._buf = b""
        self._lock = threading.Lock()
        self.proc = subprocess.Popen([str(c) for c in command], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        fd = self.proc.stdout.fileno()
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
        self.path, self.failure = None, None
        try:
            self._wait_ready(command[0], timeout)
        except BaseException:
            self.close()  # never leave the process behind
            raise
        # keep the trace pipe from filling (the process would block on it) between reads
        threading.Thread(target=self._keep_draining, daemon=True, name="firmware-trace").start()

    def _wait_ready(self, name, timeout):
        """Until the process has named its terminal and every pot has had its power-on write."""
        deadline = time.monotonic() + timeout
        while (self.path is None or (self.codes < 0).any()) and time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise FirmwareError(f"{name} exited with status {self.proc.returncode} before serving")
            self._drain()
            time.sleep(0.01)
        if self.path is None:
            raise FirmwareError(f"{name}: printed no terminal path within {timeout} s")
        if (self.codes < 0).any():
            raise FirmwareError(f"{name}: power-on writes to {int((self.codes >= 0).sum())} of {self.m} pots "
                                f"within {timeout} s (built for another edge count? make avr EDGES={self.m})")

    def _keep_draining(self):
        while self.proc.poll() is None:
            try:
                self._drain()
            except FirmwareError as exc:  # reported by the next conductances()
                self.failure = exc
                return
            except (OSError, ValueError):  # closed under us
                return
            time.sleep(0.05)

    @classmethod
    def host(cls, executable, device, edges: int) -> "FirmwareBoard":
        """The host build of the core (``board-host``) with ``device``'s tap model and ``edges`` edges."""
        return cls([executable, "--pty", "--trace", "--edges", edges, "--taps", device.taps,
                    "--r-ab", repr(device.r_ab), "--r-wiper", repr(device.r_w)], device, edges)

    @classmethod
    def simavr(cls, simulator, image, pins_h, device, edges: int) -> "FirmwareBoard":
        """The AVR image (built with ``EDGES=edges``) on simavr (``board-sim``)."""
        return cls([simulator, image], device, edges, kind="sim", pins_h=pins_h, timeout=30.0)

    @property
    def resource(self) -> str:
        return f"ASRL{self.path}::INSTR"

    def _drain(self) -> None:
        """Read what the process printed so far (it writes a pot's frame before it replies)."""
        with self._lock:
            self._drain_locked()

    def _drain_locked(self) -> None:
        try:
            while True:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                self._buf += chunk
        except BlockingIOError:
            pass
        *lines, self._buf = self._buf.split(b"\n")
        for line in lines:
            text = line.decode("ascii", "replace").strip()
            if self.path is None and text.startswith("/dev/"):
                self.path = text
            elif text.startswith("spi "):
                self._spi(text.split()[1:])

    def _spi(self, fields) -> None:
        """One traced SPI frame (host) or byte (sim) into the tap code of its edge."""
        if self.kind == "host":
            edge, b0, b1 = int(fields[0]), int(fields[1], 16), int(fields[2], 16)
        else:
            byte, portb, portc, portd = (int(f, 16) for f in fields)
            self._frame.append((byte, [k for k, (pin, _) in enumerate(self._pins)
                                       if _arduino_pin_low(pin, portb, portc, portd)]))
            if len(self._frame) < 2:
                return
            (b0, sel), (b1, _) = self._frame
            self._frame = []
            wiper = b0 >> 4
            hit = [k for k in sel if self._pins[k][1] == wiper]
            if len(hit) != 1:
                raise FirmwareError(f"SPI frame {b0:02X} {b1:02X} selects edges {[k + 1 for k in sel]}")
            edge = hit[0] + 1
        if (b0 >> 2) & 3:
            raise FirmwareError(f"SPI frame {b0:02X} {b1:02X} to edge {edge} is not a write (MCP4xxx command 00)")
        code = ((b0 & 3) << 8) | b1
        if not 1 <= edge <= self.m or code > self.device.taps:
            raise FirmwareError(f"SPI frame {b0:02X} {b1:02X}: edge {edge}, code {code} out of range")
        self.codes[edge - 1] = code

    def conductances(self) -> np.ndarray:
        """g (S) of every edge as its pot is set: 1 / (R_W + code R_AB / N)."""
        if self.failure is not None:
            raise self.failure
        self._drain()
        return self.device.g_from_param(self.codes.astype(float))

    def attach(self, model) -> None:
        """Make an emulated bench's circuit (:class:`hil.emulator.bench.BenchModel`) follow the pots."""
        model.g_source = self.conductances

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            if f:
                f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
