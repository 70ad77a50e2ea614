"""The report's "Synthesized modalities" section (voxflow.report.synthesis): the predicted subjects completed by the
synthesis model (status/cohort.json's `incomplete`, with their QC figures), the model's validation metrics
(synthesis.json, in voxflow.synth.train's format and the older key names) and its training curves (curve.csv with
blank validation cells); missing or broken files leave notes; no completed subject and no model: no section and no
card. Rendered through the report step with minimal inputs, checked through html.parser."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pandas as pd
import pytest
from support.report import CONFIG, voxflow_page, Cards

from voxflow.report.synthesis import MAX_FIGURES, has_synthesis, synthesis_section

MODS = ["t1", "t2", "flair"]
SUMMARY = {"train_subjects": ["a1", "a2", "a3"], "val_subjects": ["v1", "v2"], "step": 40, "iterations_done": 40,
           "modalities": MODS, "config": {"iterations": 40, "patch_size": [16, 16, 16], "adversarial": "lsgan"},
           "validation": {"t1": {"psnr": 24.3456, "ssim": 0.81234, "mae": 0.123456, "mae_zero_filled": 0.9},
                          "t2": {"psnr": 21.0, "ssim": 0.7, "mae": 0.2, "mae_zero_filled": 0.8},
                          "flair": {"psnr": None, "ssim": 0.65, "mae": 0.25, "mae_zero_filled": 0.85}}}
INCOMPLETE = {"p2": {"flair": "no file"}, "p3": {"t2": "unusable (input.unusable)", "flair": "deleted (demo.missing)"},
              "notpredicted": {"t1": "no file"}}


def write_curve(path: Path, steps: int = 40, val_every: int = 10) -> Path:
    """curve.csv as voxflow.synth.train writes it: losses every logged step, validation columns blank but on the
    validation steps."""
    rows = []
    for step in range(5, steps + 1, 5):
        row: dict = {"step": step, "loss_g_l1": 0.5 / step, "loss_g_adv": 1.0 - step / 100, "loss_d": 0.25,
                     "lr": 2e-4}
        for k, mod in enumerate(MODS):
            on = step % val_every == 0
            row[f"val_mae_{mod}"] = round(0.4 / step + 0.01 * k, 6) if on else None
            row[f"val_psnr_{mod}"] = 15.0 + step / 10 if on else None
        rows.append(row)
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)  # None -> blank cells
    return path


def write_png(path: Path, color: str = "#2563eb") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 1))
    ax.add_patch(plt.Rectangle((0.1, 0.1), 0.5, 0.5, color=color))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=60)
    plt.close(fig)
    return path


def _json(path: Path, doc) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def _png_size(uri: str) -> tuple[int, int]:
    from PIL import Image

    head, data = uri.split(",", 1)
    assert head == "data:image/png;base64"
    return Image.open(io.BytesIO(base64.b64decode(data))).size


def _rows(t: dict) -> list[list[str]]:
    return [[c["text"] for c in row] for row in t["rows"]]


# ---------------------------------------------------------------- the section's data
def test_section_data(tmp_path):
    model = tmp_path / "model" / "synthesis"
    summary, curve = _json(model / "synthesis.json", SUMMARY), write_curve(model / "curve.csv")
    png = write_png(tmp_path / "qc_synthesis" / "p2.png")
    completed = [("p2", {"flair": "no file"}, str(png)),
                 ("p3", {"t2": "unusable (input.unusable)", "flair": "deleted (demo.missing)"}, None)]
    d = synthesis_section(str(summary), str(curve), completed)
    assert d["n_completed"] == 2 and d["modalities"] == "flair (2 subjects), t2 (1 subject)"
    assert d["table"]["columns"] == ["subject", "synthesized", "why missing"]
    assert _rows(d["table"]) == [["p2", "flair", "no file"],
                                 ["p3", "t2, flair", "t2: unusable (input.unusable); flair: deleted (demo.missing)"]]
    # QC: p2's figure embedded, p3's missing (a note); the folder named
    qc = d["qc"]
    assert [f["subject"] for f in qc["figures"]] == ["p2", "p3"] and (qc["shown"], qc["total"]) == (2, 2)
    assert _png_size(qc["figures"][0]["uri"]) == (180, 60) and qc["figures"][0]["note"] is None
    assert qc["figures"][0]["caption"] == "p2: flair (synthetic)"
    assert qc["figures"][1]["uri"] is None and "p3: no QC figure" in qc["figures"][1]["note"]
    assert qc["where"] == str(png.parent)
    # validation metrics, in the file's modality order, the baseline column since the file has it
    m = d["metrics"]
    assert m["columns"] == ["modality", "PSNR (dB)", "SSIM", "MAE", "MAE zero image"]
    assert _rows(m) == [["t1", "24.35", "0.812", "0.1235", "0.9000"], ["t2", "21.00", "0.700", "0.2000", "0.8000"],
                        ["flair", "–", "0.650", "0.2500", "0.8500"]]
    assert [r[0]["sub"] for r in m["rows"]] == [None, "synthesized for 1 subject(s)", "synthesized for 2 subject(s)"]
    assert d["val_subjects"] == "v1, v2" and (d["n_val"], d["n_train"], d["steps"]) == (2, 3, 40)
    assert d["metrics_note"] is None and d["curve_note"] is None
    assert json.loads(d["config"])["adversarial"] == "lsgan" and d["model_dir"] == str(model)
    # the curves: one PNG; the caption has the last validation's MAE per modality (blank cells skipped)
    w, h = _png_size(d["curve"]["uri"])
    assert w > 600 and h > 150
    assert d["curve"]["caption"] == ("synthesis model: 8 logged steps up to step 40; validation MAE at the last "
                                     "validation: t1 0.0100, t2 0.0200, flair 0.0300")


def test_older_key_names_and_no_baseline(tmp_path):
    doc = {"metrics": {"t1": {"psnr": 30.0, "ssim": 0.9, "mae": 0.05}}, "training_subjects": ["a"],
           "validation_subjects": ["b", "c", "d"], "config": {"iterations": 5}}
    d = synthesis_section(str(_json(tmp_path / "synthesis.json", doc)), None, [])
    assert d["metrics"]["columns"] == ["modality", "PSNR (dB)", "SSIM", "MAE"]
    assert _rows(d["metrics"]) == [["t1", "30.00", "0.900", "0.0500"]]
    assert (d["n_val"], d["n_train"], d["val_subjects"], d["steps"]) == (3, 1, "b, c, d", None)
    assert d["table"] is None and d["qc"]["figures"] == [] and d["qc"]["where"] is None
    assert d["curve"] is None and d["curve_note"] == "curve.csv not found: no training curves."


@pytest.mark.parametrize("summary", [None, "missing", "broken", "list", "empty"])
def test_missing_or_broken_files_are_notes(tmp_path, summary):
    path = {None: None, "missing": str(tmp_path / "nope" / "synthesis.json"),
            "broken": str(_json(tmp_path / "b" / "synthesis.json", '{"validation": ')),
            "list": str(_json(tmp_path / "l" / "synthesis.json", [1, 2])),
            "empty": str(_json(tmp_path / "e" / "synthesis.json", {"validation": {}, "config": None}))}[summary]
    no_step = tmp_path / "curve.csv"
    no_step.write_text("epoch,loss\n1,0.5\n")
    d = synthesis_section(path, str(no_step), [("p1", {"t2": "no file"}, str(tmp_path / "gone.png"))])
    assert d["metrics"] is None and d["curve"] is None and d["config"] is None
    assert d["curve_note"] == "curve.csv has no training curve: no training curves."
    expected = {None: "synthesis.json not found", "missing": "synthesis.json not found",
                "broken": "synthesis.json could not be read (JSONDecodeError", "list": "is not a JSON object",
                "empty": "synthesis.json holds no validation metrics"}[summary]
    assert expected in d["metrics_note"]
    assert _rows(d["table"]) == [["p1", "t2", "no file"]]
    assert d["qc"]["figures"][0]["uri"] is None and "gone.png not found" in d["qc"]["figures"][0]["note"]
    # nothing at all: still data, no crash
    empty = synthesis_section(None, None, [])
    assert empty["n_completed"] == 0 and empty["metrics"] is None and empty["curve"] is None


def test_qc_figures_are_capped(tmp_path):
    png = write_png(tmp_path / "qc_synthesis" / "x.png")
    completed = [(f"s{i:02d}", {"flair": "no file"}, str(png)) for i in range(MAX_FIGURES + 3)]
    qc = synthesis_section(None, None, completed)["qc"]
    assert (qc["shown"], qc["total"]) == (MAX_FIGURES, MAX_FIGURES + 3) and len(qc["figures"]) == MAX_FIGURES
    assert all(f["uri"] for f in qc["figures"]) and qc["where"] == str(png.parent)


def test_has_synthesis(tmp_path):
    summary = _json(tmp_path / "synthesis.json", SUMMARY)
    assert not has_synthesis(None, []) and not has_synthesis(str(tmp_path / "nope.json"), [])
    assert has_synthesis(str(summary), []) and has_synthesis(None, [("p", {"t1": "no file"}, None)])


# ---------------------------------------------------------------- through the report step
def build(tmp_path: Path, incomplete: dict | None, synthesis: bool = True, evaluate: bool = False,
          qc: bool = True) -> str:
    """The report of a run with a predicted-subject list, a cohort.json (with `incomplete`), the synthesis model's
    files and the completed subjects' QC figures (p2's only); evaluate: a tiny metrics.tsv too."""
    from voxflow.report.build import report

    predicted = ["p1", "p2", "p3"]
    _json(tmp_path / "status" / "predicted.json", {"subjects": predicted})
    cohort = {"subjects": predicted + ["notpredicted"], "excluded": [], "warnings": []}
    if incomplete is not None:
        cohort["incomplete"] = incomplete
    _json(tmp_path / "status" / "cohort.json", cohort)
    model = tmp_path / "model" / "synthesis"
    if synthesis:
        _json(model / "synthesis.json", SUMMARY)
        write_curve(model / "curve.csv")
    write_png(tmp_path / "qc_synthesis" / "p2.png")
    inp = {"subjects": str(tmp_path / "status" / "predicted.json"), "cohort": str(tmp_path / "status" / "cohort.json"),
           "synthesis": str(model / "synthesis.json"), "synthesis_curve": str(model / "curve.csv")}
    if evaluate:
        rows = [{"subject": s, "space": "native", "label": lab, "dice": dice}
                for s, base in zip(predicted, (0.9, 0.5, 0.7)) for lab, dice in (("1", base), ("2", base - 0.1))]
        pd.DataFrame(rows).to_csv(tmp_path / "metrics.tsv", sep="\t", index=False)
        inp["metrics"] = str(tmp_path / "metrics.tsv")
    paths = {"synthesis_qc": str(tmp_path / "qc_synthesis" / "{subject}.png")} if qc else {}
    html = tmp_path / "r" / "report.html"
    report("cohort", inp, {"html": str(html)},
           {"config": CONFIG, "output_dir": str(tmp_path / "empty"), "workflow_dir": str(tmp_path), "paths": paths})
    return html.read_text(encoding="utf-8")


def test_report_shows_the_completed_subjects(tmp_path):
    doc = build(tmp_path, INCOMPLETE)
    page = voxflow_page(doc)
    assert page.order.index("curves") < page.order.index("synthesis") < page.order.index("runtime")
    assert "#synthesis" in page.nav
    assert Cards(doc).cards["synthesized"] == "2"  # the predicted ones: not "notpredicted"
    t = page.table("synthesis", "synthesis-table")
    assert t["head"] == ["subject", "synthesized", "why missing"]
    assert [(r["subject"]["text"], r["synthesized"]["text"]) for r in t["rows"]] == [("p2", "flair"),
                                                                                    ("p3", "t2, flair")]
    sec = page.sections["synthesis"]
    text = " ".join(sec["text"].split())
    assert "notpredicted" not in text
    assert "2 predicted subject(s) lacked a modality" in text
    assert "Synthesized: flair (2 subjects), t2 (1 subject)" in text
    assert "p2: flair (synthetic)" in text  # the QC figure's caption
    assert "p3: no QC figure" in text
    assert sec["subjects"] == ["p2", "p3"]
    # images: p2's QC figure and the curves
    alts = [i["alt"] for i in page.images("synthesis")]
    assert alts[0] == "p2: flair (synthetic)" and alts[1].startswith("synthesis model: 8 logged steps")
    assert len(alts) == 2 and all(i["src"].startswith("data:image/png;base64,") for i in page.images("synthesis"))
    m = page.table("synthesis", "synthesis-metrics-table")
    assert m["head"] == ["modality", "PSNR (dB)", "SSIM", "MAE", "MAE zero image"]
    assert [r["PSNR (dB)"]["text"] for r in m["rows"]] == ["24.35", "21.00", "–"]
    assert m["rows"][2]["modality"]["text"] == "flairsynthesized for 2 subject(s)"
    assert "2 held-out validation subject(s): v1, v2; trained on 3 subject(s), 40 steps" in text
    assert "No held-out validation subject" not in text
    assert "synthesis settings" in text and '"adversarial": "lsgan"' in sec["text"]


def test_report_without_qc_pattern_or_model_files(tmp_path):
    """Completed subjects but no synthesis_qc pattern and no model files: the table, and notes for the rest."""
    page = voxflow_page(build(tmp_path, {"p1": {"t1": "no file"}}, synthesis=False, qc=False))
    text = " ".join(page.sections["synthesis"]["text"].split())
    assert [r["subject"]["text"] for r in page.table("synthesis", "synthesis-table")["rows"]] == ["p1"]
    assert "p1: no QC figure" in text and not page.images("synthesis")
    assert "synthesis.json not found: no validation metrics." in text
    assert "curve.csv not found: no training curves." in text
    assert "synthesis-metrics-table" not in page.sections["synthesis"]["tables"]


@pytest.mark.parametrize("incomplete", [None, {}, {"notpredicted": {"t1": "no file"}}])
def test_no_section_and_no_card_without_completed_subjects(tmp_path, incomplete):
    doc = build(tmp_path, incomplete, synthesis=False)
    page = voxflow_page(doc)
    assert "synthesis" not in page.order and "synthesized" not in Cards(doc).cards
    assert "predicted" in Cards(doc).cards  # the cards are there


def test_model_alone_shows_the_section_without_a_card(tmp_path):
    doc = build(tmp_path, None)
    page = voxflow_page(doc)
    assert "synthesis" in page.order and "synthesized" not in Cards(doc).cards
    text = " ".join(page.sections["synthesis"]["text"].split())
    assert "No predicted subject needed a synthesized modality." in text
    assert "synthesis-metrics-table" in page.sections["synthesis"]["tables"]


def test_subject_table_marks_synthetic_modalities(tmp_path):
    page = voxflow_page(build(tmp_path, INCOMPLETE, evaluate=True))
    t = page.table("subjects", "subject-table")
    assert t["head"][-1] == "synthetic"
    marks = {r["subject"]["text"]: (r["synthetic"]["text"], r["synthetic"]["parts"]) for r in t["rows"]}
    assert marks == {"p1": ("", []), "p2": ("flair", ["flair"]), "p3": ("t2, flair", ["t2, flair"])}  # warn span
    # no completed subject: no column
    clean = voxflow_page(build(tmp_path / "clean", None, synthesis=False, evaluate=True))
    assert "synthetic" not in clean.table("subjects", "subject-table")["head"]


def test_broken_section_is_a_note(tmp_path, monkeypatch):
    import voxflow.report.build as report_mod

    def boom(*args):
        raise RuntimeError("no luck")

    monkeypatch.setattr(report_mod, "synthesis_section", boom)
    page = voxflow_page(build(tmp_path, INCOMPLETE))
    assert "This section could not be built: RuntimeError: no luck" in page.sections["synthesis"]["text"]


def test_metrics_without_recorded_subjects_are_flagged(tmp_path):
    """A synthesis.json without subject lists: the page says so and warns that the metrics are not from unseen
    subjects (rendered from the section's data alone)."""
    from voxflow.report.build import render

    doc = {"validation": {"t1": {"psnr": 30.0, "ssim": 0.9, "mae": 0.05}}}
    d = synthesis_section(str(_json(tmp_path / "synthesis.json", doc)), None, [])
    assert (d["n_val"], d["n_train"]) == (0, None)
    html = render({"title": "t", "run_dir": "/r", "date": "now", "colors": {"reference": "#0f0", "prediction": "#f00"},
                   "sections": [{"id": "synthesis", "title": "Synthesized modalities", "data": d}]})
    text = " ".join(voxflow_page(html).sections["synthesis"]["text"].split())
    assert "the validation subjects not recorded." in text and "trained on" not in text
    assert "No held-out validation subject is recorded" in text
    assert "No predicted subject needed a synthesized modality." in text
