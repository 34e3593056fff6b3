"""The process's one ngspice: libngspice in shared mode through PySpice.

libngspice is process-global and not reentrant, so one :class:`Session` per
process (:func:`session`) serves every ngspice substrate; parallel simulation
means separate processes. The session

- finds the library (Debian ships only ``libngspice.so.0`` without the -dev
  package; PySpice 1.5 opens ``libngspice.so``);
- classifies ngspice's stderr itself: PySpice 1.5 counts every line that does not
  start with ``Warning:`` as an error, so gmin/source-stepping notes would abort a
  transistor run. Notes and warnings are kept in :attr:`Session.messages` and
  counted in :attr:`Session.counts`; nothing is printed;
- keeps track of the decks it has loaded (ngspice numbers them newest-first)
  so that ``setcirc`` switches to the right one;
- reads node voltages at full double precision from the current plot and
  destroys plots after reading, so memory stays flat over long runs.
"""

from __future__ import annotations

import collections
import itertools
import ctypes.util
import logging
import os
import re

import numpy as np

from hil.substrate import SubstrateError

INSTALL_HINT = ("install it with `apt-get install ngspice libngspice0` (Debian/Ubuntu; add libngspice0-dev, "
                "or set NGSPICE_LIBRARY_PATH=libngspice.so.0)")

#: stderr lines that are progress of ngspice's own convergence aids, not failures
_INFO = re.compile(r"^(Note:|Trying |Supplies reduced|gmin step|Gmin step|source step|Source step|"
                   r"Warning:|Using SPARSE|doAnalyses: TRAN|GET ERROR: \S+ -> mparam|\s*$)", re.IGNORECASE)
_STEPPING = re.compile(r"(gmin|source) step", re.IGNORECASE)


class NgSpiceError(SubstrateError):
    """ngspice failed: the message names the analysis and the circuit and keeps ngspice's own words."""


_session = None


def _lines(deck: str):
    """The deck as ngSpice_Circ wants it: a NULL-terminated char* array, one line each (one buffer)."""
    from PySpice.Spice.NgSpice.Shared import FFI, ffi
    lines = [ln for ln in deck.encode("ascii").split(b"\n") if ln]
    buf = ffi.new("char[]", b"\0".join(lines) + b"\0")
    starts = itertools.accumulate((len(ln) + 1 for ln in lines[:-1]), initial=0)
    arr = ffi.new("char*[]", [buf + k for k in starts] + [FFI.NULL])
    _keep[0] = buf, arr  # ngspice copies the lines; keep the buffer alive until the next load anyway
    return arr


_keep = [None]


def session() -> "Session":
    """The process's ngspice session, started on first use."""
    global _session
    if _session is None:
        _session = Session()
    return _session


