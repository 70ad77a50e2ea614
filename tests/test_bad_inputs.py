"""Bad-input catalogue: every kind of broken input in one sample-sheet cohort, one broken subject per
kind beside two good ones. Per kind: `voxflow validate` reports exactly one row naming the subject,
the file and the problem; under `snakemake --keep-going` that subject's ingest fails with the same
text as a one-line error, while the good subjects are ingested (one run for the whole catalogue, asking
for ingest only: the rest of the chain is the same for every subject that passes it, and
test_preprocess_workflow runs it under --keep-going through the zarr stores).

Config-level problems (duplicated subject IDs, an invalid key or value) stop the whole run by
design, with one line naming the key: `test_config_level_errors_stop_the_run`.
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from conftest import VENV_BIN, tmp_names_under
from test_preprocess_workflow import _fail_msg, run_snakemake

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


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """data/<subject>/{t1,t2,seg}.nii.gz for two good subjects (4-6 mm demo scans) and one broken subject
    per kind, a sample sheet data/cohort.tsv, and a good scan outside the data root."""
    from voxflow.demo.mri import generate_subject

    work = tmp_path_factory.mktemp("bad_inputs")
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


@pytest.fixture(scope="module")
def validated(cohort):
    """Full check (headers and voxels) with two processes, and a headers-only pass in this process."""
    return {"full": _validate(cohort, "--jobs", "2"), "headers": _validate(cohort, "--headers-only", "--jobs", "1")}


@pytest.fixture(scope="module")
def workflow_run(cohort):
    """One `snakemake --keep-going` run asking for every subject's ingested files and the cohort table."""
    out = Path(cohort["cfg"]["output_dir"])
    subjects = [*GOOD, *KINDS]
    targets = [str(out / "preprocess" / s / "ingest" / "info.json") for s in subjects]
    targets.append(str(out / "validation" / "problems.tsv"))
    res = run_snakemake(cohort["work"], cohort["cfg"], targets, "--keep-going")
    errors = [ln.strip() for ln in (res.stdout + res.stderr).splitlines() if "voxflow ERROR" in ln]
    return dict(res=res, out=out, errors=errors)


def test_catalogue_has_enough_kinds():
    assert len(KINDS) >= 12


@pytest.mark.parametrize("kind", list(KINDS))
def test_validate_reports_one_row(kind, cohort, validated):
    rc, rows, text = validated["full"]
    assert rc == 1
    mine = [r for r in rows if r[0] == kind]
    assert len(mine) == 1, f"{kind}: {mine}"
    file, problem = cohort["expected"][kind]
    assert mine[0][1] == file
    assert re.search(problem, mine[0][2]), f"{kind}: {mine[0][2]!r} does not match {problem!r}"
    assert f"{kind}  " in text and mine[0][2] in text  # the printed table holds the row
    # header-level kinds are found, with the same message, by the fast pass that reads no voxels
    _, header_rows, _ = validated["headers"]
    if kind in HEADER_KINDS:
        assert [r for r in header_rows if r[0] == kind] == mine
    else:
        assert not [r for r in header_rows if r[0] == kind], "a voxel-level kind found from the header alone?"


def test_validate_good_subjects_and_summary(cohort, validated):
    _rc, rows, text = validated["full"]
    assert not [r for r in rows if r[0] in GOOD]
    assert {r[0] for r in rows} == set(KINDS)
    n = len(GOOD) + len(KINDS)
    assert re.search(rf"voxflow validate: {len(KINDS)} of {n} subjects have problems \({len(KINDS)} problems; "
                     r"headers and voxels\) in [\d.]+ s", text), text


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(KINDS))
def test_workflow_fails_only_that_subject(kind, cohort, validated, workflow_run):
    res, out, errors = workflow_run["res"], workflow_run["out"], workflow_run["errors"]
    file, _ = cohort["expected"][kind]
    (row,) = [r for r in validated["full"][1] if r[0] == kind]
    line = f"voxflow ERROR [ingest] subject={kind} file={file}: {row[2]}"
    mine = [ln for ln in errors if f"subject={kind} " in ln]
    assert mine and set(mine) == {line}, f"{kind}: {mine}\n{_fail_msg(res)}"
    log = (out / "logs" / "ingest" / f"{kind}.log").read_text().strip().splitlines()
    assert log[-1] == line  # the same line closes the job's log
    assert not (out / "preprocess" / kind).exists() or not list((out / "preprocess" / kind).rglob("*"))


