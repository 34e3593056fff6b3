"""Run directories: what a training run records, and how it is read back.

A run directory holds

- ``config.json``: the resolved configuration (defaults filled in);
- ``circuit.toml``: the circuit as the run started;
- ``task.json``: the examples (so a resume needs nothing outside the folder);
- ``log.csv``: one row per logged step (:mod:`hil.losslog`): step, train_loss, test_loss, grad_norm, seconds, lr
  (the learning rate of the step that led to the row; row 0: the first step's), and
  homeostasis_H (S^2) for a non-reciprocal circuit or a run with homeostasis, and what the task scores
  (a classification: train_accuracy, test_accuracy, fractions in [0, 1]);
- ``checkpoint.json`` and ``checkpoints/step_NNNNNN.npz``: conductances and the
  random state, written atomically (write to a temporary file, then rename);
- ``trained.toml``: the circuit at the newest checkpoint's parameters, rewritten with
  every checkpoint: a circuit file any command takes (the run directory itself names it);
- ``task.npz`` beside ``task.json`` for a classification task (its arrays, binary);
- ``loss.png``: the loss curves (and accuracy, a second panel); ``result.json`` once the run ends
  (a classification: accuracies and confusion matrices, plotted in ``confusion.png``);
- ``bench/``: a bench run's record (:mod:`hil.bench.record`).
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np

LOG_FIELDS = ["step", "train_loss", "test_loss", "grad_norm", "seconds", "lr"]
#: the trained circuit a run leaves, rewritten at every checkpoint
TRAINED = "trained.toml"


class RunError(RuntimeError):
    """A run directory that cannot be created or resumed."""


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` so that a reader sees the old or the new file, never half of one.

    The bytes go to a new file of a unique name beside it (``.NAME.XXXXXXXX.tmp``, created
    exclusively: never a file of the user's), which then replaces ``path``; on any failure
    (a full disk) that file is removed and ``path`` is as it was.
    """
    import tempfile
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise named(exc, path) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), _mode_for(path))
            fh.write(data.encode() if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)  # the old file stands; no half-written copy is left beside it
        if isinstance(exc, OSError):
            raise named(exc, path) from None
        raise


