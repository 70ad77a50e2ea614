"""The run's and the model folder's paths (voxflow.core.layout) and the one reader of a subject's store
(voxflow.core.stores): their values are the paths the workflow has always used, and the readers return what the
writer (voxflow.preprocess.store) put in."""

from __future__ import annotations

import os

import numpy as np
import pytest

from voxflow.core import layout, stores

SHAPE = (6, 7, 5)
SPACING = (2.0, 1.5, 1.0)


def test_model_folder_names_are_the_workflows():
    assert (layout.MODEL_FILE, layout.CHECKPOINT_FILE) == ("model_final.pt", "checkpoint_latest.pt")
    assert (layout.PLANS_FILE, layout.SETTINGS_FILE, layout.POSTPROCESSING_FILE, layout.INFERENCE_FILE,
            layout.FINGERPRINT_FILE, layout.NORMALIZATION_FILE, layout.SPLIT_FILE, layout.STORES_FILE) == (
        "plans.json", "settings.json", "postprocessing.json", "inference.json", "fingerprint.json",
        "normalization.json", "split.json", "stores.json")
    assert layout.fold_model("m", 2) == os.path.join("m", "fold_2", "model_final.pt")
    assert layout.fold_model("m", 0, "3d") == os.path.join("m", "3d", "fold_0", "model_final.pt")
    assert layout.fold_dir("m", 1, "3d_cascade/lowres") == os.path.join("m", "3d_cascade/lowres", "fold_1")
    assert layout.fold_model_name(3, "2d") == "2d/fold_3/model_final.pt" and layout.fold_model_name(0) == \
        "fold_0/model_final.pt"
    assert [layout.fold_index(n) for n in ("fold_0", "fold_12", "fold_x", "fold_", "xfold_1")] == \
        [0, 12, None, None, None]


def test_fold_models_by_fold_number(tmp_path):
    for k in (10, 2, 0):
        (tmp_path / f"fold_{k}").mkdir()
        (tmp_path / f"fold_{k}" / "model_final.pt").write_bytes(b"")
    (tmp_path / "fold_3").mkdir()  # no model (still training)
    (tmp_path / "fold_x").mkdir()
    (tmp_path / "fold_x" / "model_final.pt").write_bytes(b"")
    assert [p.parent.name for p in layout.fold_models(tmp_path)] == ["fold_0", "fold_2", "fold_10"]
    assert layout.fold_models(tmp_path / "missing") == []


# Every path of a run, as the workflow has always named it (the rules and the steps take them from OutputLayout).
RUN_PATHS = {
    "status": ("status/subjects/{subject}.json", lambda o: o.status()),
    "cohort_status": ("status/cohort.json", lambda o: o.cohort_status),
    "predicted_subjects": ("status/predicted.json", lambda o: o.predicted_subjects),
    "report_subjects": ("status/report_subjects.json", lambda o: o.report_subjects),
    "demo_raw": ("demo/raw", lambda o: o.demo_raw),
    "demo_truth": ("demo/truth", lambda o: o.demo_truth),
    "validation_table": ("validation/subjects/{subject}.tsv", lambda o: o.validation_table()),
    "problems_table": ("validation/problems.tsv", lambda o: o.problems_table),
    "problems_text": ("validation/problems.txt", lambda o: o.problems_text),
    "preprocess_dir": ("preprocess/{subject}", lambda o: o.preprocess_dir()),
    "step_file": ("preprocess/{subject}/n4/t1.nii", lambda o: o.step_file("n4", "t1.nii")),
    "transforms_mni": ("preprocess/{subject}/xfm", lambda o: o.transforms_dir("mni")),
    "transforms_native": ("preprocess/{subject}/native/xfm", lambda o: o.transforms_dir("native")),
    "store": ("zarr/{subject}.zarr", lambda o: o.store()),
    "qc_dir": ("qc/{subject}", lambda o: o.qc_dir()),
    "qc_figure": ("qc/{subject}/n4.png", lambda o: o.qc_figure("n4")),
    "qc_subject_scores": ("qc/{subject}/scores.json", lambda o: o.qc_subject_scores()),
    "qc_scores": ("qc/scores.tsv", lambda o: o.qc_scores),
    "qc_flags": ("qc/flags.tsv", lambda o: o.qc_flags),
    "log": ("logs/predict/{subject}.log", lambda o: o.log("predict")),
    "cohort_log": ("logs/split/split.log", lambda o: o.log("split", "split")),
    "benchmark": ("benchmarks/predict/{subject}.tsv", lambda o: o.benchmark("predict")),
    "benchmarks_pattern": ("benchmarks/{rule}/{job}.tsv", lambda o: o.benchmark("{rule}", "{job}")),
    "model_dir": ("model", lambda o: o.model_dir),
    "completed": ("completed/{subject}.zarr", lambda o: o.completed()),
    "synthesis_qc": ("qc_synthesis/{subject}.png", lambda o: o.synthesis_qc()),
    "predictions_dir": ("predictions", lambda o: o.predictions_dir),
    "prediction": ("predictions/{subject}/{subject}_seg.nii.gz", lambda o: o.prediction()),
    "prediction_mni": ("predictions/{subject}/{subject}_seg_mni.nii.gz", lambda o: o.prediction("{subject}", "mni")),
    "probabilities": ("predictions/{subject}/{subject}_prob.nii.gz", lambda o: o.probabilities()),
    "prediction_sidecar": ("predictions/{subject}/{subject}_seg.json", lambda o: o.prediction_sidecar()),
    "evaluation_dir": ("evaluation", lambda o: o.evaluation_dir),
    "evaluation_chunk": ("evaluation/chunks/{chunk}.tsv", lambda o: o.evaluation_chunk()),
    "metrics": ("evaluation/metrics.tsv", lambda o: o.metrics),
    "summary": ("evaluation/summary.tsv", lambda o: o.summary),
    "report_html": ("report/report.html", lambda o: o.report_html),
}


