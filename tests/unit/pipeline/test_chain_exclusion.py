"""Exclusion inside the chain (voxflow.pipeline.chain.run_chain), in one process: a subject whose step fails is
excluded at that step with input.on_error: exclude, and stopped with on_error: stop (the workflow's runs of a
cohort with broken subjects: tests/workflow/test_cohort_exclusion.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def test_chain_excludes_a_subject_at_the_failing_step(tmp_path):
    """The chain's own handling, in one process: with dataset-level normalization it ends with to_zarr's check
    of the mask (step space_mask), so an empty mask excludes the subject there rather than failing a to_zarr
    job after the cohort's statistics; with on_error: stop the same error stops the job."""
    import SimpleITK as sitk

    from voxflow.inputs.images import InputError
    from voxflow.pipeline.chain import run_chain

    mask = tmp_path / "brain_mask.nii.gz"
    sitk.WriteImage(sitk.Image(8, 8, 8, sitk.sitkUInt8), str(mask))
    stale = tmp_path / "s1.zarr"
    stale.mkdir()  # a store of an earlier run: it must not survive the exclusion
    spec = {"name": "space_mask", "input": {"mask": str(mask)}, "output": {}, "config": {"space": "mni"}}
    out = {"status": str(tmp_path / "status" / "s1.json"), "qc": str(tmp_path / "qc" / "s1")}
    info = run_chain("s1", [spec], on_error="exclude", status=out["status"], store=str(stale), qc_dir=out["qc"])
    status = json.loads(Path(out["status"]).read_text())
    assert info["excluded"]["step"] == "space_mask" and status["status"] == "excluded"
    assert (status["step"], status["file"], status["problem"]) == ("space_mask", str(mask),
                                                                   "brain mask is empty in MNI space")
    assert not stale.exists() and Path(out["qc"]).is_dir()
    with pytest.raises(InputError, match="brain mask is empty in MNI space"):
        run_chain("s1", [spec], on_error="stop", status=out["status"], store=str(stale), qc_dir=out["qc"])
