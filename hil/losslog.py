"""The training log's rows: which steps are logged, and each loss taken without an extra pass where it can.

Row k of ``log.csv`` is the state after k steps (row 0: the start). A loss costs a
free-state pass over a data set, on ngspice a simulator run, on a bench a pass of
instrument traffic, so:

- **full batch** (each step measures the whole training set): step k + 1 measures
  the free state at the conductances of row k, so row k's train loss is that
  step's own loss: every step is logged, at no extra cost. A checkpoint stores the
  row still waiting for its loss (a resumed run's first step supplies it); only at
  the end, or on an interrupt, is it measured. The test loss is measured every
  ``log_every`` steps (NaN between).
- **minibatch**: train and test losses are measured every ``log_every`` steps.

Row 0, the last step and every multiple of ``log_every`` are logged in both cases.

:func:`default_log_every` keeps logging under :data:`LOG_FRACTION` (5 %) of a step's
cost, counted in solves with :data:`ROUND_COST` solves for each round of experiments
(a round's fixed cost: on ngspice a deck load, analysis set-up and reads, measured
1.3-2 ms beside 15-20 us a solve on the 64-node benchmark; on the bench a source-list
configuration and its read-back).
"""

from __future__ import annotations

import math

from hil.substrate import Adjoint, AdjointClamp, Clamp, Nudge

LOG_FRACTION = 0.05  # half of the 10 % budget: checkpoints and the loop take their share too
ROUND_COST = 100


def step_cost(states, batch: int) -> float:
    """A step's cost in solves: rounds x ROUND_COST + experiments x batch (see Substrate.measure's rounds)."""
    nudges = [s for s in states if isinstance(s, Nudge)]
    second = [s for s in states if isinstance(s, (Clamp, Adjoint, AdjointClamp)) or (isinstance(s, Nudge) and s.open_loop)]
    experiments = 1 + len(nudges) + sum(isinstance(s, Clamp) for s in states) \
        + any(isinstance(s, (Adjoint, AdjointClamp)) for s in states) + sum(isinstance(s, AdjointClamp) for s in states)
    rounds = 1 + bool(second) + any(isinstance(s, AdjointClamp) for s in states)
    return rounds * ROUND_COST + experiments * batch


def default_log_every(states, batch: int, n_train: int, n_test: int) -> int:
    """The fewest steps between logged losses that keep logging under LOG_FRACTION of a step."""
    pass_cost = lambda n: ROUND_COST + n if n else 0
    cost = pass_cost(n_test) + (0 if batch >= n_train else pass_cost(n_train))
    return max(1, math.ceil(cost / (LOG_FRACTION * step_cost(states, batch))))


class LossLog:
    """Rows for log.csv, filled from the steps' own measurements or by ``train_loss()`` / ``test_loss()`` passes."""

    def __init__(self, log_every: int, steps: int, full_batch: bool, train_loss, test_loss, extra=None,
                 from_measurements=None):
        """``train_loss()``, ``test_loss()``: the loss, or a dict of the row's train (test) columns (the loss
        and what the task scores beside it, e.g. ``{"train_loss": .., "train_accuracy": ..}``);
        ``from_measurements(meas)``: the same for the train columns from a step's own free state (default: its loss);
        ``extra()``: further columns of a row, measured when the row is made (e.g. homeostasis_H)."""
        self.every, self.steps, self.full = int(log_every), int(steps), full_batch
        self._train, self._test, self._extra = train_loss, test_loss, extra
        self._from = from_measurements or (lambda meas: meas.loss())
        self.rows = []          # complete rows not yet written
        self.awaiting = None    # full batch: the row of the conductances now written, train loss to come
        self.last_train = float("nan")

    def logs(self, step: int) -> bool:
        """Whether row ``step`` exists (and holds a test loss)."""
        return step == 0 or step % self.every == 0 or step == self.steps

    def exists(self, step: int) -> bool:
        return self.full or self.logs(step)

    def add(self, step: int, grad_norm: float, seconds: float, lr: float) -> None:
        """The row of the state after ``step`` steps (just written); ``lr``: the step that led to it."""
        if not self.exists(step):
            return
        row = dict(step=step, train_loss=float("nan"), test_loss=float("nan"), grad_norm=grad_norm, seconds=seconds,
                   lr=lr)
        if self.logs(step):
            self._fill(row, "test_loss", self._test())
        if self._extra is not None:
            row.update(self._extra())
        if self.full:
            self.awaiting = row
        else:
            self._fill(row, "train_loss", self._train())
            self.rows.append(row)

    def measured(self, step: int, meas) -> None:
        """Step ``step`` + 1 measured the free state of the whole training set at row ``step``'s conductances."""
        if self.awaiting is not None and self.awaiting["step"] == step:
            self._fill(self.awaiting, "train_loss", self._from(meas))
            self.rows.append(self.awaiting)
            self.awaiting = None

    def take(self, complete: bool = True) -> list:
        """The complete rows so far; ``complete``: the awaiting one too, measured now (the end, an interrupt)."""
        if complete and self.awaiting is not None:
            self._fill(self.awaiting, "train_loss", self._train())
            self.rows.append(self.awaiting)
            self.awaiting = None
        rows, self.rows = self.rows, []
        return rows

    def _fill(self, row: dict, key: str, value) -> None:
        """Put a measured loss (or a dict of columns holding it) into ``row``."""
        row.update(value if isinstance(value, dict) else {key: value})
        if key == "train_loss":
            self.last_train = row["train_loss"]

    def salvage(self) -> list:
        """On an interrupt: the complete rows, and the awaiting one if the substrate still answers."""
        try:
            return self.take()
        except Exception:  # the substrate failed: the checkpoint keeps the row (see checkpoint_extra)
            return self.take(complete=False)

    def checkpoint_extra(self) -> dict:
        """What a checkpoint stores so that a resumed run logs exactly as this one would: the awaiting row."""
        return {"awaiting_row": dict(self.awaiting)} if self.awaiting is not None else {}

    def resume(self, extra: dict) -> bool:
        """Take back a checkpoint's awaiting row (its train loss comes with the first resumed step)."""
        row = extra.get("awaiting_row")
        if row is not None and self.full:
            self.awaiting = {k: float(v) if k != "step" else int(v) for k, v in row.items()}
            self.awaiting["train_loss"] = float("nan")
        return self.awaiting is not None