def _mode_for(path: Path) -> int:
    """The permissions a replaced file keeps, or a new file's (0o666 less the umask)."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


def named(exc: OSError, path) -> OSError:
    """``exc`` naming ``path`` (a failed write, a full disk, raises without a file name)."""
    return exc if exc.filename else type(exc)(exc.errno, exc.strerror or str(exc), str(path))


def check_output(path, inputs=(), force: bool = False, option: str = "-o", ours: str | None = None) -> Path:
    """Refuse to write the file ``path`` over an input or a file hil did not write; RunError naming the option.

    ``inputs``: files the command reads (never overwritten without ``force``).
    ``ours``: how the first line of a file this command writes starts: such a file may be replaced.
    """
    path = Path(path)
    if path.is_dir():
        raise RunError(f"{option} {path}: is a folder, not a file")
    if not path.parent.is_dir():
        raise RunError(f"{option} {path}: no folder {path.parent}")
    if not path.exists() or force:
        return path
    for i in inputs:
        try:
            if Path(i).exists() and path.samefile(i):
                raise RunError(f"{option} {path}: is an input of this command; refusing to overwrite it "
                               "(--force to do it anyway)")
        except OSError:
            pass
    if not path.is_file():
        raise RunError(f"{option} {path}: not a regular file")
    try:
        with open(path, "rb") as fh:
            first = fh.readline(200).decode("utf-8", "replace").rstrip("\r\n")
    except OSError:
        first = ""
    if ours is None or not first.startswith(ours):
        raise RunError(f"{option} {path}: exists and was not written by hil; refusing to overwrite it "
                       "(--force to do it anyway)")
    return path


def write_json(path: Path, obj) -> None:
    atomic_write(path, json.dumps(obj, indent=2, default=_jsonable))


def _jsonable(x):
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, complex):
        return [x.real, x.imag]
    raise TypeError(f"not JSON-serialisable: {type(x)}")


def read_json(path: Path):
    return json.loads(Path(path).read_text())


LOCK = "run.lock"

#: what hil writes in a run directory (a file of another name makes the folder someone else's)
RUN_FILES = frozenset({"config.json", "circuit.toml", "task.json", "log.csv", "checkpoint.json", "checkpoints",
                       "loss.png", "homeostasis.png", "result.json", "history.log", "substrate.log", "bench",
                       "recovered", "feedback.json", TRAINED, "task.npz", "confusion.png", LOCK})


def is_run_file(name: str, ours=RUN_FILES) -> bool:
    """True for a name hil gives an entry of a run directory (``ours``): its files, replaced-*/ folders,
    and the .NAME.tmp files of an interrupted write."""
    if name.startswith("replaced-"):
        return True
    if name.startswith(".") and name.endswith(".tmp"):  # .NAME.tmp, or a lock's .NAME.PID.tmp
        name = name[1:-4]
        return name in ours or name.rsplit(".", 1)[0] in ours
    return name in ours


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _stamp() -> str:
    import time
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime())


def take_lock(p: Path, what: str, rule: str, note=None, extra: dict | None = None) -> None:
    """Create the lock file ``p`` holding this process's pid, host and ``extra``; RunError naming the holder.

    ``what`` names the locked thing in the message, ``rule`` says why there is one holder.
    The file appears whole or not at all (written beside it, then linked into place), so a
    full disk leaves no empty lock. A lock of a process of this host that no longer runs
    is taken over and ``note(text)`` says so.
    """
    import socket
    me = {"pid": os.getpid(), "host": socket.gethostname(), "since": _stamp(), **(extra or {})}
    for _ in range(3):
        if _create_whole(p, json.dumps(me)):
            return
        try:
            holder = json.loads(p.read_text())
            pid, host = int(holder["pid"]), str(holder["host"])
        except FileNotFoundError:
            continue  # released meanwhile
        except (OSError, ValueError, KeyError, TypeError):
            raise RunError(f"{what}: {p} exists but is unreadable; if no hil process uses it, remove {p}") from None
        if host == me["host"] and not _alive(pid):
            p.unlink(missing_ok=True)
            if note:
                note(f"took over the lock of process {pid} on {host}, which no longer runs")
            continue
        user = f" ({holder['what']})" if holder.get("what") and holder.get("what") != me.get("what") else ""
        raise RunError(f"{what}: in use by process {pid} on {host}{user} (since {holder.get('since', '?')}); "
                       f"{rule} (if that process is gone, remove {p})")
    raise RunError(f"{what}: could not take {p}")


def _create_whole(p: Path, text: str) -> bool:
    """Create ``p`` with ``text`` unless it exists (False then); OSError naming ``p`` if it cannot be written."""
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, p)
            return True
        except FileExistsError:
            return False
        except OSError:  # a filesystem without hard links: exclusive create (the write can still fail)
            try:
                fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            try:
                with os.fdopen(fd, "w") as fh:
                    fh.write(text)
            except OSError:
                p.unlink(missing_ok=True)
                raise
            return True
    except OSError as exc:
        raise named(exc, p) from None
    finally:
        tmp.unlink(missing_ok=True)


class Run:
    """A run directory on disk: one writer at a time (``run.lock``), nothing recorded ever deleted."""

    def __init__(self, path, circuit=None):
        self.path = Path(path)
        self._locked = False
        #: the run's starting circuit; set, each checkpoint also writes it at the checkpoint's parameters (trained.toml)
        self.circuit = circuit
        #: the run's rule; set, each checkpoint records it (a resume checks config.json against it)
        self.rule = None

    @property
    def config(self) -> dict:
        return self.read_json_file("config.json")

    def read_json_file(self, name: str):
        """A JSON file of the run; RunError naming it when missing or unreadable."""
        p = self.path / name
        if not p.is_file():
            raise RunError(f"{p}: missing; the run cannot be resumed without it")
        try:
            return read_json(p)
        except (ValueError, UnicodeDecodeError) as exc:
            raise RunError(f"{p}: unreadable ({type(exc).__name__}: {exc}); the run cannot be resumed without it") from None

    def read_circuit(self, load):
        """The run's circuit.toml read by ``load`` (a circuit loader); RunError naming the file when missing or invalid."""
        from hil.circuit import CircuitError
        p = self.path / "circuit.toml"
        if not p.is_file():
            raise RunError(f"{p}: missing; the run cannot be resumed without it")
        try:
            return load(p)
        except CircuitError as exc:
            raise RunError(f"the run's circuit: {exc}") from None

    def note(self, text: str) -> None:
        """Append a line to the run's ``history.log`` (what a resume recovered or changed)."""
        with open(self.path / "history.log", "a") as fh:
            fh.write(f"{_stamp()} {text}\n")

    # -- one writer ------------------------------------------------------------------
    def lock(self) -> None:
        """Take ``run.lock`` (holder's pid and host); RunError naming the holder if a live process has it.

        A lock left by a process of this host that no longer runs is taken over (and noted).
        """
        take_lock(self.path / LOCK, str(self.path), "one process writes a run at a time", self.note)
        self._locked = True

    def unlock(self) -> None:
        if self._locked:
            (self.path / LOCK).unlink(missing_ok=True)
            self._locked = False

    # -- creating ----------------------------------------------------------------------
    def prepare(self, force: bool = False) -> "Run":
        """Make the folder and lock it: it must be empty or new; ``force`` moves what it holds into replaced-*/."""
        p = self.path
        if p.exists() and not p.is_dir():
            raise RunError(f"--out {p}: exists and is not a folder")
        self._made = not p.exists()
        try:
            p.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunError(f"--out {p}: cannot create the folder: {exc.strerror}") from None
        self.lock()
        try:
            held = sorted(x.name for x in p.iterdir() if x.name != LOCK)
            if held and not force:
                if "checkpoint.json" in held:
                    raise RunError(f"{p}: already holds a run; resume it with `hil train --resume {p}` "
                                   "or choose another --out (--force moves its files into replaced-*/)")
                shown = ", ".join(held[:6]) + (" ..." if len(held) > 6 else "")
                raise RunError(f"--out {p}: not empty ({shown}) and not a new run; choose another --out "
                               "(--force moves what it holds into replaced-*/, deleting nothing)")
            theirs = [x for x in held if not is_run_file(x)]
            if theirs:
                shown = ", ".join(theirs[:6]) + (" ..." if len(theirs) > 6 else "")
                raise RunError(f"--out {p}: --force replaces only a run directory hil wrote, and this folder "
                               f"also holds {shown}; choose another --out (nothing was moved)")
            if held:
                aside = p / f"replaced-{_stamp()}"
                aside.mkdir()
                for name in held:
                    if not name.startswith("replaced-"):
                        os.replace(p / name, aside / name)
        except BaseException:
            self.unlock()
            raise
        return self

    def discard_if_unused(self) -> None:
        """Remove the folder :meth:`prepare` made if the run never started in it (it is still empty)."""
        if getattr(self, "_made", False) and not (self.path / "config.json").exists():
            try:
                self.path.rmdir()
            except OSError:
                pass

    def create(self, config: dict, circuit_toml: str, task: dict, fields=LOG_FIELDS, force: bool = False) -> "Run":
        """Create the directory's files (locking a new or empty folder first, see :meth:`prepare`);
        ``fields``: the log's columns (LOG_FIELDS, plus any a trainer adds, e.g. homeostasis_H)."""
        if not self._locked:
            self.prepare(force)
        (self.path / "checkpoints").mkdir(parents=True, exist_ok=True)
        write_json(self.path / "config.json", config)
        atomic_write(self.path / "circuit.toml", circuit_toml)
        write_json(self.path / "task.json", task)
        atomic_write(self.path / "log.csv", ",".join(fields) + "\r\n")
        return self

    def log_fields(self) -> list:
        """The columns of log.csv, from its header."""
        return self._log_fields()

    # -- the per-step log --------------------------------------------------------
    def _log_fields(self) -> list:
        """The columns of this run's log.csv (a run recorded before a column existed keeps its header)."""
        with open(self.path / "log.csv", newline="") as fh:
            return next(csv.reader(fh), LOG_FIELDS)

    def append_log(self, rows: list) -> None:
        fields = self._log_fields()
        try:
            with open(self.path / "log.csv", "a", newline="") as fh:
                w = csv.writer(fh)
                for r in rows:
                    w.writerow([r.get(k, "") for k in fields])
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:  # a row cut short is dropped on resume
            raise named(exc, self.path / "log.csv") from None

    def _log_rows(self) -> tuple:
        """(the run's columns, good rows as float lists, [(line, why)] of rows that are not).

        A log cut mid-row loses only that row.
        """
        p = self.path / "log.csv"
        try:
            with open(p, newline="") as fh:
                rows = list(csv.reader(fh))
        except UnicodeDecodeError:
            raise RunError(f"{p}: not a text file") from None
        fields = [h.strip() for h in rows[0]] if rows else []
        lead = fields[:len(LOG_FIELDS)]
        if len(fields) < 2 or lead != LOG_FIELDS[:len(lead)] or len(set(fields)) != len(fields):
            raise RunError(f"{p}: the header does not begin with {','.join(LOG_FIELDS)} (or an older run's first "
                           "columns of it)")
        good, bad = [], []
        cut = len(rows) > 1 and not _ends_a_line(p)  # the last row's write was cut: its last number may be too
        for line, r in enumerate(rows[1:], start=2):
            try:
                if len(r) != len(fields):
                    raise ValueError(f"{len(r)} fields")
                if cut and line == len(rows):
                    raise ValueError(f"cut short: no line end after its last value {r[-1]!r}")
                vals = [float(x) if x not in ("", "nan") else np.nan for x in r]
                if not float(vals[0]).is_integer() or vals[0] < 0:
                    raise ValueError("step is not a whole number >= 0")
                good.append(vals)
            except ValueError as exc:
                bad.append((line, str(exc)))
        return fields, good, bad

    def read_log(self) -> dict:
        """The log as arrays keyed by field: LOG_FIELDS and any further column of this run's header
        (rows that do not parse are left out)."""
        fields, good, _ = self._log_rows()
        A = np.array(good, float).reshape(-1, len(fields))
        return {k: A[:, fields.index(k)] if k in fields else np.full(len(A), np.nan)
                for k in LOG_FIELDS + [f for f in fields if f not in LOG_FIELDS]}

    def truncate_log(self, last_step: int, fields=LOG_FIELDS, keep_later: bool = True) -> list:
        """Keep the log's rows up to ``last_step`` (later ones are recomputed on resume); notes on what was dropped.

        Rows that do not parse, and rows out of order, are dropped too; the log as it was is kept in
        recovered/ whenever anything goes (``keep_later`` False: but for rows after ``last_step`` only).
        """
        p = self.path / "log.csv"
        notes = []
        if not p.exists():
            atomic_write(p, ",".join(fields) + "\r\n")
            return [f"log.csv was missing: a new one starts at step {last_step} (earlier rows are lost)"]
        fields, good, bad = self._log_rows()
        keep, prev = [], -1
        for vals in good:
            if prev < vals[0] <= last_step:
                keep.append(vals)
                prev = vals[0]
        after = [int(v[0]) for v in good if v[0] > last_step]
        later = len(after)
        if bad or len(keep) + later != len(good) or (after and keep_later):
            copy = self.keep_copy("log.csv")
            if after and keep_later:
                notes.append(f"log.csv: {later} row(s) after step {last_step} (step {step_ranges(after)}) "
                             f"dropped, to be recomputed from the checkpoint; the log as it was: "
                             f"{copy.relative_to(self.path)}")
            if bad:
                notes.append(f"log.csv: dropped {len(bad)} unreadable row(s) (line {bad[0][0]}: {bad[0][1]})")
            if len(keep) + later != len(good):
                notes.append(f"log.csv: dropped {len(good) - len(keep) - later} duplicated or out-of-order row(s)")
        buf = ",".join(fields) + "\r\n" + "".join(
            ",".join(_fmt_field(k, v) for k, v in zip(fields, vals)) + "\r\n" for vals in keep)
        atomic_write(p, buf)
        return notes

    def keep_copy(self, name: str) -> Path:
        """Copy a run file into recovered/ (name plus a time stamp) before it is rewritten."""
        import shutil
        dst = self.path / "recovered" / f"{_stamp()}-{name}"
        dst.parent.mkdir(exist_ok=True)
        shutil.copy2(self.path / name, dst)
        return dst

    # -- checkpoints ---------------------------------------------------------------
    def save_checkpoint(self, step: int, g: np.ndarray, rng_state: dict, extra: dict | None = None) -> None:
        """Write the conductances and random state after ``step`` steps, atomically (the .npz holds both too)."""
        import io
        extra = {**({"rule": self.rule} if getattr(self, "rule", None) else {}), **(extra or {})}
        buf = io.BytesIO()
        np.savez(buf, g=g, step=step, rng=json.dumps(rng_state), extra=json.dumps(extra, default=_jsonable))
        atomic_write(self.path / "checkpoints" / f"step_{step:06d}.npz", buf.getvalue())
        write_json(self.path / "checkpoint.json",
                   {"step": step, "g": g.tolist(), "rng": rng_state, **(extra or {})})
        if self.circuit is not None:
            atomic_write(self.path / TRAINED, trained_toml(self.circuit, g, step))

    def load_checkpoint(self) -> dict:
        """checkpoint.json as saved (step, g, rng); RunError naming the file when absent or unreadable."""
        p = self.path / "checkpoint.json"
        if not p.exists():
            raise RunError(f"{self.path}: no checkpoint.json; not a run directory, or the run never reached its first checkpoint")
        ck = self.read_json_file("checkpoint.json")
        ck["g"] = np.array(ck["g"], dtype=float)
        return ck

    def recover_checkpoint(self, check) -> tuple:
        """The newest checkpoint that ``check(ck)`` accepts (it returns None or the reason it refuses).

        checkpoint.json first, then the .npz files in checkpoints/, newest first. Returns
        (checkpoint, notes); a refused checkpoint.json is kept in recovered/. RunError listing
        every reason when none is usable.
        """
        reasons, notes = [], []
        try:
            ck = self.load_checkpoint()
            why = check(ck)
        except (RunError, KeyError, TypeError, ValueError) as exc:
            ck, why = None, str(exc)
        if ck is not None and why is None:
            return ck, notes
        reasons.append(f"checkpoint.json: {why}")
        for f in sorted((self.path / "checkpoints").glob("step_*.npz"), reverse=True):
            try:
                with np.load(f) as z:
                    ck = {**json.loads(str(z["extra"])), "step": int(z["step"]), "g": np.array(z["g"], float),
                          "rng": json.loads(str(z["rng"]))}
                why = check(ck)
            except Exception as exc:  # a damaged or old-format file: the next one may do
                why = f"unreadable ({type(exc).__name__}: {exc})"
            if why is None:
                if (self.path / "checkpoint.json").exists():
                    self.keep_copy("checkpoint.json")
                notes.append(f"checkpoint.json refused ({reasons[0].split(': ', 1)[1]}); resumed from "
                             f"checkpoints/{f.name} (step {ck['step']})")
                return ck, notes
            reasons.append(f"checkpoints/{f.name}: {why}")
        raise RunError(f"{self.path}: no usable checkpoint: " + "; ".join(reasons))


