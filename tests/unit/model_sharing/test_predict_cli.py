"""`voxflow export-model` and `voxflow predict`: a trained model as one archive, and one command that
predicts new scans with it.

Archive tests use a fake model folder (real JSON, random bytes for the weights: the archive logic never
loads them): exactly the needed files are packed, and a tampered, incomplete or foreign archive is
refused with one line that names the archive and the file. Input tests check how a subject folder's
scans are matched to the model's modalities. The end-to-end test (a tiny model trained with the workflow,
exported, predicting a held-out subject as the workflow did) is tests/workflow/test_predict_cli_workflow.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from support.outputs import tmp_names_under
from support.paths import VENV_BIN
from voxflow.model_sharing.archive import MANIFEST, ModelArchiveError, export_model, open_model, sha256_file
from voxflow.model_sharing.predict import main
from voxflow.model_sharing.inputs import SubjectError, match_modalities, resolve_inputs

MODS = ["t1", "flair"]


# --- a fake model folder ---------------------------------------------------------------------------------------

def _settings(mods=MODS, normalize="zscore") -> dict:
    return {"input": {"modalities": list(mods), "reference": mods[0], "modality_types": {m: "mr" for m in mods},
                      "label_values": [0, 1, 2, 4]},
            "preprocess": {"space": "mni", "normalize": {"method": normalize, "per_modality": {}},
                           "mni": {"resolution_mm": 2}},
            "infer": {"device": "cpu", "tta": False, "overlap": 0.25, "probabilities": False}}


def fake_model(d: Path, mods=MODS, folds=(0, 1), settings: bool = True, normalize: str = "zscore") -> Path:
    rng = np.random.default_rng(0)
    d.mkdir(parents=True)
    (d / "plans.json").write_text(json.dumps({"modalities": list(mods), "label_values": [0, 1, 2, 4]}))
    (d / "fingerprint.json").write_text(json.dumps({"n_subjects": 4}))
    (d / "postprocessing.json").write_text(json.dumps({"groups": [[1, 2, 4]], "enabled": [True]}))
    (d / "split.json").write_text(json.dumps({"test": ["s5"]}))  # the training run's: not packed
    if settings:
        (d / "settings.json").write_text(json.dumps(_settings(mods, normalize)))
    for k in folds:
        f = d / f"fold_{k}"
        f.mkdir()
        (f / "model_final.pt").write_bytes(rng.bytes(50_000 + k))
        (f / "checkpoint_latest.pt").write_bytes(rng.bytes(1000))  # not packed
        (f / "curve.csv").write_text("epoch,loss\n0,1.0\n")  # not packed
    return d


@pytest.fixture
def model_zip(tmp_path) -> Path:
    archive = tmp_path / "model.zip"
    export_model(fake_model(tmp_path / "model"), archive)
    return archive


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("voxflow ERROR: "), err
    return lines[0]


def _rewrite(src: Path, dst: Path, change=None, drop=(), add=None) -> None:
    """A copy of an archive with one member's bytes changed, members dropped or added (manifest untouched)."""
    with zipfile.ZipFile(src) as zi, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zo:
        for info in zi.infolist():
            if info.filename in drop:
                continue
            data = zi.read(info)
            if change and info.filename == change:
                data = bytes([data[0] ^ 0xFF]) + data[1:]
            zo.writestr(info.filename, data)
        for name, data in (add or {}).items():
            zo.writestr(name, data)


# --- export ----------------------------------------------------------------------------------------------------

def test_export_packs_exactly_what_prediction_needs(tmp_path, capsys):
    model = fake_model(tmp_path / "model")
    archive = tmp_path / "out" / "model.zip"
    assert main(["export-model", str(model), str(archive)]) == 0
    out = capsys.readouterr().out
    assert f"wrote {archive}" in out and sha256_file(archive) in out
    with zipfile.ZipFile(archive) as zf:
        names = sorted(zf.namelist())
        manifest = json.loads(zf.read(MANIFEST))
    expected = ["fingerprint.json", "fold_0/model_final.pt", "fold_1/model_final.pt", "plans.json",
                "postprocessing.json", "settings.json"]
    assert names == sorted(expected + [MANIFEST])
    assert sorted(manifest["files"]) == expected
    for name in expected:
        p = model / name
        assert manifest["files"][name] == {"sha256": sha256_file(p), "size": p.stat().st_size}
    import voxflow

    assert manifest["voxflow_version"] == voxflow.__version__
    assert manifest["modalities"] == MODS and manifest["label_values"] == [0, 1, 2, 4]
    assert manifest["folds"] == [0, 1] and manifest["space"] == "mni"
    assert time.time() - time.mktime(time.strptime(manifest["created"], "%Y-%m-%dT%H:%M:%SZ")) < 86400 * 2
    assert os.listdir(archive.parent) == ["model.zip"]  # written under a temporary name, renamed


