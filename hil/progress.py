"""Progress bars drawn by tqdm's auto mode: a text bar in a terminal or a log, a widget in a notebook."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


class Progress:
    """``with Progress(total, label) as p: p.update(done, **info)``; ``done`` counts from 0 to ``total``.

    ``enabled`` None or True draws (on standard error, whether or not it is a terminal, as
    tqdm does; in Jupyter tqdm's widget); False draws nothing (``--json``, library calls that
    ask for silence). ``info`` is shown after the bar (``loss=1.2e-3``).
    """

    def __init__(self, total: int, label: str = "", stream=None, enabled: bool | None = None):
        self.total = max(1, int(total))
        self.enabled = enabled is not False
        self._done = 0
        self._bar = tqdm(total=self.total, desc=label or None, file=stream or sys.stderr, disable=not self.enabled,
                         dynamic_ncols=True, leave=True) if self.enabled else None

    def update(self, done: int, **info) -> None:
        if self._bar is None:
            return
        done = min(int(done), self.total)
        if info:
            self._bar.set_postfix({k: (f"{v:.3g}" if isinstance(v, float) else v) for k, v in info.items()},
                                  refresh=False)
        if done > self._done:
            self._bar.update(done - self._done)
            self._done = done

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.close()
