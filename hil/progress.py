"""A progress bar on standard error when it is a terminal; silent otherwise."""

from __future__ import annotations

import sys
import time


class Progress:
    """``with Progress(total, label) as p: p.update(done, **info)``; draws at most 10 times a second."""

    def __init__(self, total: int, label: str = "", stream=None, enabled: bool | None = None):
        self.total, self.label = max(1, int(total)), label
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self._last = 0.0
        self._t0 = time.monotonic()

    def update(self, done: int, **info) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < 0.1 and done < self.total:
            return
        self._last = now
        frac = min(1.0, done / self.total)
        bar = "#" * int(30 * frac) + "-" * (30 - int(30 * frac))
        rate = done / max(now - self._t0, 1e-9)
        extra = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items())
        self.stream.write(f"\r{self.label} [{bar}] {done}/{self.total} {rate:.0f}/s {extra}\033[K")
        self.stream.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