def test_export_packs_the_chosen_configurations_of_a_multi_configuration_model(tmp_path, capsys):
    """model.configurations: inference.json names the chosen models; only those, each configuration's plans.json
    and a chosen cascade's low-resolution folds are packed; the opened model predicts with them and with
    inference.json's post-processing; a chosen model missing is one line."""
    rng = np.random.default_rng(1)
    d = fake_model(tmp_path / "model", folds=())
    (d / "postprocessing.json").unlink()  # a multi-configuration model has inference.json instead
    for name in ("2d/fold_0/model_final.pt", "2d/fold_1/model_final.pt", "3d_cascade/fold_0/model_final.pt",
                 "3d_cascade/fold_1/model_final.pt", "3d_cascade/lowres/fold_0/model_final.pt",
                 "3d_cascade/lowres/fold_1/model_final.pt", "3d/fold_0/model_final.pt"):
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_bytes(rng.bytes(20_000))
    for conf in ("2d", "3d", "3d_cascade", "3d_cascade/lowres"):
        (d / conf / "plans.json").write_text(json.dumps({"dim": conf[:2], "configuration": conf}))
    chosen = ["2d/fold_0/model_final.pt", "2d/fold_1/model_final.pt", "3d_cascade/fold_0/model_final.pt",
              "3d_cascade/fold_1/model_final.pt"]
    post = {"groups": [[1, 2, 4]], "enabled": [False]}
    (d / "inference.json").write_text(json.dumps({"configurations": ["2d", "3d_cascade"], "models": chosen,
                                                  "postprocessing": post}))
    manifest = export_model(d, tmp_path / "multi.zip")
    assert sorted(manifest["files"]) == sorted([
        "fingerprint.json", "inference.json", "plans.json", "settings.json", *chosen, "2d/plans.json",
        "3d_cascade/plans.json", "3d_cascade/lowres/fold_0/model_final.pt",
        "3d_cascade/lowres/fold_1/model_final.pt", "3d_cascade/lowres/plans.json"])  # not 3d/: not chosen
    assert manifest["configurations"] == ["2d", "3d_cascade"] and manifest["folds"] == [0, 1]
    m = open_model(tmp_path / "multi.zip", work_dir=tmp_path / "w")
    assert m.model_paths == [str(m.dir / n) for n in chosen] and m.postprocessing == post
    assert sha256_file(Path(m.model_paths[2])) == sha256_file(d / chosen[2])
    (d / "3d_cascade" / "fold_1" / "model_final.pt").unlink()
    assert main(["export-model", str(d), str(tmp_path / "again.zip")]) != 0
    assert "lacks 3d_cascade/fold_1/model_final.pt" in _one_error_line(capsys.readouterr().err)


def test_export_packs_normalization_when_the_model_has_one(tmp_path):
    model = fake_model(tmp_path / "model", normalize="nyul")
    with pytest.raises(ModelArchiveError, match=r"lacks normalization.json \(normalization \['nyul'\]\)"):
        export_model(model, tmp_path / "a.zip")
    (model / "normalization.json").write_text(json.dumps({"modalities": {}}))
    manifest = export_model(model, tmp_path / "a.zip")
    assert "normalization.json" in manifest["files"]
    assert open_model(tmp_path / "a.zip", work_dir=tmp_path / "w").normalization.endswith("normalization.json")


@pytest.mark.parametrize("damage, problem", [
    (lambda d: (d / "settings.json").unlink(),
     "no settings.json: was this model trained with voxflow >= 0.1.0? rerun the workflow's model_settings rule"),
    (lambda d: [shutil.rmtree(d / f"fold_{k}") for k in (0, 1)], "lacks fold_<k>/model_final.pt"),
    (lambda d: (d / "postprocessing.json").unlink(), "lacks postprocessing.json"),
    (lambda d: (d / "plans.json").write_text(json.dumps({"modalities": ["t1", "t2"]})),
     "settings.json gives modalities ['t1', 'flair'], plans.json ['t1', 't2']"),
])
def test_export_refuses_an_incomplete_model_folder(tmp_path, capsys, damage, problem):
    model = fake_model(tmp_path / "model")
    damage(model)
    assert main(["export-model", str(model), str(tmp_path / "model.zip")]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"voxflow ERROR: {model}: ") and problem in line, line
    assert not (tmp_path / "model.zip").exists() and tmp_names_under(tmp_path) == []


