"""The cohort report (voxflow.report) on a small fake run directory: content, self-containment,
worst-first QC, predict-only mode, missing parts; and a headless-Chromium render when installed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from voxflow.metrics import BRATS_REGIONS, evaluate_case, summarize

SHAPE = (24, 32, 28)  # (Z, Y, X)
SPACING = (2.0, 1.5, 1.5)  # (z, y, x) mm
SUBJECTS = ["sub01", "sub02", "sub03"]
SHIFTS = {"sub01": 0, "sub02": 5, "sub03": 2}  # prediction shift in voxels: sub02 is the worst
CONFIG = {"output_dir": "results", "input": {"modalities": ["t1", "flair"], "reference": "t1",
                                             "label_values": [0, 1, 2, 4]},
          "model": {"dim": "3d"}, "evaluate": {"regions": BRATS_REGIONS, "tolerance_mm": 1.0}}


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


def _png(path: Path, seed: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 3, figsize=(9, 3))
    for ax in axes:
        ax.imshow(np.random.default_rng(seed).random((32, 28)), cmap="gray")
    fig.savefig(path, dpi=80)
    plt.close(fig)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    from voxflow.preprocess.store import write_subject_store

    out = tmp_path_factory.mktemp("run") / "results"
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
        _nifti(pred, out / "predictions" / s / f"{s}_seg_mni.nii.gz")
        _nifti(pred, out / "predictions" / s / f"{s}_seg.nii.gz")
        for space in ("native", "mni"):
            for r in evaluate_case(pred, ref, SPACING, labels=[1, 2, 4], regions=BRATS_REGIONS):
                rows.append({"subject": s, "space": space, **r})
        for j, st in enumerate(("n4", "skullstrip", "mni")):
            if not (s == "sub03" and st == "skullstrip"):  # one missing QC image
                _png(out / "qc" / s / f"{st}.png", 10 * i + j)
        bench = out / "benchmarks" / "evaluate" / f"{s}.tsv"
        bench.parent.mkdir(parents=True, exist_ok=True)
        bench.write_text("s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
                         f"{1.5 + i}\t0:00:01\t200.0\t900.0\t150.0\t160.0\t0.1\t0.2\t90.0\t1.2\n")
    metrics = pd.DataFrame(rows)
    (out / "evaluation").mkdir(parents=True)
    metrics.to_csv(out / "evaluation" / "metrics.tsv", sep="\t", index=False, float_format="%.6g")
    metrics = pd.read_csv(out / "evaluation" / "metrics.tsv", sep="\t", dtype={"label": str})
    summary = pd.concat([summarize(g.drop(columns=["subject", "space"])).assign(space=sp)[
        ["space"] + list(summarize(g.drop(columns=["subject", "space"])).columns)]
        for sp, g in metrics.groupby("space", sort=False)], ignore_index=True)
    summary.to_csv(out / "evaluation" / "summary.tsv", sep="\t", index=False, float_format="%.6g")
    bench = out / "benchmarks" / "aggregate" / "aggregate.tsv"
    bench.parent.mkdir(parents=True)
    bench.write_text("s\th:m:s\tmax_rss\n0.8\t0:00:00\t120.5\n")
    model = out / "model"
    for k in (0, 1):
        (model / f"fold_{k}").mkdir(parents=True)
        ep = np.arange(10)
        pd.DataFrame({"epoch": ep, "train_loss": 1.2 * np.exp(-ep / 4) + 0.1 * k, "val_dice_fg": 1 - np.exp(-ep / 3),
                      "val_dice_mean": 0.9 * (1 - np.exp(-ep / 3)), "lr": 0.01 * (1 - ep / 10), "it_per_s": 3.0,
                      "data_wait_fraction": 0.1}).to_csv(model / f"fold_{k}" / "curve.csv", index=False)
    (model / "plans.json").write_text(json.dumps({"dim": "3d", "patch_size": [24, 32, 28], "batch_size": 2}))
    (model / "postprocessing.json").write_text(json.dumps({"largest_component": {"1,2,4": True}}))
    return out


def _build(run_dir: Path, name: str, metrics: bool = True, **kw) -> str:
    from voxflow.report import build_report

    html = run_dir.parent / name
    build_report(run_dir, CONFIG, html, run_dir / "evaluation" / "metrics.tsv" if metrics else None,
                 run_dir / "evaluation" / "summary.tsv" if metrics else None, SUBJECTS,
                 workflow_dir=run_dir.parent, **kw)
    return html.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def report_html(run_dir) -> str:
    return _build(run_dir, "report.html")


def _section(doc: str, sid: str) -> str:
    return doc.split(f'<section id="{sid}">', 1)[1].split("</section>", 1)[0]


def test_report_content(run_dir, report_html):
    doc = report_html
    summary = pd.read_csv(run_dir / "evaluation" / "summary.tsv", sep="\t", dtype={"label": str})
    r = summary[(summary.space == "native") & (summary.label == "whole_tumor") & (summary.metric == "dice")].iloc[0]
    assert f"{r['mean']:.3f} ± {r['std']:.3f}" in _section(doc, "summary")
    assert f"{r['median']:.3f} [{r['q25']:.3f}–{r['q75']:.3f}]" in _section(doc, "summary")
    assert "empty pred / ref / both" in doc
    # figures: 4 metric plots, 3 prediction QC, 8 preprocessing thumbnails (one missing), 2 curves, 1 run time
    srcs = re.findall(r'<img[^>]*\ssrc="([^"]*)"', doc)
    assert len(srcs) == 4 + 3 + 8 + 2 + 1
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    assert len(re.findall(r"<img", _section(doc, "plots"))) == 4
    # sortable per-subject table with the inline sorter
    assert '<table class="sortable" id="subject-table">' in doc and 'addEventListener("click"' in doc
    ids = re.findall(r'\sid="([^"]+)"', doc)
    assert len(ids) == len(set(ids)), "duplicate element ids"
    # worst subject (lowest whole-tumour Dice) first in the prediction QC
    m = pd.read_csv(run_dir / "evaluation" / "metrics.tsv", sep="\t", dtype={"label": str})
    worst = m[(m.space == "native") & (m.label == "whole_tumor")].sort_values("dice").subject.tolist()
    assert worst[0] == "sub02"
    assert re.findall(r'data-subject="([^"]+)"', _section(doc, "qc-pred")) == worst
    # self-contained: no external reference of any kind
    assert "http://" not in doc and "https://" not in doc
    assert not re.search(r"<(script|img|iframe)[^>]*\ssrc=\"(?!data:)", doc) and "<link" not in doc
    assert "@import" not in doc and "url(" not in doc
    # provenance and header
    prov = _section(doc, "provenance")
    for pkg in ("voxflow", "numpy", "SimpleITK", "torch", "zarr", "snakemake"):
        assert f"<td>{pkg}</td><td>{metadata.version(pkg)}</td>" in prov
    assert "patch_size" in prov and "largest_component" in prov and "git commit" in prov
    from voxflow.report import git_commit

    assert f"<span>{git_commit(run_dir.parent)[:12]}</span>" in _section(doc, "run")  # "unknown" outside a repo
    assert "No trained folds" not in doc and "fold_1" in _section(doc, "curves")
    assert '<td>evaluate</td><td data-v="3">3</td><td data-v="7.5">7.5</td>' in _section(doc, "runtime")


def _green_pixels(section: str) -> int:
    """Pixels of the reference-contour colour in the first image of a section."""
    import base64
    import io

    from PIL import Image

    uri = re.search(r'src="data:image/png;base64,([^"]+)"', section).group(1)
    px = np.asarray(Image.open(io.BytesIO(base64.b64decode(uri))).convert("RGB")).astype(int)
    return int(((px[..., 1] > 150) & (px[..., 0] < 110) & (px[..., 2] < 140)).sum())


def test_report_predict_only_and_cap(run_dir, report_html):
    doc = _build(run_dir, "predict_only.html", metrics=False, max_qc_subjects=2)
    assert '<table class="sortable" id="volume-table">' in doc
    assert 'id="summary"' not in doc and 'id="subject-table"' not in doc
    import SimpleITK as sitk

    arr = sitk.GetArrayFromImage(sitk.ReadImage(str(run_dir / "predictions" / "sub01" / "sub01_seg.nii.gz")))
    whole_ml = float((arr > 0).sum() * np.prod(SPACING) / 1000)
    assert f"{whole_ml:.3f}" in _section(doc, "volumes")
    assert re.findall(r'data-subject="([^"]+)"', _section(doc, "qc-pred")) == ["sub01", "sub02"]
    assert "reference" not in _section(doc, "qc-pred") and "Showing 2 of 3 subjects" in doc
    assert _green_pixels(_section(doc, "qc-pred")) == 0 < _green_pixels(_section(report_html, "qc-pred"))
    assert "Showing the first 2 of 3 subjects" in _section(doc, "qc-pre")
    assert "http://" not in doc and "https://" not in doc


def test_report_names_excluded_subjects_first_and_lists_warnings(run_dir, report_html):
    """status/cohort.json: the excluded subjects are the report's first section (none: no section), the
    validation warnings have theirs, and the run summary counts both."""
    cohort = {"subjects": SUBJECTS, "test_subjects": None,
              "excluded": [{"subject": "bad<1>", "step": "validate", "file": "/d/bad<1>/t1.nii.gz",
                            "problem": "t1 image file is empty"},
                           {"subject": "bad2", "step": "skullstrip", "file": "-",
                            "problem": "RuntimeError: skull stripping produced an empty brain mask"}],
              "warnings": [{"subject": "sub02", "file": "/d/sub02/seg.nii.gz",
                            "problem": "label has no foreground (all voxels are 0)"}]}
    doc = _build(run_dir, "excluded.html", cohort=cohort)
    assert re.findall(r'<section id="([\w-]+)">', doc)[0] == "excluded"
    first = _section(doc, "excluded")
    assert "bad&lt;1&gt;" in first and "<1>" not in first  # escaped
    assert "skullstrip" in first and "RuntimeError: skull stripping produced an empty brain mask" in first
    assert first.count("<tr>") == 3  # header + 2 subjects
    warn = _section(doc, "warnings")
    assert "sub02" in warn and "label has no foreground" in warn
    cards = dict(re.findall(r'<div class="card"><b>([^<]+)</b><span>([^<]+)</span>', _section(doc, "run")))
    assert cards["subjects"] == str(len(SUBJECTS) + 2) and cards["excluded"] == "2"
    assert 'id="excluded"' not in report_html and 'id="warnings"' not in report_html  # a clean cohort


def test_report_missing_parts(tmp_path):
    """Nothing but a config: every section degrades to a note, nothing crashes."""
    from voxflow.report import build_report

    html = tmp_path / "r" / "report.html"
    build_report(tmp_path / "empty", CONFIG, html, tmp_path / "nope.tsv", None, ["ghost"], workflow_dir=tmp_path)
    doc = html.read_text()
    for note in ("No trained folds found", "No benchmark files found", "No QC images", "plans.json: not found",
                 "zarr store missing", "No prediction files found"):
        assert note in doc, note
    assert not list((tmp_path / "r").glob(".*tmp-*"))


def test_report_step(run_dir, tmp_path):
    from voxflow.report import report  # noqa: F401  (registers the step)
    from voxflow.steps import STEPS

    out = tmp_path / "report" / "report.html"
    info = STEPS["report"]("cohort", {"summary": str(run_dir / "evaluation" / "summary.tsv"),
                                      "metrics": str(run_dir / "evaluation" / "metrics.tsv")},
                           {"html": str(out)}, {"config": CONFIG, "subjects": SUBJECTS, "output_dir": str(run_dir),
                                                "workflow_dir": str(tmp_path)})
    assert out.is_file() and info["bytes"] == out.stat().st_size


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
    # rendered DOM, after the inline sorter ran on two clicks on the "subject" header (descending)
    clicked = tmp_path / "clicked.html"
    clicked.write_text(report_html.replace(
        "</body>", '<script>var h=document.querySelector("#subject-table th");h.click();h.click();</script></body>'))
    dom = _chromium(["--dump-dom", clicked.as_uri()], tmp_path / "p2").stdout
    assert 'id="summary-native"' in dom and 'id="subject-table"' in dom
    assert len(re.findall(r'<img[^>]*src="data:image/png;base64,', dom)) == 18
    table = dom.split('id="subject-table"', 1)[1].split("</table>", 1)[0]
    assert re.findall(r"<tr><td>(sub\d+)</td>", table) == ["sub03", "sub02", "sub01"]
    assert 'aria-sort="descending"' in table
