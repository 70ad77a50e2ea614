"""The report's "Model choice and post-processing" section: plain data for report.html.j2 from the report rule's
`postprocessing` input, either model/postprocessing.json (one configuration:
voxflow.postprocessing.steps.postprocessing_decision) or model/inference.json (model.configurations:
voxflow.inference.choose.write_inference, which holds the former under "postprocessing").

With inference.json: every configuration and ensemble scored on the out-of-fold subjects (the file's table, best
first), the chosen one marked, and a bar plot of their Dice. With either: the largest-component decision per label
group (Dice and HD95 before -> after on the validation cases), or that the config set it, or that there was no
validation case to decide on. No file, or a file of neither format (an older run's: the provenance shows it
verbatim): no section (`has_choice`)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from voxflow.core.labels import foreground_groups
from voxflow.planning.plans import Plans
from voxflow.report.data import cell, fmt
from voxflow.report.plots import choice_figure

TITLE = "Model choice and post-processing"
TIE_RULE = "fewer models, then 2d < 2.5d < 3d"  # voxflow.inference.choose.choose


def _doc(path) -> object:
    return json.loads(Path(path).read_text())


def has_choice(path) -> bool:
    """Whether the report shows the section: the file is there and is postprocessing.json's or inference.json's
    format (or is not valid JSON: the section then says why it could not be built)."""
    if not path or not Path(path).is_file():
        return False
    try:
        doc = _doc(path)
    except ValueError:
        return True
    return isinstance(doc, dict) and ("configurations" in doc or "groups" in doc)


def _labels(group) -> str:
    return ",".join(str(v) for v in group) if isinstance(group, (list, tuple)) else str(group)


def group_names(groups: Sequence, regions: Mapping[str, Sequence[int]] | None = None) -> list[str]:
    """A label group's name: its labels ("1,2,4"), with the name of the evaluated region of the same labels when
    there is one ("whole_tumor (1,2,3,4)")."""
    named = {tuple(sorted(int(v) for v in ids)): name for name, ids in (regions or {}).items()}
    out = []
    for g in groups:
        labels = _labels(g)
        key = tuple(sorted(int(v) for v in g)) if isinstance(g, (list, tuple)) else (int(g),)
        out.append(f"{named[key]} ({labels})" if key in named else labels)
    return out


def _num(v) -> float | None:
    return None if v is None or isinstance(v, bool) else float(v)


def _at(values, i: int) -> float | None:
    return _num(values[i]) if isinstance(values, list) and i < len(values) else None


def _change(before: float | None, after: float | None, digits: int) -> dict:
    """A "before → after" cell, sorted by `after`, the difference below."""
    if before is None and after is None:
        return {"text": "–", "v": "", "sub": None, "warn": False}
    text = f"{'–' if before is None else fmt(before, digits)} → {'–' if after is None else fmt(after, digits)}"
    sub = f"{after - before:+.{digits}f}" if before is not None and after is not None else None
    return {"text": text, "v": "" if after is None else f"{after:.6g}", "sub": sub, "warn": False}


def _plans_groups(plans: Plans | Mapping | None) -> list | None:
    """The groups the ensembles were scored on (voxflow.inference.steps.choose_configuration, the label scheme's
    foreground groups): plans' regions, else one group per foreground label; None for plans without either (the
    plans may be partial: no LabelScheme, which checks the regions against the labels)."""
    if plans is None:
        return None
    p = Plans.of(plans)
    return foreground_groups(p.optional("label_values") or [], p.optional("regions")) or None


def choice_table(doc: Mapping, plans: Plans | Mapping | None = None, regions: Mapping | None = None) -> dict:
    """inference.json's table (best first): members, models, mean out-of-fold Dice and Dice per group, the chosen
    row marked; the chosen one, the subjects it was scored on and the tolerance."""
    rows = [r for r in doc.get("table") or [] if isinstance(r, Mapping)]
    chosen = [str(c) for c in doc.get("configurations") or []]
    n_groups = max((len(r.get("dice_per_group") or []) for r in rows), default=0)
    groups = _plans_groups(plans)
    names = group_names(groups, regions) if groups and len(groups) == n_groups else \
        [f"group {j + 1}" for j in range(n_groups)]
    which = next((i for i, r in enumerate(rows) if [str(c) for c in r.get("members") or []] == chosen),
                 next((i for i, r in enumerate(rows) if sorted(map(str, r.get("members") or [])) == sorted(chosen)),
                      None))
    cells, marks, labels, dice = [], [], [], []
    for i, r in enumerate(rows):
        members = " + ".join(str(c) for c in r.get("members") or [])
        d = _num(r.get("dice"))
        per = list(r.get("dice_per_group") or [])
        cells.append([cell(members, sub="chosen" if i == which else None),
                      cell(int(r.get("n_models") or len(r.get("members") or []))),
                      cell(float("nan") if d is None else d, 3)]
                     + [cell(float("nan") if _at(per, j) is None else _at(per, j), 3) for j in range(n_groups)])
        marks.append("chosen" if i == which else "")
        labels.append(members)
        dice.append(d)
    tolerance = _num(doc.get("tolerance"))
    table = {"id": "choice-table", "columns": ["configuration", "models", "mean Dice"] + [f"Dice {n}" for n in names],
             "rows": cells, "sortable": False, "marks": marks}
    return {"table": table, "chosen": " + ".join(chosen) or "–", "found": which is not None,
            "dice": "–" if _num(doc.get("dice")) is None else fmt(_num(doc.get("dice")), 3),
            "n_files": len(doc.get("models") or []), "n_subjects": doc.get("n_validation_subjects"),
            "tolerance": "–" if tolerance is None else f"{tolerance:g}", "rule": TIE_RULE,
            "figure": choice_figure(labels, dice, which, tolerance or 0.0)
            if any(d is not None for d in dice) else None}


def _open_close(oc) -> str | None:
    if not oc:
        return None
    op = {"open": "opening", "close": "closing"}.get(str(oc.get("op", "open")), str(oc.get("op")))
    labels = oc.get("labels")
    labels = ", ".join(map(str, labels)) if isinstance(labels, (list, tuple)) else str(labels)
    return f"morphological {op} (radius {oc.get('radius_vox', 1)} voxel) of labels {labels}"


def postprocessing_decision(post: Mapping, regions: Mapping | None = None) -> dict:
    """The largest-component decision per group: enabled, Dice and HD95 (mm) before → after on the validation
    cases; how it was decided (auto, or set by the config: on/off), on how many cases, with which tolerance;
    the cleanup after it (open/close, hole filling)."""
    groups = list(post.get("groups") or [])
    enabled = list(post.get("enabled") or [])
    measured = isinstance(post.get("dice_before"), list)
    mode = str(post.get("mode") or ("auto" if measured else "unknown"))
    n = post.get("n_validation_cases")
    n = int(n) if isinstance(n, (int, float)) and not isinstance(n, bool) else None
    decided = mode == "auto" and (n is None or n > 0)
    rows = []
    for i, name in enumerate(group_names(groups, regions)):
        on = bool(enabled[i]) if i < len(enabled) else False
        uninformed = decided and measured and _at(post["dice_before"], i) is None
        rows.append([cell(name), cell("yes" if on else "no", sub="no informative case" if uninformed else None),
                     _change(_at(post.get("dice_before"), i), _at(post.get("dice_after"), i), 3),
                     _change(_at(post.get("hd95_before"), i), _at(post.get("hd95_after"), i), 2)])
    tolerance = _num(post.get("dice_tolerance"))
    cases = "the validation cases (how many: not recorded)" if n is None else f"{n} validation case(s)"
    fill = post.get("fill_holes") or []
    after = [s for s in (_open_close(post.get("open_close")),
                         f"hole filling of labels {', '.join(map(str, fill))}" if fill else None) if s]
    return {"table": {"id": "postprocessing-table", "rows": rows, "sortable": False,
                      "columns": ["label group", "largest component only", "Dice before → after",
                                  "HD95 (mm) before → after"]},
            "mode": mode, "set_by_config": mode in ("on", "off"), "decided": decided,
            "no_cases": mode == "auto" and n == 0, "cases": cases,
            "tolerance": "–" if tolerance is None else f"{tolerance:g}", "n_enabled": sum(map(bool, enabled)),
            "n_groups": len(groups), "after": "; then ".join(after) if after else None}


def model_choice(path, plans: Plans | Mapping | None = None, config: Mapping | None = None) -> dict:
    """The section's data from postprocessing.json or inference.json (`path`); plans (the model's plans.json)
    name the groups the ensembles were scored on, config's evaluate.regions name the label groups."""
    doc = _doc(path)
    if not isinstance(doc, dict):
        raise ValueError(f"{Path(path).name} is not a JSON object")
    regions = ((config or {}).get("evaluate") or {}).get("regions")
    inference = "configurations" in doc
    post = doc.get("postprocessing") if inference else doc
    return {"source": Path(path).name,
            "choice": choice_table(doc, plans, regions) if inference else None,
            "post": postprocessing_decision(post, regions) if isinstance(post, dict) else None}