# --- import ----------------------------------------------------------------------------------------------------

def test_open_model_checks_and_unpacks(model_zip, tmp_path):
    m = open_model(model_zip, work_dir=tmp_path / "work")
    assert m.sha256 == sha256_file(model_zip) and m.modalities == MODS and m.label_values == [0, 1, 2, 4]
    assert [Path(p).relative_to(m.dir).as_posix() for p in m.model_paths] == ["fold_0/model_final.pt",
                                                                             "fold_1/model_final.pt"]
    assert m.dir.parent == tmp_path / "work" and m.postprocessing["enabled"] == [True]
    # a cache keyed by the archive's sha256: unpacked once, checked again at each use
    c1 = open_model(model_zip, cache_dir=tmp_path / "cache")
    c2 = open_model(model_zip, cache_dir=tmp_path / "cache")
    assert c1.dir == c2.dir == tmp_path / "cache" / sha256_file(model_zip)
    (c1.dir / "fold_1" / "model_final.pt").write_bytes(b"damaged")  # a damaged cache entry is unpacked again
    c3 = open_model(model_zip, cache_dir=tmp_path / "cache")
    assert sha256_file(c3.dir / "fold_1" / "model_final.pt") == m.manifest["files"]["fold_1/model_final.pt"]["sha256"]
    # a plain model folder works too (no checksums: it has no manifest)
    d = open_model(tmp_path / "model")
    assert d.sha256 is None and d.model_paths[0] == str(tmp_path / "model" / "fold_0" / "model_final.pt")


def _refused(tmp_path, capsys, archive: Path, inputs: list[str] | None = None) -> str:
    scans = tmp_path / "scans" / "s1"
    scans.mkdir(parents=True, exist_ok=True)
    for m in MODS:
        (scans / f"{m}.nii.gz").write_bytes(b"x")
    out = tmp_path / "pred"
    rc = main(["predict", "-i", *(inputs or [str(scans)]), "-m", str(archive), "-o", str(out)])
    line = _one_error_line(capsys.readouterr().err)
    assert rc == 2, line
    assert not any(p.name != ".work" for p in out.glob("*")) and tmp_names_under(tmp_path) == []
    assert not (out / ".work").exists() or not any((out / ".work").iterdir())
    return line


def test_a_tampered_member_is_refused_naming_the_file(model_zip, tmp_path, capsys):
    bad = tmp_path / "bad.zip"
    _rewrite(model_zip, bad, change="fold_1/model_final.pt")  # a valid zip whose member differs from the manifest
    line = _refused(tmp_path, capsys, bad)
    assert line.startswith(f"voxflow ERROR: {bad}: checksum mismatch for fold_1/model_final.pt (sha256 "), line


def test_a_flipped_byte_in_the_zip_is_refused_naming_the_file(model_zip, tmp_path, capsys):
    with zipfile.ZipFile(model_zip) as zf:
        info = zf.getinfo("fold_0/model_final.pt")
    data = bytearray(model_zip.read_bytes())
    pos = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + info.compress_size // 2
    data[pos] ^= 0x01
    bad = tmp_path / "flipped.zip"
    bad.write_bytes(bytes(data))
    line = _refused(tmp_path, capsys, bad)
    assert line.startswith(f"voxflow ERROR: {bad}: ") and "fold_0/model_final.pt" in line, line
    assert "corrupt" in line or "checksum mismatch" in line, line


@pytest.mark.parametrize("how, problem", [
    (dict(drop=[MANIFEST]), "no manifest.json: not a model archive written by `voxflow export-model`"),
    (dict(drop=["fold_0/model_final.pt"]), "fold_0/model_final.pt is listed in manifest.json but missing"),
    (dict(add={"fold_0/checkpoint_latest.pt": b"x"}), "unlisted file fold_0/checkpoint_latest.pt in the archive"),
    (dict(add={"../evil.sh": b"x"}), "unlisted file ../evil.sh in the archive"),
])
def test_an_incomplete_or_foreign_archive_is_refused(model_zip, tmp_path, capsys, how, problem):
    bad = tmp_path / "bad.zip"
    _rewrite(model_zip, bad, **how)
    line = _refused(tmp_path, capsys, bad)
    assert line == f"voxflow ERROR: {bad}: {problem}" or line.startswith(f"voxflow ERROR: {bad}: {problem}"), line
    assert not (tmp_path / "evil.sh").exists()


