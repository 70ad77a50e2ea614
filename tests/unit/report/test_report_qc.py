"""The report's cohort-QC section (voxflow.report.qc) on a small fake run with qc/scores.tsv and qc/flags.tsv,
through the report step with the inputs the `report` rule gives it: the score panels, the flag table worst first
with the flagged subjects' QC images, the QC flags column of the per-subject table, the small-cohort note, the
subjects kept out of training, a run without QC scores, escaping; and the checkpoint's list of flagged subjects."""

from __future__ import annotations

import base64
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support.report import CONFIG, voxflow_page, write_png

from voxflow.qc.scores import MIN_SUBJECTS_FOR_Z, SCORES, flag_outliers

ODD = 'odd<b>&"1'  # a subject name that markup would misread
SUBJECTS = [f"sub{i:02d}" for i in range(1, 12)] + [ODD]  # 12: enough for robust z-scores
MODALITIES = ("t1", "flair")
STEPS = ["n4", "skullstrip"]
CAP = 3  # subjects per QC section: by name, sub07 would not be among the first 3


def scores_frame(subjects: list[str], seed: int = 0) -> pd.DataFrame:
    """Long-format scores: snr and efc per modality, brain_volume_ml of the mask, and a t1 cnr that is NaN for
    everyone (no panel). sub07's t1 efc is far above the cohort (a z-score flag); ODD's brain volume is below the
    sanity bound of 300 ml (a bounds flag, whatever the cohort size)."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in subjects:
        for m in MODALITIES:
            rows += [(s, m, "snr", 20 + rng.normal(0, 1)), (s, m, "efc", 0.45 + rng.normal(0, 0.01))]
        rows += [(s, "t1", "cnr", float("nan")), (s, "mask", "brain_volume_ml", 1400 + rng.normal(0, 40))]
    df = pd.DataFrame(rows, columns=["subject", "modality", "score", "value"])
    df.loc[(df.subject == "sub07") & (df.modality == "t1") & (df.score == "efc"), "value"] = 0.61
    df.loc[(df.subject == ODD) & (df.score == "brain_volume_ml"), "value"] = 150.0
    return df


def flags_frame(scores: pd.DataFrame) -> pd.DataFrame:
    """flags.tsv as the pipeline makes it: voxflow.qc.scores.flag_outliers per modality, worst first overall."""
    flags = []
    for m, g in scores.groupby("modality", sort=False):
        per = {s: dict(zip(gs.score, gs.value)) for s, gs in g.groupby("subject")}
        flags += [f | {"modality": m} for f in flag_outliers(
            per, bounds={k: v[1] for k, v in SCORES.items()}, direction={k: v[0] for k, v in SCORES.items()})]
    flags.sort(key=lambda f: (not f["reason"].startswith("outside"), -abs(f["z"]), f["subject"], f["score"]))
    return pd.DataFrame(flags, columns=["subject", "modality", "score", "value", "median", "z", "reason"])


def make_qc_run(out: Path, subjects: list[str] = SUBJECTS, qc_excluded: list[dict] | None = None) -> Path:
    """A finished evaluation run's files the report reads: metrics (ODD and sub07 worst), status files, split.json,
    qc/scores.tsv, qc/flags.tsv and two QC images per subject."""
    from voxflow.core.metrics import summarize

    rows = []
    for i, s in enumerate(subjects):
        dice = 0.3 if s == "sub07" else 0.2 if s == ODD else 0.8 + 0.01 * i
        rows += [{"subject": s, "space": "native", "label": lab, "dice": dice - 0.05 * k, "hd95": 2.0 + k,
                  "vol_ref_ml": 10.0, "vol_pred_ml": 9.0} for k, lab in enumerate(("1", "whole_tumor"))]
    metrics = pd.DataFrame(rows)
    (out / "evaluation").mkdir(parents=True)
    metrics.to_csv(out / "evaluation" / "metrics.tsv", sep="\t", index=False)
    summarize(metrics.drop(columns=["subject", "space"])).assign(space="native").to_csv(
        out / "evaluation" / "summary.tsv", sep="\t", index=False)
    (out / "status").mkdir()
    (out / "status" / "predicted.json").write_text(json.dumps({"subjects": subjects}))
    (out / "status" / "cohort.json").write_text(json.dumps({"subjects": subjects, "excluded": [], "warnings": []}))
    (out / "model").mkdir()
    split = {"test": [], "folds": [], "excluded": []} | ({"qc_excluded": qc_excluded} if qc_excluded else {})
    (out / "model" / "split.json").write_text(json.dumps(split))
    scores = scores_frame(subjects)
    (out / "qc").mkdir()
    scores.to_csv(out / "qc" / "scores.tsv", sep="\t", index=False)
    flags_frame(scores).to_csv(out / "qc" / "flags.tsv", sep="\t", index=False)
    for i, s in enumerate(subjects):
        for j, st in enumerate(STEPS):
            write_png(out / "qc" / s / f"{st}.png", 10 * i + j)
    return out


def step_io(out: Path, html: Path, qc: bool = True) -> tuple[dict, dict, list[str]]:
    """The report step's inputs and config as the rule gives them, the checkpoint's file written first (by
    write_shown_subjects, as the checkpoint report_subjects does); and the positional inputs
    (report_subject_files: the QC folders of the subjects shown, flagged ones included)."""
    from voxflow.report.build import write_shown_subjects

    status = out / "status"
    flags = out / "qc" / "flags.tsv"
    shown_path = html.with_suffix(".shown.json")
    shown = write_shown_subjects(str(out / "evaluation" / "metrics.tsv"), str(status / "predicted.json"),
                                 str(status / "cohort.json"), CAP, str(shown_path), str(flags) if qc else None)
    inp = {"cohort": str(status / "cohort.json"), "subjects": str(status / "predicted.json"),
           "shown": str(shown_path), "split": str(out / "model" / "split.json"),
           "metrics": str(out / "evaluation" / "metrics.tsv"), "summary": str(out / "evaluation" / "summary.tsv")}
    if qc:
        inp |= {"qc_scores": str(out / "qc" / "scores.tsv"), "qc_flags": str(flags)}
    cfg = {"config": CONFIG, "output_dir": str(out), "workflow_dir": str(html.parent), "max_qc_subjects": CAP,
           "store_space": "mni", "qc_steps": STEPS,
           "paths": {"prediction": str(out / "predictions" / "{subject}" / "{subject}_seg_mni.nii.gz"),
                     "native": str(out / "predictions" / "{subject}" / "{subject}_seg.nii.gz"),
                     "store": str(out / "zarr" / "{subject}.zarr"), "qc": str(out / "qc" / "{subject}" / "{step}.png"),
                     "benchmarks": str(out / "benchmarks" / "{rule}" / "{job}.tsv")}}
    positional = [str(out / "qc" / s) for s in dict.fromkeys(shown.get("flagged", []) + shown["preprocessing_qc"])]
    return inp, cfg, positional


def build(out: Path, name: str, qc: bool = True) -> str:
    from voxflow.report.build import report

    html = out.parent / name
    inp, cfg, _ = step_io(out, html, qc)
    report("cohort", inp, {"html": str(html)}, cfg)
    return html.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def qc_run(tmp_path_factory) -> Path:
    held = [{"subject": "sub07", "flags": ["t1 efc=0.61 (median 0.45)"]}]
    return make_qc_run(tmp_path_factory.mktemp("qc") / "results", qc_excluded=held)


@pytest.fixture(scope="module")
def qc_html(qc_run) -> str:
    return build(qc_run, "report.html")


def _flags(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "qc" / "flags.tsv", sep="\t", dtype={"subject": str})


def _decode(img: dict):
    from PIL import Image

    head, data = img["src"].split(",", 1)
    assert head == "data:image/png;base64"
    im = Image.open(io.BytesIO(base64.b64decode(data)))
    im.load()
    return im


# ---------------------------------------------------------------- tests
def test_fixture_flags_the_two_planted_outliers(qc_run):
    flags = _flags(qc_run)
    assert [(r.subject, r.modality, r.score) for r in flags.itertuples()] == \
        [(ODD, "mask", "brain_volume_ml"), ("sub07", "t1", "efc")]
    assert flags.reason[0].startswith("outside the sanity bounds") and flags.reason[1].startswith("robust z")


def test_cohort_qc_flag_table_worst_first(qc_run, qc_html):
    page = voxflow_page(qc_html)
    assert page.order.index("subjects") < page.order.index("qc-cohort") < page.order.index("qc-pred")
    t = page.table("qc-cohort", "qc-flag-table")
    assert t["head"] == ["subject", "modality", "score", "value", "cohort median", "z", "reason"]
    flags = _flags(qc_run)
    assert [(r["subject"]["text"], r["modality"]["text"], r["score"]["text"]) for r in t["rows"]] == \
        list(zip(flags.subject, flags.modality, flags.score))
    assert [r["reason"]["text"] for r in t["rows"]] == list(flags.reason)
    assert [float(r["value"]["v"]) for r in t["rows"]] == pytest.approx(list(flags.value), rel=1e-5)
    assert float(t["rows"][1]["cohort median"]["v"]) == pytest.approx(flags["median"][1], rel=1e-5)
    assert float(t["rows"][1]["z"]["v"]) == pytest.approx(flags.z[1], rel=1e-5) and flags.z[1] > 3.5
    text = page.sections["qc-cohort"]["text"]
    assert "No subject flagged" not in text and "fewer than" not in text and "not computed" not in text
    assert "2 score(s) of 2 subject(s)" in text


def test_cohort_qc_panels_one_per_score_with_data(qc_run, qc_html):
    """One strip plot per (modality, score) with a finite value (t1 cnr, all NaN, has none); the flagged
    score's panel has red points, an unflagged one none."""
    from voxflow.report.plots import PRED_COLOR

    scores = pd.read_csv(qc_run / "qc" / "scores.tsv", sep="\t")
    with_data = scores.dropna(subset=["value"]).groupby(["modality", "score"], sort=False).size()
    assert len(with_data) == 5
    panels = [i for i in voxflow_page(qc_html).images("qc-cohort") if "dashed: median" in i["alt"]]
    assert [i["alt"].split(":")[0] for i in panels] == [f"{m} {s}" for m, s in with_data.index]
    red = tuple(int(PRED_COLOR[k:k + 2], 16) for k in (1, 3, 5))

    def red_pixels(img: dict) -> int:
        px = np.asarray(_decode(img).convert("RGB")).astype(int)
        return int((np.abs(px - red).sum(-1) < 40).sum())

    by = {i["alt"].split(":")[0]: i for i in panels}
    assert "1 flagged" in by["t1 efc"]["alt"] and "0 flagged" in by["flair efc"]["alt"]
    assert red_pixels(by["t1 efc"]) > 5 and red_pixels(by["mask brain_volume_ml"]) > 5
    assert red_pixels(by["flair snr"]) == 0


