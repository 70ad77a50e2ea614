"""The Snakemake workflow run as a user runs it, from the tests: one call per run, its failure text, and the
placeholders of a finished preprocessing that let a run plan the cohort stages without running it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from support.paths import PROJECT, SCHEMA, VENV_BIN


def small_training_split(cfg: dict, n_subjects: int) -> dict:
    """The training rules build the cross-validation split at parse time (5 folds by default), which a
    cohort of 3-4 subjects cannot fill; these tests only ask for the preprocessing targets."""
    props = yaml.safe_load(SCHEMA.read_text()).get("properties", {})
    if "n_folds" in props.get("split", {}).get("properties", {}):
        cfg["split"] = {"n_folds": 2}
    return cfg


def run_snakemake(workdir: Path, cfg: dict, targets: list[str], *extra: str, timeout: int = 900):
    cfg_path = workdir / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    for var in ("OMP_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, "1")
    # --max-threads 1: two single-threaded jobs at a time on 2 cores instead of one job with 2 threads
    cmd = [sys.executable, "-m", "snakemake", "-s", str(PROJECT / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(cfg_path), "--cores", "2", "--max-threads", "1", *extra, *targets]
    return subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def fail_msg(res) -> str:
    return f"snakemake exited {res.returncode}\n--- stdout\n{res.stdout[-4000:]}\n--- stderr\n{res.stderr[-8000:]}"


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