@pytest.mark.slow
def test_workflow_good_subjects_complete_and_table_matches(cohort, validated, workflow_run):
    res, out, errors = workflow_run["res"], workflow_run["out"], workflow_run["errors"]
    assert res.returncode != 0, _fail_msg(res)
    for s in GOOD:
        ingest = out / "preprocess" / s / "ingest"
        assert sorted(json.loads((ingest / "info.json").read_text())["modalities"]) == sorted(MODS), _fail_msg(res)
        label = sitk.GetArrayFromImage(sitk.ReadImage(str(ingest / "label.nii.gz")))
        assert set(np.unique(label)) <= set(LABEL_VALUES) and (label > 0).sum() > 20
        assert np.ptp(sitk.GetArrayFromImage(sitk.ReadImage(str(ingest / "t1.nii")))) > 0
    assert not [ln for ln in errors if "subject=good" in ln]
    assert {re.search(r"subject=(\S+) ", ln).group(1) for ln in errors} == set(KINDS)
    # the cohort table of the workflow is `voxflow validate`'s table; its text went to the console
    lines = (out / "validation" / "problems.tsv").read_text().splitlines()
    assert [tuple(ln.split("\t")) for ln in lines[1:]] == validated["full"][1]
    text = (out / "validation" / "problems.txt").read_text()
    assert text.splitlines()[-1] in res.stderr
    assert tmp_names_under(out) == [] and tmp_names_under(cohort["data"]) == []
    # the file outside the data root was never read: no job log names it
    assert not [p for p in (out / "logs").rglob("*.log") if "outside/t1.nii.gz" in p.read_text()
                and "path escapes" not in p.read_text()]


def test_config_level_errors_stop_the_run(tmp_path, capsys):
    """Duplicated subject IDs or a bad config value are the config's problem: `voxflow validate` exits 2
    and Snakemake builds no DAG, with one line naming the key (and the allowed values)."""
    import yaml

    from voxflow.cli import main

    data = tmp_path / "data"
    data.mkdir()
    sheet = data / "cohort.csv"
    sheet.write_text("subject,t1\ns1,s1/t1.nii.gz\ns2,s2/t1.nii.gz\ns1,s1b/t1.nii.gz\n")
    dup = {"input": {"layout": "sheet", "sheet": str(sheet), "modalities": ["t1"], "label": None}}
    bad_value = {"input": {"layout": "folders", "root": str(data)}, "preprocess": {"skullstrip": {"method": "bet"}}}
    cases = [(dup, f"config error at 'input.sheet': duplicated subject IDs in {sheet}: s1 (lines 2, 4)"),
             (bad_value, "config error at 'preprocess.skullstrip.method': 'bet' is not allowed; allowed values: "
                         "['deepbet', 'template', 'none']")]
    for cfg, message in cases:
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(cfg))
        assert main(["validate", str(path), "--base-config", ""]) == 2
        err = capsys.readouterr().err
        assert f"voxflow ERROR [config] {message}\n" in err, err
        res = run_snakemake(tmp_path, cfg, [], "-n")
        assert res.returncode != 0 and message in res.stdout + res.stderr, _fail_msg(res)
        assert "localrule" not in res.stdout + res.stderr and "rule validate" not in res.stdout + res.stderr


def test_validate_cli_exit_code_zero_when_clean(cohort, tmp_path):
    """A clean cohort (the two good subjects): exit 0, empty TSV, run as a user runs it (console script)."""
    import subprocess

    import yaml

    cfg = dict(cohort["cfg"], input=dict(cohort["cfg"]["input"], subjects=GOOD))
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = subprocess.run([str(VENV_BIN / "voxflow"), "validate", str(path), "--out", str(tmp_path / "p.tsv")],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.startswith("voxflow validate: all 2 subjects OK (headers and voxels)")
    assert (tmp_path / "p.tsv").read_text() == "subject\tfile\tproblem\tseverity\n"
