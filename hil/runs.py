"""Run directories: what a training run records, and how it is read back.

A run directory holds

- ``config.json``: the resolved configuration (defaults filled in);
- ``circuit.toml``: the circuit as the run started;
- ``task.json``: the examples (so a resume needs nothing outside the folder);
- ``log.csv``: one row per logged step (:mod:`hil.losslog`): step, train_loss, test_loss, grad_norm, seconds, lr
  (the learning rate of the step that led to the row; row 0: the first step's), and
  homeostasis_H (S^2) for a non-reciprocal circuit or a run with homeostasis;
- ``checkpoint.json`` and ``checkpoints/step_NNNNNN.npz``: conductances and the
  random state, written atomically (write to a temporary file, then rename);
- ``loss.png``: the loss curves; ``result.json`` once the run ends;
- ``bench/``: a bench run's record (:mod:`hil.drivers.record`).
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np

LOG_FIELDS = ["step", "train_loss", "test_loss", "grad_norm", "seconds", "lr"]


class RunError(RuntimeError):
    """A run directory that cannot be created or resumed."""


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` so that a reader sees the old or the new file, never half of one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data.encode() if isinstance(data, str) else data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


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


class Run:
    """A run directory on disk."""

    def __init__(self, path):
        self.path = Path(path)

    @property
    def config(self) -> dict:
        return read_json(self.path / "config.json")

    def create(self, config: dict, circuit_toml: str, task: dict, fields=LOG_FIELDS) -> "Run":
        """Create the directory's files; ``fields``: the log's columns (LOG_FIELDS, plus any a trainer adds,
        e.g. homeostasis_H)."""
        if (self.path / "checkpoint.json").exists():
            raise RunError(f"{self.path}: already holds a run; resume it with `hil train --resume {self.path}` "
                           "or choose another --out")
        (self.path / "checkpoints").mkdir(parents=True, exist_ok=True)
        write_json(self.path / "config.json", config)
        atomic_write(self.path / "circuit.toml", circuit_toml)
        write_json(self.path / "task.json", task)
        with open(self.path / "log.csv", "w", newline="") as fh:
            csv.writer(fh).writerow(list(fields))
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
        with open(self.path / "log.csv", "a", newline="") as fh:
            w = csv.writer(fh)
            for r in rows:
                w.writerow([r.get(k, "") for k in fields])
            fh.flush()
            os.fsync(fh.fileno())

    def read_log(self) -> dict:
        """The log as arrays keyed by field (LOG_FIELDS and any further column of this run's header)."""
        with open(self.path / "log.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        fields = LOG_FIELDS + [k for k in self._log_fields() if k not in LOG_FIELDS]
        return {k: np.array([float(r[k]) if r.get(k) not in (None, "", "nan") else np.nan for r in rows])
                for k in fields}

    def truncate_log(self, last_step: int) -> None:
        """Drop log rows after ``last_step`` (they are recomputed on resume)."""
        with open(self.path / "log.csv", newline="") as fh:
            rows = list(csv.reader(fh))
        keep = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) <= last_step]
        buf = "".join(",".join(r) + "\r\n" for r in keep)
        atomic_write(self.path / "log.csv", buf)

    # -- checkpoints ---------------------------------------------------------------
    def save_checkpoint(self, step: int, g: np.ndarray, rng_state: dict, extra: dict | None = None) -> None:
        """Write the conductances and random state after ``step`` steps, atomically."""
        import io
        buf = io.BytesIO()
        np.savez(buf, g=g)
        atomic_write(self.path / "checkpoints" / f"step_{step:06d}.npz", buf.getvalue())
        write_json(self.path / "checkpoint.json",
                   {"step": step, "g": g.tolist(), "rng": rng_state, **(extra or {})})

    def load_checkpoint(self) -> dict:
        p = self.path / "checkpoint.json"
        if not p.exists():
            raise RunError(f"{self.path}: no checkpoint.json; not a run directory, or the run never reached its first checkpoint")
        ck = read_json(p)
        ck["g"] = np.array(ck["g"], dtype=float)
        return ck


def plot_losses(run: Run, extra_lines: dict | None = None) -> Path:
    """Write ``loss.png``: train and test loss (V^2) against step, log scale."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    log = run.read_log()
    cfg = run.config
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.semilogy(log["step"], log["train_loss"], label="train")
    test = np.isfinite(log["test_loss"])  # logged every log_every steps only
    if test.any():
        ax.semilogy(log["step"][test], log["test_loss"][test], label="test", alpha=0.8,
                    marker="." if test.sum() < 200 else None)
    for label, (x, y) in (extra_lines or {}).items():
        ax.semilogy(x, y, "--", label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss  (mean 1/2 ||V_O - y||^2, V^2)")
    ax.set_title(f"{cfg.get('circuit_name', '')}  rule={cfg.get('rule')}  backend={cfg.get('backend', 'ideal')}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = run.path / "loss.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    if "homeostasis_H" in log:
        plot_homeostasis(run, log)
    return out


def plot_homeostasis(run: Run, log: dict | None = None) -> Path:
    """Write ``homeostasis.png``: H = 1/2 ||A - A^T||_F^2 (S^2, spec 7.3) against step, beside the loss."""
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
