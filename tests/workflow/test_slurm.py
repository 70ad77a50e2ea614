"""The workflow on a real SLURM cluster: a single-node cluster on loopback (.ci/slurm.sh), the tiny
demo submitted through snakemake-executor-plugin-slurm with the project's profile
(workflow/profiles/slurm: grouped per-subject chain, retries), and outputs equal to a local run's.

Needs root and Debian's slurmctld/slurmd/slurm-client/munge (`.ci/run` installs them); skipped
with the reason otherwise. The daemons are stopped by PID at the end.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from support.paths import PROJECT
from support.workflow import fail_msg, run_snakemake, small_training_split
from voxflow.core.stores import read_subject_store

SUBJECTS = ["demo000", "demo001"]


@pytest.fixture(scope="module")
def slurm_conf(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("the SLURM test starts munged/slurmctld/slurmd and needs root")
    if not (shutil.which("slurmctld") and shutil.which("slurmd") and shutil.which("munged")):
        pytest.skip("SLURM is not installed (`.ci/run` installs slurmctld slurmd slurm-client munge as root)")
    state = tmp_path_factory.mktemp("slurm")
    up = subprocess.run([str(PROJECT / ".ci" / "slurm.sh"), "up", str(state)], capture_output=True, text=True,
                        timeout=120, check=False)
    try:
        assert up.returncode == 0, f"cluster did not start:\n{up.stdout}\n{up.stderr}"
        yield state / "slurm.conf"
    finally:
        subprocess.run([str(PROJECT / ".ci" / "slurm.sh"), "down", str(state)], timeout=60, check=False)


def _config(out: Path) -> dict:
    return small_training_split({
        "output_dir": str(out),
        # one job per step, grouped into one SLURM job per 4 subjects (with on_error: exclude the chain
        # is one job per subject, grouped the same way)
        "input": {"layout": "demo", "modalities": ["t1", "flair"], "on_error": "stop"},
        "demo": {"n_subjects": len(SUBJECTS), "spacing_scale": 4.0},
        "preprocess": {"mni": {"resolution_mm": 2}},
    }, len(SUBJECTS))


def _targets(out: Path) -> list[str]:
    return [str(out / "zarr" / f"{s}.zarr") for s in SUBJECTS]


def test_demo_on_slurm_equals_local_run(tmp_path, slurm_conf):
    local_dir, slurm_dir = tmp_path / "local", tmp_path / "slurm"
    local_dir.mkdir(), slurm_dir.mkdir()
    res = run_snakemake(local_dir, _config(local_dir / "results"), _targets(local_dir / "results"))
    assert res.returncode == 0, fail_msg(res)

    os.environ["SLURM_CONF"] = str(slurm_conf)
    try:
        res = run_snakemake(
            slurm_dir, _config(slurm_dir / "results"), _targets(slurm_dir / "results"),
            "--workflow-profile", str(PROJECT / "workflow" / "profiles" / "slurm"),
            "--slurm-status-command", "squeue", "--slurm-no-account", "--slurm-init-seconds-before-status-checks", "2",
            "--retries", "0", timeout=900)
    finally:
        del os.environ["SLURM_CONF"]
    assert res.returncode == 0, fail_msg(res)
    log = res.stdout + res.stderr
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+) \(log: ([^)]*)\)", log)
    assert submitted, f"snakemake did not submit through the SLURM executor:\n{log[-3000:]}"
    # grouped: a subject's chain (validate, ingest ... to_zarr) ran as one SLURM job, not one per step
    group_jobs = [p for _, p in submitted if "group_subject_chain" in p]
    assert len(group_jobs) == 1, submitted  # group-components: 4 subjects per job, 2 subjects here
    finished = re.findall(r"Finished jobid: \d+ \(Rule: (\w+)\)", log)
    assert len(finished) >= 6 * len(SUBJECTS) > len(submitted), (finished, submitted)

    for s in SUBJECTS:
        a = read_subject_store(local_dir / "results" / "zarr" / f"{s}.zarr")
        b = read_subject_store(slurm_dir / "results" / "zarr" / f"{s}.zarr")
        for key in ("label", "mask"):
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{s}/{key}")
        np.testing.assert_allclose(a["image"].astype(np.float32), b["image"].astype(np.float32), atol=1e-3,
                                   err_msg=f"{s}/image")
        for k in ("spacing_zyx", "origin_xyz", "direction", "modalities", "label_classes"):
            assert a["meta"][k] == b["meta"][k], k