def test_cohort_qc_shows_the_flagged_subjects_qc_images(qc_html):
    page = voxflow_page(qc_html)
    inline = [i for i in page.images("qc-cohort") if i["alt"].endswith("(flagged)")]
    assert [i["alt"] for i in inline] == [f"{s} {st} (flagged)" for s in (ODD, "sub07") for st in STEPS]
    for img in inline:
        im = _decode(img)
        assert im.format == "PNG" and 50 < im.width <= 420
    assert page.sections["qc-cohort"]["subjects"] == [ODD, "sub07"]
    # the preprocessing QC lists them first (flagged first, then by name), marked, within the cap
    pre = page.sections["qc-pre"]
    assert [i["alt"] for i in page.images("qc-pre")] == [f"{s} {st}" for s in (ODD, "sub07", "sub01") for st in STEPS]
    assert pre["text"].count("QC flagged") == 2


def test_subject_table_names_the_flagged_scores(qc_html):
    rows = {r["subject"]["text"]: r for r in voxflow_page(qc_html).table("subjects", "subject-table")["rows"]}
    assert rows["sub07"]["QC flags"]["text"] == "t1 efc"
    assert rows[ODD]["QC flags"]["text"] == "mask brain_volume_ml"
    assert rows["sub01"]["QC flags"]["text"] == "" and rows["sub05"]["QC flags"]["text"] == ""
    assert list(rows)[:2] == [ODD, "sub07"]  # the flagged ones are the worst Dice here


