"""The cohort report (voxflow.report.build) on a small fake run directory, through the step function with the
inputs and config the `report` rule gives it: content (values, sections, images), self-containment,
worst-first QC, predict-only mode, excluded subjects, the stores' space names, and that it reads nothing
but the rule's declared inputs; and a headless-Chromium render when installed.

Pages are checked through html.parser (support/report.py voxflow_page), not by matching markup strings."""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from support.report import CONFIG, Cards, voxflow_page, write_png
from voxflow.core.metrics import BRATS_REGIONS, evaluate_case, summarize

SHAPE = (24, 32, 28)  # (Z, Y, X)
SPACING = (2.0, 1.5, 1.5)  # (z, y, x) mm
SUBJECTS = ["sub01", "sub02", "sub03"]
SHIFTS = {"sub01": 0, "sub02": 5, "sub03": 2}  # prediction shift in voxels: sub02 is the worst
EPOCHS = 10  # in model_final.pt; the undeclared curve.csv beside it has 5 (never read)
QC_STEPS = {"mni": ["n4", "skullstrip", "mni"], "resampled": ["n4", "skullstrip", "native"]}  # by the stores' space
SECTIONS = ["run", "summary", "plots", "subjects", "qc-cohort", "qc-pred", "qc-pre", "curves", "runtime",
            "provenance"]


# ---------------------------------------------------------------- a fake run
def _lesion(center) -> np.ndarray:
    zz, yy, xx = np.indices(SHAPE)
    d = np.sqrt(((zz - center[0]) * SPACING[0]) ** 2 + ((yy - center[1]) * SPACING[1]) ** 2
                + ((xx - center[2]) * SPACING[2]) ** 2)
    lab = np.zeros(SHAPE, np.uint8)
    lab[d < 9] = 2
    lab[d < 6] = 4
    lab[d < 3] = 1
    return lab


def _nifti(arr_zyx: np.ndarray, path: Path) -> None:
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    affine = np.diag(list(SPACING[::-1]) + [1.0])
    nib.save(nib.Nifti1Image(np.ascontiguousarray(arr_zyx.transpose(2, 1, 0)), affine), str(path))


def _curve(epochs: int, k: int) -> pd.DataFrame:
    ep = np.arange(1, epochs + 1)
    return pd.DataFrame({"epoch": ep, "train_loss": 1.2 * np.exp(-ep / 4) + 0.1 * k, "val_dice_fg": 1 - np.exp(-ep / 3),
                         "val_dice_mean": 0.9 * (1 - np.exp(-ep / 3)), "lr": 0.01 * (1 - ep / 11), "it_per_s": 3.0,
                         "data_wait_fraction": 0.1})