class Session:
    def __init__(self):
        self.messages = collections.deque(maxlen=2000)
        self.counts = collections.Counter()
        if "NGSPICE_LIBRARY_PATH" not in os.environ:
            found = ctypes.util.find_library("ngspice")
            if found is None:
                raise SubstrateError(f"libngspice was not found: {INSTALL_HINT}")
            os.environ["NGSPICE_LIBRARY_PATH"] = found
        logging.getLogger("PySpice").setLevel(logging.CRITICAL)  # its version notice is harmless
        try:
            from PySpice.Spice.NgSpice.Shared import NgSpiceShared
        except ImportError as exc:  # pragma: no cover - a dependency of hil
            raise SubstrateError(f"PySpice is not installed ({exc}); `pip install PySpice`") from None

        outer = self

        class _Shared(NgSpiceShared):
            @staticmethod
            def _send_char(message_c, ngspice_id, user_data):
                from PySpice.Spice.NgSpice.Shared import ffi, ffi_string_utf8
                me = ffi.from_handle(user_data)
                prefix, _, content = ffi_string_utf8(message_c).partition(" ")
                if prefix == "stderr":
                    me._stderr.append(content)
                    outer._note(content)
                else:
                    me._stdout.append(content)
                    if content.lower().startswith("error"):
                        me._error_in_stdout = True
                        outer._note(content, error=True)
                return 0

        try:
            self.ng = _Shared.new_instance()
        except OSError as exc:
            raise SubstrateError(f"libngspice could not be loaded ({exc}): {INSTALL_HINT}") from None
        if self.ng.spinit_not_found:
            self.messages.append(("warning", "spinit not found: install the Debian package `ngspice`"))
        self._lib = self.ng._ngspice_shared
        self.decks = []  # titles of the decks this session loaded (ngspice's numbering: see loaded())
        self.current = None
        self._since_free = 0

    def _note(self, line: str, error: bool = False) -> None:
        line = line.rstrip()
        if not line:
            return
        if error or not _INFO.match(line):
            self.ng._error_in_stderr = True
            self.counts["error"] += 1
            self.messages.append(("error", line))
        else:
            self.counts["stepping" if _STEPPING.search(line) else "info"] += 1
            self.messages.append(("info", line))

    def take_messages(self) -> list:
        """Every ngspice message since the last call, as (level, line); for the run log."""
        out = list(self.messages)
        self.messages.clear()
        return out

    # -- commands ---------------------------------------------------------------
    FREE_EVERY = 1000

    def _send(self, cmd: bytes) -> None:
        # ngspice keeps every command in its history (about 1 KB a solve, measured);
        # a NULL command frees that history, as PySpice's exec_command does periodically
        self._since_free += 1
        if self._since_free >= self.FREE_EVERY:
            from PySpice.Spice.NgSpice.Shared import FFI
            self._lib.ngSpice_Command(FFI.NULL)
            self._since_free = 0
        self._lib.ngSpice_Command(cmd)

    def command(self, cmd: str, what: str = "") -> None:
        """Run one ngspice command; NgSpiceError with ngspice's own words when it fails."""
        ng = self.ng
        ng.clear_output()
        self._send(cmd.encode("ascii"))
        if ng._error_in_stderr or ng._error_in_stdout:
            said = " | ".join(ln for lvl, ln in list(self.messages)[-6:] if lvl == "error") or ng.stderr or ng.stdout
            raise NgSpiceError(f"ngspice {what or cmd!r} failed{' on circuit ' + self.current if self.current else ''}: "
                               f"{said.strip()}")

    def load(self, title: str, deck: str) -> None:
        """Load a deck (its first line must be ``* title``); it becomes the current circuit."""
        from PySpice.Spice.NgSpice.Shared import NgSpiceCircuitError
        before = self.counts["error"]
        try:
            self.ng.load_circuit(deck)
            failed = self.counts["error"] > before or title not in self.loaded()
        except NgSpiceCircuitError:
            failed = True
        if failed:
            said = " | ".join(ln for lvl, ln in list(self.messages)[-8:] if lvl == "error")
            raise NgSpiceError(f"ngspice rejected the deck of circuit {title}: {said or self.ng.stdout.strip()[-500:]}")
        self.decks.insert(0, title)
        self.current = title

    def sweep(self, title: str, deck: str, command: str, names_ascii: list, points: int, what: str) -> np.ndarray:
        """Load ``deck``, run ``command`` (a DC sweep of ``points`` points), read the vectors, unload.

        Returns (len(names), points) at full double precision. The plot is destroyed and
        the deck removed whatever happens, so nothing is left behind. NgSpiceError when the
        deck is rejected, the sweep fails or stops short.
        """
        from PySpice.Spice.NgSpice.Shared import FFI, ffi
        ng = self.ng
        ng.clear_output()
        before = self.counts["error"]
        self._circ(_lines(deck))
        self.current = title
        if self.counts["error"] > before or ng._error_in_stderr or ng._error_in_stdout:
            said = " | ".join(ln for lvl, ln in list(self.messages)[-8:] if lvl == "error")
            if title in self.loaded():  # parsed with errors: still a circuit to remove
                self.remove_title(title)
            raise NgSpiceError(f"ngspice rejected the sweep deck {title}: {said or ng.stdout.strip()[-500:]}")
        try:
            self.command(command, what=what)
            get = self._lib.ngGet_Vec_Info
            out = np.empty((len(names_ascii), points))
            for k, nb in enumerate(names_ascii):
                info = get(nb)
                if info == FFI.NULL or info.v_realdata == FFI.NULL:
                    raise NgSpiceError(f"ngspice has no real vector {nb.decode()!r} after {what}")
                if info.v_length != points:
                    raise NgSpiceError(f"{what} stopped after {info.v_length} of {points} points")
                out[k] = np.frombuffer(ffi.buffer(info.v_realdata, points * 8), dtype=np.float64)
            return out
        finally:
            self._send(b"destroy all")
            self._send(b"remcirc")  # our deck is the current circuit: nothing in between changed that
            self.current = None

    def _circ(self, lines) -> None:
        """ngSpice_Circ: ngspice parses the deck (its own function, so that a profile shows the parse)."""
        self._lib.ngSpice_Circ(lines)

    def remove_title(self, title: str) -> None:
        """Unload the circuit ``title`` (one this session did not list in :attr:`decks`)."""
        self.use(title)
        self.command("remcirc")
        self.current = None

    def loaded(self) -> list:
        """Titles of every circuit ngspice holds, in its own numbering (index 0 is number 1).

        Asked of ngspice itself: other code in the process (PySpice's own
        simulator, say) may load circuits too and shift the numbers.
        """
        self.ng.clear_output()
        self._send(b"setcirc")
        titles = []
        for line in self.ng._stdout:
            parts = line.rstrip().split("\t")
            if len(parts) >= 2 and parts[-2].strip().isdigit():
                titles.append(parts[-1].strip())
        return titles

    def use(self, title: str) -> None:
        """Make the deck ``title`` the current circuit (asked afresh: see :meth:`loaded`)."""
        titles = self.loaded()
        if title not in titles:
            raise NgSpiceError(f"circuit {title} is not loaded in ngspice (loaded: {', '.join(titles) or 'none'})")
        self.command(f"setcirc {titles.index(title) + 1}")
        self.current = title

    def remove(self, title: str) -> None:
        """Unload the deck ``title``."""
        if title in self.decks:
            self.use(title)
            self.command("remcirc")
            self.decks.remove(title)
            self.current = None

    def op(self, circuit: str) -> None:
        """A DC operating point on the current circuit."""
        self.command("op", what=f"op (DC operating point) of {circuit}")

    def vector(self, name: str) -> np.ndarray:
        """The vector ``name`` of the current plot, float64 or complex128 (a copy)."""
        from PySpice.Spice.NgSpice.Shared import FFI, ffi
        info = self._lib.ngGet_Vec_Info(name.encode("ascii"))
        if info == FFI.NULL:
            raise NgSpiceError(f"ngspice has no vector {name!r} in the current plot")
        n = info.v_length
        if info.v_compdata == FFI.NULL:
            return np.frombuffer(ffi.buffer(info.v_realdata, n * 8), dtype=np.float64).copy()
        return np.frombuffer(ffi.buffer(info.v_compdata, n * 16), dtype=np.complex128).copy()

    def scalars(self, names_ascii: list) -> list:
        """The first value of each vector of the current plot; names pre-encoded as ASCII bytes.

        The fast path for operating points (one value a node): no array copies.
        """
        from PySpice.Spice.NgSpice.Shared import FFI
        get = self._lib.ngGet_Vec_Info
        out = []
        for nb in names_ascii:
            info = get(nb)
            if info == FFI.NULL or info.v_realdata == FFI.NULL:
                raise NgSpiceError(f"ngspice has no real vector {nb.decode()!r} in the current plot")
            out.append(info.v_realdata[0])
        return out

    def destroy_plots(self) -> None:
        """Free every plot: ngspice keeps one per analysis otherwise."""
        self._send(b"destroy all")

    def plot_count(self) -> int:
        return len(self.ng.plot_names)