def test_subjects_kept_out_of_training(qc_html):
    page = voxflow_page(qc_html)
    assert "Kept out of training (1)" in page.sections["qc-cohort"]["text"]
    rows = page.table("qc-cohort", "qc-held-out-table")["rows"]
    assert [(r["subject"]["text"], r["flags"]["text"]) for r in rows] == [("sub07", "t1 efc=0.61 (median 0.45)")]


def test_odd_subject_name_is_escaped(qc_html):
    """Table cells, image alt texts, data-subject attributes: the name is text everywhere, never markup."""
    section = qc_html.split('<section id="qc-cohort">', 1)[1].split("</section>", 1)[0]
    assert "odd&lt;b&gt;&amp;" in section and ODD not in qc_html
    page = voxflow_page(qc_html)
    assert ODD in page.sections["qc-cohort"]["text"] and ODD in page.sections["subjects"]["text"]
    assert not [a for t, a in page.tags if t == "b" and a]  # no element made from the name


def test_small_cohort_note_and_empty_flags(tmp_path):
    """Below MIN_SUBJECTS_FOR_Z subjects the section says only the bounds flag; with 12 it does not; a flags.tsv
    with its header only gives "No subject flagged"."""
    from voxflow.report.build import render
    from voxflow.report.qc import cohort_qc

    def text(subjects: list[str], flags: pd.DataFrame | None = None) -> str:
        d = tmp_path / str(len(subjects))
        d.mkdir()
        scores = scores_frame(subjects)
        scores.to_csv(d / "scores.tsv", sep="\t", index=False)
        (flags_frame(scores) if flags is None else flags).to_csv(d / "flags.tsv", sep="\t", index=False)
        data = cohort_qc(str(d / "scores.tsv"), str(d / "flags.tsv"), [], None)
        doc = render({"title": "t", "run_dir": "/r", "date": "now", "colors": {"reference": "#0", "prediction": "#1"},
                      "sections": [{"id": "qc-cohort", "title": "Cohort QC", "data": data}]})
        return voxflow_page(doc).sections["qc-cohort"]["text"]

    small = text(SUBJECTS[:4] + [ODD])
    assert MIN_SUBJECTS_FOR_Z == 10
    assert "Only 5 subject(s) have QC scores, fewer than 10" in small and "only the hard sanity bounds" in small
    assert ODD in small and "sub07" not in small  # the bounds flag stays, no z-score flag
    big = text(SUBJECTS)
    assert "fewer than" not in big and "No subject flagged" not in big
    empty = text(SUBJECTS[:11], flags=pd.DataFrame(columns=["subject", "modality", "score", "value", "median", "z",
                                                            "reason"]))
    assert "No subject flagged" in empty and "0 score(s) of 0 subject(s)" in empty


