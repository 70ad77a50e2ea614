"""Checks of what a run leaves behind: its files, leftovers of atomic writes, and label overlap."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from voxflow.core import metrics


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """voxflow.core.metrics.dice of the positive voxels; NaN when both are empty (no overlap to check)."""
    return metrics.dice(np.asarray(a) > 0, np.asarray(b) > 0, empty=float("nan"))


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in Path(path).rglob("*") if p.is_file()) if Path(path).exists() else []


def tmp_names_under(path: Path) -> list[str]:
    """Leftovers of voxflow's atomic writes (`.name.tmp-PID.ext`) anywhere below `path`."""
    return sorted(str(p) for p in Path(path).rglob("*") if ".tmp-" in p.name)
