"""Shared fixtures: thread limits, the real-data folder, small demo subjects and NIfTI helpers.

Thread limits are set at import, before any test imports ANTs/ITK or torch, so that the suite
behaves on a small shared machine (ITK reads its thread count when it is first loaded).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

PROJECT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT / ".." / "shared" / "data"
SCHEMA = PROJECT / "config" / "config.schema.yaml"
VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (real scans, never copied into the repository); skips where absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test data not found at {SHARED_DATA.resolve()} (only present on the project's machines)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tcga(shared_data) -> Path:
    d = shared_data / "tcga-fg-6692"
    names = ["t1c.nii.gz", "t2.nii.gz", "flair.nii.gz", "t1c_brainmask_hdbet.nii.gz"]
    if not all((d / n).is_file() for n in names):
        pytest.skip(f"{d} lacks one of {names}")
    return d


@pytest.fixture(scope="session")
def demo_subject(tmp_path_factory):
    """Factory: one synthetic demo subject per spacing_scale, generated once per session.

    Returns generate_subject's dict ({"paths": {t1, t2, flair, seg, brainmask, truth}, "truth": {...}}).
    """
    from voxflow.demo.mri import generate_subject

    cache: dict[float, dict] = {}

    def make(spacing_scale: float = 2.0) -> dict:
        if spacing_scale not in cache:
            root = tmp_path_factory.mktemp(f"demo_x{spacing_scale:g}")
            cache[spacing_scale] = generate_subject("demo000", 0, root / "raw", root / "truth",
                                                    spacing_scale=spacing_scale)
        return cache[spacing_scale]

    return make


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    return float(2 * np.logical_and(a, b).sum() / (a.sum() + b.sum()))


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in Path(path).rglob("*") if p.is_file()) if Path(path).exists() else []


def tmp_names_under(path: Path) -> list[str]:
    """Leftovers of voxflow's atomic writes (`.name.tmp-PID.ext`) anywhere below `path`."""
    return sorted(str(p) for p in Path(path).rglob("*") if ".tmp-" in p.name)


def preprocessed_placeholders(out: Path, subjects: list[str], raw_files: list[Path] = (),
                              test_subjects: list[str] | None = None) -> None:
    """What the preprocessing leaves behind, as placeholders written in the order of time the workflow writes
    them (raw files, MNI templates, every subject's status file, status/cohort.json), so that a run with
    `--rerun-triggers mtime` finds the checkpoint cohort_status done and plans the cohort stages on it (a dry
    run plans nothing past an unfinished checkpoint)."""
    import time

    from voxflow.pipeline.status import merge_status, write_status

    for p in raw_files:
        Path(p).parent.mkdir(parents=True, exist_ok=True)
        Path(p).touch()
    for name in (f"mni152_{r}mm{m}.nii.gz" for r in (1, 2, 3) for m in ("", "_mask")):  # any resolution
        (out / "template").mkdir(parents=True, exist_ok=True)
        (out / "template" / name).touch()
    time.sleep(0.01)
    status = [str(out / "status" / "subjects" / f"{s}.json") for s in subjects]
    for s, p in zip(subjects, status):
        write_status(p, s, store=str(out / "zarr" / f"{s}.zarr"))
    merge_status(status, str(out / "status" / "cohort.json"), test_subjects)  # as the checkpoint writes it


# The longest files first: `make test` runs two xdist workers that take one file at a time in collection
# order, and a long file collected last (alphabetical order) ran alone at the end, minutes after the
# other worker had finished.
LONGEST_FIRST = ["test_faults.py", "test_slurm.py", "test_qc_faults.py", "test_learn_realdata.py",
                 "test_preprocess_workflow.py", "test_layouts.py", "test_bad_inputs.py", "test_no_network.py",
                 "test_ct_workflow.py",
                 "test_learn_ddp.py", "test_cohort_exclusion.py", "test_big_cohort.py", "test_config_checks.py",
                 "test_predict_cli.py", "test_readme_commands.py"]


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order