def make_run(out: Path, store_space: str = "mni") -> Path:
    """A finished evaluation run under `out`: stores, predictions (native and on the stores' grid), metrics in
    native space and `store_space`, QC figures, benchmarks, two fold models with their curves, status files."""
    import torch

    from voxflow.preprocess.store import write_subject_store

    zz, yy, xx = np.indices(SHAPE)
    brain = (((zz - 12) / 11) ** 2 + ((yy - 16) / 15) ** 2 + ((xx - 14) / 13) ** 2) < 1
    rows = []
    for i, s in enumerate(SUBJECTS):
        rng = np.random.default_rng(i)
        ref = _lesion((12, 14, 12)) * brain
        pred = np.roll(ref, SHIFTS[s], axis=2)
        image = np.stack([brain * (1 + 0.2 * rng.standard_normal(SHAPE)) + (ref > 0),
                          brain * (0.5 + 0.1 * rng.standard_normal(SHAPE)) + 2.0 * (ref > 0)]).astype(np.float32)
        write_subject_store(out / "zarr" / f"{s}.zarr", image, brain.astype(np.uint8), ref, ["t1", "flair"],
                            SPACING, (0.0, 0.0, 0.0), np.eye(3), {}, chunk=16, extra_attrs={"subject": s})
        _nifti(pred, out / "predictions" / s / f"{s}_seg_{store_space}.nii.gz")
        _nifti(pred, out / "predictions" / s / f"{s}_seg.nii.gz")
        for space in ("native", store_space):
            for r in evaluate_case(pred, ref, SPACING, labels=[1, 2, 4], regions=BRATS_REGIONS):
                rows.append({"subject": s, "space": space, **r})
        for j, st in enumerate(QC_STEPS[store_space]):
            if not (s == "sub03" and st == "skullstrip"):  # one missing QC image
                write_png(out / "qc" / s / f"{st}.png", 10 * i + j)
        bench = out / "benchmarks" / "evaluate" / f"{s}.tsv"
        bench.parent.mkdir(parents=True, exist_ok=True)
        bench.write_text("s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
                         f"{1.5 + i}\t0:00:01\t200.0\t900.0\t150.0\t160.0\t0.1\t0.2\t90.0\t1.2\n")
    metrics = pd.DataFrame(rows)
    (out / "evaluation").mkdir(parents=True)
    metrics.to_csv(out / "evaluation" / "metrics.tsv", sep="\t", index=False, float_format="%.6g")
    metrics = pd.read_csv(out / "evaluation" / "metrics.tsv", sep="\t", dtype={"label": str})
    summary = pd.concat([summarize(g.drop(columns=["subject", "space"])).assign(space=sp)
                         for sp, g in metrics.groupby("space", sort=False)], ignore_index=True)
    summary = summary[["space"] + [c for c in summary.columns if c != "space"]]
    summary.to_csv(out / "evaluation" / "summary.tsv", sep="\t", index=False, float_format="%.6g")
    bench = out / "benchmarks" / "aggregate" / "aggregate.tsv"
    bench.parent.mkdir(parents=True)
    bench.write_text("s\th:m:s\tmax_rss\n0.8\t0:00:00\t120.5\n")
    model = out / "model"
    for k in (0, 1):
        (model / f"fold_{k}").mkdir(parents=True)
        torch.save({"model": {"w": torch.zeros(2)}, "curve": json.dumps(_curve(EPOCHS, k).to_dict("records"))},
                   model / f"fold_{k}" / "model_final.pt")
        _curve(5, k).to_csv(model / f"fold_{k}" / "curve.csv", index=False)  # undeclared: must not be read
    (model / "plans.json").write_text(json.dumps({"dim": "3d", "patch_size": [24, 32, 28], "batch_size": 2}))
    (model / "postprocessing.json").write_text(json.dumps({"largest_component": {"1,2,4": True}}))
    (model / "split.json").write_text(json.dumps({"test": SUBJECTS, "folds": [], "excluded": []}))
    (out / "status").mkdir()
    (out / "status" / "predicted.json").write_text(json.dumps({"subjects": SUBJECTS}))
    (out / "status" / "cohort.json").write_text(json.dumps({"subjects": SUBJECTS, "test_subjects": None,
                                                             "excluded": [], "warnings": []}))
    return out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("run") / "results")


def step_io(out: Path, html: Path, evaluate: bool = True, cohort: dict | None = None, cap: int = 12,
            store_space: str = "mni") -> tuple[dict, dict, list[str]]:
    """The report step's inputs and config as the `report` rule gives them (workflow/rules/report.smk), the
    subjects shown written first as the checkpoint report_subjects writes them; and the positional inputs
    (the files of the subjects shown, and in predict-only mode every native prediction)."""
    from voxflow.report.build import shown_subjects

    status = out / "status"
    cohort_path = status / "cohort.json"
    if cohort is not None:
        cohort_path = html.with_suffix(".cohort.json")
        cohort_path.write_text(json.dumps(cohort))
    predicted = json.loads((status / "predicted.json").read_text())["subjects"]
    metrics = out / "evaluation" / "metrics.tsv"
    shown = shown_subjects(metrics if evaluate else None, predicted, json.loads(cohort_path.read_text()), cap)
    shown_path = html.with_suffix(".shown.json")
    shown_path.write_text(json.dumps(shown))
    paths = {"prediction": str(out / "predictions" / "{subject}" / f"{{subject}}_seg_{store_space}.nii.gz"),
             "native": str(out / "predictions" / "{subject}" / "{subject}_seg.nii.gz"),
             "store": str(out / "zarr" / "{subject}.zarr"), "qc": str(out / "qc" / "{subject}" / "{step}.png"),
             "benchmarks": str(out / "benchmarks" / "{rule}" / "{job}.tsv")}
    inp = {"cohort": str(cohort_path), "subjects": str(status / "predicted.json"), "shown": str(shown_path),
           "models": [str(out / "model" / f"fold_{k}" / "model_final.pt") for k in (0, 1)],
           "plans": str(out / "model" / "plans.json"), "postprocessing": str(out / "model" / "postprocessing.json"),
           "split": str(out / "model" / "split.json")}
    if evaluate:
        inp |= {"metrics": str(metrics), "summary": str(out / "evaluation" / "summary.tsv")}
    cfg = {"config": CONFIG, "output_dir": str(out), "workflow_dir": str(html.parent), "max_qc_subjects": cap,
           "store_space": store_space, "paths": paths, "qc_steps": QC_STEPS[store_space]}
    sub = lambda key, s: paths[key].replace("{subject}", s)  # noqa: E731
    positional = [sub(k, s) for s in shown["prediction_qc"] for k in ("prediction", "store")]
    positional += [str(out / "qc" / s) for s in shown["preprocessing_qc"]]  # one job per subject: the QC folder
    positional += [] if evaluate else [sub("native", s) for s in predicted]
    return inp, cfg, positional


