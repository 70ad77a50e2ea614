"""N4 bias-field correction (voxflow.preprocess.n4) against a known multiplicative field."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def biased(tmp_path_factory):
    """nilearn's MNI152 template at 2 mm times a smooth known field (0.56..1.5), and its WM (> 0.9)."""
    import nibabel as nib
    from nilearn import datasets

    tpl = datasets.load_mni152_template(resolution=2)
    arr = np.asarray(tpl.get_fdata(), np.float32)
    wm = np.asarray(datasets.load_mni152_wm_template(resolution=2).get_fdata()) > 0.9
    ijk = np.indices(arr.shape).reshape(3, -1)
    x, y, z = (tpl.affine[:3, :3] @ ijk + tpl.affine[:3, 3:4]).reshape(3, *arr.shape) / 80.0
    log_field = (0.25 * x - 0.2 * y + 0.15 * z + 0.12 * x * y - 0.1 * z**2).astype(np.float32)
    path = tmp_path_factory.mktemp("n4") / "biased.nii.gz"
    nib.save(nib.Nifti1Image(arr * np.exp(log_field), tpl.affine), path)
    return dict(path=path, clean=arr, wm=wm, log_field=log_field)


def cv(a: np.ndarray, m: np.ndarray) -> float:
    return float(a[m].std() / a[m].mean())


def test_n4_halves_white_matter_cv(biased):
    import ants

    from voxflow.preprocess.n4 import n4_correct

    img = ants.image_read(str(biased["path"]))
    corrected, bias = n4_correct(img)  # the defaults: head mask, 6 mm fit grid, (30, 20), 100 mm splines
    wm = biased["wm"]
    before, after = cv(img.numpy(), wm), cv(corrected.numpy(), wm)
    assert before > 2 * cv(biased["clean"], wm), "the synthetic field should dominate WM variation"
    assert after <= 0.5 * before, f"WM coefficient of variation {before:.4f} -> {after:.4f}: not halved"
    # corrected image on the input grid; the field on the coarse fit grid (>= 6 mm), and corrected x
    # field (log-linearly interpolated to the input grid) gives back the input
    assert corrected.shape == img.shape
    assert np.allclose(corrected.spacing, img.spacing) and np.allclose(corrected.origin, img.origin)
    assert min(bias.spacing) >= 6.0 - 1e-6
    log_full = ants.resample_image_to_target(bias.new_image_like(np.log(bias.numpy())), img, interp_type="linear")
    bias = log_full.new_image_like(np.exp(log_full.numpy()))
    np.testing.assert_allclose(corrected.numpy() * bias.numpy(), img.numpy(), rtol=1e-4, atol=1e-3)
    # the estimated field has the shape of the true one (up to a global scale, which N4 cannot know)
    r = np.corrcoef(np.log(bias.numpy()[wm]), biased["log_field"][wm])[0, 1]
    assert r > 0.9, f"estimated vs true log field correlation {r:.3f}"