def at_params(circuit, g):
    """``circuit`` with its parameters set to ``g`` (siemens), keeping a calibration (the same bench's parts)."""
    from dataclasses import replace
    out = circuit.with_g(np.asarray(g, float))
    if getattr(circuit, "calibration", None) is not None:
        out = replace(out, calibration=circuit.calibration)
    return out


def trained_toml(circuit, g, step: int) -> str:
    """The text of trained.toml: ``circuit`` at the parameters ``g`` reached after ``step`` steps of its run."""
    # no path in the text: a run directory may be moved (a sweep's points come back from its workers)
    return (f"# written by hil train: {circuit.name} after step {step} of its run (circuit.toml beside this file "
            f"holds the circuit it started from)\n" + at_params(circuit, g).to_toml())


def trained_circuit(path, load):
    """The circuit a run directory or checkpoint file names, read with ``load`` (a circuit loader).

    A run directory: its ``trained.toml`` (the newest checkpoint's parameters), or for a run
    written before trained.toml existed, ``circuit.toml`` at ``checkpoint.json``'s parameters.
    A checkpoint ``RUN/checkpoints/step_NNNNNN.npz``: ``circuit.toml`` at that checkpoint's
    parameters. CircuitError naming the path when it is neither.
    """
    from dataclasses import replace

    from hil.circuit import CircuitError
    p = Path(path)
    run = p.parent.parent if p.suffix == ".npz" else p
    if p.is_dir() and (p / TRAINED).is_file():
        return load(p / TRAINED)
    start = run / "circuit.toml"
    if not start.is_file() or (p.is_dir() and not (p / "checkpoint.json").is_file()):
        raise CircuitError(f"{p}: a folder, not a circuit file; a run directory (from `hil train --out`) would "
                           f"hold {TRAINED} or circuit.toml and checkpoint.json" if p.is_dir() else
                           f"{p}: not a circuit file nor a checkpoint of a run (RUN/checkpoints/step_NNNNNN.npz)")
    try:
        if p.is_dir():
            g = np.asarray(read_json(p / "checkpoint.json")["g"], float)
        else:
            with np.load(p) as z:
                g = np.array(z["g"], float)
    except Exception as exc:  # a damaged file: say which
        raise CircuitError(f"{p}: unreadable checkpoint ({type(exc).__name__}: {exc})") from None
    return replace(at_params(load(start), g), source=str(p))