def build(out: Path, name: str, **kw) -> str:
    from voxflow.report.build import report

    html = out.parent / name
    inp, cfg, _ = step_io(out, html, **kw)
    info = report("cohort", inp, {"html": str(html)}, cfg)
    assert info["bytes"] == html.stat().st_size
    return html.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def report_html(run_dir) -> str:
    return build(run_dir, "report.html")


def _metrics(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / "evaluation" / "metrics.tsv", sep="\t", dtype={"label": str})


def _worst(run_dir: Path) -> list[str]:
    m = _metrics(run_dir)
    return m[(m.space == "native") & (m.label == "whole_tumor")].sort_values("dice").subject.tolist()


# ---------------------------------------------------------------- tests
def test_report_sections_and_values(run_dir, report_html):
    page = voxflow_page(report_html)
    assert page.order == SECTIONS
    assert page.nav == [f"#{s}" for s in SECTIONS]
    # cohort summary: one table per space, native first; the whole-tumour Dice cell from summary.tsv
    summary = pd.read_csv(run_dir / "evaluation" / "summary.tsv", sep="\t", dtype={"label": str})
    assert set(page.sections["summary"]["tables"]) == {"summary-native", "summary-mni"}
    for space in ("native", "mni"):
        rows = {r["label"]["text"]: r for r in page.table("summary", f"summary-{space}")["rows"]}
        assert set(rows) == set(summary[summary.space == space].label)
        r = summary[(summary.space == space) & (summary.label == "whole_tumor") & (summary.metric == "dice")].iloc[0]
        cell = rows["whole_tumor"]["dice"]
        assert cell["parts"] == [f"{r['median']:.3f} [{r['q25']:.3f}–{r['q75']:.3f}]"]
        assert cell["text"] == f"{r['mean']:.3f} ± {r['std']:.3f}" + cell["parts"][0]
        assert rows["whole_tumor"]["n"]["text"] == "3" and rows["whole_tumor"]["empty pred / ref / both"]["text"] == \
            "0 / 0 / 0"
    text = page.sections["summary"]["text"]
    assert text.index("native space") < text.index("MNI space")
    # per-subject table: worst lesion Dice first, values from metrics.tsv (sortable: numbers carry data-v)
    worst = _worst(run_dir)
    assert worst[0] == "sub02"
    t = page.table("subjects", "subject-table")
    assert "sortable" in t["class"] and [r["subject"]["text"] for r in t["rows"]] == worst
    m = _metrics(run_dir)
    dice = m[(m.space == "native") & (m.label == "whole_tumor")].set_index("subject")["dice"]
    assert [float(r["lesion Dice"]["v"]) for r in t["rows"]] == pytest.approx([dice[s] for s in worst], rel=1e-5)
    assert {"Dice 1", "Dice 2", "Dice 4", "hd95", "vol_pred_ml"} <= set(t["head"])
    # prediction QC in the same order, with each subject's Dice in its image's text
    assert page.sections["qc-pred"]["subjects"] == worst
    assert [i["alt"] for i in page.images("qc-pred")] == [f"{s}, lesion Dice {dice[s]:.3f}" for s in worst]
    # run summary cards
    cards = Cards(report_html).cards
    assert cards["subjects"] == "3" and cards["excluded"] == "0" and cards["predicted"] == "3"
    assert cards["evaluated"] == "3" and cards["mode"] == "evaluation" and cards["model"] == "3d"
    assert cards["modalities"] == "t1, flair" and cards["folds trained"] == "2 (0, 1)"
    # a run without QC scores (older runs): the cohort QC says so, the subject table has no QC column
    assert cards["QC flagged"] == "not computed" and "QC flags" not in t["head"]
    assert "QC scores were not computed" in page.sections["qc-cohort"]["text"]
    from voxflow.report.data import git_commit

    assert cards["git commit"] == git_commit(run_dir.parent)[:12]  # "unknown" outside a repository


