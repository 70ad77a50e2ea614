"""The bad-input catalogue: every kind of broken input in one sample-sheet cohort, one broken subject per kind
beside two good ones (a copy of good1 damaged by the kind's function, which returns the file key and the problem
regex), and `voxflow validate` run on it in the test's process."""

from __future__ import annotations

import gzip
import shutil
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

MODS = ["t1", "t2"]
GOOD = ["good1", "good2"]
LABEL_VALUES = [0, 1, 2, 4]


def _nii(path: Path):
    img = nib.load(path)
    return np.asarray(img.dataobj), img.affine


def _save(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, path)


# Each kind damages a copy of good1 (folder d) and returns (file key, problem regex). The file key is a
# modality, "seg", "cell:<modality>" (an empty sheet cell) or "escape:<modality>" (a path out of the root).

def missing_file(d):
    (d / "t2.nii.gz").unlink()
    return "t2", r"^t2 image file is missing$"


def missing_label(d):
    (d / "seg.nii.gz").unlink()
    return "seg", r"^label file is missing$"


def empty_file(d):
    (d / "t1.nii.gz").write_bytes(b"")
    return "t1", r"^t1 image file is empty$"


def truncated_gzip(d):
    p = d / "t2.nii.gz"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    return "t2", r"^t2 image file is truncated or corrupt \(its gzip stream ends before"


def not_an_image(d):
    (d / "t1.nii.gz").write_bytes(np.random.default_rng(0).bytes(5000))
    return "t1", r"^cannot read t1 image \(truncated or corrupt\?\)"