def test_not_a_zip_and_no_such_model(tmp_path, capsys):
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"PK\x03\x04 not really")
    assert "not a zip archive" in _refused(tmp_path, capsys, junk)
    assert _refused(tmp_path, capsys, tmp_path / "nope.zip").endswith("nope.zip: no such file or folder")


def test_inputs_with_other_modalities_are_refused(model_zip, tmp_path, capsys):
    files = [f"t1={tmp_path / 'a.nii.gz'}", f"t2={tmp_path / 'b.nii.gz'}"]
    line = _refused(tmp_path, capsys, model_zip, files)
    assert line == (f"voxflow ERROR: {model_zip}: the model takes modalities ['t1', 'flair'], the inputs give "
                    "['t1', 't2'] (missing ['flair']; not the model's ['t2'])"), line


# --- matching a folder's scans to the model's modalities ------------------------------------------------------

def _folder(d: Path, names: list[str]) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for n in names:
        (d / n).write_bytes(b"")
    return d


@pytest.mark.parametrize("names, mods, expected", [
    (["t1.nii.gz", "flair.nii.gz", "seg.nii.gz"], MODS, ["t1.nii.gz", "flair.nii.gz"]),
    (["sub01_t1.nii.gz", "sub01_t1c.nii.gz", "sub01_T2.nii.gz", "notes.txt"], ["t1", "t1c", "t2"],
     ["sub01_t1.nii.gz", "sub01_t1c.nii.gz", "sub01_T2.nii.gz"]),
    (["BraTS20_001_t1.nii.gz", "BraTS20_001_t1ce.nii.gz", "BraTS20_001_t2.nii.gz", "BraTS20_001_flair.nii.gz",
      "BraTS20_001_seg.nii.gz"], ["t1", "t1c", "t2", "flair"],
     ["BraTS20_001_t1.nii.gz", "BraTS20_001_t1ce.nii.gz", "BraTS20_001_t2.nii.gz", "BraTS20_001_flair.nii.gz"]),
    (["BraTS-GLI-00001-000-t1n.nii.gz", "BraTS-GLI-00001-000-t1c.nii.gz", "BraTS-GLI-00001-000-t2w.nii.gz",
      "BraTS-GLI-00001-000-t2f.nii.gz"], ["t1", "t1c", "t2", "flair"],
     ["BraTS-GLI-00001-000-t1n.nii.gz", "BraTS-GLI-00001-000-t1c.nii.gz", "BraTS-GLI-00001-000-t2w.nii.gz",
      "BraTS-GLI-00001-000-t2f.nii.gz"]),
    (["sub-01_T1w.nii.gz", "sub-01_FLAIR.nii.gz", "sub-01_T1w.json"], ["T1w", "FLAIR"],
     ["sub-01_T1w.nii.gz", "sub-01_FLAIR.nii.gz"]),
    (["case_0001.nii.gz", "case_0000.nii.gz"], MODS, ["case_0000.nii.gz", "case_0001.nii.gz"]),  # nnU-Net order
    (["T1.nrrd", "flair.mha"], MODS, ["T1.nrrd", "flair.mha"]),
])
def test_scans_are_matched_by_name(tmp_path, names, mods, expected):
    d = _folder(tmp_path / "s1", names)
    assert match_modalities(d, mods) == {m: str(d / n) for m, n in zip(mods, expected)}


@pytest.mark.parametrize("names, problem", [
    (["t1.nii.gz", "sub01_t1.nii.gz", "flair.nii.gz"],
     "2 scans match modality 't1': sub01_t1.nii.gz, t1.nii.gz; keep one, or give the files: -i t1=FILE flair=FILE"),
    (["t1.nii.gz", "t2.nii.gz"], "no scan for modality 'flair' (a file named flair.nii.gz or *_flair.nii.gz; "
                                 "the folder holds: t1.nii.gz, t2.nii.gz); or give the files: -i t1=FILE flair=FILE"),
    (["t1c.nii.gz", "flair.nii.gz"], "no scan for modality 't1'"),  # t1c is not t1
])
def test_ambiguous_or_missing_scans_name_the_folder_and_the_modality(tmp_path, names, problem):
    d = _folder(tmp_path / "s1", names)
    with pytest.raises(SubjectError) as err:
        match_modalities(d, MODS)
    assert str(err.value).startswith(f"subject=s1 file={d}: {problem}"), str(err.value)