def test_report_images(report_html):
    """4 metric plots, 3 prediction QC, 8 preprocessing thumbnails (one missing), 2 curves, 1 run time: each a
    PNG data URI that decodes."""
    from PIL import Image

    page = voxflow_page(report_html)
    counts = {sid: len(page.images(sid)) for sid in page.order}
    assert counts == {"run": 0, "summary": 0, "plots": 4, "subjects": 0, "qc-cohort": 0, "qc-pred": 3, "qc-pre": 8,
                      "curves": 2, "runtime": 1, "provenance": 0}
    for img in page.images():
        head, data = img["src"].split(",", 1)
        assert head == "data:image/png;base64"
        with Image.open(io.BytesIO(base64.b64decode(data))) as im:
            assert im.format == "PNG" and im.width > 50
    assert [i["alt"] for i in page.images("qc-pre")] == ["sub01 n4", "sub01 skullstrip", "sub01 mni", "sub02 n4",
                                                         "sub02 skullstrip", "sub02 mni", "sub03 n4", "sub03 mni"]
    assert "missing" in page.sections["qc-pre"]["text"]


def test_report_curves_runtime_provenance(run_dir, report_html):
    page = voxflow_page(report_html)
    curves = page.sections["curves"]
    best = _curve(EPOCHS, 0)
    k = best["val_dice_fg"].idxmax()
    for fold in ("fold_0", "fold_1"):  # from model_final.pt (10 epochs), not the undeclared curve.csv (5)
        assert f"{fold}: {EPOCHS} epochs, best val Dice {best.loc[k, 'val_dice_fg']:.3f} at epoch {EPOCHS}" \
            in curves["text"]
    rt = {r["rule"]["text"]: r for r in page.table("runtime", "runtime-table")["rows"]}
    assert set(rt) == {"evaluate", "aggregate"}
    assert (rt["evaluate"]["jobs"]["text"], rt["evaluate"]["total s"]["v"], rt["evaluate"]["mean s"]["text"]) == \
        ("3", "7.5", "2.5")
    assert rt["aggregate"]["max RSS (MB)"]["text"] == "120.5"
    prov = page.sections["provenance"]
    versions = {r["package"]["text"]: r["version"]["text"] for r in page.table("provenance", "version-table")["rows"]}
    for pkg in ("voxflow", "numpy", "SimpleITK", "torch", "zarr", "snakemake"):
        assert versions[pkg] == metadata.version(pkg)
    for shown in ("patch_size", "largest_component", '"test"', "label_values", "git commit"):
        assert shown in prov["text"], shown


def test_report_is_self_contained(report_html):
    page = voxflow_page(report_html)
    assert all(v.startswith("data:image/png;base64,") for tag, k, v in page.links if k == "src")
    assert all(v.startswith("#") for tag, k, v in page.links if k == "href")
    assert not [t for t, a in page.tags if t in ("link", "iframe", "object", "embed")]
    assert not [a for t, a in page.tags if t == "script" and "src" in a]
    assert "http://" not in report_html and "https://" not in report_html
    assert "url(" not in page.style and "@import" not in page.style
    assert "table.sortable" in page.style and 'addEventListener("click"' in page.script
    ids = [a["id"] for t, a in page.tags if "id" in a]
    assert len(ids) == len(set(ids)), "duplicate element ids"


def _green_pixels(img: dict) -> int:
    """Pixels of the reference-contour colour in an image."""
    from PIL import Image

    px = np.asarray(Image.open(io.BytesIO(base64.b64decode(img["src"].split(",", 1)[1]))).convert("RGB")).astype(int)
    return int(((px[..., 1] > 150) & (px[..., 0] < 110) & (px[..., 2] < 140)).sum())


