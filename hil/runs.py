"""Run directories: what a training run records, and how it is read back.

A run directory holds

- ``config.json``: the resolved configuration (defaults filled in);
- ``circuit.toml``: the circuit as the run started;
- ``task.json``: the examples (so a resume needs nothing outside the folder);
- ``log.csv``: one row per step: step, train_loss, test_loss, grad_norm, seconds;
- ``checkpoint.json`` and ``checkpoints/step_NNNNNN.npz``: conductances and the
  random state, written atomically (write to a temporary file, then rename);
- ``loss.png``: the loss curves; ``result.json`` once the run ends.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np

LOG_FIELDS = ["step", "train_loss", "test_loss", "grad_norm", "seconds"]


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


def check_output(path, inputs=(), force: bool = False, option: str = "-o", ours: str | None = None) -> Path:
    """Refuse to write the file ``path`` over an input or a file hil did not write; RunError naming the option.

    ``inputs``: files the command reads (never overwritten without ``force``).
    ``ours``: the first line of a file this command writes: such a file may be replaced.
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
    if ours is None or first != ours:
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


class Run:
    """A run directory on disk."""

    def __init__(self, path):
        self.path = Path(path)

    @property
    def config(self) -> dict:
        return read_json(self.path / "config.json")

    def create(self, config: dict, circuit_toml: str, task: dict) -> "Run":
        if (self.path / "checkpoint.json").exists():
            raise RunError(f"{self.path}: already holds a run; resume it with `hil train --resume {self.path}` "
                           "or choose another --out")
        (self.path / "checkpoints").mkdir(parents=True, exist_ok=True)
        write_json(self.path / "config.json", config)
        atomic_write(self.path / "circuit.toml", circuit_toml)
        write_json(self.path / "task.json", task)
        with open(self.path / "log.csv", "w", newline="") as fh:
            csv.writer(fh).writerow(LOG_FIELDS)
        return self

    # -- the per-step log --------------------------------------------------------
    def append_log(self, rows: list) -> None:
        with open(self.path / "log.csv", "a", newline="") as fh:
            w = csv.writer(fh)
            for r in rows:
                w.writerow([r[k] for k in LOG_FIELDS])
            fh.flush()
            os.fsync(fh.fileno())

    def read_log(self) -> dict:
        """The log as arrays keyed by field."""
        with open(self.path / "log.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        return {k: np.array([float(r[k]) if r[k] not in ("", "nan") else np.nan for r in rows]) for k in LOG_FIELDS}

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
    if np.isfinite(log["test_loss"]).any():
        ax.semilogy(log["step"], log["test_loss"], label="test", alpha=0.8)
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
    return out