@pytest.mark.parametrize("name", sorted(RUN_PATHS))
def test_every_run_path_is_under_the_root(name):
    rel, path = RUN_PATHS[name]
    assert path(layout.OutputLayout("results")) == os.path.join("results", *rel.split("/"))
    assert path(layout.OutputLayout("/data/out/")) == os.path.join("/data/out/", *rel.split("/"))


def test_a_subject_fills_the_pattern():
    out = layout.OutputLayout("results")
    for pattern, filled in [(out.status(), out.status("s-01")), (out.store(), out.store("s-01")),
                            (out.validation_table(), out.validation_table("s-01")),
                            (out.step_file("mni", "mask.nii.gz"), out.step_file("mni", "mask.nii.gz", "s-01")),
                            (out.transforms_dir("native"), out.transforms_dir("native", "s-01")),
                            (out.qc_dir(), out.qc_dir("s-01")), (out.qc_figure("mni"), out.qc_figure("mni", "s-01")),
                            (out.log("ingest"), out.log("ingest", "s-01")), (out.completed(), out.completed("s-01")),
                            (out.synthesis_qc(), out.synthesis_qc("s-01")), (out.prediction(), out.prediction("s-01")),
                            (out.prediction("{subject}", "resampled"), out.prediction("s-01", "resampled")),
                            (out.probabilities(), out.probabilities("s-01")),
                            (out.prediction_sidecar(), out.prediction_sidecar("s-01"))]:
        assert "{subject}" in pattern and layout.fill(pattern, "s-01") == filled and "{subject}" not in filled
    assert out.prediction("s-01") == os.path.join("results", "predictions", "s-01", "s-01_seg.nii.gz")
    assert out.evaluation_chunk("0003") == os.path.join("results", "evaluation", "chunks", "0003.tsv")


def test_the_template_and_the_demo_files():
    out = layout.OutputLayout("r")
    assert out.template(2) == {"image": os.path.join("r", "template", "mni152_2mm.nii.gz"),
                               "mask": os.path.join("r", "template", "mni152_2mm_mask.nii.gz"),
                               "gm": os.path.join("r", "template", "mni152_2mm_gm.nii.gz"),
                               "wm": os.path.join("r", "template", "mni152_2mm_wm.nii.gz")}
    assert out.demo_files(["t1", "flair"], "demo003") == {
        "t1": os.path.join("r", "demo", "raw", "demo003", "t1.nii.gz"),
        "flair": os.path.join("r", "demo", "raw", "demo003", "flair.nii.gz"),
        "seg": os.path.join("r", "demo", "raw", "demo003", "seg.nii.gz"),
        "brainmask": os.path.join("r", "demo", "truth", "demo003_brainmask.nii.gz"),
        "truth": os.path.join("r", "demo", "truth", "demo003_truth.json")}


def test_the_functions_are_the_layouts_patterns():
    out = layout.OutputLayout("r")
    assert layout.sub_path("r", "coreg", "info.json") == out.step_file("coreg", "info.json")
    assert layout.qc_path("r", "skullstrip") == out.qc_figure("skullstrip")
    assert layout.qc_scores_path("r") == out.qc_subject_scores()
    assert layout.store_pattern("r") == out.store() and layout.validation_table("r") == out.validation_table()
    assert layout.template_paths("r", 1) == out.template(1)
    assert [name for name, _ in layout.output_folders()] == ["report", "evaluation", "predictions", "model", "zarr",
                                                             "qc", "preprocess", "logs", "benchmarks"]
    assert "demo" not in layout.WRITTEN_FOLDERS and {"status", "template", "validation"} <= set(layout.WRITTEN_FOLDERS)