def test_report_predict_only_and_cap(run_dir, report_html):
    import SimpleITK as sitk

    doc = build(run_dir, "predict_only.html", evaluate=False, cap=2)
    page = voxflow_page(doc)
    assert page.order == ["run", "volumes", "qc-cohort", "qc-pred", "qc-pre", "curves", "runtime", "provenance"]
    vol = page.table("volumes", "volume-table")
    assert "sortable" in vol["class"] and [r["subject"]["text"] for r in vol["rows"]] == SUBJECTS
    arr = sitk.GetArrayFromImage(sitk.ReadImage(str(run_dir / "predictions" / "sub02" / "sub02_seg.nii.gz")))
    ml = float(np.prod(SPACING)) / 1000
    row = vol["rows"][1]
    assert float(row["foreground"]["v"]) == pytest.approx((arr > 0).sum() * ml, rel=1e-5)
    assert float(row["4"]["v"]) == pytest.approx((arr == 4).sum() * ml, rel=1e-5)
    assert float(row["whole_tumor"]["v"]) == pytest.approx(np.isin(arr, [1, 2, 4]).sum() * ml, rel=1e-5)
    assert Cards(doc).cards["mode"] == "predict-only" and Cards(doc).cards["evaluated"] == "—"
    # prediction QC: by name, capped, no reference contour (green) where the evaluation run has one
    qc = page.sections["qc-pred"]
    assert qc["subjects"] == ["sub01", "sub02"] and "Showing 2 of 3 subjects" in qc["text"]
    assert "reference" not in qc["text"] and "prediction" in qc["text"]
    assert _green_pixels(page.images("qc-pred")[0]) == 0 < _green_pixels(voxflow_page(report_html).images("qc-pred")[0])
    assert "Showing the first 2 of 3 subjects" in page.sections["qc-pre"]["text"]
    assert len(page.images("qc-pre")) == 6


def test_report_names_excluded_subjects_first_and_lists_warnings(run_dir, report_html):
    """status/cohort.json: the excluded subjects are the report's first section (none: no section), the
    validation warnings have theirs, and the run summary counts both; subject names are escaped."""
    cohort = {"subjects": SUBJECTS, "test_subjects": None,
              "excluded": [{"subject": "bad<1>", "step": "validate", "file": "/d/bad<1>/t1.nii.gz",
                            "problem": "t1 image file is empty"},
                           {"subject": "bad2", "step": "skullstrip", "file": "-",
                            "problem": "RuntimeError: skull stripping produced an empty brain mask"}],
              "warnings": [{"subject": "sub02", "file": "/d/sub02/seg.nii.gz",
                            "problem": "label has no foreground (all voxels are 0)"}]}
    doc = build(run_dir, "excluded.html", cohort=cohort)
    page = voxflow_page(doc)
    assert page.order == ["excluded", "run", "warnings"] + SECTIONS[1:]
    rows = page.table("excluded", "excluded-table")["rows"]
    assert [(r["subject"]["text"], r["step"]["text"]) for r in rows] == [("bad<1>", "validate"), ("bad2", "skullstrip")]
    assert rows[1]["problem"]["text"] == "RuntimeError: skull stripping produced an empty brain mask"
    assert "<1>" not in doc.split('id="excluded"', 1)[1].split("</section>", 1)[0]  # escaped in the markup
    warn = page.table("warnings", "warning-table")["rows"]
    assert [(r["subject"]["text"], r["problem"]["text"]) for r in warn] == \
        [("sub02", "label has no foreground (all voxels are 0)")]
    cards = Cards(doc).cards
    assert cards["subjects"] == str(len(SUBJECTS) + 2) and cards["excluded"] == "2"
    # the excluded subjects are in the preprocessing QC (by name, their QC shows where they stopped)
    qc = page.sections["qc-pre"]
    assert qc["text"].index("bad2") < qc["text"].index("bad<1>") < qc["text"].index("sub01")
    assert len(page.images("qc-pre")) == 8 and qc["text"].count("missing") == 2 * 3 + 1
    clean = voxflow_page(report_html)
    assert "excluded" not in clean.order and "warnings" not in clean.order  # a clean cohort