def test_run_without_qc_scores(qc_run, tmp_path):
    """An older run (no qc/ inputs) or a missing scores.tsv: the section says the scores were not computed, the
    subject table has no QC column, nothing crashes."""
    page = voxflow_page(build(qc_run, "noqc.html", qc=False))
    assert "QC scores were not computed" in page.sections["qc-cohort"]["text"]
    assert "QC flags" not in page.table("subjects", "subject-table")["head"]
    assert not page.images("qc-cohort")
    from voxflow.report.qc import cohort_qc

    gone = cohort_qc(str(tmp_path / "qc" / "scores.tsv"), str(tmp_path / "qc" / "flags.tsv"), [], None)
    assert gone["computed"] is False and gone["held_out"] is None


def test_shown_subjects_puts_flagged_first(qc_run, tmp_path):
    from voxflow.report.build import shown_subjects

    flags = qc_run / "qc" / "flags.tsv"
    cohort = {"subjects": ["c", "sub07", "a", ODD, "b"], "excluded": [{"subject": "0bad"}]}
    shown = shown_subjects(None, ["a", "b"], cohort, cap=3, flags_tsv=flags)
    assert shown["flagged"] == [ODD, "sub07"]  # worst first: flags.tsv's order
    assert shown["preprocessing_qc"] == [ODD, "sub07", "0bad"] and shown["n_subjects"] == 6
    assert shown_subjects(None, ["a"], cohort, cap=1, flags_tsv=flags)["preprocessing_qc"] == [ODD]
    assert shown_subjects(None, ["a"], cohort, cap=3, flags_tsv=tmp_path / "none.tsv")["flagged"] == []


def test_cohort_qc_reads_only_declared_inputs(qc_run, qc_html, tmp_path):
    """The rule's inputs alone (named ones, and the QC folders of the subjects the checkpoint lists) in another
    folder give the same cohort QC section: the flagged subjects' images are declared inputs."""
    html = tmp_path / "full.html"
    inp, _, positional = step_io(qc_run, html)
    copy = tmp_path / "copy" / "results"
    for src in [*(v for k, v in inp.items() if k != "shown"), *positional]:
        dst = copy / Path(src).relative_to(qc_run)
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if Path(src).is_dir() else shutil.copy2)(src, dst)
    assert (copy / "qc" / "sub07").is_dir() and not (copy / "qc" / "sub05").exists()

    def section(out: Path, name: str) -> tuple[str, list[str]]:
        s = voxflow_page(build(out, name).replace(str(out), "RUN")).sections["qc-cohort"]
        return s["text"], [i["src"] for i in s["imgs"]]

    full, alone = section(qc_run, "again.html"), section(copy, "copy.html")
    assert full == alone and sum(s.startswith("data:image/png") for s in full[1]) == 5 + 4
