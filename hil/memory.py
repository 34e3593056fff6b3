"""Work that cannot fit in memory is refused before it is allocated, naming its size."""

from __future__ import annotations

import math
import os


class TooBig(ValueError):
    """An array that would not fit in this machine's memory."""


def memory_bytes() -> int:
    """This machine's physical memory (bytes); $HIL_MEMORY_BYTES overrides it."""
    if os.environ.get("HIL_MEMORY_BYTES"):
        return int(float(os.environ["HIL_MEMORY_BYTES"]))
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not POSIX: assume 16 GiB
        return 16 << 30


def _size(n: float) -> str:
    for unit, k in (("TiB", 40), ("GiB", 30), ("MiB", 20)):
        if n >= 1 << k:
            return f"{n / (1 << k):.3g} {unit}"
    return f"{n:.0f} bytes"


def require_fits(shape, what: str, hint: str = "", itemsize: int = 8) -> None:
    """TooBig naming ``what``, its shape and size when an array of ``shape`` (``itemsize`` bytes
    each) would take more than half of this machine's memory; nothing is allocated."""
    need = math.prod(int(s) for s in shape) * itemsize
    have = memory_bytes()
    if need > have // 2:
        dims = " x ".join(f"{int(s):,}" for s in shape)
        raise TooBig(f"{what}: a {dims} array of {_size(need)} does not fit in memory (half of this machine's "
                     f"{_size(have)})" + (f"; {hint}" if hint else ""))