def test_report_missing_parts(tmp_path):
    """Nothing but a config and a subject list: every section degrades to a note, nothing crashes."""
    from voxflow.report.build import report

    (tmp_path / "predicted.json").write_text(json.dumps({"subjects": ["ghost"]}))
    html = tmp_path / "r" / "report.html"
    report("cohort", {"subjects": str(tmp_path / "predicted.json"), "metrics": str(tmp_path / "nope.tsv"),
                      "plans": str(tmp_path / "plans.json")},
           {"html": str(html)},
           {"config": CONFIG, "output_dir": str(tmp_path / "empty"), "workflow_dir": str(tmp_path)})
    page = voxflow_page(html.read_text())
    text = {sid: s["text"] for sid, s in page.sections.items()}
    assert "nope.tsv missing or empty" in text["volumes"] and "No prediction files found" in text["volumes"]
    assert "zarr store missing" in text["qc-pred"] and "No QC images" in text["qc-pre"]
    assert "No trained folds found" in text["curves"] and "No benchmark files found" in text["runtime"]
    assert "QC scores were not computed" in text["qc-cohort"]
    assert "plans.json: not found" in text["provenance"] and "postprocessing.json: not found" in text["provenance"]
    assert not list((tmp_path / "r").glob(".*tmp-*"))


def test_report_space_names_of_a_native_run(tmp_path_factory):
    """preprocess.space: native: the stores' grid is "resampled"; the page names it so, and nothing shown says
    MNI (the merged config in the provenance is the user's text, left out)."""
    out = make_run(tmp_path_factory.mktemp("native") / "results", store_space="resampled")
    doc = build(out, "native.html", store_space="resampled")
    page = voxflow_page(doc)
    assert set(page.sections["summary"]["tables"]) == {"summary-native", "summary-resampled"}
    assert "resampled space" in page.sections["summary"]["text"]
    assert "resampled space (the stores' grid)" in page.sections["qc-pred"]["text"]
    assert [i["alt"] for i in page.images("plots")] == [f"{m} per label (native space); one point per subject"
                                                       for m in ("dice", "hd95", "assd", "nsd")]
    assert len(page.images("qc-pred")) == 3  # the _seg_resampled predictions were found
    visible = " ".join(s["visible"] for s in page.sections.values()) + " ".join(
        a.get("alt", "") for t, a in page.tags)
    assert "mni" not in visible.lower()
    mni = voxflow_page(build(out, "native_as_mni.html", store_space="mni"))
    assert "MNI space (the stores' grid)" in mni.sections["qc-pred"]["text"]


@pytest.mark.parametrize("evaluate", [True, False], ids=["evaluation", "predict-only"])
def test_report_reads_only_its_declared_inputs(run_dir, tmp_path, evaluate):
    """The rule's inputs, copied alone into another run folder (with the benchmarks, which the step finds by
    their pattern) make the same report: nothing else of the run (other subjects' QC, stores and predictions,
    curve.csv, the native predictions of an evaluation run) is read."""
    cap = 2
    html_full = tmp_path / "full" / "report.html"
    html_full.parent.mkdir()
    inp, _, positional = step_io(run_dir, html_full, evaluate=evaluate, cap=cap)
    named = [p for v in inp.values() for p in (v if isinstance(v, list) else [v])]
    copy = tmp_path / "copy" / "results"
    for src in [*named, *positional, str(run_dir / "benchmarks")]:
        rel = Path(src).relative_to(run_dir) if Path(src).is_relative_to(run_dir) else None
        if rel is None:  # the shown-subjects file, written beside the page
            continue
        dst = copy / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if Path(src).is_dir() else shutil.copy2)(src, dst)
    hidden = "sub01" if evaluate else "sub03"  # not among the 2 shown: worst first, or by name
    assert not (copy / "zarr" / f"{hidden}.zarr").exists() and not (copy / "qc" / "sub03").exists()
    assert not (copy / "model" / "fold_0" / "curve.csv").exists()
    assert (copy / "predictions" / "sub01" / "sub01_seg.nii.gz").exists() == (not evaluate)

    from voxflow.report.build import report

    def page(out: Path, html: Path) -> dict:
        inp, cfg, _ = step_io(out, html, evaluate=evaluate, cap=cap)
        report("cohort", inp, {"html": str(html)}, cfg)
        p = voxflow_page(html.read_text().replace(str(out), "RUN"))
        return {sid: (s["text"], [i["src"] for i in s["imgs"]]) for sid, s in p.sections.items()
                if sid not in ("run", "provenance")}  # the date; the paths of the inputs

    full, alone = page(run_dir, html_full), page(copy, tmp_path / "copy" / "report.html")
    assert full.keys() == alone.keys()
    for sid in full:
        assert full[sid] == alone[sid], sid
    assert len(full["qc-pred"][1]) == 2 and len(full["curves"][1]) == 2


