"""A bench run's record: every instrument exchange and every step's conductances, inputs and readings.

In a run directory, ``bench/`` holds

- ``exchanges.NNN.jsonl.gz`` (NNN: the session, 001 at the start, one more per resume): one JSON object per exchange, ``{"t": s, "inst": name,
  "cmd": command, "reply": text or null, "t_reply": s}`` (t in seconds since the
  record started; a write that no read answered has ``reply`` null; a read that
  failed has ``"error"``). Bounded: past ``record_max_bytes`` of compressed data
  (bench file, default 100 MB; checked against what has reached the file, so it is
  overshot by at most the step in flight) exchanges are counted, not written, and
  the file's last line says from when.
- ``steps.NNN.jsonl.gz``: what the substrate was asked and did, in order: ``start``
  (g on the board), ``mark`` (the training loop's step k begins), ``write``
  (g requested and read back, S), ``run`` (inputs (batch, |inputs|) V, each
  experiment's sources_on, mode, values, and the measured node voltages, V).
  Floats are written exactly (shortest round-trip form). Not bounded: it is the
  record a replay needs (about 4 kB a step for net16, batch 16, cl; the exchanges about 9 kB).
- ``record.json`` at close: counts and sizes.

Both are gzip streams flushed at every step mark, so that a crash loses at most the
step in flight (a stream cut short is read up to where it ends).
"""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import numpy as np

DEFAULT_MAX_BYTES = 100_000_000


def _json(x):
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (np.floating, np.integer, np.bool_)):
        return x.item()
    raise TypeError(f"not recordable: {type(x)}")


class BenchRecorder:
    """Writes ``bench/`` in a run directory; :meth:`wrap` an instrument to log its exchanges."""

    def __init__(self, path, max_bytes: int = DEFAULT_MAX_BYTES):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.max_bytes = int(max_bytes)
        session = len(list(self.path.glob("steps.*.jsonl.gz"))) + 1
        self._ex = gzip.GzipFile(self.path / f"exchanges.{session:03d}.jsonl.gz", "xb")
        self._steps = gzip.GzipFile(self.path / f"steps.{session:03d}.jsonl.gz", "xb")
        self._t0 = time.time()
        self._pending = {}      # instrument -> (t, command) not yet answered
        self.exchanges = self.dropped = self.events = 0

    def now(self) -> float:
        return time.time() - self._t0

    # -- instrument exchanges ------------------------------------------------------
    def wrap(self, name: str, inst) -> None:
        """Log every write and read of ``inst`` (a PyMeasure instrument) through its adapter."""
        ad = inst.adapter
        write, read = ad.write, ad.read

        def logged_write(command, **kw):
            self._flush_pending(name)
            self._pending[name] = (self.now(), command)
            return write(command, **kw)

        def logged_read(**kw):
            try:
                reply = read(**kw)
            except Exception as exc:
                self._exchange(name, None, error=f"{type(exc).__name__}: {exc}")
                raise
            self._exchange(name, reply)
            return reply

        ad.write, ad.read = logged_write, logged_read

    def _flush_pending(self, name):
        if name in self._pending:
            t, cmd = self._pending.pop(name)
            self._line({"t": t, "inst": name, "cmd": cmd, "reply": None})

    def _exchange(self, name, reply, error=None):
        t, cmd = self._pending.pop(name, (None, None))
        rec = {"t": t, "inst": name, "cmd": cmd, "reply": reply, "t_reply": self.now()}
        if error:
            rec["error"] = error
        self._line(rec)

    def _line(self, rec) -> None:
        if self.dropped or self._ex.fileobj.tell() > self.max_bytes:
            if not self.dropped:
                self._ex.write((json.dumps({"t": self.now(), "bound_reached": self.max_bytes,
                                            "note": "later exchanges are counted in record.json, not written"})
                                + "\n").encode())
            self.dropped += 1
            return
        self._ex.write((json.dumps(rec) + "\n").encode())
        self.exchanges += 1

    # -- what the substrate did ----------------------------------------------------
    def event(self, kind: str, **data) -> None:
        """One line of ``steps.jsonl.gz``: ``kind`` with its arrays; a mark flushes both files."""
        self._steps.write((json.dumps({"kind": kind, "t": self.now(), **data}, default=_json) + "\n").encode())
        self.events += 1
        if kind == "mark":
            self.flush()

    def flush(self) -> None:
        for f in (self._ex, self._steps):
            f.flush()

    def close(self) -> None:
        for name in list(self._pending):
            self._flush_pending(name)
        self._ex.close()
        self._steps.close()
        summary = {"exchanges": self.exchanges, "exchanges_not_written": self.dropped, "events": self.events,
                   "max_bytes": self.max_bytes,
                   "bytes": {f.name: f.stat().st_size for f in sorted(self.path.glob("*.jsonl.gz"))}}
        prev = self.path / "record.json"
        if prev.exists():  # a resumed run: the sessions' counts add up
            old = json.loads(prev.read_text())
            for k in ("exchanges", "exchanges_not_written", "events"):
                summary[k] += old.get(k, 0)
        prev.write_text(json.dumps(summary, indent=2))


