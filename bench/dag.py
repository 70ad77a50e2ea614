"""Benchmark: DAG building for a large cohort.

Writes a sample sheet of N subjects (default 10 000; two modalities and a label each, as empty
placeholder files: a dry run never opens them), then times `snakemake --dry-run` of the whole
workflow in a fresh process, as a user would run it: the per-subject chains, the checkpoint that
collects their status files and the cohort stages whose inputs are known before it (split, plans,
training, aggregation, report). Predictions and evaluation chunks are planned when the checkpoint
has run (they are those of the subjects not excluded): the second dry run times that, with the
preprocessing in place (placeholder status files), the DAG Snakemake builds again after the checkpoint.

Prints one final line:
  dag subjects=<n> jobs=<n> dry_run_s=<x> jobs_after_checkpoint=<n> after_checkpoint_s=<x>
Target: dry_run_s <= 60 for 10 000 subjects.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from common import ROOT as PROJECT


def write_cohort(root: Path, n: int, mods: list[str]) -> Path:
    """N subject folders with empty placeholder files, and the sample sheet that lists them."""
    lines = ["subject\t" + "\t".join(mods) + "\tseg"]
    for i in range(n):
        s = f"sub{i:05d}"
        d = root / "data" / s
        d.mkdir(parents=True)
        names = [f"{m}.nii.gz" for m in mods] + ["seg.nii.gz"]
        for name in names:
            (d / name).touch()
        lines.append(s + "\t" + "\t".join(f"data/{s}/{name}" for name in names))
    sheet = root / "cohort.tsv"
    sheet.write_text("\n".join(lines) + "\n")
    return sheet


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subjects", type=int, default=10_000)
    ap.add_argument("--keep", action="store_true", help="keep the temporary cohort folder")
    args = ap.parse_args()

    mods = ["t1", "flair"]
    tmp = Path(tempfile.mkdtemp(prefix="voxflow-dag-"))
    t0 = time.perf_counter()
    sheet = write_cohort(tmp, args.subjects, mods)
    print(f"  wrote {args.subjects} subjects in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    cfg = {"output_dir": str(tmp / "results"),
           "input": {"layout": "sheet", "sheet": str(sheet), "modalities": mods, "label": "seg"}}
    cfg_path = tmp / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(PROJECT / "Snakefile"), "--directory", str(tmp),
           "--configfile", str(cfg_path), "--cores", "2", "--dry-run", "--quiet", "rules"]
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    jobs, elapsed = dry_run(cmd, tmp, env)
    preprocessed(tmp / "results", [f"sub{i:05d}" for i in range(args.subjects)])
    # --rerun-triggers mtime: the placeholders have no Snakemake metadata
    after_jobs, after = dry_run([*cmd, "--rerun-triggers", "mtime"], tmp, env)
    if not args.keep:
        subprocess.run(["rm", "-rf", str(tmp)], check=False)
    if jobs < 0 or after_jobs < 0:
        return 1
    print(f"dag subjects={args.subjects} jobs={jobs} dry_run_s={elapsed:.2f} jobs_after_checkpoint={after_jobs} "
          f"after_checkpoint_s={after:.2f}")
    return 0


def dry_run(cmd: list[str], tmp: Path, env: dict) -> tuple[int, float]:
    """(jobs, seconds) of one dry run; jobs -1 when it failed."""
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - t0
    if res.returncode != 0:
        print(res.stdout[-3000:], res.stderr[-5000:], file=sys.stderr)
        return -1, elapsed
    # `--quiet rules` prints the job-count table: "total  <n>"
    m = re.search(r"^total\s+(\d+)", res.stdout + res.stderr, re.M)
    print((res.stdout + res.stderr)[-1500:], file=sys.stderr)
    return (int(m.group(1)) if m else -1), elapsed


def preprocessed(out: Path, subjects: list[str]) -> None:
    """The preprocessing as done, in placeholders written in the workflow's order of time: the MNI template,
    every subject's status file, status/cohort.json (the checkpoint's output)."""
    from voxflow.pipeline.status import merge_status, write_status

    (out / "template").mkdir(parents=True, exist_ok=True)
    for name in (f"mni152_{r}mm{m}.nii.gz" for r in (1, 2, 3) for m in ("", "_mask")):
        (out / "template" / name).touch()
    time.sleep(0.01)
    status = [str(out / "status" / "subjects" / f"{s}.json") for s in subjects]
    for s, p in zip(subjects, status):
        write_status(p, s, store=str(out / "zarr" / f"{s}.zarr"))
    merge_status(status, str(out / "status" / "cohort.json"))


if __name__ == "__main__":
    sys.exit(main())
