"""The report's "Model choice and post-processing" section (voxflow.report.choice) from the report rule's
`postprocessing` input in both of its formats: model/inference.json (model.configurations: the ensemble table,
the chosen row marked, the bar plot, the tie rule) and model/postprocessing.json (the largest-component decision
per group, decided on validation cases, set by the config, or not decidable); no file or an unknown format: no
section; a broken file: a note. Rendered through the report step with minimal inputs, checked through html.parser."""

from __future__ import annotations

import base64
import io
import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
from support.report import CONFIG, voxflow_page

from voxflow.report.choice import group_names, has_choice, model_choice

POST = {"groups": [[1, 2, 4], [4]], "enabled": [True, False], "dice_before": [0.8, 0.6125],
        "dice_after": [0.8112, 0.5504], "hd95_before": [12.345, 3.0], "hd95_after": [4.1, 3.5], "dice_tolerance": 0.01,
        "mode": "auto", "fill_holes": [1, 2], "open_close": None, "n_validation_cases": 7}
TABLE = [{"members": ["2d", "3d"], "n_models": 2, "dice": 0.8134, "dice_per_group": [0.9012, 0.7256]},
         {"members": ["3d"], "n_models": 1, "dice": 0.8101, "dice_per_group": [0.8841, 0.7361]},
         {"members": ["2.5d"], "n_models": 1, "dice": 0.7949, "dice_per_group": [0.87, None]},
         {"members": ["2d"], "n_models": 1, "dice": 0.7003, "dice_per_group": [0.8, 0.6006]}]
INFERENCE = {"configurations": ["3d"], "dice": 0.8101, "models": [f"3d/fold_{k}/model_final.pt" for k in range(5)],
             "postprocessing": POST, "n_validation_subjects": 11, "tolerance": 0.005, "table": TABLE}
PLANS = {"dim": "3d", "regions": [[1, 2, 4], [4]]}
TITLE = "Model choice and post-processing"
RUN_CONFIG = CONFIG | {"evaluate": {"regions": {"whole_tumor": [1, 2, 4], "core": [1, 4], "enhancing": [4]}}}


class Rows(HTMLParser):
    """The rows of one table: (the <tr>'s class, [cell texts])."""

    def __init__(self, doc: str, tid: str):
        super().__init__(convert_charrefs=True)
        self.tid, self.rows, self._in, self._cell = tid, [], False, None
        self.feed(doc)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self._in = a.get("id") == self.tid
        elif self._in and tag == "tr":
            self.rows.append((a.get("class"), []))
        elif self._in and tag in ("td", "th"):
            self._cell = ""

    def handle_endtag(self, tag):
        if tag == "table":
            self._in = False
        elif self._in and tag in ("td", "th") and self._cell is not None:
            self.rows[-1][1].append(self._cell)
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def build(tmp_path: Path, doc: dict | str | None, name: str = "postprocessing.json", plans: dict | None = PLANS,
          config: dict = RUN_CONFIG) -> str:
    """The report of a run with nothing but a subject list, plans.json and the `postprocessing` input (`doc`:
    JSON, raw text, or None: no file)."""
    from voxflow.report.build import report

    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "predicted.json").write_text(json.dumps({"subjects": ["ghost"]}))
    post = tmp_path / "model" / name
    post.parent.mkdir(exist_ok=True)
    if doc is not None:
        post.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    if plans is not None:
        (tmp_path / "model" / "plans.json").write_text(json.dumps(plans))
    html = tmp_path / "r" / "report.html"
    report("cohort", {"subjects": str(tmp_path / "predicted.json"), "postprocessing": str(post),
                      "plans": str(tmp_path / "model" / "plans.json")}, {"html": str(html)},
           {"config": config, "output_dir": str(tmp_path / "empty"), "workflow_dir": str(tmp_path)})
    return html.read_text(encoding="utf-8")


def _png_size(src: str) -> tuple[int, int]:
    from PIL import Image

    head, data = src.split(",", 1)
    assert head == "data:image/png;base64"
    return Image.open(io.BytesIO(base64.b64decode(data))).size