def test_the_model_folders_files():
    model = layout.OutputLayout("results").model
    m = os.path.join("results", "model")
    assert model == layout.ModelFolder(m) and model.path == layout.OutputLayout("results").model_dir == m
    assert {k: getattr(model, k) for k in ("plans", "settings", "postprocessing", "inference", "fingerprint",
                                           "normalization", "split", "stores")} == {
        "plans": os.path.join(m, "plans.json"), "settings": os.path.join(m, "settings.json"),
        "postprocessing": os.path.join(m, "postprocessing.json"), "inference": os.path.join(m, "inference.json"),
        "fingerprint": os.path.join(m, "fingerprint.json"), "normalization": os.path.join(m, "normalization.json"),
        "split": os.path.join(m, "split.json"), "stores": os.path.join(m, "stores.json")}
    assert (model.synthesis_dir, model.synthesis_model, model.synthesis_curve, model.synthesis_summary) == (
        os.path.join(m, "synthesis"), os.path.join(m, "synthesis", "generator.pt"),
        os.path.join(m, "synthesis", "curve.csv"), os.path.join(m, "synthesis", "synthesis.json"))
    assert model.fold_dir("{fold}") == os.path.join(m, "fold_{fold}")
    assert model.fold_model(1) == os.path.join(m, "fold_1", "model_final.pt") == layout.fold_model(m, 1)
    assert model.fold_file(0, layout.VAL_PREDICTIONS_FILE) == os.path.join(m, "fold_0", "val_predictions.npz")
    assert model.fold_file(0, layout.VAL_PROBABILITIES_FILE, "2d") == \
        os.path.join(m, "2d", "fold_0", "val_probabilities.npz")
    assert (layout.CURVE_CSV_FILE, layout.CURVE_PNG_FILE) == ("curve.csv", "curve.png")
    lowres = model.configuration("3d_cascade/lowres")
    assert lowres.plans == os.path.join(m, "3d_cascade/lowres", "plans.json")
    assert lowres.fold_model(2) == layout.fold_model(m, 2, "3d_cascade/lowres") == \
        os.path.join(m, "3d_cascade", layout.LOWRES_DIR, "fold_2", "model_final.pt")
    assert model.configuration(None) is model and model.configuration("").fold_dir(3) == layout.fold_dir(m, 3)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from voxflow.preprocess.store import write_subject_store

    rng = np.random.default_rng(0)
    image = rng.normal(size=(2, *SHAPE)).astype(np.float32)
    mask = np.zeros(SHAPE, np.uint8)
    mask[1:5, 1:6, 1:4] = 1
    label = np.zeros(SHAPE, np.uint8)
    label[2:4, 2:4, 2:3] = 2
    path = tmp_path_factory.mktemp("store") / "s1.zarr"
    write_subject_store(path, image, mask, label, ["t1", "flair"], SPACING, (0.0, 0.0, 0.0), np.eye(3).ravel(),
                        {}, fg_samples=10, extra_attrs={"subject": "s1"})
    return path, image, mask, label


def test_the_readers_return_what_the_writer_wrote(store):
    path, image, mask, label = store
    meta = stores.store_meta(path)
    assert meta["modalities"] == ["t1", "flair"] and meta["spacing_zyx"] == list(SPACING) and meta["has_label"]
    assert meta["subject"] == "s1"
    np.testing.assert_array_equal(stores.read_store_label(path), label)
    np.testing.assert_array_equal(stores.read_store_mask(path), mask)
    np.testing.assert_allclose(stores.read_store_image(path), image, rtol=2.0**-10, atol=1e-6)  # float16
    ref, spacing = stores.read_store_reference(path)
    np.testing.assert_array_equal(ref, label)
    assert spacing == list(SPACING)
    root = stores.open_store(path)  # one opening for several reads: the same answers
    assert stores.store_meta(root) == meta and stores.image_array(root).shape == (2, *SHAPE)
    np.testing.assert_array_equal(stores.label_array(root)[2:4, 2:4, 2], label[2:4, 2:4, 2])
    fg = stores.foreground_samples(root)
    assert set(fg) == {"2", "any"} and all(label[tuple(c)] == 2 for k in fg for c in fg[k])  # one class
    whole = stores.read_subject_store(path)
    assert whole["meta"] == meta and np.array_equal(whole["label"], label) and np.array_equal(whole["mask"], mask)


def test_a_store_without_label_or_attrs(store, tmp_path):
    import zarr

    from voxflow.preprocess.store import write_subject_store

    _, image, mask, _ = store
    path = tmp_path / "s2.zarr"
    write_subject_store(path, image, mask, None, ["t1", "flair"], SPACING, (0.0, 0.0, 0.0), np.eye(3).ravel(), {})
    assert not stores.store_meta(path)["has_label"] and stores.foreground_samples(path) == {}
    with pytest.raises(KeyError):
        stores.read_store_label(path)
    assert stores.read_subject_store(path)["label"] is None
    bare = tmp_path / "bare.zarr"
    zarr.open_group(str(bare), mode="w")
    assert stores.store_meta(bare, default={}) == {}
    with pytest.raises(KeyError):
        stores.store_meta(bare)