def _ends_a_line(p: Path) -> bool:
    """Whether the file ``p`` ends with a line end (every row hil writes does)."""
    with open(p, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        if not fh.tell():
            return True
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) in (b"\n", b"\r")


def step_ranges(steps) -> str:
    """'3-7, 9' for [3, 4, 5, 6, 7, 9]."""
    out, start, prev = [], None, None
    for s in list(steps) + [None]:
        if start is None:
            start = prev = s
        elif s is not None and s == prev + 1:
            prev = s
        else:
            out.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = prev = s
    return ", ".join(x for x in out if x != "None")


def _fmt_field(key: str, v: float) -> str:
    if key == "step":
        return str(int(v))
    return "nan" if v != v else repr(float(v))


def loss_title(cfg: dict) -> str:
    """loss.png's title: circuit, rule, backend, and the device where the backend has one (ngspice, a bench file's)."""
    dev = (cfg.get("backend_options") or {}).get("device")
    return (f"{cfg.get('circuit_name', '')}  rule={cfg.get('rule')}  backend={cfg.get('backend', 'ideal')}"
            + (f"  device={dev}" if dev else ""))


def plot_losses(run: Run, extra_lines: dict | None = None) -> Path:
    """Write ``loss.png``: train and test loss (V^2) against step, log scale."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    log = run.read_log()
    cfg = run.config
    scored = "train_accuracy" in log
    fig, axes = plt.subplots(1, 2 if scored else 1, figsize=(11, 4.2) if scored else (6.4, 4.2), squeeze=False)
    ax = axes[0, 0]
    if scored:
        plot_accuracy(axes[0, 1], log)
    ax.semilogy(log["step"], log["train_loss"], label="train")
    test = np.isfinite(log["test_loss"])  # logged every log_every steps only
    if test.any():
        ax.semilogy(log["step"][test], log["test_loss"][test], label="test", alpha=0.8,
                    marker="." if test.sum() < 200 else None)
    for label, (x, y) in (extra_lines or {}).items():
        ax.semilogy(x, y, "--", label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss  (mean 1/2 ||V_O - y||^2, V^2)")
    ax.set_title(loss_title(cfg))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = run.path / "loss.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    if "homeostasis_H" in log:
        plot_homeostasis(run, log)
    return out


def plot_accuracy(ax, log: dict) -> None:
    """The accuracy panel of loss.png: train and test accuracy (fraction of examples) against step."""
    for split in ("train", "test"):
        a = log[f"{split}_accuracy"]
        ok = np.isfinite(a)
        if ok.any():
            ax.plot(log["step"][ok], a[ok], label=split, marker="." if ok.sum() < 200 else None)
    ax.set_xlabel("step")
    ax.set_ylabel("accuracy (fraction of examples)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(True, alpha=0.3)
    ax.legend()


def plot_summary(run: Run, summary: dict) -> list:
    """The figures of a task's end-of-run summary (:meth:`hil.tasks.Task.summary`): ``confusion.png`` where it
    holds confusion matrices; the paths written."""
    return [plot_confusion(run, summary)] if "confusion_test" in summary else []


def plot_confusion(run: Run, summary: dict) -> Path:
    """Write ``confusion.png``: the confusion matrices (row: true class, column: predicted) of both splits."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = summary["classes"]
    fig, axes = plt.subplots(1, 2, figsize=(4 + 0.5 * len(classes), 2.4 + 0.25 * len(classes)))
    for ax, split in zip(axes, ("train", "test")):
        M = np.asarray(summary[f"confusion_{split}"])
        ax.imshow(M, cmap="Blues")
        ticks = range(len(classes))
        ax.set_xticks(ticks, [c[:10] for c in classes], rotation=45, ha="right", fontsize=8)
        ax.set_yticks(ticks, [c[:10] for c in classes], fontsize=8)
        for (i, j), v in np.ndenumerate(M):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=7,
                    color="white" if v > M.max() / 2 else "black")
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{split}: accuracy {summary.get(split + '_accuracy', float('nan')):.3f}", fontsize=9)
    fig.tight_layout()
    out = run.path / "confusion.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_homeostasis(run: Run, log: dict | None = None) -> Path:
    """Write ``homeostasis.png``: H = 1/2 ||A - A^T||_F^2 (S^2, docs/math.md, section 7.3) against step, beside the loss."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    log = log or run.read_log()
    cfg = run.config
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9.6, 3.8))
    a1.semilogy(log["step"], log["train_loss"])
    a1.set_xlabel("step")
    a1.set_ylabel("train loss (V^2)")
    H = log["homeostasis_H"]
    (a2.semilogy if np.nanmin(H) > 0 else a2.plot)(log["step"], H, color="C3")
    a2.set_xlabel("step")
    a2.set_ylabel("H = 1/2 ||A - A^T||_F^2  (S^2)")
    fig.suptitle(f"{cfg.get('circuit_name', '')}  rule={cfg.get('rule')}  homeostasis w={cfg.get('homeostasis', 0):g}",
                 fontsize=10)
    for a in (a1, a2):
        a.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    out = run.path / "homeostasis.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
