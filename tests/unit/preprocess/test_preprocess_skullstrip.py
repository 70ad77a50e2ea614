"""Skull stripping (voxflow.preprocess.skullstrip) on a demo head, and the real-data chain
ingest -> coreg -> N4 -> deepbet on TCGA-FG-6692 against HD-BET's mask."""

from __future__ import annotations

import numpy as np
import pytest

from support.outputs import dice
from support.paths import SCHEMA


def test_deepbet_on_demo_subject(demo_subject, tmp_path):
    import ants

    from voxflow.preprocess.skullstrip import strip_subject

    paths = demo_subject(2.0)["paths"]  # the demo's default resolution (t1 2 x 2 x 3 mm), skull and scalp included
    info = strip_subject({"t1": paths["t1"]}, "t1", {"t1": str(tmp_path / "t1_brain.nii.gz")},
                         str(tmp_path / "mask.nii.gz"), "deepbet")
    assert info["method"] == "deepbet"
    mask = ants.image_read(str(tmp_path / "mask.nii.gz"))
    truth = ants.image_read(paths["brainmask"])
    assert mask.shape == truth.shape and np.allclose(mask.origin, truth.origin)
    d = dice(mask.numpy(), truth.numpy())
    assert d >= 0.95, f"deepbet vs true brain mask: Dice {d:.3f}"
    # the mask is applied: zero outside, unchanged inside
    t1, brain = ants.image_read(paths["t1"]).numpy(), ants.image_read(str(tmp_path / "t1_brain.nii.gz")).numpy()
    m = mask.numpy() > 0
    assert np.all(brain[~m] == 0) and np.allclose(brain[m], t1[m])
    assert info["brain_volume_ml"] == pytest.approx(m.sum() * np.prod(mask.spacing) / 1000)


def test_none_method_keeps_nonzero_region(tmp_path):
    """For inputs that arrive skull-stripped: the mask is the non-zero region (largest component, filled)."""
    import ants

    from voxflow.preprocess.skullstrip import strip_subject

    zz, yy, xx = np.indices((30, 32, 28))
    ball = ((zz - 15) ** 2 + (yy - 16) ** 2 + (xx - 14) ** 2) < 10**2
    arr = np.where(ball, 1.0 + 0.01 * xx, 0.0).astype(np.float32)
    arr[15, 16, 14] = 0.0  # a hole: filled
    arr[1, 1, 1] = 5.0  # a speck outside: dropped
    ants.from_numpy(arr, spacing=(2.0, 2.0, 2.0)).to_file(str(tmp_path / "t1.nii.gz"))
    strip_subject({"t1": str(tmp_path / "t1.nii.gz")}, "t1", {"t1": str(tmp_path / "b.nii.gz")},
                  str(tmp_path / "m.nii.gz"), "none")
    np.testing.assert_array_equal(ants.image_read(str(tmp_path / "m.nii.gz")).numpy() > 0, ball)


@pytest.mark.realdata
def test_real_chain_brain_mask_matches_hdbet(tcga, tmp_path):
    import ants

    from voxflow.settings import validate_config
    from voxflow.preprocess.coreg import coregister_subject
    from voxflow.preprocess.ingest import ingest_subject
    from voxflow.preprocess.n4 import correct_subject
    from voxflow.preprocess.skullstrip import strip_subject

    # t1c (reference, 0.9 x 0.9 x 5.5 mm with skull and neck) plus the two sequences on other grids
    mods = ["t1c", "t2", "flair"]
    out = {step: {m: str(tmp_path / step / f"{m}.nii.gz") for m in mods}
           for step in ("ingest", "coreg", "n4", "brain")}
    ingest_subject("TCGA-FG-6692", {m: str(tcga / f"{m}.nii.gz") for m in mods}, out["ingest"], "t1c")
    coregister_subject("TCGA-FG-6692", out["ingest"], "t1c", out["coreg"],
                       {m: str(tmp_path / "coreg" / f"{m}_to_t1c.mat") for m in mods})
    n4 = validate_config({}, SCHEMA)["preprocess"]["n4"]  # the workflow's defaults
    correct_subject(out["coreg"], out["n4"], {m: str(tmp_path / "n4" / f"{m}_bias.nii.gz") for m in mods},
                    {}, n4["fit_spacing_mm"], n4["iterations"], n4["spline_distance_mm"])
    strip_subject(out["n4"], "t1c", out["brain"], str(tmp_path / "brain" / "mask.nii.gz"), "deepbet")

    mask = ants.image_read(str(tmp_path / "brain" / "mask.nii.gz"))
    ref = ants.image_read(out["ingest"]["t1c"])
    assert mask.shape == ref.shape  # on the (reoriented) reference grid
    for m in mods:  # every modality ends on the reference grid
        assert ants.image_read(out["brain"][m]).shape == ref.shape
    # HD-BET's mask lives on the raw (LAS) t1c grid: same physical space, other axis order
    hdbet = ants.resample_image_to_target(ants.image_read(str(tcga / "t1c_brainmask_hdbet.nii.gz")), mask,
                                          interp_type="nearestNeighbor")
    d = dice(mask.numpy(), hdbet.numpy())
    assert d >= 0.90, f"brain mask vs HD-BET: Dice {d:.3f}"
