"""Shipped data: ``circuits/`` and ``netlists/`` from the top of the checkout.

``pip install .`` installs them as ``hil.data.circuits`` and ``hil.data.netlists``
(see pyproject.toml); in a checkout without an install the top-level folders
are used directly.
"""

from __future__ import annotations

from pathlib import Path


def folder(kind: str) -> Path:
    """The folder of shipped ``kind`` files ('circuits' or 'netlists')."""
    if kind not in ("circuits", "netlists"):
        raise ValueError(f"unknown data folder {kind!r}")
    here = Path(__file__).resolve().parent
    installed = here / kind
    if installed.is_dir():
        return installed
    return here.parent.parent / kind