class RecordError(ValueError):
    """A bench record that cannot be read: names the file and line."""


def _located(run_dir, kind: str):
    """(file, line number, JSON object) of every session's ``bench/KIND.NNN.jsonl.gz``, in order;
    a stream cut short ends there. RecordError naming the file and line for anything else."""
    files = sorted((Path(run_dir) / "bench").glob(f"{kind}.*.jsonl.gz"))
    if not files:
        raise FileNotFoundError(f"{run_dir}: no bench/{kind}.*.jsonl.gz (not a recorded bench run)")
    for f in files:
        n = 0
        try:
            with gzip.open(f, "rt") as fh:
                for n, line in enumerate(fh, start=1):
                    if not line.endswith("\n"):
                        break  # the last line of a session that ended without closing
                    try:
                        obj = json.loads(line)
                    except ValueError as exc:
                        raise RecordError(f"{f}:{n}: not a JSON line ({exc})") from None
                    if not isinstance(obj, dict):
                        raise RecordError(f"{f}:{n}: a JSON {type(obj).__name__}, not a record event (an object)")
                    yield f, n, obj
        except EOFError:  # the session ended without closing (a crash): keep what was flushed
            pass
        except (gzip.BadGzipFile, UnicodeDecodeError) as exc:
            raise RecordError(f"{f}: not a gzip-compressed record of JSON lines ({exc})") from None


def _lines(run_dir, kind: str):
    """The JSON objects of every session's ``bench/KIND.NNN.jsonl.gz``, in order (see :func:`_located`)."""
    for _, _, obj in _located(run_dir, kind):
        yield obj


#: what each kind of step event holds (arrays of volts or siemens), checked on reading
STEP_KEYS = {"start": ("g",), "mark": ("step",), "write": ("read_back",), "run": ("inputs", "V", "experiments")}


def read_steps(run_dir) -> list:
    """The events of ``bench/steps.*.jsonl.gz`` in order, arrays as numpy arrays; RecordError naming
    the file and line of an event that lacks what its kind holds."""
    out = []
    for f, n, ev in _located(run_dir, "steps"):
        where = f"{f}:{n}: {ev.get('kind')!r} event"
        missing = [k for k in STEP_KEYS.get(ev.get("kind"), ()) if k not in ev]
        if missing:
            raise RecordError(f"{where}: no {', '.join(missing)}")
        try:
            for k in ("g", "requested", "read_back", "inputs", "V"):
                if k in ev:
                    ev[k] = np.asarray(ev[k], float)
            if "step" in ev and (isinstance(ev["step"], bool) or not isinstance(ev["step"], int)):
                raise ValueError(f"step {ev['step']!r} is not a whole number")
            if not isinstance(ev.get("experiments", []), list):
                raise ValueError("experiments is not a list")
            for e in ev.get("experiments", []):
                e["values"] = np.asarray(e["values"], float)
                e["mode"], e["sources_on"] = str(e["mode"]), bool(e["sources_on"])
        except (KeyError, TypeError, ValueError) as exc:
            raise RecordError(f"{where}: {type(exc).__name__}: {exc}") from None
        out.append(ev)
    return out


def read_exchanges(run_dir) -> list:
    """Every recorded exchange (dicts) of ``bench/exchanges.*.jsonl.gz``."""
    return list(_lines(run_dir, "exchanges"))
