"""The CT path's building blocks: the generated CT cohort, the body mask and crop, resampling with a
separately handled coarse slice axis, per-class label resampling, and non-local-means denoising."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from voxflow.preprocess.native import body_mask, native_subject, resample, resample_labels, separate_axis


@pytest.fixture(scope="module")
def ct_subject(tmp_path_factory):
    from voxflow.demo.ct import generate_ct_subject

    root = tmp_path_factory.mktemp("ct")
    return generate_ct_subject("ct000", 0, root, spacing=(1.0, 1.0, 5.0), fov_mm=(360.0, 280.0, 80.0))


def test_generated_ct_is_a_torso_in_hounsfield_units(ct_subject, tmp_path):
    from voxflow.demo.ct import generate_ct_subject

    img = nib.load(ct_subject["paths"]["ct"])
    hu, lab = np.asarray(img.dataobj), np.asarray(nib.load(ct_subject["paths"]["seg"]).dataobj)
    assert img.get_data_dtype() == np.int16 and hu.shape == lab.shape == (360, 280, 16)
    assert np.allclose(img.header.get_zooms(), (1.0, 1.0, 5.0))
    assert nib.aff2axcodes(img.affine) == ("R", "A", "S")  # stored RAS: ingest must reorient it
    assert set(np.unique(lab)) == {0, 1, 2}
    assert abs(np.median(hu[0]) + 1000) < 10  # air at the border
    assert 45 < np.median(hu[lab == 1]) < 75 and 10 < np.median(hu[lab == 2]) < 40  # liver, hypodense lesion
    assert (hu > 600).sum() > 1000  # bone
    assert ct_subject["truth"]["liver_ml"] == pytest.approx((lab == 1).sum() * 5e-3)
    again = generate_ct_subject("ct000", 0, tmp_path, spacing=(1.0, 1.0, 5.0), fov_mm=(360.0, 280.0, 80.0))
    assert np.array_equal(np.asarray(nib.load(again["paths"]["ct"]).dataobj), hu)  # deterministic


def test_body_mask_drops_table_and_fills_gas_open_to_the_end_slices():
    _z, y, x = np.mgrid[0:6, 0:60, 0:60]
    arr = np.full((6, 60, 60), -1000.0)
    body = (y - 25) ** 2 + (x - 30) ** 2 < 20 ** 2
    arr[body] = 40
    arr[(y - 25) ** 2 + (x - 30) ** 2 < 6 ** 2] = -900  # gas/lung running through every slice
    arr[(y >= 50) & (y < 53)] = 100  # table plate below the body
    m = body_mask(arr, -500)
    assert np.array_equal(m, body)  # gas inside, table outside


def test_coarse_axis_is_resampled_by_nearest_neighbour_in_plane_smoothly():
    arr = np.zeros((8, 20, 20), np.float32)  # (z, y, x): slice k has value 100 k plus an x ramp
    arr += (100 * np.arange(8))[:, None, None] + np.arange(20)[None, None, :]
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((1.0, 1.0, 5.0))
    assert separate_axis((1, 1, 5), (1.5, 1.5, 2.5), 3.0) == 2 and separate_axis((1, 1, 1.5), (1, 1, 1), 3) is None
    out, axis = resample(img, (1.5, 1.5, 2.5), "linear", 3.0)
    res = sitk.GetArrayFromImage(out)
    assert axis == 2 and res.shape == (16, 13, 13) and out.GetSpacing() == (1.5, 1.5, 2.5)
    slice_level = (res[:, 6, :] // 100) * 100  # every output slice is one input slice: no blending across 5 mm
    assert np.allclose(res[:, 6, :] - slice_level, res[0, 6, :])
    assert set(np.unique(slice_level)) == set(range(0, 800, 100))
    ramp = res[0, 6, :]
    assert np.allclose(np.diff(ramp), 1.5) and np.any(ramp % 1 > 0.1)  # in-plane: interpolated, not nearest
    iso = sitk.GetImageFromArray(arr)
    iso.SetSpacing((1.0, 1.0, 1.5))  # not anisotropic: one 3D interpolation, slices blend
    res3 = sitk.GetArrayFromImage(resample(iso, (1.0, 1.0, 1.0), "linear", 3.0)[0])
    assert np.any((res3[:, 6, 0] % 100) > 1)


def test_label_resampling_keeps_class_volumes():
    z, y, x = np.mgrid[0:12, 0:80, 0:80]
    lab = np.zeros((12, 80, 80), np.uint8)
    lab[((y - 40) / 30.0) ** 2 + ((x - 40) / 25.0) ** 2 + ((z - 6) / 5.0) ** 2 < 1] = 1
    lab[((y - 45) / 8.0) ** 2 + ((x - 35) / 8.0) ** 2 + ((z - 6) / 2.0) ** 2 < 1] = 2
    img = sitk.GetImageFromArray(lab)
    img.SetSpacing((0.8, 0.8, 5.0))
    out = sitk.GetArrayFromImage(resample_labels(img, [1, 2], (1.2, 1.2, 2.5)))
    assert out.shape == (24, 53, 53)
    for c in (1, 2):  # the lesion is 16 voxels across in-plane: its rim is a large part of its volume
        before, after = (lab == c).sum() * 0.8 * 0.8 * 5, (out == c).sum() * 1.2 * 1.2 * 2.5
        assert after == pytest.approx(before, rel=0.05), c


def test_native_subject_crops_to_the_body_and_keeps_the_way_back(ct_subject, tmp_path):
    from voxflow.preprocess.ingest import ingest_subject

    ing = tmp_path / "ingest"
    ingest_subject("ct000", {"ct": ct_subject["paths"]["ct"]}, {"ct": ing / "ct.nii"}, "ct",
                   label=ct_subject["paths"]["seg"], out_label=str(ing / "label.nii.gz"), label_values={0, 1, 2})
    nat = tmp_path / "native"
    info = native_subject("ct000", {"ct": str(ing / "ct.nii")}, "ct", {"ct": "ct"}, None, str(ing / "label.nii.gz"),
                          {"ct": str(nat / "ct.nii")}, str(nat / "mask.nii.gz"), str(nat / "label.nii.gz"),
                          str(nat / "xfm"), (1.5, 1.5, 2.5), margin_mm=10.0)
    img = sitk.ReadImage(str(nat / "ct.nii"))
    assert img.GetSpacing() == (1.5, 1.5, 2.5) and info["separate_axis"] == 2
    # the crop: the body plus 10 mm; the table (15 mm behind the body) and most of the air are gone
    raw = sitk.DICOMOrient(sitk.ReadImage(ct_subject["paths"]["ct"]), "LPS")
    body = body_mask(sitk.GetArrayFromImage(raw), -500)
    ys = np.flatnonzero(body.any(axis=(0, 2)))
    y0 = raw.GetOrigin()[1] + ys[0] * 1.0
    y1 = raw.GetOrigin()[1] + ys[-1] * 1.0
    oy, ny = img.GetOrigin()[1], img.GetSize()[1]
    assert abs((y0 - oy) - 10) < 2 and abs((oy + (ny - 1) * 1.5 - y1) - 10) < 2
    assert np.prod(img.GetSize()) * 1.5 * 1.5 * 2.5 < 0.8 * 360 * 280 * 80
    lab = sitk.GetArrayFromImage(sitk.ReadImage(str(nat / "label.nii.gz")))
    for c, key in ((1, "liver_ml"), (2, "lesion_ml")):
        assert (lab == c).sum() * 1.5 * 1.5 * 2.5 / 1000 == pytest.approx(ct_subject["truth"][key], rel=0.05)
    spec = json.loads((nat / "xfm" / "transforms.json").read_text())
    assert spec["mni_to_native"] == ["identity.mat"] and (nat / "xfm" / "identity.mat").is_file()
    assert spec["crop"]["size_xyz"][1] < 280


@pytest.mark.parametrize("model,levels", [("Gaussian", (-100.0, 60.0)), ("Rician", (100.0, 300.0))])
def test_nlm_denoise_lowers_noise_and_keeps_the_edge(model, levels):
    import ants

    from voxflow.preprocess.denoise import nlm_denoise

    rng = np.random.default_rng(0)
    clean = np.full((40, 40, 12), levels[0], np.float32)
    clean[20:] = levels[1]
    if model == "Gaussian":  # CT-like: negative values, additive noise
        noisy = clean + rng.normal(0, 15, clean.shape).astype(np.float32)
    else:  # MR magnitude: Rician
        noisy = np.abs(clean + rng.normal(0, 15, clean.shape) + 1j * rng.normal(0, 15, clean.shape)).astype(np.float32)
    out = nlm_denoise(ants.from_numpy(noisy, spacing=(1.0, 1.0, 3.0), origin=(5.0, 6.0, 7.0)), model)
    assert out.spacing == (1.0, 1.0, 3.0) and out.origin == (5.0, 6.0, 7.0)
    den = out.numpy()
    flat = (slice(2, 16), slice(None), slice(None))
    assert den[flat].std() < 0.5 * noisy[flat].std()
    step = levels[1] - levels[0]
    profile = den[16:24].mean(axis=(1, 2))  # mean across the edge between x=19 and x=20
    assert abs(profile[3] - levels[0]) < 0.1 * step and abs(profile[4] - levels[1]) < 0.1 * step
    assert abs(den[24:38].mean() - noisy[24:38].mean()) < 0.03 * step


def test_denoise_step_filters_the_chosen_modalities_only(tmp_path):
    """The step as the rule calls it (preprocess.denoise plus the modality types): CT denoised with the
    Gaussian model (auto), the MR modality left out of `modalities` is copied unchanged."""
    from voxflow.pipeline.registry import step_function

    rng = np.random.default_rng(1)
    vols = {"ct": np.where(np.arange(32)[:, None, None] < 16, -100.0, 60.0) + rng.normal(0, 15, (32, 32, 10)),
            "t1": 200 + rng.normal(0, 15, (32, 32, 10))}
    inp, out = {}, {}
    for m, arr in vols.items():
        img = sitk.GetImageFromArray(arr.astype(np.float32))
        img.SetSpacing((1.0, 1.0, 3.0))
        inp[f"img_{m}"], out[f"img_{m}"] = str(tmp_path / f"in_{m}.nii"), str(tmp_path / "denoise" / f"{m}.nii")
        sitk.WriteImage(img, inp[f"img_{m}"])
    cfg = {"enabled": True, "modalities": ["ct"], "noise_model": "auto", "patch_radius": 1, "search_radius": 2,
           "shrink_factor": 1, "modality_types": {"ct": "ct"}, "modalities_to_denoise": ["ct"]}
    info = step_function("denoise")("s1", inp, out, cfg)
    assert info["ct"]["noise_model"] == "Gaussian" and info["t1"] == "not denoised"
    ct = sitk.GetArrayFromImage(sitk.ReadImage(out["img_ct"]))
    assert ct[2:14].std() < 0.5 * vols["ct"][2:14].std() and abs(ct[2:14].mean() + 100) < 3  # flat -100 HU half
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(out["img_t1"])),
                          sitk.GetArrayFromImage(sitk.ReadImage(inp["img_t1"])))


def test_native_subject_names_subject_file_and_problem(tmp_path):
    from voxflow.inputs.images import InputError

    arr = np.full((6, 40, 40), -1000.0, np.float32)
    arr[:, 10:30, 10:30] = 40.0
    lab = np.zeros(arr.shape, np.uint8)
    lab[2, 1, 1] = 1  # in the air, 9 voxels from the body: outside a 5 mm crop box
    paths = {}
    for name, a in (("ct", arr), ("air", np.full(arr.shape, -1000.0, np.float32)), ("label", lab)):
        img = sitk.GetImageFromArray(a)
        paths[name] = str(tmp_path / f"{name}.nii.gz")
        sitk.WriteImage(img, paths[name])
    outs = ({"ct": str(tmp_path / "o" / "ct.nii")}, str(tmp_path / "o" / "mask.nii.gz"),
            str(tmp_path / "o" / "label.nii.gz"), str(tmp_path / "o" / "xfm"))
    with pytest.raises(InputError, match=r"subject=s7 file=.*label\.nii\.gz: 1 labelled voxels lie outside"):
        native_subject("s7", {"ct": paths["ct"]}, "ct", {"ct": "ct"}, None, paths["label"], *outs, (1, 1, 1),
                       margin_mm=5.0)
    assert not (tmp_path / "o").exists()  # checked before anything is written
    with pytest.raises(InputError, match=r"subject=s7 file=.*air\.nii\.gz: no voxel above -500 HU"):
        native_subject("s7", {"ct": paths["air"]}, "ct", {"ct": "ct"}, None, None, *outs, (1, 1, 1))