def test_inputs_subject_folder_cohort_folder_or_files(tmp_path):
    one = _folder(tmp_path / "one" / "sub01", ["sub01_t1.nii.gz", "sub01_flair.nii.gz"])
    assert resolve_inputs([str(one)], MODS) == [("sub01", {"t1": str(one / "sub01_t1.nii.gz"),
                                                           "flair": str(one / "sub01_flair.nii.gz")})]
    cohort = tmp_path / "cohort"
    _folder(cohort / "a", ["t1.nii.gz", "flair.nii.gz"])
    _folder(cohort / "b", ["t1.nii.gz"])
    got = resolve_inputs([str(cohort)], MODS)
    assert [s for s, _ in got] == ["a", "b"] and isinstance(got[0][1], dict)
    assert isinstance(got[1][1], SubjectError) and "no scan for modality 'flair'" in str(got[1][1])
    files = resolve_inputs([f"t1={one / 'sub01_t1.nii.gz'}", f"flair={one / 'sub01_flair.nii.gz'}"], MODS)
    assert files == [("sub01", {"t1": str(one / "sub01_t1.nii.gz"), "flair": str(one / "sub01_flair.nii.gz")})]
    # the subject ID of files: the first file's name less its modality, or its folder's name
    d = _folder(tmp_path / "demo008", ["t1.nii.gz", "flair.nii.gz"])
    assert resolve_inputs([f"t1={d / 't1.nii.gz'}", f"flair={d / 'flair.nii.gz'}"], MODS)[0][0] == "demo008"
    assert resolve_inputs([f"flair={tmp_path / 'scan.nii'}", f"t1={d / 't1.nii.gz'}"], MODS)[0][0] == "scan"


def test_a_subject_of_dicom_series_folders(tmp_path):
    """One DICOM series folder per modality: the folder is one subject, not a folder of subjects."""
    d = tmp_path / "sub01"
    for m in MODS:
        _folder(d / m.upper(), ["IM0001.dcm", "IM0002.dcm"])
    assert resolve_inputs([str(d)], MODS) == [("sub01", {m: str(d / m.upper()) for m in MODS})]


def test_a_cohort_folder_runs_on_when_subjects_fail(model_zip, tmp_path, capsys):
    cohort = tmp_path / "cohort"
    _folder(cohort / "a", ["t1.nii.gz"])
    _folder(cohort / "b", ["t1.nii.gz", "b_t1.nii.gz", "flair.nii.gz"])
    out = tmp_path / "pred"
    assert main(["predict", "-i", str(cohort), "-m", str(model_zip), "-o", str(out)]) == 1
    cap = capsys.readouterr()
    lines = [ln for ln in cap.err.splitlines() if "voxflow ERROR" in ln]
    assert lines == [f"voxflow ERROR [inputs] subject=a file={cohort / 'a'}: no scan for modality 'flair' (a file "
                     "named flair.nii.gz or *_flair.nii.gz; the folder holds: t1.nii.gz); or give the files: "
                     "-i t1=FILE flair=FILE",
                     f"voxflow ERROR [inputs] subject=b file={cohort / 'b'}: 2 scans match modality 't1': "
                     "b_t1.nii.gz, t1.nii.gz; keep one, or give the files: -i t1=FILE flair=FILE"], cap.err
    assert "0 of 2 subjects predicted" in cap.out and "2 failed: a, b" in cap.out
    assert sorted(os.listdir(out)) == []  # no subject folder, no work left, the unpacked model removed