# ---------------------------------------------------------------- inference.json
def test_inference_table_marks_the_chosen_row(tmp_path):
    doc = build(tmp_path, INFERENCE, "inference.json")
    page = voxflow_page(doc)
    assert page.order.index("curves") < page.order.index("choice") < page.order.index("runtime")
    assert "#choice" in page.nav
    rows = Rows(doc, "choice-table").rows
    assert rows[0] == (None, ["configuration", "models", "mean Dice", "Dice whole_tumor (1,2,4)",
                              "Dice enhancing (4)"])  # the plans' groups, named by config's evaluate.regions
    assert [cls for cls, _ in rows[1:]] == [None, "chosen", None, None]  # the file's order: best first
    t = page.table("choice", "choice-table")
    assert [r["configuration"]["text"] for r in t["rows"]] == ["2d + 3d", "3dchosen", "2.5d", "2d"]
    assert [r["configuration"]["parts"] for r in t["rows"]] == [[], ["chosen"], [], []]
    assert [r["models"]["text"] for r in t["rows"]] == ["2", "1", "1", "1"]
    assert [r["mean Dice"]["text"] for r in t["rows"]] == ["0.813", "0.810", "0.795", "0.700"]
    assert [r["Dice whole_tumor (1,2,4)"]["text"] for r in t["rows"]] == ["0.901", "0.884", "0.870", "0.800"]
    assert [r["Dice enhancing (4)"]["text"] for r in t["rows"]] == ["0.726", "0.736", "–", "0.601"]
    text = " ".join(page.sections["choice"]["text"].split())
    assert "Chosen: 3d, mean out-of-fold Dice 0.810 (5 model file(s) at prediction)" in text
    assert "out-of-fold predictions of 11 subject(s)" in text
    assert "within 0.005 of the best, the cheaper: fewer models, then 2d < 2.5d < 3d" in text
    # the bar plot: one image in the section, a real PNG
    imgs = page.images("choice")
    assert len(imgs) == 1 and "green: chosen" in imgs[0]["alt"] and "within 0.005" in imgs[0]["alt"]
    w, h = _png_size(imgs[0]["src"])
    assert w > 200 and h > 80
    # the chosen configuration's post-processing, from the file's "postprocessing"
    assert "Post-processing of 3d" in text and "Decided on 7 validation case(s)" in text
    post = page.table("choice", "postprocessing-table")
    assert [r["largest component only"]["text"] for r in post["rows"]] == ["yes", "no"]
    # the file is still shown verbatim in the provenance, under its own name
    assert "inference.json" in page.sections["provenance"]["text"]


def test_inference_chosen_ensemble_and_unnamed_groups(tmp_path):
    """An ensemble chosen (members matched in order); groups named by their labels (plans' label values, no
    evaluated region of the same labels), or numbered when plans do not say."""
    doc = INFERENCE | {"configurations": ["2d", "3d"], "dice": 0.8134}
    data = model_choice(_write(tmp_path / "a.json", doc), {"regions": None, "label_values": [0, 1, 2]}, {})
    c = data["choice"]
    assert c["table"]["marks"] == ["chosen", "", "", ""] and c["chosen"] == "2d + 3d" and c["dice"] == "0.813"
    assert c["table"]["columns"][3:] == ["Dice 1", "Dice 2"]
    assert model_choice(_write(tmp_path / "b.json", doc))["choice"]["table"]["columns"][3:] == \
        ["Dice group 1", "Dice group 2"]
    # a chosen configuration missing from the table: no row marked, the page says so
    lost = model_choice(_write(tmp_path / "c.json", INFERENCE | {"configurations": ["2d", "2.5d"]}))
    assert lost["choice"]["found"] is False and set(lost["choice"]["table"]["marks"]) == {""}
    # no scored row: no plot
    none = model_choice(_write(tmp_path / "d.json", INFERENCE | {"table": [{"members": ["3d"], "n_models": 1,
                                                                          "dice": None, "dice_per_group": []}]}))
    assert none["choice"]["figure"] is None and none["choice"]["table"]["rows"][0][2]["text"] == "–"


def _write(path: Path, doc) -> Path:
    path.write_text(json.dumps(doc))
    return path


# ---------------------------------------------------------------- postprocessing.json
def test_postprocessing_auto_decision(tmp_path):
    doc = build(tmp_path, POST)
    page = voxflow_page(doc)
    assert page.order.index("curves") < page.order.index("choice") < page.order.index("runtime")
    assert "choice-table" not in page.sections["choice"]["tables"]  # one configuration: no ensemble table
    assert not page.images("choice")
    t = page.table("choice", "postprocessing-table")
    assert t["head"] == ["label group", "largest component only", "Dice before → after", "HD95 (mm) before → after"]
    rows = {r["label group"]["text"]: r for r in t["rows"]}
    assert list(rows) == ["whole_tumor (1,2,4)", "enhancing (4)"]
    whole, enh = rows["whole_tumor (1,2,4)"], rows["enhancing (4)"]
    assert (whole["largest component only"]["text"], enh["largest component only"]["text"]) == ("yes", "no")
    assert whole["Dice before → after"]["text"] == "0.800 → 0.811+0.011"
    assert whole["Dice before → after"]["parts"] == ["+0.011"]
    assert whole["HD95 (mm) before → after"]["text"] == "12.35 → 4.10-8.25"
    assert enh["Dice before → after"]["text"].startswith("0.613 → 0.550")
    assert enh["HD95 (mm) before → after"]["text"].startswith("3.00 → 3.50")
    text = " ".join(page.sections["choice"]["text"].split())
    assert "Decided on 7 validation case(s)" in text and "lowers its Dice by at most 0.01" in text
    assert "(1 of 2 group(s) enabled)" in text
    assert "Then, on every prediction: hole filling of labels 1, 2." in text
    assert "Set by the config" not in text and "could not be made" not in text


