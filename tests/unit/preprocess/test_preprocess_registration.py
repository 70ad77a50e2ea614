"""Registration: rigid co-registration recovers a known motion; native -> MNI -> native keeps a label."""

from __future__ import annotations

import numpy as np

from support.outputs import dice


def _affine_parts(tx):
    """(A, b) with tx(p) = A p + b, for any SimpleITK affine-like transform."""
    b = np.array(tx.TransformPoint((0.0, 0.0, 0.0)))
    A = np.stack([np.array(tx.TransformPoint(tuple(e))) - b for e in np.eye(3)], axis=1)
    return A, b


def _brain_points(img, mask_arr_zyx) -> np.ndarray:
    """Physical (LPS) coordinates, (N, 3), of the voxels of a (z,y,x) mask on `img`'s grid."""
    idx = np.argwhere(mask_arr_zyx > 0)[:, ::-1].astype(np.float64)  # -> (x, y, z) indices
    d = np.array(img.GetDirection()).reshape(3, 3)
    return np.array(img.GetOrigin()) + (idx * np.array(img.GetSpacing())) @ d.T


def test_rigid_recovers_known_motion(demo_subject, tmp_path):
    import ants
    import SimpleITK as sitk

    from voxflow.preprocess.coreg import rigid_to_reference

    paths = demo_subject(3.0)["paths"]  # t1 on 3 x 3 x 4.5 mm: the property holds on coarse grids too
    fixed = sitk.ReadImage(paths["t1"], sitk.sitkFloat32)
    brain = sitk.GetArrayFromImage(sitk.ReadImage(paths["brainmask"]))
    # truth: moving(y) = fixed(motion(y)), i.e. fixed point p sits at motion^-1(p) in the moving image
    motion = sitk.Euler3DTransform()
    motion.SetCenter(fixed.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in fixed.GetSize()]))
    motion.SetRotation(*np.deg2rad([4.0, -5.0, 3.0]))  # 7.1 degrees about an oblique axis
    motion.SetTranslation((7.0, -6.0, 5.0))  # 10.5 mm
    # the moving scan has its own grid: 3 mm isotropic, 20 mm larger on every side
    grid = sitk.Image([int(np.ceil((n * s + 40) / 3.0)) for n, s in zip(fixed.GetSize(), fixed.GetSpacing())],
                      sitk.sitkFloat32)
    grid.SetSpacing((3.0, 3.0, 3.0))
    grid.SetDirection(fixed.GetDirection())
    grid.SetOrigin(tuple(np.array(fixed.GetOrigin()) - 20.0))
    sitk.WriteImage(sitk.Resample(fixed, grid, motion, sitk.sitkLinear, 0.0), str(tmp_path / "moving.nii.gz"))

    files = rigid_to_reference(ants.image_read(paths["t1"]), ants.image_read(str(tmp_path / "moving.nii.gz")))
    assert len(files) == 1
    A_est, b_est = _affine_parts(sitk.ReadTransform(files[0]))  # ANTs: fixed point -> moving point
    A_true, b_true = _affine_parts(motion.GetInverse())
    pts = _brain_points(fixed, brain)
    disp = np.linalg.norm(pts @ (A_est - A_true).T + (b_est - b_true), axis=1)
    cos = np.clip((np.trace(A_est @ A_true.T) - 1) / 2, -1, 1)
    angle_err = np.degrees(np.arccos(cos))
    assert disp.max() < 1.0, f"max displacement error over the brain {disp.max():.2f} mm"
    assert angle_err < 1.0, f"rotation error {angle_err:.2f} degrees"
    # and it is a rigid transform
    np.testing.assert_allclose(A_est @ A_est.T, np.eye(3), atol=1e-4)
    # reproducible: the random metric sampling is seeded (antspyx ignores a random_seed= keyword)
    again = rigid_to_reference(ants.image_read(paths["t1"]), ants.image_read(str(tmp_path / "moving.nii.gz")))
    np.testing.assert_array_equal(sitk.ReadTransform(again[0]).GetParameters(),
                                  sitk.ReadTransform(files[0]).GetParameters())
    other_seed = rigid_to_reference(ants.image_read(paths["t1"]), ants.image_read(str(tmp_path / "moving.nii.gz")),
                                    seed=7)
    assert sitk.ReadTransform(other_seed[0]).GetParameters() != sitk.ReadTransform(files[0]).GetParameters()


def test_label_native_mni_native_roundtrip(demo_subject, tmp_path):
    import ants

    from voxflow.inputs.images import write_ants
    from voxflow.inference.predict import to_native
    from voxflow.preprocess.mni import keep_transforms, load_transforms, register_to_template, write_template

    paths = demo_subject(3.0)["paths"]
    write_template(2, str(tmp_path / "mni.nii.gz"), str(tmp_path / "mni_mask.nii.gz"))
    template, template_mask = (ants.image_read(str(tmp_path / n)) for n in ("mni.nii.gz", "mni_mask.nii.gz"))
    t1 = ants.image_read(paths["t1"])
    mask = ants.image_read(paths["brainmask"])
    reg = register_to_template(t1 * mask, template, "affine")  # skull-stripped brain, as in the workflow
    xfm = tmp_path / "xfm"
    spec = keep_transforms(reg, xfm)
    assert (xfm / "transforms.json").is_file() and all((xfm / n).is_file() for n in spec["native_to_mni"])
    assert not any(".tmp-" in p.name for p in xfm.iterdir())

    fwd, _ = load_transforms(xfm, "native_to_mni")  # the kept copies, not ANTs' temporary files
    in_mni = ants.apply_transforms(fixed=template, moving=mask, transformlist=fwd, interpolator="genericLabel")
    d_mni = dice(in_mni.numpy(), template_mask.numpy())
    assert d_mni > 0.9, f"brain mask in MNI vs the template's mask: Dice {d_mni:.3f} (registration failed?)"
    write_ants(in_mni.astype("uint8"), tmp_path / "mask_mni.nii.gz")

    # the way back the predictions take (voxflow.inference.predict.to_native), from the store's grid attributes
    meta = {"origin_xyz": list(template.origin), "spacing_zyx": list(template.spacing[::-1]),
            "direction": np.asarray(template.direction).ravel().tolist(),
            "transforms": {"dir": str(xfm), "native_reference": paths["t1"]}}
    back = to_native(in_mni.numpy().T, meta, is_label=True)
    assert back.shape == mask.shape
    assert set(np.unique(back)) <= {0, 1}
    d = dice(back, mask.numpy())
    assert d >= 0.95, f"native -> MNI -> native Dice {d:.3f}"

    # the test can tell: skipping the inversion of the affine puts the label somewhere else
    inv, _ = load_transforms(xfm, "mni_to_native")
    wrong = ants.apply_transforms(fixed=t1, moving=in_mni, transformlist=inv, whichtoinvert=[False] * len(inv),
                                  interpolator="genericLabel")
    assert dice(wrong.numpy(), mask.numpy()) < d - 0.1