def test_a_failing_subject_does_not_stop_the_others(model_zip, tmp_path, capsys, monkeypatch):
    """The per-subject loop with the chain and the inference stubbed: a subject whose preprocessing fails is
    named in one line, the next one is predicted, exit code 1; outputs, sidecar and work files."""
    import voxflow.preprocess.steps
    import voxflow.inference.predict
    from voxflow.errors import InputError

    calls = []

    def preprocess(settings, subject, images, work_dir, normalization=None, threads=1, progress=None):
        calls.append((subject, dict(images), Path(work_dir), threads))
        for step in ("validate", "ingest"):
            progress(step)
        if subject == "a_bad":
            raise InputError(subject, images["t1"], "t1 image file is truncated")
        store = Path(work_dir) / "zarr" / f"{subject}.zarr"
        store.mkdir(parents=True)
        return str(store)

    def predict(store, models, post, cfg, out_grid, out_native, out_prob=None, device=None):
        assert [Path(m).parent.name for m in models] == ["fold_0", "fold_1"] and out_prob is None
        assert post["enabled"] == [True] and cfg["device"] == "cpu" and cfg["overlap"] == 0.25
        for p in (out_grid, out_native):
            Path(p).write_bytes(b"nifti")
        return {"native_voxels": {0: 10}}

    monkeypatch.setattr(voxflow.preprocess.steps, "preprocess_subject", preprocess)
    monkeypatch.setattr(voxflow.inference.predict, "predict_subject", predict)
    cohort = tmp_path / "cohort"
    for s in ("a_bad", "b_good"):
        _folder(cohort / s, [f"{s}_t1.nii.gz", f"{s}_flair.nii.gz"])
    out = tmp_path / "pred"
    rc = main(["predict", "-i", str(cohort), "-m", str(model_zip), "-o", str(out), "--device", "cpu",
               "--threads", "2"])
    cap = capsys.readouterr()
    assert rc == 1, cap.err
    assert [ln for ln in cap.err.splitlines() if "voxflow ERROR" in ln] == [
        f"voxflow ERROR [ingest] subject=a_bad file={cohort / 'a_bad' / 'a_bad_t1.nii.gz'}: t1 image file is truncated"]
    assert [c[0] for c in calls] == ["a_bad", "b_good"] and calls[1][3] == 2
    assert calls[1][1] == {m: str(cohort / "b_good" / f"b_good_{m}.nii.gz") for m in MODS}
    assert calls[1][2] == out / ".work" / "b_good"
    assert "b_good: ingest" in cap.err  # the progress bar shows subject and step
    assert sorted(os.listdir(out)) == ["b_good"]  # no work files left, nothing of the failed subject
    assert sorted(os.listdir(out / "b_good")) == ["b_good_seg.json", "b_good_seg.nii.gz", "b_good_seg_mni.nii.gz"]
    side = json.loads((out / "b_good" / "b_good_seg.json").read_text())
    assert side["model"]["sha256"] == sha256_file(model_zip) and side["device"] == "cpu" and side["threads"] == 2
    assert side["inputs"] == calls[1][1] and side["modalities"] == MODS
    assert "1 of 2 subjects predicted" in cap.out and "1 failed: a_bad" in cap.out
    # --keep-work keeps each subject's work folder
    assert main(["predict", "-i", str(cohort / "b_good"), "-m", str(model_zip), "-o", str(out), "--keep-work"]) == 0
    assert (out / ".work" / "b_good" / "zarr" / "b_good.zarr").is_dir()


@pytest.mark.parametrize("args, problem", [
    (["-i", "{d}", "t1=x.nii.gz"], "-i takes either folders or modality=file pairs, not both"),
    (["-i", "{d}/t1.nii.gz"], "a file; give the subject's folder, or modality=file pairs (t1=FILE flair=FILE)"),
    (["-i", "{d}/nothing"], "no such file or folder"),
    (["-i", "t1=a.nii.gz", "t1=b.nii.gz"], "-i gives modality 't1' twice"),
    (["-i", "{d}", "--threads", "0"], "--threads 0: give 1 or more"),
])
def test_usage_errors_are_one_line(model_zip, tmp_path, capsys, args, problem):
    d = _folder(tmp_path / "s1", ["t1.nii.gz", "flair.nii.gz"])
    args = [a.replace("{d}", str(d)) for a in args]
    assert main(["predict", *args, "-m", str(model_zip), "-o", str(tmp_path / "o")]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert problem in line, line


def test_cli_usage_is_wired_into_voxflow():
    """`voxflow predict` and `voxflow export-model` are subcommands of the installed `voxflow` command."""
    env = dict(os.environ, PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    for cmd in ("predict", "export-model"):
        res = subprocess.run(["voxflow", cmd, "--help"], capture_output=True, text=True, env=env, timeout=120,
                             check=False)
        assert res.returncode == 0, res.stderr
        assert "usage: voxflow " + cmd in res.stdout