def two_d(d):
    data, aff = _nii(d / "t1.nii.gz")
    _save(d / "t1.nii.gz", data[:, :, data.shape[2] // 2], aff)
    return "t1", r"^t1 image is 2D with size \(\d+, \d+\), expected a 3D volume$"


def four_d(d):
    data, aff = _nii(d / "t2.nii.gz")
    _save(d / "t2.nii.gz", np.stack([data, data], axis=-1), aff)
    return "t2", r"^t2 image is 4D with size \(\d+, \d+, \d+, 2\), expected a 3D volume$"


def vector_image(d):
    img = sitk.ReadImage(str(d / "t1.nii.gz"))
    sitk.WriteImage(sitk.Compose(img, img, img), str(d / "t1.nii.gz"))
    return "t1", r"^t1 image has 3 components per voxel, expected a scalar image$"


def nan_voxels(d):
    data, aff = _nii(d / "t2.nii.gz")
    data = data.astype(np.float32)
    data[10:13, 10, 10] = np.nan
    _save(d / "t2.nii.gz", data, aff)
    return "t2", r"^t2 image has 3 NaN/Inf voxels$"


def all_zero(d):
    data, aff = _nii(d / "t1.nii.gz")
    _save(d / "t1.nii.gz", np.zeros_like(data), aff)
    return "t1", r"^t1 image is constant \(all voxels = 0\): empty or failed export$"


def grid_mismatch(d):
    data, aff = _nii(d / "seg.nii.gz")
    aff = aff.copy()
    aff[0, 3] += 8.0
    _save(d / "seg.nii.gz", data, aff)
    return "seg", r"^label grid \(size .*\) does not match the reference image \(size .*\)$"


def wrong_label_values(d):
    data, aff = _nii(d / "seg.nii.gz")
    data = data.copy()
    data[0, 0, 0] = 3
    _save(d / "seg.nii.gz", data, aff)
    return "seg", r"^label values \[3\] not in the declared set \[0, 1, 2, 4\]$"


def non_integer_label(d):
    data, aff = _nii(d / "seg.nii.gz")
    data = data.astype(np.float32)
    data[0, 0, 0] = 0.5
    _save(d / "seg.nii.gz", data, aff)
    return "seg", r"^label has non-integer values$"


def non_orthogonal(d):
    data, aff = _nii(d / "t1.nii.gz")
    aff = aff.copy()
    aff[0, 1] = 0.8 * aff[1, 1]  # sheared: columns no longer orthogonal
    _save(d / "t1.nii.gz", data, aff)
    return "t1", r"^t1 image has non-orthogonal direction cosines"


def zero_spacing(d):
    """pixdim[1] = 0 in the raw header (nibabel and ITK would both silently 'fix' it to 1 mm)."""
    p = d / "t1.nii.gz"
    raw = bytearray(gzip.decompress(p.read_bytes()))
    struct.pack_into("<f", raw, 80, 0.0)  # pixdim[1]
    raw[252:256] = struct.pack("<hh", 1, 0)  # qform (built from pixdim) only
    p.write_bytes(gzip.compress(bytes(raw), 1))
    return "t1", r"^t1 image has invalid voxel spacing \(0\.0, .*\) \(pixdim in the NIfTI header\)$"


def implausible_spacing(d):
    data, aff = _nii(d / "t2.nii.gz")
    aff = aff.copy()
    aff[:3, 2] *= 10.0  # 30-60 mm slices
    _save(d / "t2.nii.gz", data, aff)
    return "t2", r"^t2 image has implausible voxel spacing \(.*\) mm$"


def spacing_in_metres(d):
    data, aff = _nii(d / "t1.nii.gz")
    aff = aff.copy()
    aff[:3, :3] *= 0.001
    _save(d / "t1.nii.gz", data, aff)
    return "t1", r"^t1 image has implausible voxel spacing \(0\.004, 0\.004, 0\.006\) mm$"


def modality_missing(d):
    return "cell:t2", r"^modality 't2' is missing for this subject \(empty cell in line \d+\)$"


def path_escapes_root(d):
    return "escape:t1", r"^path escapes the data root .* \(input\.root; default the sheet's folder; line \d+ of .*\)$"


KINDS = {f.__name__: f for f in (
    missing_file, missing_label, empty_file, truncated_gzip, not_an_image, two_d, four_d, vector_image,
    nan_voxels, all_zero, grid_mismatch, wrong_label_values, non_integer_label, non_orthogonal, zero_spacing,
    implausible_spacing, spacing_in_metres, modality_missing, path_escapes_root)}
HEADER_KINDS = {"missing_file", "missing_label", "empty_file", "not_an_image", "two_d", "four_d", "vector_image",
                "grid_mismatch", "non_orthogonal", "zero_spacing", "implausible_spacing", "spacing_in_metres",
                "modality_missing", "path_escapes_root"}  # found without reading voxels


def make_cohort(work: Path) -> dict:
    """data/<subject>/{t1,t2,seg}.nii.gz for two good subjects (4-6 mm demo scans) and one broken subject
    per kind, a sample sheet data/cohort.tsv, and a good scan outside the data root."""
    from voxflow.demo.mri import generate_subject

    data = work / "data"
    for i, s in enumerate(GOOD):
        generate_subject(s, i, data, work / "truth", modalities=MODS, spacing_scale=4.0)
    (work / "outside").mkdir()
    shutil.copy(data / "good1" / "t1.nii.gz", work / "outside" / "t1.nii.gz")
    rows, expected = [["subject", *MODS, "seg"]], {}
    for s in [*GOOD, *KINDS]:
        if s not in GOOD:
            shutil.copytree(data / "good1", data / s)
        key, problem = KINDS[s](data / s) if s in KINDS else (None, None)
        cells = {k: f"{s}/{k}.nii.gz" for k in [*MODS, "seg"]}
        sheet = data / "cohort.tsv"
        if key and key.startswith("cell:"):
            cells[key[5:]] = ""
            file = str(sheet)
        elif key and key.startswith("escape:"):
            cells[key[7:]] = "../outside/t1.nii.gz"
            file = cells[key[7:]]
        elif key:
            file = str(data / s / f"{key}.nii.gz")
        rows.append([s, *(cells[k] for k in [*MODS, "seg"])])
        if key:
            expected[s] = (file, problem)
    sheet.write_text("\n".join("\t".join(r) for r in rows) + "\n")
    cfg = {"output_dir": str(work / "results"), "split": {"n_folds": 2},
           "input": {"layout": "sheet", "sheet": str(sheet), "modalities": MODS, "label": "seg",
                     "label_values": LABEL_VALUES, "on_error": "stop"}}  # per-step jobs: ingest is a target
    return dict(work=work, data=data, sheet=sheet, cfg=cfg, expected=expected)


def _validate(cohort, *args: str) -> tuple[int, list[tuple[str, str, str]], str]:
    """`voxflow validate` in this process: exit code, TSV rows, stdout."""
    import contextlib
    import io

    import yaml

    from voxflow.cli import main

    cfg_path = cohort["work"] / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(cohort["cfg"]))
    out, buf = cohort["work"] / f"problems{len(args)}.tsv", io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["validate", str(cfg_path), "--out", str(out), "--base-config", "", *args])
    lines = out.read_text().splitlines()
    assert lines[0] == "subject\tfile\tproblem\tseverity"
    return rc, [tuple(ln.split("\t")) for ln in lines[1:]], buf.getvalue()


def validate_catalogue(cohort: dict) -> dict:
    """Full check (headers and voxels) with two processes, and a headers-only pass in this process."""
    return {"full": _validate(cohort, "--jobs", "2"), "headers": _validate(cohort, "--headers-only", "--jobs", "1")}