def test_shown_subjects():
    """The checkpoint's choice: worst lesion Dice first (then predicted subjects without metrics), the whole
    cohort by name (excluded ones too), at most `cap` each, with the totals."""
    from voxflow.report.build import shown_subjects

    cohort = {"subjects": ["c", "a", "b"], "excluded": [{"subject": "0bad"}]}
    assert shown_subjects(None, ["c", "a"], cohort, cap=3) == {
        "prediction_qc": ["a", "c"], "n_predicted": 2, "preprocessing_qc": ["0bad", "a", "b"], "n_subjects": 4,
        "flagged": []}


def test_training_curve_is_read_from_the_model_without_torch(run_dir, tmp_path):
    """read_curve skims model_final.pt's pickle (no torch import, no weights read); a checkpoint in torch's
    legacy format falls back to torch.load; both give the saved rows."""
    import sys

    import torch

    model = run_dir / "model" / "fold_1" / "model_final.pt"
    code = ("import sys; from voxflow.report.data import read_curve; c = read_curve(sys.argv[1]); "
            "print(len(c), round(float(c.train_loss.iloc[0]), 6), 'torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code, str(model)], capture_output=True, text=True, timeout=120,
                       check=True)
    n, loss, imported = r.stdout.split()
    assert (int(n), float(loss), imported) == (EPOCHS, pytest.approx(_curve(EPOCHS, 1).train_loss.iloc[0]), "False")
    from voxflow.report.data import read_curve

    legacy = tmp_path / "legacy.pt"
    torch.save({"curve": json.dumps(_curve(4, 0).to_dict("records")), "w": torch.ones(3)}, legacy,
               _use_new_zipfile_serialization=False)
    pd.testing.assert_frame_equal(read_curve(legacy), _curve(4, 0), check_dtype=False)
    torch.save({"model": {}}, tmp_path / "nocurve.pt")
    assert read_curve(tmp_path / "nocurve.pt") is None


CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


def _chromium(args: list[str], profile: Path, timeout: int = 60) -> subprocess.CompletedProcess:
    base = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={profile}"]
    return subprocess.run(base + args, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (Debian package `chromium`; CI installs it)")
def test_report_renders_in_chromium(run_dir, report_html, tmp_path):
    from PIL import Image

    html = run_dir.parent / "report.html"
    shot = tmp_path / "shot.png"
    r = _chromium([f"--screenshot={shot}", "--window-size=1400,3000", html.as_uri()], tmp_path / "p1")
    assert shot.is_file(), r.stderr[-2000:]
    px = np.asarray(Image.open(shot).convert("L"))
    assert px.shape == (3000, 1400) and (px < 200).mean() > 0.01  # not a blank page
    # the rendered DOM, after the inline sorter ran on two clicks on the "subject" header (descending)
    clicked = tmp_path / "clicked.html"
    clicked.write_text(report_html.replace(
        "</body>", '<script>var h=document.querySelector("#subject-table th");h.click();h.click();</script></body>'))
    dom = voxflow_page(_chromium(["--dump-dom", clicked.as_uri()], tmp_path / "p2").stdout)
    assert dom.order == SECTIONS and len(dom.images()) == 18
    t = dom.table("subjects", "subject-table")
    assert [r["subject"]["text"] for r in t["rows"]] == sorted(SUBJECTS, reverse=True)
    assert [a.get("aria-sort") for tag, a in dom.tags if tag == "th" and a.get("aria-sort")] == ["descending"]
    # a numeric column sorts by value: one click on "lesion Dice" puts the worst subject first
    clicked.write_text(report_html.replace("</body>", '<script>document.querySelectorAll("#subject-table th")[1]'
                                                      '.click();</script></body>'))
    dom = voxflow_page(_chromium(["--dump-dom", clicked.as_uri()], tmp_path / "p3").stdout)
    assert [r["subject"]["text"] for r in dom.table("subjects", "subject-table")["rows"]] == \
        sorted(SUBJECTS, key={"sub02": 0, "sub03": 1, "sub01": 2}.get)