@pytest.mark.parametrize("mode", ["on", "off"])
def test_postprocessing_set_by_config(tmp_path, mode):
    post = {"groups": [[1], [2]], "enabled": [mode == "on"] * 2, "dice_before": None, "dice_after": None,
            "hd95_before": None, "hd95_after": None, "mode": mode, "fill_holes": [],
            "open_close": {"labels": [1], "radius_vox": 2, "op": "close"}, "n_validation_cases": 4}
    page = voxflow_page(build(tmp_path, post, plans=None))
    text = " ".join(page.sections["choice"]["text"].split())
    assert f"Set by the config (postprocess.largest_component: {mode})" in text
    assert ("every" if mode == "on" else "no") + " label group keeps only its largest" in text
    assert "Decided on" not in text
    rows = page.table("choice", "postprocessing-table")["rows"]
    assert [r["label group"]["text"] for r in rows] == ["1", "2"]
    assert {r["largest component only"]["text"] for r in rows} == {"yes" if mode == "on" else "no"}
    assert {r["Dice before → after"]["text"] for r in rows} == {"–"} == {r["HD95 (mm) before → after"]["text"]
                                                                         for r in rows}
    assert "morphological closing (radius 2 voxel) of labels 1" in text


def test_postprocessing_without_validation_cases(tmp_path):
    post = POST | {"enabled": [False, False], "dice_before": [None, None], "dice_after": [None, None],
                   "hd95_before": [None, None], "hd95_after": [None, None], "n_validation_cases": 0,
                   "fill_holes": []}
    page = voxflow_page(build(tmp_path, post))
    text = " ".join(page.sections["choice"]["text"].split())
    assert "No validation case: the largest-component decision could not be made (0 of 2 group(s) enabled)" in text
    assert "Decided on" not in text and "Then, on every prediction" not in text
    rows = page.table("choice", "postprocessing-table")["rows"]
    assert [r["largest component only"]["text"] for r in rows] == ["no", "no"]


def test_postprocessing_group_without_informative_case_and_older_file(tmp_path):
    """A group no validation case informs is marked; an older file (no mode, no case count) reads as auto."""
    old = {k: v for k, v in POST.items() if k not in ("mode", "n_validation_cases", "fill_holes", "open_close")}
    old |= {"dice_before": [0.8, None], "dice_after": [0.81, None], "hd95_before": [5.0, None],
            "hd95_after": [4.0, None]}
    p = model_choice(_write(tmp_path / "postprocessing.json", old))["post"]
    assert p["mode"] == "auto" and p["decided"] and p["cases"] == "the validation cases (how many: not recorded)"
    assert p["after"] is None
    assert [r[1]["sub"] for r in p["table"]["rows"]] == [None, "no informative case"]
    assert p["table"]["rows"][1][2]["text"] == "–"


# ---------------------------------------------------------------- no file, another format, a broken file
def test_no_section_without_a_file_or_of_another_format(tmp_path):
    page = voxflow_page(build(tmp_path / "a", None))
    assert "choice" not in page.order and TITLE not in " ".join(s["text"] for s in page.sections.values())
    assert "postprocessing.json: not found" in page.sections["provenance"]["text"]
    other = tmp_path / "b"
    page = voxflow_page(build(other, {"largest_component": {"1,2,4": True}}))
    assert "choice" not in page.order and "largest_component" in page.sections["provenance"]["text"]
    assert not has_choice(None) and not has_choice(other / "nope.json")


def test_broken_file_is_a_note(tmp_path):
    page = voxflow_page(build(tmp_path, '{"groups": [[1]], '))
    assert "choice" in page.order
    assert "This section could not be built: JSONDecodeError" in page.sections["choice"]["text"]


def test_group_names():
    regions = {"whole_tumor": [1, 2, 3, 4], "enhancing": [4]}
    assert group_names([[4, 3, 2, 1], [4], [1, 4]], regions) == ["whole_tumor (4,3,2,1)", "enhancing (4)", "1,4"]
    assert group_names([[1], [2]]) == ["1", "2"]


def test_curve_labels_come_from_the_configurations_plans(tmp_path):
    """A fold's curve is labelled with the configuration its plans.json names (the plan rule records
    model.configuration), whatever the folder is called; a single-configuration model: the fold alone."""
    from voxflow.report.build import _fold_label

    for conf, folder in (("3d_cascade/lowres", "model/3d_cascade/lowres"), ("2d", "model/elsewhere")):
        d = tmp_path / folder
        (d / "fold_1").mkdir(parents=True)
        (d / "plans.json").write_text(json.dumps({"dim": "3d", "configuration": conf}))
        assert _fold_label(d / "fold_1" / "model_final.pt") == f"{conf} fold_1"
    single = tmp_path / "single"
    (single / "fold_0").mkdir(parents=True)
    (single / "plans.json").write_text(json.dumps({"dim": "3d", "configuration": None}))
    assert _fold_label(single / "fold_0" / "model_final.pt") == "fold_0"
    assert _fold_label(tmp_path / "nowhere" / "fold_2" / "model_final.pt") == "fold_2"
